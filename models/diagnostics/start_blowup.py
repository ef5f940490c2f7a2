"""A loss that doubles in a run's first steps under a learning rate of 0.1 or more, or jumps tenfold at any rate:
the blow-up has begun."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class StartBlowupConfig(DiagnosticConfig):
    """Settings of :class:`StartBlowupDiagnostic`.

    Parameters
    ----------
    loss_metric, lr_metric
        The training loss and the logged learning rate. Defaults ``"loss"`` and ``"lr"``.
    min_lr
        The learning rate (the latest logged at or before a loss value) from
        which a rise counts. Default 0.1: ten times the top of the range
        Adam-family optimizers train at (1e-5 to 1e-2), where their step of
        about ``lr`` per weight replaces the weights instead of adjusting
        them, and the upper end of plain SGD's usual range.
    rise
        A loss value at least this multiple of the lowest before it. Default 2.
    sharp_rise
        A loss value at least this multiple of the median of the values before
        it counts at any learning rate (logged or not). Default 10: the largest
        such rise in the first values of 1,708 healthy runs of the tuning sets
        (the corpus training split, novel-21/22/27/39, the real logs' training
        half) was 3.8x. The median, not the lowest value: with small batches a
        single batch can log a near-zero loss (0.01 among values of 0.6), over
        which the next ordinary value is a 100x "rise".
    first_values
        Only the run's first loss values count: this many after the first.
        Default 5: once the first steps are past, a loss that rises is the
        divergence diagnostic's case, judged on its trend (at 10, a healthy
        SGD run at lr 0.15 of the tuning sets doubled its loss at its 10th value).

    Chosen on the corpus training split and four novel-domain corpora (828
    healthy runs, none flagged; at a rise of 1.5, one healthy SGD run at lr 0.15
    was) and the training half of the real logs, where no run's logged rate
    reaches 0.1. On the first check corpus after that (novel-41) it flagged
    one healthy run of 144: plain SGD at lr 0.127 on a squared loss, whose loss
    overshot 3.2x in its first steps and recovered.
    """

    loss_metric: str = "loss"
    lr_metric: str = "lr"
    min_lr: float = Field(default=0.1, gt=0.0)
    rise: float = Field(default=2.0, gt=1.0)
    sharp_rise: float = Field(default=10.0, gt=1.0)
    first_values: int = Field(default=5, ge=1)


class StartBlowupDiagnostic(Diagnostic):
    """Predicts divergence at a run's first steps: a high learning rate and a loss that already doubled.

    A learning rate too high from step 0 blows the loss up by its second or
    third logged value, before a trend can be fitted; the divergence
    diagnostic, which needs a climb to persist, reports it a value or two
    after the loss has left its range. A loss that doubles in the first steps
    under a learning rate of 0.1 or more is how those runs start (the
    optimizer's first updates overshoot by more than the distance to the
    minimum), while a healthy start at such a rate does not double its loss:
    so the first value up is enough, judged once per run, at most
    ``first_values`` values in. A log that starts mid-run (its first step more
    than twice its logging interval) is not judged: its first values are not
    the run's start, nor is a loss that goes negative in its first values
    (a policy-gradient or GRPO loss hovering around 0, an SI-SNR loss): ratios
    of such a loss say nothing about a blow-up.

    A loss that jumps ``sharp_rise`` times over the median of its values
    before, in the same first values, is blowing up whatever the rate (a
    MindSpore YOLO run at lr 0.098 went 11.7 -> 8.8 -> 8,713).

    Raises ``DIVERGENCE_PREDICTED`` (WARNING) once. Score: the rise over
    ``rise`` (or over ``sharp_rise`` for a jump at any rate).

    Examples
    --------
    >>> d = StartBlowupDiagnostic()
    >>> rows = [{"lr": 0.83, "loss": v} for v in (1.47, 5.38, 39.2, 36.0)]     # Adam at lr 0.83
    >>> (f,) = d.observe_block(MetricBlock.from_rows([0, 1, 2, 3], [0.0] * 4, rows))
    >>> f.step, f.kind.name, f.severity.name, round(f.score, 2)
    (1, 'DIVERGENCE_PREDICTED', 'WARNING', 1.83)
    >>> f.explanation
    'loss rose 3.7x (1.47 -> 5.38) at its 2nd value with lr 0.83: at this rate the loss is likely to blow up within a few steps; lower the learning rate (Adam-family optimizers train at 1e-5 to 1e-2) or warm it up'
    >>> StartBlowupDiagnostic().observe_block(MetricBlock.from_rows([0, 1], [0.0] * 2, [{"lr": 0.01, "loss": v} for v in (1.5, 5.4)]))
    []
    >>> rows = [{"loss": v} for v in (11.7, 8.85, 8712.6)]                     # no rate logged
    >>> (f,) = StartBlowupDiagnostic().observe_block(MetricBlock.from_rows([100, 200, 300], [0.0] * 3, rows))
    >>> f.step, f.explanation[:72]
    (300, 'loss jumped 848x over the median of its first values (10.3 -> 8.71e+03) ')
    >>> rows = [{"loss": v} for v in (-0.0143, 0.008, 0.0008, 0.0133)]        # GRPO's loss around 0
    >>> StartBlowupDiagnostic().observe_block(MetricBlock.from_rows([10, 20, 30, 40], [0.0] * 4, rows))
    []
    """

    name = "start_blowup"
    version = "2"
    config_class = StartBlowupConfig
    reference = "Learning rate above the stability limit (Goodfellow et al. 2016, sec. 8.2); Adam's step ~ lr (Kingma & Ba 2015)"
    state_attributes = ("done", "seen", "first_step", "prior", "lr")

    config: StartBlowupConfig

    def __init__(self, config: StartBlowupConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported, past the first values, or a log that starts mid-run: idle from now on
        self.seen = 0  # finite loss values so far
        self.first_step = -1
        self.prior: list[float] = []  # the finite loss values so far (at most first_values + 1)
        self.lr = math.nan  # the latest logged learning rate

    def watches(self, metric: str) -> bool:
        return metric in (self.config.loss_metric, self.config.lr_metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if self.done:
            return []
        cfg = self.config
        cols = block.columns
        loss, lr = cols.get(cfg.loss_metric), cols.get(cfg.lr_metric)
        if loss is None:
            if lr is not None and len(lr):
                self.lr = float(lr.values[-1])
            return []
        lr_steps = lr.steps if lr is not None else np.zeros(0, np.int64)
        for i, (step, value) in enumerate(zip(loss.steps.tolist(), loss.values.tolist())):
            if lr is not None:
                at = int(np.searchsorted(lr_steps, step, side="right"))  # the rate logged at or before this step
                if at:
                    self.lr = float(lr.values[at - 1])
            if not math.isfinite(value):
                continue
            if value < 0.0:
                self.done = True  # a loss that goes negative (a policy-gradient or GRPO loss near 0): no ratio judges it
                return []
            self.seen += 1
            if self.seen == 1:
                self.first_step = step
                self.prior = [value]
                continue
            if self.seen == 2 and self.first_step > 2 * (step - self.first_step):
                self.done = True  # a log that starts mid-run
                return []
            found = self._judge(value)
            if found is not None:
                self.done = True
                score, explanation = found
                return [self._finding(step, float(loss.wall_times[i]), score, explanation)]
            self.prior.append(value)
            if self.seen > cfg.first_values:
                self.done = True
                return []
        return []

    def _judge(self, value: float) -> tuple[float, str] | None:
        """A loss value against the first ones: its score and explanation when it is a blow-up's start, else None."""
        cfg = self.config
        lowest, median = min(self.prior), float(np.median(self.prior))
        nth = {2: "2nd", 3: "3rd"}.get(self.seen, f"{self.seen}th")
        if self.lr >= cfg.min_lr and lowest > 0 and value >= cfg.rise * lowest:
            ratio = value / lowest
            return ratio / cfg.rise, (
                f"{cfg.loss_metric} rose {ratio:.1f}x ({lowest:.3g} -> {value:.3g}) at its {nth} value with "
                f"{cfg.lr_metric} {self.lr:.3g}: at this rate the loss is likely to blow up within a few steps; lower "
                f"the learning rate (Adam-family optimizers train at 1e-5 to 1e-2) or warm it up"
            )
        if median > 0 and value >= cfg.sharp_rise * median:
            ratio = value / median
            rate = f" ({cfg.lr_metric} {self.lr:.3g})" if math.isfinite(self.lr) else ""
            return ratio / cfg.sharp_rise, (
                f"{cfg.loss_metric} jumped {ratio:.0f}x over the median of its first values ({median:.3g} -> "
                f"{value:.3g}) at its {nth} value{rate}: the loss is blowing up; lower the learning rate or warm it up, "
                f"clip gradients, and check the first batches' data and labels"
            )
        return None

    def _finding(self, step: int, wall: float, score: float, explanation: str) -> Finding:
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.WARNING,
            score=score,
            step=step,
            metric=self.config.loss_metric,
            explanation=explanation,
            wall_time=wall,
            since=self.first_step,
        )
