"""Alert channels end to end: a real server, the real SDK, and real receivers on loopback.

The webhook and Slack receivers are ``http.server`` servers; email goes to an
``aiosmtpd`` SMTP server (dev extra); the command hook is a real process.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest

from runwatch.client import RunwatchClient
from runwatch.service.alerts import AlertsConfig
from runwatch.service.demo_training import HYPERPARAMETERS, build_model, diverging
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

FAST_RETRY = {"attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP server on loopback that records every POSTed JSON body (and can fail the first ones)."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.requests = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(status)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def smtp_server():
    """An aiosmtpd server on loopback collecting the messages it receives."""
    from aiosmtpd.controller import Controller

    class Collect:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], bytes]] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 Message accepted for delivery"

    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def wait_until(check, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def nan_batch(run_id: str, project: str = "alerts", nan_at: int = 3, steps: int = 6) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project)
    for i in range(steps):
        b.events.add(run_id=run_id, step=i).metrics["loss"] = math.nan if i >= nan_at else 1.0
    return b


def metric_value(srv, name: str, **labels) -> float:
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_diverging_run_alerts_webhook_slack_and_email(start_server, receiver, smtp_server):
    hook, slack = receiver(), receiver()
    controller, mail = smtp_server
    config = AlertsConfig.model_validate({
        "dashboard_url": "http://127.0.0.1:8080",
        "sinks": {
            "hook": {"type": "webhook", "url": hook.url, "headers": {"X-Team": "ml"}, "retry": FAST_RETRY},
            "slack": {"type": "slack", "url": slack.url, "retry": FAST_RETRY},
            "mail": {"type": "smtp", "host": "127.0.0.1", "port": controller.port, "security": "none",
                     "sender": "runwatch@example.com", "to": ["oncall@example.com"], "retry": FAST_RETRY},
        },
        "routes": [
            {"name": "everything", "min_severity": "INFO", "sinks": ["hook"], "rate_limit": None},
            {"name": "broken", "kinds": ["nonfinite"], "min_severity": "CRITICAL", "sinks": ["slack", "mail"]},
        ],
    })  # fmt: skip
    srv, stubs = start_server(alerts=config)
    client = RunwatchClient(srv.target, flush_on_exit=False)
    try:
        run = client.start_run(
            project="alerts-demo", hyperparameters=HYPERPARAMETERS["diverging"], model=build_model("diverging")
        )
        summary = diverging(lambda step, metrics: run.log(metrics, step=step), seed=0)
        assert run.finish("failed", reason="loss became non-finite", timeout=20)
    finally:
        client.close(timeout=2)
    stored = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run.run_id), timeout=30).anomalies
    kinds = {anomaly_pb2.AnomalyKind.Name(a.kind).removeprefix("ANOMALY_KIND_") for a in stored}
    assert "NONFINITE" in kinds, kinds

    # The webhook: one "opened" per incident, later news only as escalations.
    assert wait_until(lambda: len({b["incident"]["id"] for b in hook.bodies}) >= len(stored)), hook.bodies
    time.sleep(0.3)  # nothing more should arrive
    by_incident: dict[str, list[dict]] = {}
    for body in hook.bodies:
        assert body["schema"] == "runwatch.alert/1" and body["route"] == "everything"
        by_incident.setdefault(body["incident"]["id"], []).append(body)
    assert set(by_incident) == {a.id for a in stored}
    order = ["INFO", "WARNING", "ERROR", "CRITICAL"]
    for bodies in by_incident.values():
        assert bodies[0]["action"] == "opened"
        assert all(b["action"] == "escalated" for b in bodies[1:]), bodies
        severities = [order.index(b["incident"]["severity"]) for b in bodies]
        assert severities == sorted(set(severities))  # each update is a real escalation
        revisions = [b["incident"]["revision"] for b in bodies]
        assert revisions == sorted(set(revisions))
    nonfinite = next(b for bs in by_incident.values() for b in bs if b["incident"]["kind"] == "NONFINITE")
    assert nonfinite["incident"]["run_id"] == run.run_id and nonfinite["incident"]["project"] == "alerts-demo"
    assert nonfinite["incident"]["step"] <= summary["first_nonfinite_step"]
    assert nonfinite["url"] == f"http://127.0.0.1:8080/runs/{run.run_id}"
    assert hook.headers[0]["X-Team"] == "ml" and hook.headers[0]["Content-Type"].startswith("application/json")

    # Slack: one Block Kit message per critical NONFINITE incident (a run's non-finite metrics are one incident).
    critical = [a for a in stored if a.kind == anomaly_pb2.ANOMALY_KIND_NONFINITE]
    assert len(critical) == 1 and critical[0].severity == anomaly_pb2.SEVERITY_CRITICAL
    assert wait_until(lambda: len(slack.bodies) >= len(critical))
    time.sleep(0.2)
    assert len(slack.bodies) == len(critical)
    msg = slack.bodies[0]
    assert "NONFINITE" in msg["text"] and run.run_id in msg["text"]
    assert msg["blocks"][0]["type"] == "header" and "NONFINITE" in msg["blocks"][0]["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in msg["blocks"][2]["fields"]}
    assert fields["*Run*"] == run.run_id and fields["*Severity*"] == "CRITICAL"

    # Email: one message per incident, naming the run and the kind.
    assert wait_until(lambda: len(mail.messages) >= len(critical))
    sender, recipients, content = mail.messages[0]
    text = content.decode()
    assert sender == "runwatch@example.com" and recipients == ["oncall@example.com"]
    assert run.run_id in text and "NONFINITE" in text and "Subject: [runwatch] [CRITICAL] NONFINITE" in text
    assert len(mail.messages) == len(critical)

    assert metric_value(srv, "runwatch_alert_deliveries_total", sink="hook") == len(hook.bodies)
    assert metric_value(srv, "runwatch_alert_deliveries_total", sink="mail") == len(critical)
    stats = srv.server.alerts.stats
    assert stats.failed == stats.dropped == stats.hub_dropped == 0
    print(f"incidents {len(stored)}, webhook notifications {len(hook.bodies)}, critical {len(critical)}; {stats}")


def test_failing_sink_is_retried_counted_and_never_delays_acks(start_server, receiver, caplog):
    flaky = receiver(fail_first=2)  # 503 twice, then fine
    dead_port = free_port()  # nothing listens: connection refused
    blackhole = socket.socket()  # accepts connections, never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    config = AlertsConfig.model_validate({
        "queue_size": 3,
        "sinks": {
            "flaky": {"type": "webhook", "url": flaky.url, "retry": FAST_RETRY},
            "down": {"type": "webhook", "url": f"http://127.0.0.1:{dead_port}/hook", "retry": FAST_RETRY},
            "stuck": {"type": "slack", "url": f"http://127.0.0.1:{blackhole.getsockname()[1]}/hook", "timeout_s": 3,
                      "retry": {"attempts": 1}},
        },
        "routes": [
            {"name": "flaky", "sinks": ["flaky"], "rate_limit": None},
            {"name": "down", "sinks": ["down"], "rate_limit": None, "projects": ["down"]},
            {"name": "stuck", "sinks": ["stuck"], "rate_limit": None, "projects": ["stuck"]},
        ],
    })  # fmt: skip
    srv, stubs = start_server(alerts=config)
    try:
        stubs.ingest.Ingest(nan_batch("flaky-1"), timeout=10)
        assert wait_until(lambda: len(flaky.bodies) == 1)
        assert flaky.requests == 3 and srv.server.alerts.stats.retries >= 2

        # While "stuck" hangs on its first delivery and "down" retries, ingest goes on at full speed.
        acks = []
        for i in range(12):
            project = "down" if i < 2 else "stuck"
            t0 = time.perf_counter()
            ack = stubs.ingest.Ingest(nan_batch(f"slow-{i}", project=project), timeout=10)
            acks.append(time.perf_counter() - t0)
            assert ack.accepted == 7
        assert max(acks) < 0.5, acks

        stats = srv.server.alerts.stats
        assert wait_until(lambda: metric_value(srv, "runwatch_alert_failures_total", sink="down") == 2)
        assert stats.retries >= 2 + 2 * 2  # flaky's two, then two more per undeliverable alert
        # "stuck" holds one in flight and three queued; the other six are dropped and counted at once.
        assert metric_value(srv, "runwatch_alert_failures_total", sink="stuck") >= 6
        assert stats.dropped >= 6
        assert any("queue is full" in r.getMessage() for r in caplog.records)
        assert any("after 3 tries" in r.getMessage() for r in caplog.records)
        assert b"runwatch_alert_failures_total" in generate_latest(srv.server.metrics.registry)
    finally:
        blackhole.close()


def test_command_hook_gets_the_alert_on_stdin(start_server, tmp_path):
    out = tmp_path / "alerts.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, os, sys\n"
        "alert = json.load(sys.stdin)\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'alert': alert, 'action': os.environ['RUNWATCH_ALERT_ACTION']}) + '\\n')\n"
    )
    config = AlertsConfig.model_validate({
        "sinks": {"cmd": {"type": "command", "command": [sys.executable, str(hook)], "timeout_s": 10}},
        "routes": [{"name": "all", "sinks": ["cmd"]}],
    })  # fmt: skip
    _, stubs = start_server(alerts=config)
    stubs.ingest.Ingest(nan_batch("cmd-1"), timeout=10)
    assert wait_until(lambda: out.exists() and out.read_text().count("\n") >= 1)
    record = json.loads(out.read_text().splitlines()[0])
    assert record["action"] == "opened" and record["alert"]["incident"]["run_id"] == "cmd-1"


def test_bad_alerts_config_stops_serve_with_the_field_named(tmp_path):
    bad = tmp_path / "alerts.json"
    bad.write_text(json.dumps({
        "sinks": {"pager": {"type": "slack", "url_env": "RUNWATCH_TEST_NO_SUCH_VARIABLE"}},
        "routes": [{"name": "all", "sinks": ["pager"]}],
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RUNWATCH_TEST_NO_SUCH_VARIABLE"}
    cmd = [sys.executable, "-m", "runwatch.service.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")]
    done = subprocess.run(
        [*cmd, "--alerts-config", str(bad)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode != 0
    assert (
        "alerts.sinks.pager" in done.stderr
        and "url_env: environment variable RUNWATCH_TEST_NO_SUCH_VARIABLE" in done.stderr
    )

    bad.write_text(json.dumps({"sinks": {}, "routes": [{"name": "all", "sinks": ["nowhere"]}]}))
    env["RUNWATCH_ALERTS_CONFIG"] = str(bad)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode != 0 and "routes[0].sinks: unknown sink 'nowhere'" in done.stderr
