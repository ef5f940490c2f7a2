"""Resource problems: steadily growing memory (a leak) and input-pipeline bottlenecks."""

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.diagnostics.loss_spike import observe_columns
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.stats import LinearTrend


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


class MemoryGrowthDiagnostic(Diagnostic):
    """Flags memory that grows linearly, step after step: a leak.

    A least-squares line (:class:`~runwatch.models.stats.LinearTrend`, O(1)
    per update) is fitted to the last ``window`` values against the step;
    the run leaks when the line's rise across the window is at least
    ``min_growth`` of the current level with R² >= ``min_r2``: the
    sustained-growth (not high-level) signal that production leak detectors
    look for, e.g. Azure's RESIN (OSDI 2022). Values are divided by the first
    value seen and steps are
    taken relative to the first step, so byte counts of 1e10 and step
    numbers of 1e8 keep full precision.

    Severity: WARNING, ERROR when the window grew by 4x ``min_growth``.
    Score: growth / min_growth.

    Examples
    --------
    >>> d = MemoryGrowthDiagnostic()
    >>> h = d.handler("cpu_mem")
    >>> fs = [h(step, 0.0, 2000.0 + 3.0 * step) for step in range(200)]   # +3 MiB per step
    >>> first = next(f for f in fs if f)
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
    observe_block = observe_columns  # per-metric state only

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric not in cfg.metrics:
            return None
        window, warmup, min_growth, min_r2, every = cfg.window, cfg.warmup, cfg.min_growth, cfg.min_r2, cfg.check_every
        trend = LinearTrend(window)
        update = trend.update
        xs = [0.0] * window  # steps of the window, to report its span
        n = 0
        step0 = 0
        v0 = 1.0

        def memory(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal n, step0, v0
            if value - value != 0.0 or value <= 0.0:
                return None
            n += 1
            if n <= warmup:
                return None
            k = n - warmup - 1  # observations in the trend so far, before this one
            if k == 0:
                step0, v0 = step, value
            x = float(step - step0)
            xs[k % window] = x
            update(x, value / v0)
            if n % every or not trend.full:
                return None
            slope = trend.slope()
            if slope <= 0.0:
                return None
            span = x - xs[(k + 1) % window]
            growth = slope * span * v0 / value
            if growth < min_growth:
                return None
            r2 = trend.r2()
            if r2 < min_r2:
                return None
            return Finding(
                AnomalyKind.MEMORY_GROWTH,
                Severity.ERROR if growth >= 4.0 * min_growth else Severity.WARNING,
                score=growth / min_growth,
                step=step,
                metric=metric,
                explanation=(
                    f"{metric} grew by {growth:.1%} of its current level over the last {span:.0f} steps "
                    f"(+{slope * v0:.3g} per step, now {value:.4g}, R² {r2:.2f}): memory leak"
                ),
            )

        return memory


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
        Ignore waits whose EWMA is below this many seconds. Default 0.0 (off).
    """

    data_metric: str = "data_time"
    step_metric: str = "step_time"
    threshold: float = Field(default=0.5, gt=0.0)
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=20, ge=0)
    min_data_time: float = Field(default=0.0, ge=0.0)


class _Ewm:
    __slots__ = ("mean", "n")

    def __init__(self) -> None:
        self.mean = 0.0
        self.n = 0


class DataBottleneckDiagnostic(Diagnostic):
    """Flags training that mostly waits for data.

    The input-bound test of the TensorFlow Profiler's input-pipeline
    analyser (share of the step time spent waiting for input): here
    ``EWMA(data_time) / EWMA(step_time)`` above ``threshold`` once both
    EWMAs have ``warmup`` observations. Convention: ``step_time`` is the
    whole step *including* the wait; a logger whose ``step_time`` excludes
    it makes the ratio larger (up to > 1), i.e. fire earlier. Decided on each
    ``data_time`` value; ``step_time`` only updates its EWMA.

    Examples
    --------
    >>> d = DataBottleneckDiagnostic()
    >>> data, step_t = d.handler("data_time"), d.handler("step_time")
    >>> fs = []
    >>> for step in range(40):
    ...     wait = 0.001 if step < 20 else 0.030
    ...     fs.append(data(step, 0.0, wait))
    ...     _ = step_t(step, 0.0, wait + 0.010)
    >>> first = next(f for f in fs if f)
    >>> first.step, first.kind.name
    (26, 'DATA_BOTTLENECK')
    >>> first.explanation
    'waiting for data takes 52% of each step (data_time 0.00975 s of step_time 0.0187 s, smoothed): the input pipeline is the bottleneck'
    """

    name = "data_bottleneck"
    version = "1"
    config_class = DataBottleneckConfig
    reference = "TensorFlow Profiler input-pipeline analysis (input-bound share of step time)"

    config: DataBottleneckConfig

    def __init__(self, config: DataBottleneckConfig | None = None) -> None:
        super().__init__(config)
        self._step = _Ewm()

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        alpha = cfg.alpha
        st = self._step
        if metric == cfg.step_metric:

            def step_time(step: int, wall_time: float, value: float) -> None:
                if value - value != 0.0 or value < 0.0:
                    return
                if st.n:
                    st.mean += alpha * (value - st.mean)
                else:
                    st.mean = value
                st.n += 1

            return step_time
        if metric != cfg.data_metric:
            return None
        thr, warmup, min_data, step_metric = cfg.threshold, cfg.warmup, cfg.min_data_time, cfg.step_metric
        mean = 0.0
        n = 0

        def data_time(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal mean, n
            if value - value != 0.0 or value < 0.0:
                return None
            mean = mean + alpha * (value - mean) if n else value
            n += 1
            total = st.mean
            if mean <= thr * total or n <= warmup or st.n <= warmup or mean < min_data:
                return None
            share = mean / total
            return Finding(
                AnomalyKind.DATA_BOTTLENECK,
                Severity.WARNING,
                score=share / thr,
                step=step,
                metric=metric,
                explanation=(
                    f"waiting for data takes {share:.0%} of each step ({metric} {mean:.3g} s of "
                    f"{step_metric} {total:.3g} s, smoothed): the input pipeline is the bottleneck"
                ),
                related=(step_metric,),
            )

        return data_time
