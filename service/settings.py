"""Service settings: typed, JSON round-trippable, with RUNWATCH_* environment fallbacks."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runwatch.models.registry import SuiteConfig
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
    diagnostics: SuiteConfig = Field(default_factory=SuiteConfig, description="which diagnostics run, with settings")
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="Kafka transport (RUNWATCH_KAFKA_* variables); off by default"
    )
    advisor_history: Path | None = Field(
        default=None,
        description="JSON file of past runs added to every project's advisor history "
        "(runwatch.nas-history/1, e.g. from `python -m bench.export_history`)",
    )

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

    @field_validator("advisor_history")
    @classmethod
    def _check_advisor_history(cls, value: Path | None) -> Path | None:
        # Its content is read (and checked entry by entry) once, when the server is built.
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runwatch.db"
