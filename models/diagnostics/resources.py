"""Resource problems: steadily growing memory (a leak) and input-pipeline bottlenecks."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock, column_arrays, column_pair
from runwatch.models.diagnostics.loss_spike import ColumnsDiagnostic
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import BOTTLENECK_STATE, data_bottleneck, memory_growth, memory_state, scratch


class MemoryGrowthConfig(DiagnosticConfig):
    """Settings of :class:`MemoryGrowthDiagnostic`.

    Parameters
    ----------
    metrics
        Exact metric names (any unit: bytes, MiB, GiB). Default
        ``("gpu_mem", "cpu_mem", "mem")``.
    window
        Observations in the fitted window. Default 100.
    warmup
        Observations skipped at the start (allocator and cache ramp-up, the
        first epoch of a caching data loader). Default 20.
    min_growth
        Fires when the fitted line rises across the window by at least this
        fraction of the current level. Default 0.05 (5 %): the RSS
        of a healthy training process moves by well under 1 % once warmed up.
    min_r2
        Minimum R² of the fit: the growth is steady, not one step up.
        Default 0.9.
    check_every
        The fit is evaluated every this many observations. Default 10.
    """

    metrics: tuple[str, ...] = ("gpu_mem", "cpu_mem", "mem")
    window: int = Field(default=100, ge=10)
    warmup: int = Field(default=20, ge=0)
    min_growth: float = Field(default=0.05, gt=0.0)
    min_r2: float = Field(default=0.9, ge=0.0, le=1.0)
    check_every: int = Field(default=10, ge=1)


class MemoryGrowthDiagnostic(ColumnsDiagnostic):
    """Flags memory that grows linearly, step after step: a leak.

    A least-squares line (running least-squares sums, O(1)
    per update) is fitted to the last ``window`` values against the step;
    the run leaks when the line's rise across the window is at least
    ``min_growth`` of the current level with R² >= ``min_r2``: the
    sustained-growth (not high-level) signal that production leak detectors
    look for, e.g. Azure's RESIN (OSDI 2022). Values are divided by the first
    value seen and steps are
    taken relative to the first step, so byte counts of 1e10 and step
    numbers of 1e8 keep full precision. Per-value work runs in the compiled
    :func:`~runwatch.models.kernels.memory_growth` kernel, one fit per metric.

    Severity: WARNING, ERROR when the window grew by 4x ``min_growth``.
    Score: growth / min_growth.

    Examples
    --------
    >>> d = MemoryGrowthDiagnostic()
    >>> rows = [{"cpu_mem": 2000.0 + 3.0 * step} for step in range(200)]   # +3 MiB per step
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(200)), [0.0] * 200, rows))
    >>> first = fs[0]
    >>> first.step, first.kind.name
    (119, 'MEMORY_GROWTH')
    >>> first.explanation
    'cpu_mem grew by 12.6% of its current level over the last 99 steps (+3 per step, now 2357, R² 1.00): memory leak'
    """

    name = "memory_growth"
    version = "1"
    config_class = MemoryGrowthConfig
    reference = "Sustained linear-trend leak test (RESIN, Lou et al., OSDI 2022)"

    config: MemoryGrowthConfig

    def __init__(self, config: MemoryGrowthConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._params = (int(cfg.window), int(cfg.warmup), float(cfg.min_growth), float(cfg.min_r2), int(cfg.check_every))

    def watches(self, metric: str) -> bool:
        return metric in self.config.metrics

    def initial_state(self) -> np.ndarray:
        return memory_state(self.config.window)

    def run_kernel(
        self,
        steps: np.ndarray,
        values: np.ndarray,
        offsets: np.ndarray,
        aligned: bool,
        rows: np.ndarray,
        states: np.ndarray,
        out: np.ndarray,
    ) -> int:
        return memory_growth(steps, values, offsets, aligned, rows, states, *self._params, out)

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        growth, slope, r2, span, v0 = row[2], row[3], row[4], row[5], row[6]
        value = float(col.values[i])
        min_growth = self.config.min_growth
        return Finding(
            AnomalyKind.MEMORY_GROWTH,
            Severity.ERROR if growth >= 4.0 * min_growth else Severity.WARNING,
            score=growth / min_growth,
            step=int(col.steps[i]),
            metric=metric,
            explanation=(
                f"{metric} grew by {growth:.1%} of its current level over the last {span:.0f} steps "
                f"(+{slope * v0:.3g} per step, now {value:.4g}, R² {r2:.2f}): memory leak"
            ),
            wall_time=float(col.wall_times[i]),
        )


class DataBottleneckConfig(DiagnosticConfig):
    """Settings of :class:`DataBottleneckDiagnostic`.

    Parameters
    ----------
    data_metric, step_metric
        Time spent waiting for the next batch, and the whole step including
        that wait. Defaults ``"data_time"``, ``"step_time"``.
    threshold
        Fires when ``EWMA(data_time) / EWMA(step_time)`` exceeds this.
        Default 0.5: the accelerator idles at least half of every step. The
        TensorFlow Profiler already calls 5 % "moderately" and 20 % "highly"
        input-bound; an alert should be unambiguous, so runwatch waits for
        half the step (healthy in-memory loaders sit at 1-5 %).
    alpha
        EWMA weight. Default 0.05.
    warmup
        Observations of each metric before the first finding (the first
        batches of a DataLoader wait for its workers to start). Default 20.
    min_data_time
        Ignore waits whose EWMA is below this many seconds. Default 0.005:
        a step of under a millisecond (a toy model on a CPU) that spends most
        of it in the Python loop fetching the next batch is not an input
        pipeline to fix; in the corpus's training split 4 of 252 healthy runs
        waited 0.4-0.8 ms of 0.7-1.5 ms steps.
    """

    data_metric: str = "data_time"
    step_metric: str = "step_time"
    threshold: float = Field(default=0.5, gt=0.0)
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=20, ge=0)
    min_data_time: float = Field(default=0.005, ge=0.0)


class DataBottleneckDiagnostic(Diagnostic):
    """Flags training that mostly waits for data.

    The input-bound test of the TensorFlow Profiler's input-pipeline
    analyser (share of the step time spent waiting for input): here
    ``EWMA(data_time) / EWMA(step_time)`` above ``threshold`` once both
    EWMAs have ``warmup`` observations. Convention: ``step_time`` is the
    whole step *including* the wait; a logger whose ``step_time`` excludes
    it makes the ratio larger (up to > 1), i.e. fire earlier. Decided on each
    ``data_time`` value; ``step_time`` only updates its EWMA. Both run in
    the compiled :func:`~runwatch.models.kernels.data_bottleneck` kernel,
    which visits them in the order event-by-event feeding delivers them (by
    step; within a step, by metric name).

    Examples
    --------
    >>> d = DataBottleneckDiagnostic()
    >>> waits = [0.001 if step < 20 else 0.030 for step in range(40)]
    >>> rows = [{"data_time": wait, "step_time": wait + 0.010} for wait in waits]
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(40)), [0.0] * 40, rows))
    >>> first = fs[0]
    >>> first.step, first.kind.name
    (26, 'DATA_BOTTLENECK')
    >>> first.explanation
    'waiting for data takes 52% of each step (data_time 0.00975 s of step_time 0.0187 s, smoothed): the input pipeline is the bottleneck'
    """

    name = "data_bottleneck"
    version = "1"
    config_class = DataBottleneckConfig
    reference = "TensorFlow Profiler input-pipeline analysis (input-bound share of step time)"
    state_attributes = ("_state",)

    config: DataBottleneckConfig

    def __init__(self, config: DataBottleneckConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._state = np.zeros(BOTTLENECK_STATE)
        self._params = (float(cfg.alpha), float(cfg.threshold), int(cfg.warmup), float(cfg.min_data_time))
        self._data_first = cfg.data_metric < cfg.step_metric

    def watches(self, metric: str) -> bool:
        return metric in (self.config.data_metric, self.config.step_metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        step, data, aligned = column_pair(block, self.config.step_metric, self.config.data_metric)
        if data is None and step is None:
            return []
        data_steps, data_values = column_arrays(data)
        nf = data_bottleneck(
            data_steps,
            data_values,
            *column_arrays(step),
            self._data_first,
            aligned,
            self._state,
            *self._params,
            out := scratch(len(data_values)),
        )
        if not nf:
            return []
        return [self._finding(data, row) for row in out[:nf].tolist()]

    def _finding(self, col: Column, row: list[float]) -> Finding:
        i = int(row[0])
        mean, total = row[1], row[2]
        cfg = self.config
        share = mean / total if total != 0.0 else math.inf
        return Finding(
            AnomalyKind.DATA_BOTTLENECK,
            Severity.WARNING,
            score=share / cfg.threshold,
            step=int(col.steps[i]),
            metric=cfg.data_metric,
            explanation=(
                f"waiting for data takes {share:.0%} of each step ({cfg.data_metric} {mean:.3g} s of "
                f"{cfg.step_metric} {total:.3g} s, smoothed): the input pipeline is the bottleneck"
            ),
            related=(cfg.step_metric,),
            wall_time=float(col.wall_times[i]),
        )
