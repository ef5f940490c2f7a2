"""Gradient health: exploding and vanishing gradients, weight-update ratios."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock
from runwatch.models.diagnostics.loss_spike import ColumnsDiagnostic, MetricTable, gather, selected_names, severity_for
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import (
    exploding_gradient,
    exploding_state,
    scratch,
    update_ratio,
    vanishing_gradient,
    vanishing_top,
)


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
    early_spike_ratio
        Within the warm-up, before the norm's noise is known, a value this
        multiple of the peak typical level is a spike already. Default 1e5:
        sparse logs (a Trainer logging every 500 steps) and short excerpts may
        blow up within their first 20 values; the largest jump within the
        warm-up on 100 real Trainer runs was 1,378x (a healthy run's noisy
        norm), on the corpus's healthy runs 98x.
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
    early_spike_ratio: float = Field(default=1e5, gt=1.0)


class ExplodingGradientDiagnostic(ColumnsDiagnostic):
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
    Per-value work runs in the compiled
    :func:`~runwatch.models.kernels.exploding_gradient` kernel, one state
    per metric.

    Examples
    --------
    >>> d = ExplodingGradientDiagnostic()
    >>> rows = [{"grad_norm/fc1": 1.0 + 0.1 * (i % 3)} for i in range(30)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(30)), [0.0] * 30, rows))
    []
    >>> (f,) = d.observe_block(MetricBlock.single(30, 0.0, {"grad_norm/fc1": 50.0}))
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

    def __init__(self, config: ExplodingGradientConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._params = (
            int(cfg.growth_points),
            float(cfg.alpha),
            int(cfg.warmup),
            float(cfg.z_threshold),
            float(cfg.spike_ratio),
            float(cfg.growth_ratio),
            float(cfg.min_log_slope),
            float(cfg.min_r2),
            float(cfg.clip_ratio),
            float(cfg.early_spike_ratio),
        )

    def watches(self, metric: str) -> bool:
        base = self.config.metric
        return metric == base or metric.startswith(base + "/")

    def initial_state(self) -> np.ndarray:
        return exploding_state(self.config.growth_points)

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
        return exploding_gradient(steps, values, offsets, aligned, rows, states, *self._params, out)

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        ratio, typical = row[3], row[4]
        value = float(col.values[i])
        spike_ratio = self.config.spike_ratio
        if row[2] == 0.0:
            severity = severity_for(ratio, spike_ratio / 2.0)
            text = f"{metric} = {value:.4g} is {ratio:.3g}x its peak typical level {typical:.3g} (robust z {row[5]:.3g})"
        elif row[2] == 2.0:
            severity = severity_for(ratio, spike_ratio / 2.0)
            text = (
                f"{metric} = {value:.4g} is {ratio:.3g}x its level so far {typical:.3g}, within its first "
                f"{self.config.warmup} values (a jump over {self.config.early_spike_ratio:.3g}x counts before "
                "the norm's noise is known)"
            )
        else:
            severity = Severity.ERROR if ratio >= spike_ratio else Severity.WARNING
            text = (
                f"{metric} grew exponentially to {value:.4g}, {ratio:.3g}x its peak typical level "
                f"{typical:.3g} (log-slope {row[6]:.2f}/step over {row[8]:.0f} steps, R² {row[7]:.2f})"
            )
        return Finding(
            AnomalyKind.EXPLODING_GRADIENT,
            severity,
            score=ratio,
            step=int(col.steps[i]),
            metric=metric,
            explanation=text,
            layer=layer_of(metric, self.config.metric + "/"),
            wall_time=float(col.wall_times[i]),
        )


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
    maximum (values of one step are taken in metric-name order, as they
    arrive when events are fed one by one). Either test must hold for
    ``patience`` consecutive observations. Per-value work runs in the
    compiled :func:`~runwatch.models.kernels.vanishing_gradient` kernel over
    all layers of a block at once.

    Examples
    --------
    >>> d = VanishingGradientDiagnostic(VanishingGradientConfig(patience=3, warmup=0))
    >>> rows = [{"grad_norm/fc1": 3e-9, "grad_norm/fc9": 0.3} for step in range(5)]
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(5)), [0.0] * 5, rows))
    >>> [f.step for f in fs]
    [2, 3, 4]
    >>> f = fs[-1]
    >>> f.kind.name, f.layer, f.key
    ('VANISHING_GRADIENT', 'fc1', 'grad_norm/fc1')
    >>> f.explanation
    'grad_norm/fc1 = 3e-09 is 1e-08 of the largest layer norm (fc9: 0.3) for 5 steps; below the 1e-07 floor'
    """

    name = "vanishing_gradient"
    version = "1"
    config_class = VanishingGradientConfig
    reference = "SageMaker Debugger VanishingGradient (threshold 1e-7); Glorot & Bengio 2010"
    state_attributes = ("_top", "_layers")

    config: VanishingGradientConfig

    def __init__(self, config: VanishingGradientConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._params = (float(cfg.abs_threshold), float(cfg.ratio), int(cfg.patience), int(cfg.warmup))
        self._top = vanishing_top()
        self._layers = MetricTable(np.zeros(2))  # per layer: observations, streak

    def watches(self, metric: str) -> bool:
        prefix = self.config.prefix
        return metric.startswith(prefix) and len(metric) > len(prefix)

    def _layer(self, metric: str) -> str:
        return metric[len(self.config.prefix) :]

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        names = selected_names(self, block)
        if not names:
            return []
        table = self._layers
        ids = table.rows_for(names, self._layer)
        cols = [block.columns[name] for name in names]
        steps, values, offsets, aligned = gather(cols)
        out = scratch(len(values))
        nf = vanishing_gradient(steps, values, offsets, aligned, ids, table.state, self._top, *self._params, out)
        if not nf:
            return []
        return [self._finding(names[int(row[0])], cols[int(row[0])], row) for row in out[:nf].tolist()]

    def _finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        value, ref, run = row[2], row[3], int(row[5])
        abs_thr = self.config.abs_threshold
        frac = value / ref if ref > 0.0 else 0.0
        why = [f"{metric} = {value:.3g}"]
        if ref > 0.0:
            ref_name = self._layers.labels[int(row[4])] if row[4] >= 0.0 else ""
            why.append(f"is {frac:.3g} of the largest layer norm ({ref_name}: {ref:.3g})")
        why.append(f"for {run} steps")
        text = " ".join(why)
        if value < abs_thr:
            text += f"; below the {abs_thr:.3g} floor"
        return Finding(
            AnomalyKind.VANISHING_GRADIENT,
            Severity.ERROR if value < abs_thr else Severity.WARNING,
            score=(1.0 / frac) if frac > 0.0 else 1e12,
            step=int(col.steps[i]),
            metric=metric,
            explanation=text,
            layer=self._layer(metric),
            key=metric,
            wall_time=float(col.wall_times[i]),
        )


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


class UpdateRatioDiagnostic(Diagnostic):
    """Flags layers whose weight updates are far too large or too small.

    Follows SageMaker Debugger's ``WeightUpdateRatio`` rule: the ratio of
    the update norm to the weight norm, ``||w_t - w_{t-1}|| / ||w_{t-1}||``,
    should stay between ``small_threshold`` (1e-8) and ``large_threshold``
    (10); a well-tuned optimiser typically sits near 1e-3 (Karpathy's "ratio
    of updates to weights" heuristic). The small test is suspended while a
    logged learning rate is annealed to (almost) zero (the learning rate of
    a step counts for the layers whose names sort after it, as when events
    are fed one by one). Per-value work runs in the compiled
    :func:`~runwatch.models.kernels.update_ratio` kernel over all layers of a
    block at once.

    Examples
    --------
    >>> d = UpdateRatioDiagnostic()
    >>> rows = [{"update_ratio/fc2": 1e-3 if i < 20 else 0.0} for i in range(25)]
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(25)), [0.0] * 25, rows))
    >>> [f.step for f in fs]
    [22, 23, 24]
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
    state_attributes = ("_lr", "_layers")

    config: UpdateRatioConfig

    def __init__(self, config: UpdateRatioConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._params = (
            float(cfg.large_threshold),
            float(cfg.small_threshold),
            int(cfg.warmup),
            int(cfg.patience),
            float(cfg.lr_annealed_fraction),
        )
        self._lr = np.array([-1.0, 0.0])  # latest learning rate (-1: unknown), its peak
        self._layers = MetricTable(np.zeros(2))  # per layer: observations, streak

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric == cfg.lr_metric or (metric.startswith(cfg.prefix) and len(metric) > len(cfg.prefix))

    def _layer(self, metric: str) -> str | None:
        return None if metric == self.config.lr_metric else metric[len(self.config.prefix) :]

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        names = selected_names(self, block)
        if not names:
            return []
        table = self._layers
        ids = table.rows_for(names, self._layer)
        cols = [block.columns[name] for name in names]
        steps, values, offsets, aligned = gather(cols)
        out = scratch(len(values))
        nf = update_ratio(steps, values, offsets, aligned, ids, table.state, self._lr, *self._params, out)
        if not nf:
            return []
        return [self._finding(names[int(row[0])], cols[int(row[0])], row) for row in out[:nf].tolist()]

    def _finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        value, run = row[2], int(row[3])
        cfg = self.config
        large, small = cfg.large_threshold, cfg.small_threshold
        layer = metric[len(cfg.prefix) :]
        if value > large:
            return Finding(
                AnomalyKind.UPDATE_RATIO,
                Severity.ERROR,
                score=value / large,
                step=int(col.steps[i]),
                metric=metric,
                explanation=(
                    f"{metric} = {value:.3g} > {large:.3g} for {run} steps: each update is "
                    f"larger than {layer}'s weights; lower the learning rate"
                ),
                layer=layer,
                key=metric,
                wall_time=float(col.wall_times[i]),
            )
        return Finding(
            AnomalyKind.UPDATE_RATIO,
            Severity.WARNING,
            score=small / value if value > 0.0 else 1e12,
            step=int(col.steps[i]),
            metric=metric,
            explanation=f"{metric} = {value:.3g} < {small:.3g} for {run} steps: {layer} is not being updated",
            layer=layer,
            key=metric,
            wall_time=float(col.wall_times[i]),
        )
