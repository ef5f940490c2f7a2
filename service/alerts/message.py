"""What a notification says, in each sink's shape: JSON, Slack blocks or text, email.

The JSON form (``schema: runwatch.alert/1``) is what the webhook posts and
what a command hook reads on its standard input::

    {"schema": "runwatch.alert/1", "action": "opened", "route": "critical",
     "title": "[CRITICAL] NONFINITE in run r1 (project p) opened",
     "incident": {"id": "...", "revision": 1, "state": "OPEN", "run_id": "r1", "project": "p",
                  "kind": "NONFINITE", "severity": "CRITICAL", "previous_severity": null, "step": 57,
                  "explanation": "...", "evidence": [{"metric": "loss", "step": 57, "value": "NaN"}], ...},
     "url": "http://dashboard/runs/r1"}

``action`` is ``opened``, ``escalated``, ``updated``, ``resolved``, or
``suppressed`` (a summary of what a route's rate limit held back; it has
``suppressed`` instead of ``incident``). Numbers that are not finite are
written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as protobuf's
JSON mapping does, so the payload is strict JSON.

Examples
--------
>>> from runwatch.v1 import anomaly_pb2 as pb
>>> a = pb.Anomaly(id="i1", run_id="r1", project="p", kind=pb.ANOMALY_KIND_NONFINITE, severity=pb.SEVERITY_CRITICAL,
...                step=57, revision=1, state=pb.ANOMALY_STATE_OPEN, explanation="loss is NaN at step 57")
>>> n = Notification(route="critical", action="opened", anomaly=a)
>>> n.title
'[CRITICAL] NONFINITE in run r1 (project p) opened'
>>> to_json(n)["incident"]["previous_severity"] is None
True
>>> slack_payload(n, "text")["text"].splitlines()[0]
':rotating_light: *[CRITICAL] NONFINITE in run r1 (project p) opened*'
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import quote

from runwatch.service.alerts.ratelimit import SuppressedTally
from runwatch.v1 import anomaly_pb2

SCHEMA = "runwatch.alert/1"
SUPPRESSED = "suppressed"
_EVIDENCE_POINTS = 20
_EMOJI = {1: ":information_source:", 2: ":warning:", 3: ":x:", 4: ":rotating_light:"}


def severity_name(value: int) -> str:
    return anomaly_pb2.Severity.Name(value).removeprefix("SEVERITY_") if value else ""


def kind_name(value: int) -> str:
    return anomaly_pb2.AnomalyKind.Name(value).removeprefix("ANOMALY_KIND_")


def _num(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one route: an incident's news, or a summary of suppressed ones."""

    route: str
    action: str
    anomaly: anomaly_pb2.Anomaly | None = None
    previous_severity: int = 0
    suppressed: SuppressedTally | None = None
    dashboard_url: str = ""
    created: float = 0.0

    @property
    def title(self) -> str:
        if self.anomaly is None:
            n = self.suppressed.count if self.suppressed else 0
            return f"{n} alert(s) on route {self.route} held back by its rate limit"
        a = self.anomaly
        what = f"[{severity_name(a.severity)}] {kind_name(a.kind)} in run {a.run_id} (project {a.project})"
        if self.action == "escalated":
            return f"{what} escalated from {severity_name(self.previous_severity)}"
        return f"{what} {self.action}"

    @property
    def url(self) -> str:
        if not self.dashboard_url:
            return ""
        if self.anomaly is None:
            return f"{self.dashboard_url}/anomalies"
        return f"{self.dashboard_url}/runs/{quote(self.anomaly.run_id, safe='')}"


def incident_json(a: anomaly_pb2.Anomaly, previous_severity: int = 0) -> dict:
    """An anomaly revision as the ``incident`` object of the JSON payload."""
    return {
        "id": a.id,
        "revision": a.revision,
        "state": anomaly_pb2.AnomalyState.Name(a.state).removeprefix("ANOMALY_STATE_"),
        "run_id": a.run_id,
        "project": a.project,
        "kind": kind_name(a.kind),
        "severity": severity_name(a.severity),
        "previous_severity": severity_name(previous_severity) or None,
        "score": _num(a.score),
        "step": a.step,
        "first_step": a.first_step,
        "last_step": a.last_step,
        "occurrences": a.occurrences,
        "metrics": list(a.metrics),
        "layer": a.layer,
        "explanation": a.explanation,
        "detector": a.detector,
        "detector_version": a.detector_version,
        "wall_time": a.wall_time,
        "detected_time": a.detected_time,
        "evidence": [
            {"metric": p.metric, "step": p.step, "value": _num(p.value)} for p in a.evidence[-_EVIDENCE_POINTS:]
        ],
        "log_lines": list(a.log_lines)[:_EVIDENCE_POINTS],
    }


def _tally_json(t: SuppressedTally) -> dict:
    return {
        "count": t.count,
        "kinds": dict(t.kinds.most_common()),
        "severities": dict(t.severities.most_common()),
        "projects": dict(t.projects.most_common()),
        "runs": list(t.runs),
        "seconds": round(t.until - t.since, 3),
    }


def to_json(n: Notification) -> dict:
    """The webhook / command-hook payload."""
    out: dict = {
        "schema": SCHEMA,
        "action": n.action,
        "route": n.route,
        "title": n.title,
        "time": n.created or time.time(),
    }
    if n.anomaly is not None:
        out["incident"] = incident_json(n.anomaly, n.previous_severity)
    if n.suppressed is not None:
        out["suppressed"] = _tally_json(n.suppressed)
    if n.url:
        out["url"] = n.url
    return out


def text_body(n: Notification) -> str:
    """Plain text: the email body and the Slack ``text`` fallback's detail."""
    lines = [n.title, ""]
    if n.anomaly is not None:
        a = n.anomaly
        lines += [
            a.explanation,
            "",
            f"run:        {a.run_id}",
            f"project:    {a.project}",
            f"kind:       {kind_name(a.kind)}",
            f"severity:   {severity_name(a.severity)}"
            + (f" (was {severity_name(n.previous_severity)})" if n.previous_severity else ""),
            f"step:       {a.step} (incident since step {a.first_step}, {a.occurrences} occurrence(s))",
            f"metrics:    {', '.join(a.metrics) or '-'}" + (f"  layer: {a.layer}" if a.layer else ""),
            f"detector:   {a.detector} {a.detector_version}".rstrip(),
            f"incident:   {a.id} revision {a.revision}",
        ]
        if a.evidence:
            tail = ", ".join(f"{p.metric}@{p.step}={p.value:.4g}" for p in a.evidence[-5:])
            lines.append(f"evidence:   {tail}")
    elif n.suppressed is not None:
        t = n.suppressed
        lines += [
            f"{t.count} notification(s) over {t.until - t.since:.0f} s were held back by the route's rate limit.",
            "kinds: " + ", ".join(f"{k} x{c}" for k, c in t.kinds.most_common()),
            "projects: " + ", ".join(f"{k} x{c}" for k, c in t.projects.most_common()),
            "runs (first 10): " + ", ".join(t.runs),
        ]
    if n.url:
        lines += ["", n.url]
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_text(text: str) -> str:
    """``text`` as literal Slack mrkdwn: ``&``, ``<`` and ``>`` escaped, as Slack asks of any text it should not read
    as a mention or a link (a project named ``<!channel>``, a log line quoting one, would otherwise ping everyone).

    >>> slack_text("loss <!channel> & <https://evil.example|click>")
    'loss &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_escaped(text: str, limit: int) -> str:
    """:func:`slack_text` of ``text`` within ``limit`` characters, never cutting an escape in two."""
    out = slack_text(text)
    if len(out) <= limit:
        return out
    out = out[: limit - 1]
    amp = out.rfind("&", max(0, len(out) - 5))
    if amp >= 0 and ";" not in out[amp:]:
        out = out[:amp]
    return out + "…"


def slack_payload(n: Notification, style: str = "blocks", username: str = "", channel: str = "") -> dict:
    """An incoming-webhook message: Block Kit with a ``text`` fallback, or text alone.

    Everything a run sent (its ids, project, explanation, the log lines quoted in it) is escaped (:func:`slack_text`);
    only the link to the dashboard is Slack markup.
    """
    emoji = _EMOJI.get(n.anomaly.severity if n.anomaly is not None else 2, ":warning:")
    detail = n.anomaly.explanation if n.anomaly is not None else text_body(n).split("\n", 2)[-1]
    link = f"\n<{n.url}|open in runwatch>" if n.url else ""
    text = f"{emoji} *{slack_text(n.title)}*\n" + _clip_escaped(detail, 3000 - len(link) - len(n.title) - 64) + link
    payload: dict = {"text": text}
    if username:
        payload["username"] = username
    if channel:
        payload["channel"] = channel
    if style == "text":
        return payload
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(n.title, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip_escaped(detail or n.title, 3000)}},
    ]
    if n.anomaly is not None:
        a = n.anomaly
        fields = [
            ("Run", a.run_id), ("Project", a.project), ("Kind", kind_name(a.kind)),
            ("Severity", severity_name(a.severity)), ("Step", str(a.step)), ("Metrics", ", ".join(a.metrics) or "-"),
        ]  # fmt: skip
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_clip_escaped(v, 1900)}"} for k, v in fields],
            }
        )
        context = _clip_escaped(f"{a.detector} · incident {a.id} rev {a.revision} · route {n.route}", 2000)
    else:
        context = _clip_escaped(f"route {n.route}", 2000)
    if n.url:
        context += f" · <{n.url}|open in runwatch>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    payload["blocks"] = blocks
    return payload


def email_message(n: Notification, sender: str, to: list[str], subject_prefix: str = "[runwatch]") -> EmailMessage:
    """A plain-text email; updates of one incident share a thread (``In-Reply-To`` its first message id)."""
    msg = EmailMessage()
    msg["Subject"] = f"{subject_prefix} {n.title}".strip()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=True)
    domain = sender.rsplit("@", 1)[-1]
    if n.anomaly is not None:
        route = re.sub(r"[^A-Za-z0-9_.-]", "-", n.route)
        thread = f"<runwatch-{n.anomaly.id}-{route}@{domain}>"
        if n.action == "opened":
            msg["Message-ID"] = thread
        else:
            msg["Message-ID"] = make_msgid("runwatch", domain)
            msg["In-Reply-To"] = thread
            msg["References"] = thread
    else:
        msg["Message-ID"] = make_msgid("runwatch", domain)
    msg.set_content(text_body(n))
    return msg
