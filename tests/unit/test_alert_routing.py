"""Alert channels without a network: the typed config, routing, rate limits, message shapes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from runwatch.service.alerts import AlertDispatcher, AlertsConfig, load_alerts_config
from runwatch.service.alerts.message import Notification, email_message, slack_payload, to_json
from runwatch.service.alerts.routing import IncidentLedger, MatchingRoute
from runwatch.service.alerts.sinks import DeliveryError, Sink
from runwatch.service.hub import AnomalyHub
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}


def anomaly(id="i1", revision=1, severity=pb.SEVERITY_WARNING, kind=pb.ANOMALY_KIND_LOSS_SPIKE, project="p",
            state=None, run_id="r1") -> pb.Anomaly:  # fmt: skip
    if state is None:
        state = pb.ANOMALY_STATE_OPEN if revision == 1 else pb.ANOMALY_STATE_UPDATED
    return pb.Anomaly(
        id=id, run_id=run_id, project=project, kind=kind, severity=severity, revision=revision, state=state,
        step=10 * revision, first_step=10, explanation="loss jumped", detector="loss_spike",
    )  # fmt: skip


def errors_of(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        AlertsConfig.model_validate(data)
    return str(info.value)


# -- config ---------------------------------------------------------------------------------------


def test_example_config_loads_and_round_trips(monkeypatch):
    for var in ("RUNWATCH_OPS_WEBHOOK_URL", "RUNWATCH_SLACK_WEBHOOK_URL"):
        monkeypatch.setenv(var, "https://hooks.example.com/services/T000/B000/XXXX")
    monkeypatch.setenv("RUNWATCH_OPS_WEBHOOK_AUTH", "Bearer s3cret")
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    cfg = load_alerts_config(ROOT / "deploy" / "alerts.example.json")
    assert {s.type for s in cfg.sinks.values()} == {"webhook", "slack", "smtp", "command"}
    assert AlertsConfig.model_validate_json(cfg.model_dump_json()) == cfg
    dumped = cfg.model_dump_json()
    assert "hunter2" not in dumped and "s3cret" not in dumped and "hooks.example.com" not in dumped
    assert cfg.sinks["ops-webhook"].all_headers() == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"sinks": {"s": {"type": "webhook"}}}, "url: give exactly one of url and url_env"),
        ({"sinks": {"s": {"type": "webhook", "url": "ftp://x"}}}, "url: expected an http:// or https:// URL"),
        ({"sinks": {"s": {"type": "slack", "url_env": "RUNWATCH_TEST_UNSET_VAR"}}},
         "url_env: environment variable RUNWATCH_TEST_UNSET_VAR is not set"),
        ({"sinks": {"s": {"type": "pager"}}}, "sinks.s"),
        ({"sinks": {"s": {"type": "smtp", "host": "h", "sender": "a@b", "to": ["c@d"], "port": 70000}}},
         "sinks.s.smtp.port"),
        ({"sinks": {"s": {"type": "smtp", "host": "h", "sender": "nobody", "to": ["c@d"]}}}, "sinks.s.smtp.sender"),
        ({"sinks": {"s": {"type": "smtp", "host": "mail.example.com", "sender": "a@b", "to": ["c@d"],
                          "security": "none", "username": "u", "password_env": "PATH"}}}, "clear text"),
        ({"sinks": {"s": {"type": "command", "command": ["/no/such/program"]}}}, "command[0]"),
        ({"sinks": {"s": HOOK}, "routes": [{"name": "r", "sinks": ["t"]}]},
         "routes[0].sinks: unknown sink 't' (defined: s)"),
        ({"sinks": {"s": HOOK}, "routes": [{"name": "r", "sinks": ["s"], "min_severity": "LOUD"}]},
         "routes.0.min_severity"),
        ({"sinks": {"s": HOOK}, "routes": [{"name": "r", "sinks": ["s"], "kinds": ["nan"]}]}, "kinds[0]: unknown kind"),
        ({"sinks": {"s": {**HOOK, "timeout": 3}}}, "sinks.s.webhook.timeout"),
    ],
)  # fmt: skip
def test_bad_config_names_the_field(data, expected):
    assert expected in errors_of(data)


def test_settings_load_the_file_and_name_the_field(tmp_path):
    good = tmp_path / "alerts.json"
    good.write_text(json.dumps({"sinks": {"s": HOOK}, "routes": [{"name": "r", "sinks": ["s"]}]}))
    settings = ServiceSettings(alerts=f"@{good}")
    assert settings.alerts.routes[0].name == "r"
    assert ServiceSettings.model_validate_json(settings.model_dump_json()).alerts == settings.alerts
    bad = tmp_path / "bad.json"
    bad.write_text('{"sinks": {"s": {"type": "webhook",}}}')
    with pytest.raises(ValidationError, match=r"bad.json: invalid JSON at line 1"):
        ServiceSettings(alerts=f"@{bad}")
    toml = tmp_path / "alerts.toml"
    toml.write_text('[sinks.s]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\nretry = {attempts = 0}\n')
    with pytest.raises(ValidationError, match=r"alerts.sinks.s.webhook.retry.attempts"):
        ServiceSettings(alerts=f"@{toml}")


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    p = tmp_path / "alerts.yaml"
    p.write_text("sinks:\n  s: {type: webhook, url: 'http://127.0.0.1:9/x'}\nroutes:\n  - {name: r, sinks: [s]}\n")
    assert load_alerts_config(p).sinks["s"].type == "webhook"


# -- routing --------------------------------------------------------------------------------------


def route(**kw) -> MatchingRoute:
    from runwatch.service.alerts.config import Route

    return MatchingRoute(Route(name=kw.pop("name", "r"), sinks=["s"], **kw))


def test_route_filters_by_project_glob_kind_and_severity():
    r = route(projects=["nlp-*", "vision"], kinds=["loss_spike", "NONFINITE"], min_severity="warning")
    assert r.matches(anomaly(project="nlp-bert"))
    assert r.matches(anomaly(project="vision", kind=pb.ANOMALY_KIND_NONFINITE))
    assert not r.matches(anomaly(project="vision-2"))
    assert not r.matches(anomaly(project="nlp-x", kind=pb.ANOMALY_KIND_PLATEAU))
    assert not r.matches(anomaly(project="nlp-x", severity=pb.SEVERITY_INFO))
    assert route().matches(anomaly(project=""))  # the default project matches "*"


def test_one_notification_per_incident_then_escalations_and_resolution():
    r, ledger = route(), IncidentLedger()
    assert ledger.decide(r, anomaly(revision=1)) == ("opened", 0)
    assert ledger.decide(r, anomaly(revision=1)) is None  # redelivered
    assert ledger.decide(r, anomaly(revision=2)) is None  # rescored, not escalated
    assert ledger.decide(r, anomaly(revision=3, severity=pb.SEVERITY_ERROR)) == ("escalated", pb.SEVERITY_WARNING)
    assert ledger.decide(r, anomaly(revision=2)) is None  # an older revision arriving late
    resolved = anomaly(revision=4, severity=pb.SEVERITY_ERROR, state=pb.ANOMALY_STATE_RESOLVED)
    assert ledger.decide(r, resolved) == ("resolved", pb.SEVERITY_ERROR)
    assert ledger.decide(r, anomaly(id="other", revision=2, state=pb.ANOMALY_STATE_RESOLVED)) is None
    every = route(name="all", updates="all")
    assert ledger.decide(every, anomaly(revision=1)) == ("opened", 0)
    assert ledger.decide(every, anomaly(revision=2)) == ("updated", pb.SEVERITY_WARNING)
    quiet = route(name="quiet", updates="none")
    assert ledger.decide(quiet, anomaly(revision=1)) == ("opened", 0)
    assert ledger.decide(quiet, anomaly(revision=2, severity=pb.SEVERITY_CRITICAL)) is None


def test_ledger_is_bounded():
    r, ledger = route(), IncidentLedger(capacity=3)
    for i in range(10):
        ledger.decide(r, anomaly(id=f"i{i}"))
    assert len(ledger._seen) == 3


# -- messages -------------------------------------------------------------------------------------


def test_payload_shapes():
    a = anomaly(severity=pb.SEVERITY_CRITICAL, kind=pb.ANOMALY_KIND_NONFINITE)
    a.evidence.add(metric="loss", step=10, value=float("nan"))
    a.score = float("inf")
    n = Notification("crit", "escalated", a, pb.SEVERITY_WARNING, dashboard_url="http://dash:8080")
    body = to_json(n)
    json.dumps(body, allow_nan=False)  # strict JSON
    assert body["schema"] == "runwatch.alert/1" and body["action"] == "escalated"
    assert body["incident"]["kind"] == "NONFINITE" and body["incident"]["previous_severity"] == "WARNING"
    assert body["incident"]["evidence"] == [{"metric": "loss", "step": 10, "value": "NaN"}]
    assert body["incident"]["score"] == "Infinity" and body["url"] == "http://dash:8080/runs/r1"
    assert n.title == "[CRITICAL] NONFINITE in run r1 (project p) escalated from WARNING"
    slack = slack_payload(n)
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "section", "context"]
    assert "NONFINITE" in slack["blocks"][0]["text"]["text"] and slack["text"]
    mail = email_message(n, "runwatch@example.com", ["a@example.com", "b@example.com"])
    assert mail["To"] == "a@example.com, b@example.com" and "r1" in mail["Subject"]
    assert mail["In-Reply-To"] == "<runwatch-i1-crit@example.com>"
    assert "run:        r1" in mail.get_content()


def test_slack_messages_show_what_a_run_sent_as_text_never_as_markup():
    """A project, run id or log line holding Slack markup (``<!channel>``, a link with a hidden target) is escaped
    in every mrkdwn field; only the dashboard link is markup. Before, it reached Slack as written."""
    a = anomaly(project="<!channel> <https://evil.example|click>", severity=pb.SEVERITY_CRITICAL)
    a.explanation = "log line: ERROR <!here> CUDA out of memory & more " + "x" * 4000
    n = Notification("crit", "opened", a, 0, dashboard_url="http://dash:8080")
    slack = slack_payload(n)
    texts = [slack["text"], slack["blocks"][1]["text"]["text"], slack["blocks"][3]["elements"][0]["text"]]
    texts += [f["text"] for f in slack["blocks"][2]["fields"]]
    for t in texts:
        assert "<!" not in t and "<https://evil" not in t and len(t) <= 3000
        assert t.count("<") == t.count("<http://dash:8080/runs/r1|open in runwatch>")
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt;" in slack["text"]
    assert "&lt;!here&gt;" in slack["blocks"][1]["text"]["text"] and "&amp; more" in slack["text"]
    assert slack["text"].endswith("\n<http://dash:8080/runs/r1|open in runwatch>")


# -- dispatcher (fake sinks) -------------------------------------------------------------------


class Recorder(Sink):
    kind = "fake"

    def __init__(self, name, config, fail_first: int = 0, permanent: bool = False) -> None:
        super().__init__(name, config)
        self.got: list[Notification] = []
        self.tries = 0
        self.fail_first = fail_first
        self.permanent = permanent

    def deliver(self, n: Notification) -> None:
        self.tries += 1
        if self.tries <= self.fail_first:
            raise DeliveryError("boom", permanent=self.permanent)
        self.got.append(n)


def dispatcher(routes: list[dict], clock=None, **sink_kw) -> tuple[AlertDispatcher, Recorder]:
    fast = {**HOOK, "retry": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.02}}
    cfg = AlertsConfig.model_validate({"sinks": {"s": fast}, "routes": routes})
    kw = {"clock": clock} if clock else {}
    d = AlertDispatcher(cfg, AnomalyHub(), **kw)
    rec = Recorder("s", cfg.sinks["s"], **sink_kw)
    d.workers["s"].sink = rec
    return d, rec


async def _run(d: AlertDispatcher, anomalies: list[pb.Anomaly], settle: float = 0.2) -> None:
    d.start()
    for a in anomalies:
        d.hub.publish(a)
        await asyncio.sleep(0)
    await asyncio.sleep(settle)
    await d.stop()


def test_rate_limit_holds_back_then_summarises():
    now = [0.0]
    d, rec = dispatcher(
        [{"name": "r", "sinks": ["s"], "rate_limit": {"per_minute": 60, "burst": 2}}], clock=lambda: now[0]
    )

    async def main():
        d.start()
        for i in range(6):
            d.hub.publish(anomaly(id=f"i{i}", run_id=f"run{i}"))
        await asyncio.sleep(0.1)
        now[0] = 1.0  # one token back: the next tick sends the summary
        await asyncio.sleep(1.3)
        await d.stop()

    asyncio.run(main())
    actions = [n.action for n in rec.got]
    assert actions == ["opened", "opened", "suppressed"]
    summary = rec.got[-1].suppressed
    assert (
        summary.count == 4 and summary.kinds == {"LOSS_SPIKE": 4} and summary.runs == ["run2", "run3", "run4", "run5"]
    )
    assert d.stats.suppressed == 4 and d.stats.summaries == 1


def test_retries_then_delivers_or_counts_the_failure():
    d, rec = dispatcher([{"name": "r", "sinks": ["s"], "rate_limit": None}], fail_first=2)
    asyncio.run(_run(d, [anomaly()]))
    assert rec.tries == 3 and len(rec.got) == 1 and d.stats.retries == 2 and d.stats.delivered == 1

    d, rec = dispatcher([{"name": "r", "sinks": ["s"], "rate_limit": None}], fail_first=99)
    asyncio.run(_run(d, [anomaly()]))
    assert rec.tries == 3 and d.stats.failed == 1 and d.stats.delivered == 0

    d, rec = dispatcher([{"name": "r", "sinks": ["s"], "rate_limit": None}], fail_first=99, permanent=True)
    asyncio.run(_run(d, [anomaly()]))
    assert rec.tries == 1 and d.stats.failed == 1 and d.stats.retries == 0


@pytest.mark.parametrize(
    "module",
    ["config", "routing", "ratelimit", "message", "sinks", "dispatch"],
)
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"runwatch.service.alerts.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
