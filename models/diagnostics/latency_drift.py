"""Deployment latency that drifts up and stays up: a rolling median far above its best sustained level.

:class:`~runwatch.models.diagnostics.deployment.LatencyDiagnostic` catches runs of requests far slower than
their baseline; its baseline follows the latency, so a slowdown that creeps in over hundreds of requests (a
cache or KV store that keeps growing, fragmentation, a leak that each request scans, a slower node) is absorbed
and never alerts. This check compares levels instead of points: every ``check_every`` values, the median of the
last ``window`` values against the lowest such median seen so far (the run's best sustained level).

:class:`ErrorRateDriftDiagnostic` is the same check on a service's error rate, whose spike check
(:class:`~runwatch.models.diagnostics.deployment.ErrorRateDiagnostic`) follows a rate that creeps up just as
its latency counterpart follows a slowdown: 0.2 % errors rising to 6 % over 1,500 windows raised nothing.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.deployment import metric_or_part
from runwatch.models.findings import AnomalyKind, Finding, Severity


class LatencyDriftConfig(DiagnosticConfig):
    """Settings of :class:`LatencyDriftDiagnostic`.

    Parameters
    ----------
    metric
        Latency in milliseconds; ``<metric>/<anything>`` is watched too, each on its own. Default
        ``"latency_ms"``.
    window
        Values per rolling median. Default 200: a median of 200 requests moves only when most of them
        are slower, not for a burst (the spike check's business) or a changing mix of request sizes.
    check_every
        Values between two checks. Default 50.
    rise
        The current median must be at least ``1 + rise`` times the best. Default 0.5 (50 % slower).
    error_rise
        At ``1 + error_rise`` times the best the finding is an ERROR. Default 1.0 (twice as slow).
    abs_floor_ms
        ...and at least this many ms above it. Default 1.0: a sub-millisecond model doubling its time under a
        busy CPU is not a degradation anyone sees.
    patience
        Consecutive checks the condition must hold. Default 2.
    season_s
        A service's latency follows the day: once a series spans more than one ``season_s`` of wall time,
        a check compares its median with the lowest median at the same time of day (within
        ``season_tolerance_s``) on the ``season_days`` days before, not with the best level at any hour, so
        the daily peak is not a drift every day; a slowdown that grows from day to day still is. On the
        first day there is nothing to compare the hour with. 0 turns it off. Default 86400.
    """

    metric: str = "latency_ms"
    window: int = Field(default=200, ge=10)
    check_every: int = Field(default=50, ge=1)
    rise: float = Field(default=0.5, gt=0.0)
    error_rise: float = Field(default=1.0, gt=0.0)
    abs_floor_ms: float = Field(default=1.0, ge=0.0)
    patience: int = Field(default=2, ge=1)
    season_s: float = Field(default=86_400.0, ge=0.0)
    season_tolerance_s: float = Field(default=3_600.0, gt=0.0)
    season_days: int = Field(default=7, ge=1)


class LatencyDriftDiagnostic(Diagnostic):
    """Flags a rolling latency median that drifted far above the run's best sustained level.

    Per watched metric: the last ``window`` values, their count, the lowest rolling median seen at a
    check (the best), the streak of checks at ``1 + rise`` times the best or more, and whether an episode is
    open. One finding per episode (and one more if it reaches ``error_rise``); the episode closes once the
    median is back under ``1 + rise / 2`` times the best. Checks fall at fixed value counts, so any batching
    of a run gives the same findings. A drift detector on a robust level, in the spirit of Page's CUSUM
    (Page 1954, "Continuous inspection schemes") with the median in place of the mean.

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = LatencyDriftDiagnostic()
    >>> creep = [100.0 + (i % 7) + max(0, i - 400) * 0.25 for i in range(1000)]   # +0.25 ms per request from 400 on
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(1000)), [0.0] * 1000, [{"latency_ms": v} for v in creep]))
    >>> [(f.step, f.kind.name, f.severity.name) for f in fs]
    [(799, 'LATENCY', 'WARNING'), (949, 'LATENCY', 'ERROR')]
    >>> fs[0].explanation
    'latency_ms median over the last 200 values 178 ms is 1.73x its best sustained level 103 ms (for 2 checks, every 50 values)'
    """

    name = "latency_drift"
    version = "1"
    kind = AnomalyKind.LATENCY
    config_class = LatencyDriftConfig
    reference = "Rolling-median level shift against the best sustained level (a CUSUM-like drift check)"
    state_attributes = ("_series",)

    config: LatencyDriftConfig

    unit = " ms"

    def __init__(self, config: LatencyDriftConfig | None = None) -> None:
        super().__init__(config)
        self._series: dict[str, dict] = {}

    def _floor(self) -> float:
        """How far above the reference a median must be (absolute, in the metric's unit)."""
        return self.config.abs_floor_ms

    def _error_floor(self) -> float:
        """How far above the reference a median must be to be an ERROR (absolute)."""
        return self.config.abs_floor_ms

    def watches(self, metric: str) -> bool:
        return metric_or_part(metric, self.config.metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        findings = []
        for name, col in self.select(block):
            ok = np.isfinite(col.values)
            if ok.any():
                findings.extend(self._observe(name, col.steps[ok], col.values[ok], col.wall_times[ok]))
        findings.sort(key=lambda f: f.step)
        return findings

    def _observe(self, name: str, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> list[Finding]:
        cfg = self.config
        s = self._series.get(name)
        if s is None:
            s = self._series[name] = {"tail": np.zeros(0), "n": 0, "best": np.inf, "streak": 0, "level": 0,
                                      "first_wall": float(walls[0]), "marks": []}
        tail = np.concatenate([s["tail"], values.astype(np.float64)])
        before = int(s["n"])
        n = before + len(values)
        out = []
        # the checks this block reaches: value counts that are multiples of check_every, with a full window
        first = max(cfg.window, (before // cfg.check_every + 1) * cfg.check_every)
        for count in range(first, n + 1, cfg.check_every):
            end = len(tail) - (n - count)
            median = float(np.median(tail[end - cfg.window : end]))
            i = count - before - 1
            f = self._check(s, name, median, int(steps[i]), float(walls[i]))
            if f is not None:
                out.append(f)
        s["tail"] = tail[-cfg.window :].copy()
        s["n"] = n
        return out

    def _same_hour_level(self, s: dict, wall: float) -> float | None:
        """The lowest median at this time of day on the days before (see ``season_s``; :meth:`_remember` keeps
        them); None on the first day (or when wall times do not move: a series without a clock has no days)."""
        cfg = self.config
        if cfg.season_s <= 0:
            return None
        marks = s.setdefault("marks", [])  # [wall time of a bucket's first check, lowest median in it], in time order
        keep_from = wall - (cfg.season_days + 1) * cfg.season_s
        while marks and marks[0][0] < keep_from:
            marks.pop(0)
        level = None
        if wall - float(s.get("first_wall", wall)) >= cfg.season_s - cfg.season_tolerance_s:
            for mark_wall, mark_median in marks:
                days = round((wall - mark_wall) / cfg.season_s)
                if 1 <= days <= cfg.season_days and abs(wall - mark_wall - days * cfg.season_s) <= cfg.season_tolerance_s:
                    level = mark_median if level is None else min(level, mark_median)
        return level

    def _remember(self, s: dict, wall: float, median: float) -> None:
        """Keep the check's median for the days after: one mark per half tolerance of wall time (its lowest)."""
        marks = s.setdefault("marks", [])
        bucket = self.config.season_tolerance_s / 2
        if marks and int(marks[-1][0] // bucket) == int(wall // bucket):
            marks[-1][1] = min(marks[-1][1], median)
        else:
            marks.append([wall, median])

    def _check(self, s: dict, name: str, median: float, step: int, wall: float) -> Finding | None:
        cfg = self.config
        best = float(s["best"])
        if median < best:
            s["best"] = best = median
        seasonal = self._same_hour_level(s, wall)
        self._remember(s, wall, median)
        if seasonal is not None:
            best = seasonal
        slow = median >= (1.0 + cfg.rise) * best and median - best >= self._floor()
        s["streak"] = int(s["streak"]) + 1 if slow else 0
        level = int(s["level"])
        if level and median < (1.0 + cfg.rise / 2) * best:
            s["level"] = 0  # recovered: the next drift is a new episode
            return None
        if s["streak"] < cfg.patience:
            return None
        severity = (Severity.ERROR if median >= (1.0 + cfg.error_rise) * best and median - best >= self._error_floor()
                    else Severity.WARNING)
        if int(severity) <= level:
            return None
        s["level"] = int(severity)
        ratio = median / best if best > 0 else float("inf")
        against = "its level at this time of day on the days before" if seasonal is not None else "its best sustained level"
        times = f"{ratio:.2f}x" if best > 0 else "up from"
        return Finding(
            self.kind,
            severity,
            round(ratio, 6) if best > 0 else median,
            step,
            name,
            f"{name} median over the last {cfg.window} values {median:.3g}{self.unit} is {times} {against} "
            f"{best:.3g}{self.unit} (for {s['streak']} checks, every {cfg.check_every} values)",
            key=f"drift:{name}",
        )


class ErrorRateDriftConfig(LatencyDriftConfig):
    """Settings of :class:`ErrorRateDriftDiagnostic`: those of :class:`LatencyDriftConfig` with defaults for a
    rate reported once per window, and an absolute rise in place of the milliseconds.

    Parameters
    ----------
    metric
        Fraction of failed requests per window (0..1). Default ``"error_rate"``.
    window, check_every
        Default 30 and 10 windows (half an hour of one-minute windows, checked every ten).
    rise, error_rise
        Default 1.0 and 3.0: twice, and four times, the reference level.
    min_rise
        ...and at least this much above it, in rate. Default 0.02 (two percentage points, the spike check's
        ``min_rate``): from a clean 0 % a rate must reach 2 %.
    error_min_rise
        An ERROR also needs this much. Default 0.05 (five points): next to a clean level, any ratio is large.
    """

    metric: str = "error_rate"
    window: int = Field(default=30, ge=10)
    check_every: int = Field(default=10, ge=1)
    rise: float = Field(default=1.0, gt=0.0)
    error_rise: float = Field(default=3.0, gt=0.0)
    min_rise: float = Field(default=0.02, ge=0.0)
    error_min_rise: float = Field(default=0.05, ge=0.0)


class ErrorRateDriftDiagnostic(LatencyDriftDiagnostic):
    """Flags a rolling error-rate median that drifted far above the run's best sustained level (or, after a day,
    its level at the same time of day): the latency drift check on ``error_rate``.

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = ErrorRateDriftDiagnostic()
    >>> creep = [0.002 + max(0, i - 100) * 0.0002 for i in range(400)]   # 0.2 %, rising 0.02 points a window from 100
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(400)), [0.0] * 400, [{"error_rate": v} for v in creep]))
    >>> [(f.step, f.kind.name, f.severity.name) for f in fs]
    [(229, 'ERROR_RATE', 'WARNING'), (369, 'ERROR_RATE', 'ERROR')]
    """

    name = "error_rate_drift"
    version = "1"
    kind = AnomalyKind.ERROR_RATE
    config_class = ErrorRateDriftConfig
    reference = "Rolling-median level shift of the error rate against its best sustained level"
    unit = ""

    config: ErrorRateDriftConfig

    def _floor(self) -> float:
        return self.config.min_rise

    def _error_floor(self) -> float:
        return self.config.error_min_rise
