"""Base classes for streaming diagnostics.

A diagnostic watches one run. The pipeline creates one instance per run and
feeds it :class:`~runwatch.models.block.MetricBlock` s: one run's events of one
batch, split into per-metric columns, so per-value work can run in compiled
or vectorized code (:meth:`Diagnostic.observe_block`).

Simple diagnostics need not think in blocks: they implement :meth:`handler`,
returning a plain callable ``(step, wall_time, value) -> Finding | None`` for
each metric they watch, and the default :meth:`observe_block` feeds it the
block's values in step order.

Diagnostics only score; whether a finding becomes an alert, and how repeated
findings merge into one incident, is the alert policy's job
(:mod:`runwatch.models.alerting`).
"""

from __future__ import annotations

import json
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from runwatch.models.block import Column, MetricBlock
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
    def from_json(cls, text: str | bytes) -> DiagnosticConfig:
        return cls.model_validate_json(text)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())


@dataclass(frozen=True, slots=True)
class RunContext:
    """Where a run belongs, for diagnostics whose models differ by project.

    ``project_models`` is the service's per-project model registry
    (:class:`~runwatch.models.learned.project_models.ProjectModels`), or None:
    every project then uses the shipped models.

    Examples
    --------
    >>> RunContext("vision").project, RunContext().project_models is None
    ('vision', True)
    """

    project: str = ""
    project_models: Any = None


class Diagnostic(ABC):
    """A streaming, explainable check over one run's metrics.

    Subclasses set ``name``, ``version``, ``config_class`` and ``reference``
    (the published rule or paper the check follows) and implement either
    :meth:`handler` (value by value) or :meth:`observe_block` (column blocks).
    Time-based checks (e.g. a stalled run) implement :meth:`on_idle`, which the
    service calls periodically.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    config_class: ClassVar[type[DiagnosticConfig]] = DiagnosticConfig
    reference: ClassVar[str] = ""
    state_attributes: ClassVar[tuple[str, ...]] = ()
    """Instance attributes holding per-run state (everything else derives from the config)."""
    transient_attributes: ClassVar[tuple[str, ...]] = ()
    #: Config fields that do not shape a run's state: a checkpoint saved under other values still fits.
    state_neutral_settings: ClassVar[tuple[str, ...]] = ()
    """Scratch kept from one block until the next (e.g. for the fusion pass over that block), not state."""

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @classmethod
    def prepare(cls, config: DiagnosticConfig) -> None:
        """Load what every run's instance shares (models, compiled kernels) once, when the suite is built.

        Without it, the first run a service sees would pay for the loading inside its first batch.
        """

    def bind(self, context: RunContext) -> None:
        """Learn which project the run belongs to: when it opens, and again if a RunStart moves it.

        Only diagnostics with per-project models (the learned run-outlier detector) use it.
        """

    def handler(self, metric: str) -> MetricHandler | None:
        """Return the callable consuming values of ``metric``, or None to ignore it.

        Called once per metric name per run; the result is cached.
        """
        return None

    def watches(self, metric: str) -> bool:
        """Whether this diagnostic reads ``metric`` (block-native diagnostics override this)."""
        return self._handler_for(metric) is not None

    def _handler_for(self, metric: str) -> MetricHandler | None:
        try:
            handlers = self._handlers
        except AttributeError:
            handlers = self._handlers = {}
        if metric not in handlers:
            handlers[metric] = self.handler(metric)
        return handlers[metric]

    def select(self, block: MetricBlock) -> list[tuple[str, Column]]:
        """The block's columns this diagnostic watches, in name order (membership cached per name)."""
        try:
            cache = self._watch_cache
        except AttributeError:
            cache = self._watch_cache = {}
        out = []
        for name, col in block.columns.items():
            w = cache.get(name)
            if w is None:
                w = cache[name] = self.watches(name)
            if w:
                out.append((name, col))
        if len(out) > 1:
            out.sort(key=lambda item: item[0])
        return out

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        """Consume one block; return every finding, in step order.

        The default feeds the values of each watched metric to its
        :meth:`handler`, in step order (metrics of one step in name order).
        """
        routed = []
        for name, col in self.select(block):
            h = self._handler_for(name)
            if h is not None:
                routed.append((col, h))
        if not routed:
            return []
        if len(routed) == 1:
            col, h = routed[0]
            feed = zip(col.steps.tolist(), col.wall_times.tolist(), col.values.tolist(), [h] * len(col))
        else:
            feed = sorted(
                (
                    (s, t, v, h)
                    for col, h in routed
                    for s, t, v in zip(col.steps.tolist(), col.wall_times.tolist(), col.values.tolist())
                ),
                key=lambda item: item[0],
            )
        findings = []
        for step, wall_time, value, h in feed:
            f = h(step, wall_time, value)
            if f is not None:
                findings.append(f)
        return findings

    def state_dict(self) -> dict:
        """JSON-safe snapshot of this diagnostic's per-run state (see :mod:`runwatch.models.snapshot`)."""
        from runwatch.models.snapshot import encode

        return {
            "name": self.name,
            "version": self.version,
            "config": self.config.to_dict(),
            "state": {attr: encode(getattr(self, attr)) for attr in self.state_attributes},
        }

    def config_fits(self, saved: object) -> bool:
        """Whether state saved under the config ``saved`` (a dict) fits this diagnostic's config.

        ``saved`` is read as a config: settings added since it was written take their defaults, so a
        checkpoint from before a new setting fits while that setting keeps its default. Settings in
        :attr:`state_neutral_settings` do not shape a run's state and are not compared.

        Examples
        --------
        >>> from runwatch.models.diagnostics.plateau import PlateauDiagnostic
        >>> d = PlateauDiagnostic()
        >>> saved = d.config.to_dict(); del saved["min_points"]
        >>> d.config_fits(saved), d.config_fits({**saved, "patience": 50}), d.config_fits({"patience": "x"})
        (True, False, False)
        """
        if not isinstance(saved, dict):
            return False
        try:
            config = self.config_class.model_validate(saved)
        except ValueError:
            return False
        neutral = {k: getattr(self.config, k) for k in self.state_neutral_settings}
        return config.model_copy(update=neutral) == self.config

    def load_state_dict(self, snapshot: dict) -> bool:
        """Restore :meth:`state_dict` output; returns False (state left fresh) if it does not fit.

        State only fits a diagnostic of the same name, version and config (:meth:`config_fits`).
        """
        from runwatch.models.snapshot import decode

        if (snapshot.get("name"), snapshot.get("version")) != (self.name, self.version):
            return False
        if not self.config_fits(snapshot.get("config")):
            return False
        state = snapshot.get("state", {})
        if set(state) != set(self.state_attributes):
            return False
        for attr in self.state_attributes:
            setattr(self, attr, decode(state[attr], f"{self.name}.{attr}"))
        return True

    def on_idle(self, now: float, last_wall_time: float, last_step: int) -> Finding | None:
        """Called periodically with the current time; override for time-based checks."""
        return None

    def on_end(self) -> list[Finding]:
        """Called once when the run ends as finished (``RunEnd``); override to judge the run as a whole.

        What a causal check had to wait for (enough values, enough steps) may
        never arrive in a short run; at its end the whole log is there.
        """
        return []

    def next_idle_due(self, now: float, last_wall_time: float) -> float | None:
        """The earliest time after ``now`` at which :meth:`on_idle` could report something new, or None (never).

        A run evicted from memory while idle is restored at that time to be checked;
        override together with :meth:`on_idle`.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
