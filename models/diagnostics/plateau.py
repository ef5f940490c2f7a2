"""Loss plateau: no relative improvement for ``patience`` observations."""

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.diagnostics.loss_spike import observe_columns
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.stats import LinearTrend


class PlateauConfig(DiagnosticConfig):
    """Settings of :class:`PlateauDiagnostic`.

    Parameters
    ----------
    metrics
        Exact metric names to watch. Default ``("loss",)``; add
        ``"val/loss"`` to watch validation too (``val/`` metrics use
        ``val_patience``). Validation is not watched by default because a
        validation loss that has flattened at the end of a healthy run is
        the expected outcome, not a fault.
    min_delta
        Relative improvement over the window that counts as progress
        (ReduceLROnPlateau ``threshold`` in ``rel`` mode, SageMaker
        ``LossNotDecreasing`` ``diff_percent``). Default 0.005 (0.5 % per
        ``patience`` steps): small models improve by several percent per
        hundred steps until they converge; GPT-2 speedrun logs (a real model
        of healthy language-model training) improve by 0.5-2 % per 200 steps
        in their middle phase.
    patience
        Observations of a training metric in the fitted window. Default 200.
    val_patience
        Observations of a ``val/`` metric in the fitted window. Default 10
        (ReduceLROnPlateau's default, counted in validation points).
    confidence_z
        The plateau must be statistically clear: the improvement's upper
        confidence bound (fitted improvement + ``confidence_z`` standard
        errors of the slope) must be below ``min_delta``. Default 2.0 (~97.7 %
        one-sided): with noisy small-batch losses the window is inconclusive
        and nothing fires; with a clean flat loss it fires.
    warmup_steps
        No finding in the first ``warmup_steps`` steps of the run (the first
        step seen by this diagnostic counts as 0). Default 100: learning-rate
        warm-ups start near zero and barely move the loss.
    check_every
        A training metric is tested every this many observations (``val/``
        metrics on every one). Default 10.
    abs_floor, rel_floor
        The loss counts as converged, and never as a plateau, once its level
        is at most ``max(abs_floor, rel_floor * first value)``. Defaults 0.01
        and 0.05: a cross-entropy that went from 2.3 to 0.1 has little left
        to gain, but a language model at 3.3 (30 % of its initial 10.8) that
        stops improving is the case to report. The absolute floor assumes
        losses of order one (cross-entropy, standardised MSE); set it to 0
        for losses in other units.
    """

    metrics: tuple[str, ...] = ("loss",)
    min_delta: float = Field(default=0.005, ge=0.0, lt=1.0)
    patience: int = Field(default=200, ge=3)
    val_patience: int = Field(default=10, ge=3)
    confidence_z: float = Field(default=2.0, ge=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    check_every: int = Field(default=10, ge=1)
    abs_floor: float = Field(default=0.01, ge=0.0)
    rel_floor: float = Field(default=0.05, ge=0.0)


class PlateauDiagnostic(Diagnostic):
    """Flags a loss that stopped improving well before it converged.

    The rule of PyTorch's ``ReduceLROnPlateau`` (mode ``min``, relative
    threshold) and SageMaker Debugger's ``LossNotDecreasing``: a plateau is
    ``patience`` observations over which the loss did not improve by
    ``min_delta`` (relative). Instead of comparing two noisy values, the
    improvement is the least-squares line over the window
    (:class:`~runwatch.models.stats.LinearTrend`, O(1) per value; values
    more than 3 robust SDs above the EWMA level enter it winsorised) times
    the window's span, relative to the loss level, and the test uses its
    upper confidence bound: mini-batch noise cannot fake a plateau (a noisy
    window is inconclusive and stays silent), while a flat clean curve
    fires as soon as the window is full. A loss already near zero (see ``abs_floor`` /
    ``rel_floor``) is converged, not stuck. Meant for positive losses; a
    window whose mean is not positive never fires.

    Score: ``min_delta`` / upper bound of the improvement (capped at 100).

    Examples
    --------
    >>> d = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10))
    >>> h = d.handler("loss")
    >>> fs = [h(step, 0.0, 2.30 + 0.01 * (step % 2)) for step in range(40)]
    >>> first = next(f for f in fs if f)
    >>> first.step, first.kind.name
    (19, 'PLATEAU')
    >>> first.explanation
    'loss improved by at most 0.1% over the last 19 steps (< 0.50%; level 2.302, fitted change +0.04%); raise the learning rate or check the data pipeline'
    >>> h2 = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10)).handler("loss")
    >>> [h2(s, 0.0, 2.3 * 0.97 ** s) for s in range(300)].count(None)   # improving, then converged
    300
    """

    name = "plateau"
    version = "1"
    config_class = PlateauConfig
    reference = "PyTorch ReduceLROnPlateau (rel threshold); SageMaker Debugger LossNotDecreasing"

    config: PlateauConfig
    observe_block = observe_columns  # per-metric state only

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric not in cfg.metrics:
            return None
        is_val = metric.startswith("val/")
        window = cfg.val_patience if is_val else cfg.patience
        every = 1 if is_val else cfg.check_every
        min_delta, zc, warmup_steps = cfg.min_delta, cfg.confidence_z, cfg.warmup_steps
        abs_floor, rel_floor = cfg.abs_floor, cfg.rel_floor
        pct = f"{min_delta:.0%}" if min_delta >= 0.01 else f"{min_delta:.2%}"
        trend = LinearTrend(window)
        update = trend.update
        xs = [0.0] * window  # ring of the window's x (steps) and y, for its span and mean
        ys = [0.0] * window
        sum_y = 0.0
        ew = mad = floor = v0 = 0.0  # EWMA level and MAD (alpha 0.05) for winsorising spikes
        first_step = 0
        n = 0

        def plateau(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal sum_y, ew, mad, floor, v0, first_step, n
            if value - value != 0.0:
                return None
            if n == 0:
                first_step = step
                ew = value
                v0 = abs(value) if value != 0.0 else 1.0
                floor = max(abs_floor, rel_floor * value) / v0
            dev = value - ew
            cap = 3.76 * mad  # 3 robust SDs: one spiking batch must not tilt the fitted line
            if dev > cap and n > 1:
                dev = cap
            y = (ew + dev) / v0
            x = float(step - first_step)
            j = n % window
            sum_y += y - ys[j]
            xs[j] = x
            ys[j] = y
            update(x, y)
            mad += 0.05 * ((dev if dev >= 0.0 else -dev) - mad)
            ew += 0.05 * dev
            n += 1
            if n % every or n < window or x < warmup_steps:
                return None
            level = sum_y / window  # mean of the window, in units of the first value
            if level <= floor:
                return None
            slope = trend.slope()
            r2 = trend.r2()
            se = (slope * slope * (1.0 - r2) / (r2 * (window - 2))) ** 0.5 if r2 > 0.0 else 0.0
            span = x - xs[n % window]
            scale = span / level
            change = slope * scale  # fitted relative change over the window (negative = improving)
            best_case = (se * zc - slope) * scale
            if best_case >= min_delta:
                return None
            unit = "validation points" if is_val else "steps"
            return Finding(
                AnomalyKind.PLATEAU,
                Severity.WARNING,
                score=min_delta / best_case if best_case > min_delta / 100.0 else 100.0,
                step=step,
                metric=metric,
                explanation=(
                    f"{metric} improved by at most {max(best_case, 0.0):.1%} over the last {span:.0f} {unit} "
                    f"(< {pct}; level {level * v0:.4g}, fitted change {change:+.2%}); raise the learning rate "
                    f"or check the data pipeline"
                ),
            )

        return plateau
