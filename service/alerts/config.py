"""The typed alerts configuration (``runwatch serve --alerts-config FILE``): sinks and routes.

A file in JSON, TOML or YAML (by its suffix; YAML needs PyYAML) holds named
*sinks* (where a notification goes) and *routes* (which anomalies go to which
sinks, how often)::

    {
      "dashboard_url": "http://runwatch.example.com:8080",
      "sinks": {
        "ops-hook": {"type": "webhook", "url_env": "OPS_WEBHOOK_URL"},
        "slack": {"type": "slack", "url_env": "SLACK_WEBHOOK_URL"},
        "mail": {"type": "smtp", "host": "smtp.example.com", "username": "runwatch",
                 "password_env": "SMTP_PASSWORD", "sender": "runwatch@example.com",
                 "to": ["ml-oncall@example.com"]},
        "pager": {"type": "command", "command": ["/usr/local/bin/page-oncall"], "timeout_s": 5}
      },
      "routes": [
        {"name": "critical", "min_severity": "CRITICAL", "sinks": ["slack", "mail", "pager"]},
        {"name": "nlp", "projects": ["nlp-*"], "kinds": ["loss_spike", "divergence_predicted"],
         "min_severity": "WARNING", "sinks": ["ops-hook"], "rate_limit": {"per_minute": 6, "burst": 3}}
      ]
    }

Secrets stay out of the file: every URL, header value and password can be
named by an environment variable (``url_env``, ``headers_env``,
``password_env``) instead. They are read when the file is loaded, so a missing
variable stops the start with an error naming the field; the dumped config
keeps the variable's name, never its value.

Examples
--------
>>> cfg = AlertsConfig.model_validate({
...     "sinks": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9000/alerts"}},
...     "routes": [{"name": "all", "sinks": ["hook"]}]})
>>> cfg.routes[0].min_severity, cfg.sinks["hook"].retry.attempts
('WARNING', 4)
>>> AlertsConfig.model_validate_json(cfg.model_dump_json()) == cfg
True
>>> AlertsConfig.model_validate({"sinks": {}, "routes": [{"name": "r", "sinks": ["nope"]}]})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertsConfig
  Value error, routes[0].sinks: unknown sink 'nope' (defined: none) ...
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runwatch.v1 import anomaly_pb2

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
# A protobuf enum wrapper is not iterable: .keys() is its only listing.
KINDS = tuple(
    n.removeprefix("ANOMALY_KIND_")
    for n in anomaly_pb2.AnomalyKind.keys()  # noqa: SIM118
    if not n.endswith("UNSPECIFIED")
)
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def _env(name: str, field: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"{field}: environment variable {name} is not set (or empty)")
    return value


def _check_url(url: str, field: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value may be a secret: say what is wrong with it, never what it is.
        raise ValueError(f"{field}: expected an http:// or https:// URL with a host")


class RetryPolicy(BaseModel):
    """How often a failed delivery is tried again: waits ``backoff_s``, doubling up to ``max_backoff_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=4, ge=1, le=20, description="tries in all, the first included")
    backoff_s: float = Field(default=1.0, gt=0, le=3600, description="wait before the second try")
    max_backoff_s: float = Field(default=60.0, gt=0, le=3600, description="longest wait between tries")

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based), before jitter.

        >>> [RetryPolicy(backoff_s=1, max_backoff_s=5).wait(i) for i in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
        """
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


class _SinkBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(default=10.0, gt=0, le=300, description="one try's time limit")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class _UrlSink(_SinkBase):
    url: str = Field(default="", description="the endpoint (a secret for Slack: prefer url_env)")
    url_env: str = Field(default="", description="environment variable holding the URL")

    @model_validator(mode="after")
    def _one_url(self):
        if bool(self.url) == bool(self.url_env):
            raise ValueError("url: give exactly one of url and url_env")
        _check_url(self.target_url(), "url_env" if self.url_env else "url")
        return self

    def target_url(self) -> str:
        """The URL, read from ``url_env`` when set."""
        return _env(self.url_env, "url_env") if self.url_env else self.url


class WebhookSinkConfig(_UrlSink):
    """POST of the alert as JSON (schema ``runwatch.alert/1``) to any HTTP endpoint."""

    type: Literal["webhook"]
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> environment variable with its value (e.g. a bearer token)"
    )

    @model_validator(mode="after")
    def _headers_present(self):
        for header, var in self.headers_env.items():
            _env(var, f"headers_env.{header}")
        return self

    def all_headers(self) -> dict[str, str]:
        return {**self.headers, **{h: _env(v, f"headers_env.{h}") for h, v in self.headers_env.items()}}


class SlackSinkConfig(_UrlSink):
    """A Slack (or Mattermost, Rocket.Chat...) incoming webhook."""

    type: Literal["slack"]
    format: Literal["blocks", "text"] = Field(default="blocks", description="Block Kit message or plain text")
    username: str = Field(default="", description="display name override, where the webhook allows it")
    channel: str = Field(default="", description="channel override, where the webhook allows it")


class SmtpSinkConfig(_SinkBase):
    """Email over SMTP (stdlib ``smtplib``, run off the event loop)."""

    type: Literal["smtp"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="STARTTLS upgrade, implicit TLS (port 465), or none (loopback relays only)"
    )
    username: str = ""
    password_env: str = Field(default="", description="environment variable holding the password")
    sender: str = Field(min_length=3, description="the From address")
    to: list[str] = Field(min_length=1, description="recipients")
    subject_prefix: str = "[runwatch]"

    @field_validator("sender")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for i, v in enumerate(value):
            if "@" not in v:
                raise ValueError(f"to[{i}]: not an email address: {v!r}")
        return value

    @model_validator(mode="after")
    def _credentials(self):
        if bool(self.username) != bool(self.password_env):
            raise ValueError("password_env: username and password_env go together")
        if self.password_env:
            _env(self.password_env, "password_env")
            if self.security == "none" and not self.host.startswith(_LOOPBACK):
                raise ValueError(
                    f"security: 'none' would send the password to {self.host} in clear text; use starttls or ssl"
                )
        return self

    def password(self) -> str:
        return _env(self.password_env, "password_env") if self.password_env else ""


class CommandSinkConfig(_SinkBase):
    """Runs a program (no shell) with the alert JSON on its standard input; exit status 0 = delivered."""

    type: Literal["command"]
    command: list[str] = Field(min_length=1, description="argv: the program and its arguments")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")

    @field_validator("command")
    @classmethod
    def _found(cls, argv: list[str]) -> list[str]:
        if shutil.which(argv[0]) is None:
            raise ValueError(f"command[0]: {argv[0]!r} is not an executable file or on PATH")
        return argv


SinkConfig = Annotated[
    WebhookSinkConfig | SlackSinkConfig | SmtpSinkConfig | CommandSinkConfig, Field(discriminator="type")
]


class RateLimit(BaseModel):
    """A token bucket per route: ``burst`` at once, refilled at ``per_minute``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_minute: float = Field(default=10.0, gt=0, le=60_000)
    burst: int = Field(default=5, ge=1, le=10_000)


class Route(BaseModel):
    """Which anomalies go to which sinks.

    ``projects`` are shell-style globs (``nlp-*``); ``kinds`` are anomaly kinds
    without the ``ANOMALY_KIND_`` prefix, any case (empty = every kind).
    ``updates``: which later revisions of a notified incident are sent —
    ``escalations`` (severity rose, or resolved), ``all``, or ``none``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    projects: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    min_severity: str = "WARNING"
    kinds: list[str] = Field(default_factory=list)
    sinks: list[str] = Field(min_length=1)
    updates: Literal["escalations", "all", "none"] = "escalations"
    rate_limit: RateLimit | None = Field(default_factory=RateLimit, description="null = unlimited")

    @field_validator("min_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        name = value.upper().removeprefix("SEVERITY_")
        if name not in SEVERITIES:
            raise ValueError(f"unknown severity {value!r}; use {', '.join(SEVERITIES)}")
        return name

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, values: list[str]) -> list[str]:
        out = []
        for i, value in enumerate(values):
            name = value.upper().removeprefix("ANOMALY_KIND_")
            if name not in KINDS:
                raise ValueError(f"kinds[{i}]: unknown kind {value!r}; known: {', '.join(KINDS)}")
            out.append(name)
        return out


class AlertsConfig(BaseModel):
    """Sinks by name, and the routes that use them (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    queue_size: int = Field(
        default=1000, ge=1, le=1_000_000, description="notifications waiting per sink; beyond, new ones are dropped"
    )
    dashboard_url: str = Field(default="", description="base URL of the dashboard, for links in the alerts")

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard(cls, value: str) -> str:
        if value:
            _check_url(value, "dashboard_url")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _routes_use_known_sinks(self):
        defined = ", ".join(sorted(self.sinks)) or "none"
        names: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.name in names:
                raise ValueError(f"routes[{i}].name: {route.name!r} is used by an earlier route")
            names.add(route.name)
            for sink in route.sinks:
                if sink not in self.sinks:
                    raise ValueError(f"routes[{i}].sinks: unknown sink {sink!r} (defined: {defined})")
        return self


def read_config_file(path: Path) -> dict:
    """The raw content of an alerts file (JSON, TOML, or YAML by suffix), not yet validated.

    Raises ValueError naming the file and, where the parser says, the line.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read alerts config {path}: {exc.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _yaml(text, path)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        # A ValueError, not a TypeError: pydantic reports only the former as the field's error.
        raise ValueError(f"{path}: expected an object with 'sinks' and 'routes'")  # noqa: TRY004
    return data


def _yaml(text: str, path: Path) -> object:
    try:
        import yaml
    except ImportError:
        raise ValueError(f"{path}: YAML needs PyYAML (pip install pyyaml), or write the file as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from None


def load_alerts_config(path: Path) -> AlertsConfig:
    """Read and validate an alerts file.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "alerts.toml"
    >>> _ = p.write_text('[sinks.hook]\\ntype = "webhook"\\nurl = "http://127.0.0.1:9/x"\\n'
    ...                  '[[routes]]\\nname = "all"\\nsinks = ["hook"]\\n')
    >>> load_alerts_config(p).routes[0].sinks
    ['hook']
    """
    return AlertsConfig.model_validate(read_config_file(path))
