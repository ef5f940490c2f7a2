"""Gradient health: exploding and vanishing gradients, weight-update ratios."""

# ruff: noqa: PLR1730  (hot path: a comparison costs ~1/8 of a min()/max() call)

from __future__ import annotations

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.divergence import log_trend
from runwatch.models.diagnostics.loss_spike import MAD_TO_SIGMA, Streak, observe_columns, severity_for
from runwatch.models.findings import AnomalyKind, Finding, Severity


def layer_of(metric: str, prefix: str) -> str:
    """Layer name of a per-layer metric: the text after ``prefix``.

    Examples
    --------
    >>> layer_of("grad_norm/fc1", "grad_norm/"), layer_of("grad_norm/encoder/fc1", "grad_norm/")
    ('fc1', 'encoder/fc1')
    >>> layer_of("grad_norm", "grad_norm/")
    ''
    """
    return metric[len(prefix) :] if metric.startswith(prefix) else ""


class ExplodingGradientConfig(DiagnosticConfig):
    """Settings of :class:`ExplodingGradientDiagnostic`.

    Parameters
    ----------
    metric
        The global gradient norm; ``<metric>/<layer>`` are the per-layer
        norms. Default ``"grad_norm"``.
    alpha
        EWMA weight of the baseline (mean and mean absolute deviation).
        Default 0.05.
    warmup
        Values seen before the first finding. Default 20.
    z_threshold
        Robust z of a spike. Default 6.
    spike_ratio
        A spike must also be this multiple of the *peak* baseline, the
        highest typical level the norm has had in this run. Default 10: in
        healthy runs mini-batch gradient norms are heavy-tailed (single
        batches reach ~3x the typical level, and far more relative to the
        tiny norms of a converged model), but they do not reach 10x the
        typical level of early training.
    growth_ratio
        Sustained growth fires once the norm is this multiple of the peak
        baseline ... Default 3.
    growth_points
        ... and ``log(norm)`` rose linearly over the last ``growth_points``
        values ... Default 8.
    min_log_slope
        ... by at least this much per step (0.1: x2.7 every 10 steps) ...
    min_r2
        ... with at least this R². Default 0.8.
    clip_ratio
        Values enter the baseline capped at ``clip_ratio`` x the baseline, so
        neither a spike nor an explosion is absorbed at full weight.
        Default 3.
    """

    metric: str = "grad_norm"
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=20, ge=1)
    z_threshold: float = Field(default=6.0, gt=0.0)
    spike_ratio: float = Field(default=10.0, gt=1.0)
    growth_ratio: float = Field(default=3.0, gt=1.0)
    growth_points: int = Field(default=8, ge=3)
    min_log_slope: float = Field(default=0.1, gt=0.0)
    min_r2: float = Field(default=0.8, ge=0.0, le=1.0)
    clip_ratio: float = Field(default=3.0, gt=1.0)


class ExplodingGradientDiagnostic(Diagnostic):
    """Flags gradient norms that explode, globally or per layer.

    Two signatures, both measured against the norm's own history:

    * **growth** -- ``log(norm)`` climbs linearly (exponential growth, the
      signature of an unstable step size or of gradients compounding through
      depth / time: Pascanu, Mikolov & Bengio 2013, "On the difficulty of
      training recurrent neural networks") and the norm is ``growth_ratio`` x
      its peak typical level;
    * **spike** -- a robust z-score (EWMA / MAD baseline) of at least
      ``z_threshold`` *and* a norm ``spike_ratio`` x the peak typical level
      (Pascanu et al.'s norm criterion, the one gradient clipping uses, made
      relative to the run's own history because norms have no universal
      scale).

    ``finding.key`` is the metric, so each layer is its own incident.

    Examples
    --------
    >>> d = ExplodingGradientDiagnostic()
    >>> h = d.handler("grad_norm/fc1")
    >>> [h(i, 0.0, 1.0 + 0.1 * (i % 3)) for i in range(30)].count(None)
    30
    >>> f = h(30, 0.0, 50.0)
    >>> f.kind.name, f.layer, f.severity.name
    ('EXPLODING_GRADIENT', 'fc1', 'CRITICAL')
    >>> f.explanation
    'grad_norm/fc1 = 50 is 46.2x its peak typical level 1.08 (robust z 229)'
    """

    name = "exploding_gradient"
    version = "1"
    config_class = ExplodingGradientConfig
    reference = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs (gradient-norm explosion)"

    config: ExplodingGradientConfig
    observe_block = observe_columns  # per-metric state only

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        base = cfg.metric
        if metric != base and not metric.startswith(base + "/"):
            return None
        layer = layer_of(metric, base + "/")
        alpha, warmup, z_thr = cfg.alpha, cfg.warmup, cfg.z_threshold
        spike_ratio, growth_ratio, clip = cfg.spike_ratio, cfg.growth_ratio, cfg.clip_ratio
        m, min_slope, min_r2 = cfg.growth_points, cfg.min_log_slope, cfg.min_r2
        steps = [0.0] * m
        vals = [0.0] * m
        end = 0
        mean = mad = peak = 0.0

        def exploding(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal end, mean, mad, peak
            if value - value != 0.0 or value < 0.0:
                return None
            j = end % m
            steps[j] = step
            vals[j] = value
            end += 1
            if end == 1:
                mean = peak = value
                return None
            typical = peak
            x = value if value <= clip * mean or mean <= 0.0 else clip * mean
            dev = x - mean
            mad += alpha * ((dev if dev >= 0.0 else -dev) - mad)
            mean += alpha * dev
            if mean > peak:
                peak = mean
            if end <= warmup or value < growth_ratio * typical or typical <= 0.0:
                return None
            # Rare path: the norm is several times anything typical so far.
            ratio = value / typical
            if ratio >= spike_ratio:
                scale = max(MAD_TO_SIGMA * mad, 0.1 * typical)
                z = (value - typical) / scale
                if z >= z_thr:
                    return Finding(
                        AnomalyKind.EXPLODING_GRADIENT,
                        severity_for(ratio, spike_ratio / 2.0),
                        score=ratio,
                        step=step,
                        metric=metric,
                        explanation=(
                            f"{metric} = {value:.4g} is {ratio:.3g}x its peak typical level "
                            f"{typical:.3g} (robust z {z:.3g})"
                        ),
                        layer=layer,
                    )
            if end < m:
                return None
            slope, r2 = log_trend(steps, vals, end, m, m, 1e-30)
            if slope < min_slope or r2 < min_r2:
                return None
            span = step - steps[end % m]
            return Finding(
                AnomalyKind.EXPLODING_GRADIENT,
                Severity.ERROR if ratio >= spike_ratio else Severity.WARNING,
                score=ratio,
                step=step,
                metric=metric,
                explanation=(
                    f"{metric} grew exponentially to {value:.4g}, {ratio:.3g}x its peak typical level "
                    f"{typical:.3g} (log-slope {slope:.2f}/step over {span:.0f} steps, R² {r2:.2f})"
                ),
                layer=layer,
            )

        return exploding


class VanishingGradientConfig(DiagnosticConfig):
    """Settings of :class:`VanishingGradientDiagnostic`.

    Parameters
    ----------
    prefix
        Per-layer gradient norms are ``<prefix><layer>``. Default
        ``"grad_norm/"``.
    abs_threshold
        A layer whose gradient norm is below this vanishes. Default 1e-7,
        SageMaker's threshold on mean ``|g|``; since ``mean|g| <= ||g||``, a
        norm below it guarantees SageMaker's condition.
    ratio
        A layer whose norm is below ``ratio`` x the largest layer norm of
        the same step vanishes relative to the rest of the network. Default
        1e-4: healthy MLPs keep layer norms within ~2 orders of magnitude of
        each other; a deep sigmoid stack is 5-9 orders apart.
    patience
        Consecutive observations of that layer the condition must hold.
        Default 10.
    warmup
        Observations of the layer before the first finding. Default 5 (a
        zero-initialised output layer blocks gradients for the first step).
    """

    prefix: str = "grad_norm/"
    abs_threshold: float = Field(default=1e-7, ge=0.0)
    ratio: float = Field(default=1e-4, ge=0.0, lt=1.0)
    patience: int = Field(default=10, ge=1)
    warmup: int = Field(default=5, ge=0)


class _StepMax:
    """Largest per-layer value of the current step, and of the previous one."""

    __slots__ = ("cur", "cur_name", "prev", "prev_name", "step")

    def __init__(self) -> None:
        self.step = None
        self.cur = self.prev = 0.0
        self.cur_name = self.prev_name = ""


class VanishingGradientDiagnostic(Diagnostic):
    """Flags layers whose gradients vanish, absolutely or relative to the others.

    Follows SageMaker Debugger's ``VanishingGradient`` rule (mean ``|g|``
    below 1e-7). We receive norms, so the absolute test is ``norm <
    abs_threshold`` (a sufficient condition for SageMaker's), and a relative
    test catches the classic deep-sigmoid case where early layers learn
    orders of magnitude slower than late ones (Glorot & Bengio 2010): a norm
    below ``ratio`` x the largest layer norm. The largest norm of a step is
    only known once all its layers arrived, so a layer is compared with the
    larger of the running maximum of its own step and the previous step's
    maximum. Either test must hold for ``patience`` consecutive observations.

    Examples
    --------
    >>> d = VanishingGradientDiagnostic(VanishingGradientConfig(patience=3, warmup=0))
    >>> early, late = d.handler("grad_norm/fc1"), d.handler("grad_norm/fc9")
    >>> for step in range(5):
    ...     f = early(step, 0.0, 3e-9)
    ...     _ = late(step, 0.0, 0.3)
    >>> f.kind.name, f.layer, f.key
    ('VANISHING_GRADIENT', 'fc1', 'grad_norm/fc1')
    >>> f.explanation
    'grad_norm/fc1 = 3e-09 is 1e-08 of the largest layer norm (fc9: 0.3) for 5 steps; below the 1e-07 floor'
    """

    name = "vanishing_gradient"
    version = "1"
    config_class = VanishingGradientConfig
    reference = "SageMaker Debugger VanishingGradient (threshold 1e-7); Glorot & Bengio 2010"

    config: VanishingGradientConfig

    def __init__(self, config: VanishingGradientConfig | None = None) -> None:
        super().__init__(config)
        self._max = _StepMax()

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if not metric.startswith(cfg.prefix) or len(metric) == len(cfg.prefix):
            return None
        layer = metric[len(cfg.prefix) :]
        abs_thr, rel, patience, warmup = cfg.abs_threshold, cfg.ratio, cfg.patience, cfg.warmup
        top = self._max
        n = 0
        run = 0

        def vanishing(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal n, run
            if value - value != 0.0 or value < 0.0:
                return None
            if step != top.step:
                if top.step is not None:
                    top.prev, top.prev_name = top.cur, top.cur_name
                top.step, top.cur, top.cur_name = step, value, layer
            elif value > top.cur:
                top.cur, top.cur_name = value, layer
            ref, ref_name = (top.cur, top.cur_name) if top.cur >= top.prev else (top.prev, top.prev_name)
            n += 1
            if value >= abs_thr and value >= rel * ref:
                run = 0
                return None
            run += 1
            if run < patience or n <= warmup:
                return None
            frac = value / ref if ref > 0.0 else 0.0
            why = [f"{metric} = {value:.3g}"]
            if ref > 0.0:
                why.append(f"is {frac:.3g} of the largest layer norm ({ref_name}: {ref:.3g})")
            why.append(f"for {run} steps")
            text = " ".join(why)
            if value < abs_thr:
                text += f"; below the {abs_thr:.3g} floor"
            return Finding(
                AnomalyKind.VANISHING_GRADIENT,
                Severity.ERROR if value < abs_thr else Severity.WARNING,
                score=(1.0 / frac) if frac > 0.0 else 1e12,
                step=step,
                metric=metric,
                explanation=text,
                layer=layer,
                key=metric,
            )

        return vanishing


class UpdateRatioConfig(DiagnosticConfig):
    """Settings of :class:`UpdateRatioDiagnostic` (SageMaker ``WeightUpdateRatio`` defaults).

    Parameters
    ----------
    prefix
        Per-layer ratios are ``<prefix><layer>``. Default ``"update_ratio/"``.
    large_threshold
        Ratio above which an update is too large. Default 10 (SageMaker).
    small_threshold
        Ratio below which an update is too small. Default 1e-8 (SageMaker).
    warmup
        Observations of a layer before the first finding. Default 10
        (SageMaker skips the first steps too; a warm-up from lr 0 gives zero
        updates).
    patience
        Consecutive observations the condition must hold. Default 3.
    lr_metric
        The learning-rate metric, if logged. Default ``"lr"``.
    lr_annealed_fraction
        While ``lr`` is at or below this fraction of its peak, tiny updates
        are explained by the schedule (cosine annealing to 0, a warm-up from
        0) and the *small* test is suspended. Default 1e-3.
    """

    prefix: str = "update_ratio/"
    large_threshold: float = Field(default=10.0, gt=0.0)
    small_threshold: float = Field(default=1e-8, ge=0.0)
    warmup: int = Field(default=10, ge=0)
    patience: int = Field(default=3, ge=1)
    lr_metric: str = "lr"
    lr_annealed_fraction: float = Field(default=1e-3, ge=0.0, lt=1.0)


class _Lr:
    __slots__ = ("now", "peak")

    def __init__(self) -> None:
        self.now = -1.0  # unknown
        self.peak = 0.0


class UpdateRatioDiagnostic(Diagnostic):
    """Flags layers whose weight updates are far too large or too small.

    Follows SageMaker Debugger's ``WeightUpdateRatio`` rule: the ratio of
    the update norm to the weight norm, ``||w_t - w_{t-1}|| / ||w_{t-1}||``,
    should stay between ``small_threshold`` (1e-8) and ``large_threshold``
    (10); a well-tuned optimiser typically sits near 1e-3 (Karpathy's "ratio
    of updates to weights" heuristic). The small test is suspended while a
    logged learning rate is annealed to (almost) zero.

    Examples
    --------
    >>> d = UpdateRatioDiagnostic()
    >>> h = d.handler("update_ratio/fc2")
    >>> fs = [h(i, 0.0, 1e-3 if i < 20 else 0.0) for i in range(25)]
    >>> f = fs[-1]
    >>> f.kind.name, f.layer, f.severity.name
    ('UPDATE_RATIO', 'fc2', 'WARNING')
    >>> f.explanation
    'update_ratio/fc2 = 0 < 1e-08 for 5 steps: fc2 is not being updated'
    """

    name = "update_ratio"
    version = "1"
    config_class = UpdateRatioConfig
    reference = "SageMaker Debugger WeightUpdateRatio (large_threshold 10, small_threshold 1e-8)"

    config: UpdateRatioConfig

    def __init__(self, config: UpdateRatioConfig | None = None) -> None:
        super().__init__(config)
        self._lr = _Lr()
        self._streaks: dict[str, Streak] = {}

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        """Value by value only if some ratio leaves ``[small, large]``; else a few array operations."""
        if len(block) < 16:  # numpy calls cost more than a few handler calls
            return super().observe_block(block)
        cols = self.select(block)
        cfg = self.config
        small, large = cfg.small_threshold, cfg.large_threshold
        for name, col in cols:
            if name != cfg.lr_metric and ((col.values < small) | (col.values > large)).any():
                return super().observe_block(block)  # steps interleaved: the lr explains small updates
        lr = self._lr
        for name, col in cols:
            finite = col.values[np.isfinite(col.values)]
            if not len(finite):
                continue
            if name == cfg.lr_metric:
                lr.now = float(finite[-1])
                lr.peak = max(lr.peak, float(finite.max()))
            else:
                streak = self._streaks[name]
                streak.n += len(finite)
                streak.run = 0
        return []

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric == cfg.lr_metric:
            return self._lr_handler()
        if not metric.startswith(cfg.prefix) or len(metric) == len(cfg.prefix):
            return None
        layer = metric[len(cfg.prefix) :]
        large, small, warmup, patience = cfg.large_threshold, cfg.small_threshold, cfg.warmup, cfg.patience
        annealed = cfg.lr_annealed_fraction
        lr = self._lr
        st = self._streaks[metric] = Streak()

        def update_ratio(step: int, wall_time: float, value: float) -> Finding | None:
            if value - value != 0.0:
                return None
            st.n += 1
            if small <= value <= large or st.n <= warmup:
                st.run = 0
                return None
            if value < small and 0.0 <= lr.now <= annealed * lr.peak:
                st.run = 0  # the schedule explains it
                return None
            run = st.run = st.run + 1
            if run < patience:
                return None
            if value > large:
                return Finding(
                    AnomalyKind.UPDATE_RATIO,
                    Severity.ERROR,
                    score=value / large,
                    step=step,
                    metric=metric,
                    explanation=(
                        f"{metric} = {value:.3g} > {large:.3g} for {run} steps: each update is "
                        f"larger than {layer}'s weights; lower the learning rate"
                    ),
                    layer=layer,
                    key=metric,
                )
            return Finding(
                AnomalyKind.UPDATE_RATIO,
                Severity.WARNING,
                score=small / value if value > 0.0 else 1e12,
                step=step,
                metric=metric,
                explanation=f"{metric} = {value:.3g} < {small:.3g} for {run} steps: {layer} is not being updated",
                layer=layer,
                key=metric,
            )

        return update_ratio

    def _lr_handler(self) -> MetricHandler:
        lr = self._lr

        def record_lr(step: int, wall_time: float, value: float) -> None:
            if value - value == 0.0:
                lr.now = value
                if value > lr.peak:
                    lr.peak = value

        return record_lr
