"""Stalled runs: no telemetry for longer than a timeout (checked from the idle timer)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import STALLED_STATE, event_gaps

#: A stall becomes an ERROR once the run was idle this many times the timeout.
ESCALATION = 4.0
_EVAL_PREFIXES = ("val/", "eval/", "test/", "valid/", "validation/")


class StalledRunConfig(DiagnosticConfig):
    """Settings of :class:`StalledRunDiagnostic`.

    Parameters
    ----------
    timeout_s
        Seconds without telemetry after which a run is stalled, at least.
        Default 900 (a hung collective, a dead data loader or a crashed job
        that did not report its end). Healthy jobs go quiet for minutes while
        they save a checkpoint or evaluate: in the training half of the real
        MLPerf logs, 12 % of successful runs had a gap over 5 min, 3.9 % over
        15 min, 2 % over 30 min (SageMaker's StalledTrainingRule waits
        30 min by default).
    gap_factor
        A run whose events are normally far apart (e.g. one event per slow
        step) is stalled only after ``gap_factor`` x its typical inter-event
        gap, if that is longer than ``timeout_s``. Default 10.
    gap_alpha
        EWMA weight of the typical gap. Default 0.1.
    startup_gaps, startup_factor
        Until the run has shown ``startup_gaps`` gaps between events, its
        rhythm is unknown (the first evaluation, a dataset download, logging
        every 500 steps), so the timeout is ``startup_factor`` x ``timeout_s``.
        Defaults 3 and 4.
    clock_metric
        The metric whose arrivals time the events; empty means the first
        metric this run reports (metrics of the first event are normally
        logged on every event). Default ``""``.
    eval_clock_factor
        A run timed by a validation metric (``val/``, ``eval/``, ``test/``:
        it reports only evaluations, once an epoch or less) waits this many
        times longer before its rhythm is known. Default 3 (3 h): in the
        training half of the real MLPerf logs, every successful run flagged
        stalled was a CPU ResNet run evaluating every 1.8 h.
    """

    timeout_s: float = Field(default=900.0, gt=0.0)
    gap_factor: float = Field(default=10.0, ge=0.0)
    gap_alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    startup_gaps: int = Field(default=3, ge=0)
    startup_factor: float = Field(default=4.0, ge=1.0)
    clock_metric: str = ""
    eval_clock_factor: float = Field(default=3.0, ge=1.0)


class StalledRunDiagnostic(Diagnostic):
    """Flags a run that stopped sending telemetry.

    The service calls :meth:`on_idle` periodically with the current time
    and the time the run was last heard from; the run is stalled once
    ``now - last_wall_time > max(timeout_s, gap_factor * typical_gap)``,
    where the typical gap between events is learned from the wall times of
    one metric's values (an EWMA of positive wall-time differences, each
    capped at 3x the current estimate so one long evaluation pause does not
    stretch it; a learned gap can only lengthen the timeout, never shorten
    it; the compiled :func:`~runwatch.models.kernels.event_gaps` kernel). The heartbeat timeout W&B uses to mark a run
    "Crashed" when its process stops reporting (killed by OOM or preemption,
    hung in a collective, lost connectivity), as a finding rather than a
    state change. A run that has not
    sent anything yet (``last_wall_time <= 0``) is never stalled.

    Severity: WARNING, ERROR after 4x the timeout. Score: idle time / timeout.

    Examples
    --------
    >>> d = StalledRunDiagnostic()
    >>> walls = [1000.0 + 2.0 * step for step in range(5)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(5)), walls, [{"loss": 0.5, "lr": 0.1}] * 5))
    []
    >>> d.watches("loss"), d.watches("lr"), d.typical_gap   # the first metric of the run times its events
    (True, False, 2.0)
    >>> d.on_idle(now=1800.0, last_wall_time=1008.0, last_step=4) is None
    True
    >>> f = d.on_idle(now=2200.0, last_wall_time=1008.0, last_step=4)
    >>> f.kind.name, f.step, round(f.score, 2)
    ('STALLED', 4, 1.32)
    >>> f.explanation
    'no telemetry for 1192 s after step 4 (timeout 900 s; typical gap between events 2 s)'
    """

    name = "stalled"
    version = "1"
    config_class = StalledRunConfig
    reference = "Heartbeat timeout (W&B marks runs Crashed when heartbeats stop)"
    state_attributes = ("_clock", "_gaps")

    config: StalledRunConfig

    def __init__(self, config: StalledRunConfig | None = None) -> None:
        super().__init__(config)
        self._clock = self.config.clock_metric
        self._gaps = np.zeros(STALLED_STATE)  # last wall time, typical gap, gaps seen
        self._alpha = float(self.config.gap_alpha)

    @property
    def typical_gap(self) -> float:
        """The learned typical gap between events, in seconds (0 until two events arrived)."""
        return float(self._gaps[1])

    def watches(self, metric: str) -> bool:
        if self._clock:
            return metric == self._clock
        self._clock = metric  # the first metric this run reports
        return True

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if not self._clock:
            self.select(block)  # adopts the block's first metric as the clock
        col = block.columns.get(self._clock)
        if col is not None:
            event_gaps(col.wall_times, self._gaps, self._alpha)
        return []

    @property
    def timeout(self) -> float:
        """The effective timeout in seconds."""
        c = self.config
        floor = c.timeout_s
        if self._gaps[2] < c.startup_gaps:
            floor *= c.startup_factor * (c.eval_clock_factor if self._clock.startswith(_EVAL_PREFIXES) else 1.0)
        return max(floor, c.gap_factor * self.typical_gap)

    def on_idle(self, now: float, last_wall_time: float, last_step: int) -> Finding | None:
        if not last_wall_time > 0.0:
            return None
        idle = now - last_wall_time
        timeout = self.timeout
        if not idle > timeout:
            return None
        return Finding(
            AnomalyKind.STALLED,
            Severity.ERROR if idle > ESCALATION * timeout else Severity.WARNING,
            score=idle / timeout,
            step=max(last_step, 0),
            metric="wall_time",
            explanation=(
                f"no telemetry for {idle:.0f} s after step {last_step} (timeout {timeout:.0f} s; "
                f"typical gap between events {self.typical_gap:.3g} s)"
            ),
            key="stalled",
            wall_time=now,
        )

    def next_idle_due(self, now: float, last_wall_time: float) -> float | None:
        """When the stall is raised (the timeout passes), then escalated to ERROR; None once both passed."""
        if not last_wall_time > 0.0:
            return None
        timeout = self.timeout  # fixed while no event arrives
        for threshold in (timeout, ESCALATION * timeout):
            if now - last_wall_time <= threshold:
                return last_wall_time + threshold
        return None
