"""Loss plateau: no relative improvement for ``patience`` observations."""

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.findings import AnomalyKind, Finding, Severity


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
    alpha
        EWMA weight smoothing mini-batch noise of training metrics (``val/``
        metrics are already averages over a validation set and are compared
        raw). Default 0.05.
    min_delta
        Relative improvement that counts (ReduceLROnPlateau ``threshold`` in
        ``rel`` mode): the smoothed loss must fall below ``best * (1 -
        min_delta)`` to reset the count. Default 0.01: the smoothed loss of a
        healthy run improves by several percent per hundred steps until it
        converges; ReduceLROnPlateau's 1e-4 is meant for per-epoch values and
        would be met by noise alone here.
    patience
        Observations of a training metric without improvement. Default 100.
    val_patience
        Observations of a ``val/`` metric without improvement. Default 10
        (ReduceLROnPlateau's default, counted in validation points).
    warmup_steps
        No finding in the first ``warmup_steps`` steps of the run (the first
        step seen by this diagnostic counts as 0). Default 100: learning-rate
        warm-ups start near zero and barely move the loss.
    abs_floor, rel_floor
        The loss counts as converged, and never as a plateau, once the
        smoothed value is at most ``max(abs_floor, rel_floor * initial)``.
        Defaults 0.01 and 0.02: a cross-entropy that went from 2.3 to 0.04
        has nothing left to improve, but a language model at 3.0 (28 % of its
        initial 10.8) that stops improving is the case to report. The
        absolute floor assumes losses of order one (cross-entropy,
        standardised MSE); set it to 0 for losses in other units.
    """

    metrics: tuple[str, ...] = ("loss",)
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    min_delta: float = Field(default=0.01, ge=0.0, lt=1.0)
    patience: int = Field(default=100, ge=1)
    val_patience: int = Field(default=10, ge=1)
    warmup_steps: int = Field(default=100, ge=0)
    abs_floor: float = Field(default=0.01, ge=0.0)
    rel_floor: float = Field(default=0.02, ge=0.0)


class PlateauDiagnostic(Diagnostic):
    """Flags a loss that stopped improving well before it converged.

    The rule of PyTorch's ``ReduceLROnPlateau`` (mode ``min``, relative
    threshold) and SageMaker Debugger's ``LossNotDecreasing``: the best value
    is updated only by an improvement of at least ``min_delta`` (relative),
    and the metric is on a plateau once ``patience`` observations passed
    without one. Training losses are EWMA-smoothed first; a loss already near
    zero (see ``abs_floor`` / ``rel_floor``) is converged, not stuck.

    Score: observations since the last improvement / patience.

    Examples
    --------
    >>> d = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10))
    >>> h = d.handler("loss")
    >>> fs = [h(step, 0.0, 2.30 + 0.01 * (step % 2)) for step in range(40)]
    >>> first = next(f for f in fs if f)
    >>> first.step, first.kind.name
    (20, 'PLATEAU')
    >>> first.explanation
    'loss has not improved by 1% for 20 steps (best 2.304 at step 0, now 2.305); raise the learning rate or check the data pipeline'
    >>> h2 = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10)).handler("loss")
    >>> [h2(s, 0.0, 2.3 * 0.97 ** s) for s in range(200)].count(None)   # improving, then converged
    200
    """

    name = "plateau"
    version = "1"
    config_class = PlateauConfig
    reference = "PyTorch ReduceLROnPlateau (rel threshold); SageMaker Debugger LossNotDecreasing"

    config: PlateauConfig

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric not in cfg.metrics:
            return None
        is_val = metric.startswith("val/")
        alpha = 1.0 if is_val else cfg.alpha
        patience = cfg.val_patience if is_val else cfg.patience
        keep = 1.0 - cfg.min_delta
        warmup_steps, abs_floor, rel_floor = cfg.warmup_steps, cfg.abs_floor, cfg.rel_floor
        pct = f"{cfg.min_delta:.0%}" if cfg.min_delta >= 0.01 else f"{cfg.min_delta:.2%}"
        s = best = floor = 0.0
        first_step = best_step = 0
        n = since = 0

        def plateau(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal s, best, floor, first_step, best_step, n, since
            if value - value != 0.0:
                return None
            if n == 0:
                s = best = value
                first_step = best_step = step
                floor = rel_floor * value if rel_floor * value > abs_floor else abs_floor
                n = 1
                return None
            n += 1
            s += alpha * (value - s)
            if s < best * keep:
                best, best_step, since = s, step, 0
                return None
            since += 1
            if since < patience or step - first_step < warmup_steps or s <= floor:
                return None
            unit = "validation points" if is_val else "steps"
            return Finding(
                AnomalyKind.PLATEAU,
                Severity.WARNING,
                score=since / patience,
                step=step,
                metric=metric,
                explanation=(
                    f"{metric} has not improved by {pct} for {since} {unit} (best {best:.4g} at step "
                    f"{best_step}, now {s:.4g}); raise the learning rate or check the data pipeline"
                ),
            )

        return plateau
