"""A loss that doubles in a run's first steps under a learning rate of 0.1 or more: the blow-up has begun."""

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
    the run's start.

    Raises ``DIVERGENCE_PREDICTED`` (WARNING) once. Score: the rise over ``rise``.

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
    """

    name = "start_blowup"
    version = "1"
    config_class = StartBlowupConfig
    reference = "Learning rate above the stability limit (Goodfellow et al. 2016, sec. 8.2); Adam's step ~ lr (Kingma & Ba 2015)"
    state_attributes = ("done", "seen", "first_step", "lowest", "lr")

    config: StartBlowupConfig

    def __init__(self, config: StartBlowupConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported, past the first values, or a log that starts mid-run: idle from now on
        self.seen = 0  # finite loss values so far
        self.first_step = -1
        self.lowest = math.inf  # the lowest loss so far
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
            self.seen += 1
            if self.seen == 1:
                self.first_step = step
                self.lowest = value
                continue
            if self.seen == 2 and self.first_step > 2 * (step - self.first_step):
                self.done = True  # a log that starts mid-run
                return []
            if self.lr >= cfg.min_lr and self.lowest > 0 and value >= cfg.rise * self.lowest:
                self.done = True
                return [self._finding(step, float(loss.wall_times[i]), value)]
            self.lowest = min(self.lowest, value)
            if self.seen > cfg.first_values:
                self.done = True
                return []
        return []

    def _finding(self, step: int, wall: float, value: float) -> Finding:
        cfg = self.config
        ratio = value / self.lowest
        nth = {2: "2nd", 3: "3rd"}.get(self.seen, f"{self.seen}th")
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.WARNING,
            score=ratio / cfg.rise,
            step=step,
            metric=cfg.loss_metric,
            explanation=(
                f"{cfg.loss_metric} rose {ratio:.1f}x ({self.lowest:.3g} -> {value:.3g}) at its {nth} value with "
                f"{cfg.lr_metric} {self.lr:.3g}: at this rate the loss is likely to blow up within a few steps; lower "
                f"the learning rate (Adam-family optimizers train at 1e-5 to 1e-2) or warm it up"
            ),
            wall_time=wall,
            since=self.first_step,
        )
