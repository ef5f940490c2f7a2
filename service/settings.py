"""Service settings: typed, JSON round-trippable, with RUNWATCH_* environment fallbacks."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runwatch.models.registry import SuiteConfig
from runwatch.models.text.monitor import TextMonitorConfig
from runwatch.service.alerts.config import AlertsConfig, read_config_file
from runwatch.service.kafka.config import KafkaSettings


class ServiceSettings(BaseSettings):
    """Everything ``runwatch serve`` can be told.

    Each field can be set by the environment variable ``RUNWATCH_<FIELD>``
    (e.g. ``RUNWATCH_PORT=6000``); CLI flags win over the environment.

    Examples
    --------
    >>> s = ServiceSettings(port=6000)
    >>> ServiceSettings.model_validate_json(s.model_dump_json()).port
    6000
    """

    model_config = SettingsConfigDict(env_prefix="RUNWATCH_", extra="forbid", validate_assignment=True)

    host: str = Field(default="127.0.0.1", description="address the gRPC server binds")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = pick a free one)")
    data_dir: Path = Field(default=Path("runwatch-data"), description="folder holding runwatch.db")
    store: str | None = Field(
        default=None,
        description="where runs, events, logs and anomalies are kept: unset = the SQLite file runwatch.db in data_dir; "
        "a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL = a PostgreSQL database several instances share "
        "(the postgresql extra; see docs/deployment.md)",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    auto_create_runs: bool = Field(
        default=False, description="accept events for runs without a RunStart by opening them implicitly"
    )
    allow_unknown_fields: bool = Field(
        default=False, description="accept items carrying fields this server does not know (else reject them)"
    )
    max_batch_bytes: int = Field(default=8 << 20, ge=1024, description="largest accepted EventBatch in bytes")
    max_metrics_per_event: int = Field(default=4096, ge=1, description="most metrics one MetricEvent may carry")
    stall_check_seconds: float = Field(default=5.0, gt=0, description="how often time-based checks run")
    text_hold_s: float = Field(
        default=10.0, gt=0,
        description="seconds a run's text may be quiet before the progress bar it ended on is read as final: its "
        "values (a loss that became nan on the last line a hung or killed job printed) are analysed then, not only "
        "at the run's RunEnd, which a log shipper never sends. Checked every stall_check_seconds",
    )
    detection_hold_s: float = Field(
        default=0.1, ge=0,
        description="under load (groups of several batches), how long a run's events of one group may wait for the "
        "next group's, so that the run is detected once for both: a detection call costs about as much for one "
        "event as for fifty, and one-event batches otherwise pay it per event. Only events that pass the screen "
        "(detection_hold_margin) wait: a spike or a NaN is detected at once. Batches are still acknowledged after "
        "their group's commit; only anomalies of the slow kinds (plateaus, drifts) may come up to this much later. "
        "0 = off (docs/benchmarks.md)",
    )
    detection_hold_margin: float = Field(
        default=0.5, ge=0,
        description="with detection_hold_s: a run's events are held only while every value stays finite and within "
        "the range of the values its last detection call saw, widened by max(that range, this fraction of their "
        "magnitude); a spike, a NaN or a metric set not seen then is detected at once (service/hold_screen.py)",
    )
    detection_hold_events: int = Field(
        default=32, ge=1,
        description="a run with this many events waiting is detected at once, however recent (see detection_hold_s)",
    )
    diagnostics: SuiteConfig = Field(default_factory=SuiteConfig, description="which diagnostics run, with settings")
    text: TextMonitorConfig = Field(
        default_factory=TextMonitorConfig,
        description="how runs' text log lines are analysed (templates, metrics from text, signatures, sequence model)",
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="Kafka transport (RUNWATCH_KAFKA_* variables); off by default"
    )
    advisor_history: Path | None = Field(
        default=None,
        description="JSON file of past runs added to every project's advisor history "
        "(runwatch.nas-history/1, e.g. from `python -m bench.export_history`)",
    )

    tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain the gRPC server presents; with tls_key, TLS is on"
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert (unencrypted)")
    tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)",
    )
    auth_tokens: Path | None = Field(
        default=None,
        description="token file (`runwatch tokens create`); when set, every call but health checks needs a token "
        "with the method's scope and the data's project; re-read when it changes or on SIGHUP",
    )
    allow_insecure: bool = Field(
        default=False,
        description="allow binding a non-loopback host without TLS and authentication (tokens or client certificates)",
    )
    http_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="HTTP port of the dashboard and Prometheus /metrics (None = off, 0 = any free port)",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="address the dashboard binds; a non-loopback one follows the same TLS and authentication rule as host",
    )

    # -- limits (docs/limits.md): memory per run is bounded, these bound the number of things --
    idle_evict_s: float = Field(
        default=600.0, gt=0,
        description="seconds a running run may send nothing before its detector state is checkpointed to the store "
        "and dropped from memory; its next item restores it (alerts are as if it never left). A stall still fires: "
        "an evicted run is restored for the moment its stall timeout passes",
    )
    max_active_runs: int = Field(
        default=10_000, ge=1,
        description="runs held in memory at most (about 165 KiB each with every diagnostic on); beyond it the least "
        "recently active ones are evicted as after idle_evict_s",
    )
    max_active_runs_per_project: int = Field(
        default=5_000, ge=1,
        description="runs of one project held in memory at most; a batch opening a new run beyond it is refused "
        "with RESOURCE_EXHAUSTED (the SDK re-sends it later). Evicted idle runs do not count. Not applied to "
        "Kafka ingest, where a refusal could only be dead-lettered",
    )
    max_streams: int = Field(
        default=512, ge=1, description="StreamEvents streams open at once on this server; more: RESOURCE_EXHAUSTED"
    )
    max_streams_per_peer: int = Field(
        default=128, ge=1,
        description="StreamEvents streams open at once from one client connection (gRPC peer address and port; "
        "the RunwatchClients of one process share one connection)",
    )
    max_watchers: int = Field(
        default=256, ge=1, description="WatchAnomalies streams open at once on this server; more: RESOURCE_EXHAUSTED"
    )
    max_watchers_per_peer: int = Field(
        default=64, ge=1,
        description="WatchAnomalies streams open at once from one client connection (gRPC peer address and port); "
        "more: RESOURCE_EXHAUSTED. One watch with a project filter covers many runs",
    )
    max_unary_calls: int = Field(
        default=256, ge=1,
        description="unary calls (Ingest, queries, Suggest, health) in progress at once, beyond the open streams and "
        "watchers; gRPC refuses more with RESOURCE_EXHAUSTED before reading them (the SDK re-sends), which bounds "
        "the memory that concurrent max_batch_bytes batches can take",
    )
    shutdown_grace_s: float = Field(
        default=30.0, gt=0,
        description="on SIGTERM/SIGINT: seconds to finish in-flight batches, commit the store (with Kafka: deliver "
        "and commit the cycle in hand) and exit, even if the broker is gone",
    )

    alerts: AlertsConfig | None = Field(
        default=None,
        description="alert channels and routes (--alerts-config FILE, JSON/TOML/YAML; see deploy/alerts.example.json)",
    )

    @field_validator("alerts", mode="before")
    @classmethod
    def _load_alerts_file(cls, value: object) -> object:
        # "@path" (from --alerts-config) names the file; its content is validated as the field.
        if isinstance(value, (str, Path)) and str(value).startswith("@"):
            return read_config_file(Path(str(value)[1:]))
        return value

    @field_validator("diagnostics", mode="before")
    @classmethod
    def _load_diagnostics_file(cls, value: object) -> object:
        # A path (from --diagnostics-config or RUNWATCH_DIAGNOSTICS=@file.json) names a JSON file.
        if isinstance(value, (str, Path)) and str(value).startswith("@"):
            path = Path(str(value)[1:])
            try:
                return SuiteConfig.model_validate_json(path.read_text())
            except OSError as exc:
                raise ValueError(f"cannot read diagnostics config {path}: {exc.strerror}") from exc
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str | None) -> str | None:
        from runwatch.service.store_location import check_store_url

        return check_store_url(value) if value else None

    @field_validator("advisor_history")
    @classmethod
    def _check_advisor_history(cls, value: Path | None) -> Path | None:
        # Its content is read (and checked entry by entry) once, when the server is built.
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("tls_cert", "tls_key", "tls_client_ca", "auth_tokens")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            hint = "; create it with `runwatch tokens create --file ...`" if value.suffix == ".json" else ""
            raise ValueError(f"no such file: {value}{hint}")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> ServiceSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            raise ValueError(f"{missing}: needed with {given} (TLS takes a certificate and its key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: needs tls_cert and tls_key (client certificates are checked over TLS)")
        if self.exposure_problem and not self.allow_insecure:
            raise ValueError(
                f"host: {self.host!r} is not a loopback address, and the server would run {self.exposure_problem}: "
                "whoever reaches it could read and write every project's runs. Set tls_cert and tls_key "
                "(--tls-cert/--tls-key) with auth_tokens (--auth-tokens) or tls_client_ca (--tls-client-ca); "
                "or set allow_insecure (--allow-insecure, RUNWATCH_ALLOW_INSECURE=true) to run so anyway"
            )
        return self

    @model_validator(mode="after")
    def _check_http_security(self) -> ServiceSettings:
        if self.http_exposure_problem and not self.allow_insecure:
            raise ValueError(
                f"http_host: {self.http_host!r} is not a loopback address, and the dashboard would run "
                f"{self.http_exposure_problem}: whoever reaches it could read every project's runs. Set tls_cert and "
                "tls_key with auth_tokens or tls_client_ca (the dashboard uses the same ones as gRPC); or keep "
                "http_host on loopback; or set allow_insecure (--allow-insecure) to run so anyway"
            )
        return self

    @property
    def http_exposure_problem(self) -> str:
        """As :attr:`exposure_problem`, for the dashboard's ``http_host`` ("" when the dashboard is off)."""
        if self.http_port is None:
            return ""
        return self.model_copy(update={"host": self.http_host}).exposure_problem

    @property
    def exposure_problem(self) -> str:
        """What a non-loopback bind lacks ("without TLS", ...); "" when it is loopback or secured."""
        from runwatch.service.tls import is_loopback

        if is_loopback(self.host):
            return ""
        missing = []
        if self.tls_cert is None:
            missing.append("TLS")
        if self.auth_tokens is None and self.tls_client_ca is None:
            missing.append("authentication")
        return "without " + " and without ".join(missing) if missing else ""

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runwatch.db"

    @property
    def store_location(self) -> Path | str:
        """What :class:`~runwatch.service.store.RunStore` opens: ``store`` when set, else :attr:`db_path`.

        >>> ServiceSettings(data_dir="d").store_location
        PosixPath('d/runwatch.db')
        >>> ServiceSettings(store="postgresql://rw@db/runwatch").store_location
        'postgresql://rw@db/runwatch'
        """
        return self.store or self.db_path
