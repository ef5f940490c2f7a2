"""Overfitting: validation loss rising above its best while training loss keeps falling."""

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.findings import AnomalyKind, Finding, Severity


class OverfittingConfig(DiagnosticConfig):
    """Settings of :class:`OverfittingDiagnostic`.

    Parameters
    ----------
    train_metric, val_metric
        Default ``"loss"`` and ``"val/loss"``.
    alpha
        EWMA weight smoothing the mini-batch training loss. Default 0.05.
    rise
        The validation loss must be at least ``(1 + rise)`` x its best.
        Default 0.1 (10 %): the validation loss of a healthy run wobbles by a
        few percent around its trend, a model memorising its training set
        drifts upward steadily.
    ratio_threshold
        SageMaker ``Overfit``'s test, ``(val - train) / train`` above this.
        Default 0.1 (SageMaker's default).
    train_drop
        Training loss "kept falling": the smoothed training loss must be at
        most ``(1 - train_drop)`` x its value when the best validation loss
        was recorded. Default 0.1.
    level_floor
        The rise must also be at least this fraction of the first validation
        loss. Default 0.01: a validation cross-entropy that went from 2.2 to
        0.045 and back up to 0.052 at the end of a long run is noise-level,
        one that climbs back to 0.3 is not.
    patience
        Consecutive validation points all tests must hold. Default 3.
    warmup
        Validation points before the first finding. Default 3.
    """

    train_metric: str = "loss"
    val_metric: str = "val/loss"
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    rise: float = Field(default=0.1, gt=0.0)
    ratio_threshold: float = Field(default=0.1, ge=0.0)
    train_drop: float = Field(default=0.1, ge=0.0, lt=1.0)
    level_floor: float = Field(default=0.01, ge=0.0)
    patience: int = Field(default=3, ge=1)
    warmup: int = Field(default=3, ge=0)


class _Train:
    __slots__ = ("n", "s")

    def __init__(self) -> None:
        self.s = 0.0
        self.n = 0


class OverfittingDiagnostic(Diagnostic):
    """Flags a widening generalisation gap.

    Follows SageMaker Debugger's ``Overfit`` rule (the relative gap
    ``(val - train) / train`` exceeds ``ratio_threshold``) and adds the
    early-stopping criterion (Prechelt 1998, "Early stopping -- but when?"):
    the validation loss is ``rise`` above its best (and ``level_floor`` x its
    first value above it) for ``patience`` consecutive validation points
    while the smoothed training loss kept falling (``train_drop`` below its
    value at the best validation point).
    The ``loss`` handler only maintains the EWMA of the training loss; the
    ``val/loss`` handler, called every few steps, decides.

    Score: ``val / best_val``.

    Examples
    --------
    >>> d = OverfittingDiagnostic()
    >>> train, val = d.handler("loss"), d.handler("val/loss")
    >>> found = []
    >>> for step in range(200):
    ...     _ = train(step, 0.0, 2.0 * 0.97 ** step)
    ...     if step % 10 == 9:
    ...         v = 0.5 + abs(step - 59) * 0.004   # best at step 59, then rising
    ...         found.append(val(step, 0.0, v))
    >>> first = next(f for f in found if f)
    >>> first.step, first.kind.name
    (99, 'OVERFITTING')
    >>> first.explanation
    'val/loss 0.66 is 32% above its best 0.5 (step 59) for 3 validation points while loss fell 0.666 -> 0.22; val/train gap 3x'
    """

    name = "overfitting"
    version = "1"
    config_class = OverfittingConfig
    reference = "SageMaker Debugger Overfit (ratio_threshold 0.1); Prechelt 1998 early stopping"

    config: OverfittingConfig

    def __init__(self, config: OverfittingConfig | None = None) -> None:
        super().__init__(config)
        self._train = _Train()

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric == cfg.train_metric:
            return self._train_handler()
        if metric == cfg.val_metric:
            return self._val_handler(metric)
        return None

    def _train_handler(self) -> MetricHandler:
        tr = self._train
        alpha = self.config.alpha

        def train_loss(step: int, wall_time: float, value: float) -> None:
            if value - value != 0.0:
                return
            if tr.n:
                tr.s += alpha * (value - tr.s)
            else:
                tr.s = value
            tr.n += 1

        return train_loss

    def _val_handler(self, metric: str) -> MetricHandler:
        cfg = self.config
        tr = self._train
        grow, keep, gap_thr = 1.0 + cfg.rise, 1.0 - cfg.train_drop, cfg.ratio_threshold
        patience, warmup, train_metric, level_floor = cfg.patience, cfg.warmup, cfg.train_metric, cfg.level_floor
        min_rise = 0.0
        best = 0.0
        best_step = 0
        train_at_best = 0.0
        n = run = 0

        def val_loss(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal best, best_step, train_at_best, n, run, min_rise
            if value - value != 0.0:
                return None
            n += 1
            train = tr.s if tr.n else 0.0
            if n == 1:
                min_rise = level_floor * abs(value)
            if n == 1 or value < best:
                best, best_step, train_at_best, run = value, step, train, 0
                return None
            if not (
                value >= grow * best
                and value - best >= min_rise
                and tr.n
                and train <= keep * train_at_best
                and train > 0.0
                and (value - train) > gap_thr * train
            ):
                run = 0
                return None
            run += 1
            if run < patience or n <= warmup:
                return None
            x = value / best
            return Finding(
                AnomalyKind.OVERFITTING,
                Severity.ERROR if x >= 2.0 else Severity.WARNING,
                score=x,
                step=step,
                metric=metric,
                explanation=(
                    f"{metric} {value:.3g} is {x - 1.0:.0%} above its best {best:.3g} (step {best_step}) "
                    f"for {run} validation points while {train_metric} fell {train_at_best:.3g} -> "
                    f"{train:.3g}; val/train gap {value / train:.3g}x"
                ),
                related=(train_metric,),
            )

        return val_loss
