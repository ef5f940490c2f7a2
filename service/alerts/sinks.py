"""Where notifications go: a JSON webhook, a Slack incoming webhook, SMTP email, a command.

Each sink makes one delivery try with :meth:`Sink.deliver`, which blocks (the
dispatcher runs it on its own worker threads, never on the event loop) and
raises :class:`DeliveryError` when the try failed. ``permanent`` errors (the
receiver refused the message: a 4xx answer, a rejected recipient, a missing
program) are not retried; the others are, with the sink's
:class:`~runwatch.service.alerts.config.RetryPolicy`.

Only the standard library is used: ``urllib`` for HTTP, ``smtplib`` for email,
``subprocess`` for commands.

Examples
--------
>>> from runwatch.service.alerts.config import WebhookSinkConfig
>>> sink = make_sink("ops", WebhookSinkConfig(type="webhook", url="http://127.0.0.1:9/hook"))
>>> sink.describe()
"webhook 'ops' (127.0.0.1)"
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from runwatch.service.alerts.config import (
    CommandSinkConfig,
    SinkConfig,
    SlackSinkConfig,
    SmtpSinkConfig,
    WebhookSinkConfig,
)
from runwatch.service.alerts.message import Notification, email_message, slack_payload, to_json

_USER_AGENT = "runwatch-alerts/1"


class DeliveryError(Exception):
    """One failed try; ``permanent`` ones are not retried, ``retry_after`` (s) is the receiver's wish."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Sink:
    """Base: a name, its config, and one blocking :meth:`deliver`."""

    kind = "sink"

    def __init__(self, name: str, config) -> None:
        self.name = name
        self.config = config

    @property
    def retry(self):
        return self.config.retry

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"

    def deliver(self, n: Notification) -> None:
        raise NotImplementedError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would re-send a redirected POST as a GET without its body: report it instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to the policy's backoff


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    """POST ``body``; the response body on 2xx, else :class:`DeliveryError` (4xx but 408/429 are permanent)."""
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": _USER_AGENT, **headers},
    )  # fmt: skip
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.read(65536)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        transient = exc.code >= 500 or exc.code in (408, 429)
        what = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        if 300 <= exc.code < 400:
            what += " (a redirect: configure the final URL)"
        raise DeliveryError(what, permanent=not transient, retry_after=_retry_after(exc.headers.get("Retry-After")))
    except urllib.error.URLError as exc:
        raise DeliveryError(f"cannot reach the endpoint: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"connection failed: {exc}") from None


class WebhookSink(Sink):
    """POSTs :func:`~runwatch.service.alerts.message.to_json` to the URL."""

    kind = "webhook"
    config: WebhookSinkConfig

    def describe(self) -> str:
        # The URL may carry a secret (a token in its path): name only its host.
        return f"{self.kind} {self.name!r} ({urlsplit(self.config.target_url()).hostname})"

    def deliver(self, n: Notification) -> None:
        body = json.dumps(to_json(n), allow_nan=False).encode()
        post_json(self.config.target_url(), body, self.config.all_headers(), self.config.timeout_s)


class SlackSink(WebhookSink):
    """POSTs a Slack message (Block Kit, or text) to an incoming webhook."""

    kind = "slack"
    config: SlackSinkConfig

    def deliver(self, n: Notification) -> None:
        c = self.config
        payload = slack_payload(n, c.format, c.username, c.channel)
        post_json(c.target_url(), json.dumps(payload).encode(), {}, c.timeout_s)


class SmtpSink(Sink):
    """Sends a plain-text email through an SMTP server."""

    kind = "smtp"
    config: SmtpSinkConfig

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} ({self.config.host}:{self.config.port})"

    def deliver(self, n: Notification) -> None:
        c = self.config
        msg = email_message(n, c.sender, c.to, c.subject_prefix)
        try:
            if c.security == "ssl":
                client = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            with client:
                if c.security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if c.username:
                    client.login(c.username, c.password())
                refused = client.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"every recipient refused: {sorted(exc.recipients)}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            # 5xx: the server will not take it; 4xx: try later.
            raise DeliveryError(f"{exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"server lacks a needed extension: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP failed: {exc}") from None
        if refused:
            raise DeliveryError(f"some recipients refused: {sorted(refused)}", permanent=True)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class CommandSink(Sink):
    """Runs the command with the JSON payload on stdin; exit 0 = delivered, killed after ``timeout_s``."""

    kind = "command"
    config: CommandSinkConfig

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} ({os.path.basename(self.config.command[0])})"

    def deliver(self, n: Notification) -> None:
        c = self.config
        payload = json.dumps(to_json(n), allow_nan=False).encode()
        env = {**os.environ, **c.env, "RUNWATCH_ALERT_ACTION": n.action, "RUNWATCH_ALERT_ROUTE": n.route}
        if n.anomaly is not None:
            env["RUNWATCH_ALERT_RUN_ID"] = n.anomaly.run_id
        try:
            done = subprocess.run(
                c.command, check=False, input=payload, capture_output=True, timeout=c.timeout_s, env=env
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"still running after {c.timeout_s:g} s: killed") from None
        except OSError as exc:  # not found, not executable
            raise DeliveryError(f"cannot run {c.command[0]}: {exc.strerror}", permanent=True) from None
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            raise DeliveryError(f"exited with status {done.returncode}" + (f": {tail}" if tail else ""))


_SINKS: dict[str, type[Sink]] = {"webhook": WebhookSink, "slack": SlackSink, "smtp": SmtpSink, "command": CommandSink}


def make_sink(name: str, config: SinkConfig) -> Sink:
    """The sink a config describes."""
    return _SINKS[config.type](name, config)
