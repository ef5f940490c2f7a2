"""Base classes for streaming diagnostics.

A diagnostic watches one run. The pipeline creates one instance per run and,
the first time a run reports a metric name, asks every diagnostic for a
*handler* of that name. Handlers are plain callables ``(step, wall_time,
value) -> Finding | None`` so the hot path is a dict lookup and a call.

Diagnostics only score; whether a finding becomes an alert, and how repeated
findings merge into one incident, is the alert policy's job
(:mod:`runwatch.models.alerting`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from runwatch.models.findings import Finding

MetricHandler = Callable[[int, float, float], "Finding | None"]
"""Consumes one value: ``handler(step, wall_time, value)``."""


class DiagnosticConfig(BaseModel):
    """Typed, immutable configuration that round-trips through JSON.

    Examples
    --------
    >>> class MyConfig(DiagnosticConfig):
    ...     window: int = 10
    >>> MyConfig.from_json(MyConfig(window=5).to_json()).window
    5
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> "DiagnosticConfig":
        return cls.model_validate_json(text)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())


class Diagnostic(ABC):
    """A streaming, explainable check over one run's metrics.

    Subclasses set ``name``, ``version``, ``config_class`` and ``reference``
    (the published rule or paper the check follows) and implement
    :meth:`handler`. Time-based checks (e.g. a stalled run) also implement
    :meth:`on_idle`, which the service calls periodically.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    config_class: ClassVar[type[DiagnosticConfig]] = DiagnosticConfig
    reference: ClassVar[str] = ""

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @abstractmethod
    def handler(self, metric: str) -> MetricHandler | None:
        """Return the callable consuming values of ``metric``, or None to ignore it.

        Called once per metric name per run; the result is cached.
        """

    def on_idle(self, now: float, last_wall_time: float, last_step: int) -> Finding | None:
        """Called periodically with the current time; override for time-based checks."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
