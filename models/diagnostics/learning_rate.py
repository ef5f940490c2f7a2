"""Learning-rate jumps: the logged LR leaps far above anything the run has used, so divergence is near."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class LearningRateJumpConfig(DiagnosticConfig):
    """Settings of :class:`LearningRateJumpDiagnostic`.

    Parameters
    ----------
    lr_metric
        The logged learning rate. Default ``"lr"``.
    jump_factor
        A value at least this multiple of the largest earlier value is a jump.
        Default 5: schedules raise the LR gradually (a linear warm-up by
        ``t / (t - 1)`` per step, warm restarts back to the earlier peak), a
        resumed job whose scheduler restarted from the wrong state or a
        mis-typed LR multiplies it by 10-1,000 at once.
    warmup
        LR values seen before the first finding. Default 10: the first values
        of a warm-up from (almost) zero grow by large factors.
    error_factor
        Jumps of at least this multiple are ERROR. Default 50.
    """

    lr_metric: str = "lr"
    jump_factor: float = Field(default=5.0, gt=1.0)
    warmup: int = Field(default=10, ge=1)
    error_factor: float = Field(default=50.0, gt=1.0)


class LearningRateJumpDiagnostic(Diagnostic):
    """Predicts divergence from a sudden learning-rate jump, on the step it is logged.

    Training is stable only while the LR stays below about ``2 / sharpness``
    (Cohen et al. 2021, "Gradient descent on neural networks typically occurs
    at the edge of stability"); a run that trained well at its earlier
    maximum LR and is suddenly stepped at many times it overshoots within a
    few updates. The loss has not moved yet when the new LR is logged, so
    this is the earliest warning there is: the learned forecaster and the
    loss-based rules see it one or more steps later. It raises
    ``DIVERGENCE_PREDICTED`` with key ``lr_jump``.

    Score: the jump's factor over the earlier maximum.

    Examples
    --------
    >>> d = LearningRateJumpDiagnostic()
    >>> warmup = [{"lr": 1e-3 * min(1.0, (s + 1) / 20)} for s in range(60)]   # linear warm-up, then constant
    >>> d.observe_block(MetricBlock.from_rows(list(range(60)), [0.0] * 60, warmup))
    []
    >>> (f,) = d.observe_block(MetricBlock.from_rows([60, 61], [0.0] * 2, [{"lr": 0.1}, {"lr": 0.1}]))
    >>> f.step, f.kind.name, f.severity.name, f.score
    (60, 'DIVERGENCE_PREDICTED', 'ERROR', 100.0)
    >>> f.explanation
    'lr jumped to 0.1, 100x the largest earlier value 0.001: divergence likely within a few steps unless that was intended'
    """

    name = "lr_jump"
    version = "1"
    config_class = LearningRateJumpConfig
    reference = "Edge-of-stability LR limit (Cohen et al. 2021); AutoTrainer's LR checks (Zhang et al. 2021)"
    state_attributes = ("peak", "seen")

    config: LearningRateJumpConfig

    def __init__(self, config: LearningRateJumpConfig | None = None) -> None:
        super().__init__(config)
        self.peak = 0.0  # the largest finite LR so far
        self.seen = 0  # finite LR values so far

    def watches(self, metric: str) -> bool:
        return metric == self.config.lr_metric

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        col = block.columns.get(self.config.lr_metric)
        if col is None:
            return []
        cfg = self.config
        if len(col.values) == 1:  # one event (an SDK flushing every step): the test below on scalars
            lr = float(col.values[0])
            if not math.isfinite(lr):
                return []
            earlier = self.peak
            jumped = self.seen >= cfg.warmup and earlier > 0.0 and lr / cfg.jump_factor >= earlier
            self.peak = max(self.peak, lr)
            self.seen += 1
            return [self._finding(int(col.steps[0]), lr, earlier)] if jumped else []
        finite = np.isfinite(col.values)
        values, steps = col.values[finite], col.steps[finite]
        if not len(values):
            return []
        earlier = np.maximum.accumulate(np.concatenate(([self.peak], values[:-1])))
        order = self.seen + np.arange(len(values))
        jumped = (order >= cfg.warmup) & (earlier > 0.0) & (values / cfg.jump_factor >= earlier)
        self.peak = max(self.peak, float(values.max()))
        self.seen += len(values)
        return [self._finding(int(steps[i]), float(values[i]), float(earlier[i])) for i in np.flatnonzero(jumped)]

    def _finding(self, step: int, lr: float, earlier: float) -> Finding:
        factor = lr / earlier
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.ERROR if factor >= self.config.error_factor else Severity.WARNING,
            score=round(factor, 6),
            step=step,
            metric=self.config.lr_metric,
            explanation=(
                f"{self.config.lr_metric} jumped to {lr:.3g}, {factor:.3g}x the largest earlier value {earlier:.3g}: "
                "divergence likely within a few steps unless that was intended"
            ),
            related=("loss",),
            key="lr_jump",
        )
