"""A training loss that repeats exactly the same value, step after step: the model is not being updated."""

from __future__ import annotations

import math

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.no_learning import idle_in_policy_gradient, is_policy_gradient_metric
from runwatch.models.findings import AnomalyKind, Finding, Severity


def significant_digits(value: float) -> int:
    """How many significant digits ``value`` carries as written (trailing zeros dropped).

    >>> significant_digits(10.8259), significant_digits(0.7232), significant_digits(4.6), significant_digits(0.25)
    (6, 4, 2, 2)
    """
    mantissa = f"{abs(value):.12e}".split("e")[0].replace(".", "").rstrip("0")
    return max(len(mantissa), 1)


class FrozenLossConfig(DiagnosticConfig):
    """Settings of :class:`FrozenLossDiagnostic`.

    Parameters
    ----------
    loss_metric, val_metric
        The training loss and the held-out loss. Defaults ``"loss"`` and ``"val/loss"``.
    patience
        Consecutive logged values (distinct steps) of exactly the same loss. Default 8: a
        mini-batch loss printed to 4 decimals does not repeat 8 times in a row while the weights
        move; in 757 real runs of every earlier set the longest such repeat of a loss of at
        least ``min_value`` with ``min_digits`` digits was 8 values, on a run labelled
        ``no_learning`` (learning rate 5e-7).
    min_value
        The repeated loss is at least this: a loss at its floor, rounded by the log, repeats
        (0.0001 59 times in a Trainer state at 4 decimals; LeRobot's 0.023 14 times). Default 0.1.
    min_digits
        ... and carries at least this many significant digits, so a coarse print ("loss 0.45")
        of a plateau is not taken for a frozen model. Default 3.
    max_val_fall
        A held-out loss that falls by more than this fraction during the repeat means the
        model still learns. Default 0.05.
    """

    loss_metric: str = "loss"
    val_metric: str = "val/loss"
    patience: int = Field(default=8, ge=3)
    min_value: float = Field(default=0.1, ge=0.0)
    min_digits: int = Field(default=3, ge=1)
    max_val_fall: float = Field(default=0.05, ge=0.0, lt=1.0)


class FrozenLossDiagnostic(Diagnostic):
    """Flags a training loss that has logged exactly the same value for ``patience`` steps in a row.

    Mini-batches differ, so a loss computed on them differs from step to step as long as the
    weights (or the data) change; one that repeats to every printed digit comes from a model
    whose parameters no longer move and whose output does not depend on its input: a
    learning rate of 0, an optimizer given other parameters, weights collapsed to a constant
    output. A language model at ``ln(vocabulary)`` (lit-gpt's ``loss 10.8259`` = ln 50304 for
    23 iterations) and a classifier pinned at ``ln(K)`` show it; so does a run whose learning
    rate is so small that a 4-decimal mean does not change. Policy-gradient runs (``reward``
    / ``kl`` logged) are not judged, nor a repeat while the held-out loss falls.

    Raises ``PLATEAU`` (WARNING) once per run. Score: the repeat's length over ``patience``.

    Examples
    --------
    >>> d = FrozenLossDiagnostic()
    >>> rows = [{"loss": v} for v in [10.9, 10.8259] + [10.8259] * 8]
    >>> (f,) = d.observe_block(MetricBlock.from_rows(list(range(76, 86)), [0.0] * 10, rows))
    >>> f.step, f.kind.name, f.severity.name, f.explanation[:58]
    (84, 'PLATEAU', 'WARNING', 'loss has been exactly 10.8259 for 8 logged values in a row')
    >>> coarse = [{"loss": 0.45}] * 12  # two digits: a plateau printed coarsely
    >>> FrozenLossDiagnostic().observe_block(MetricBlock.from_rows(list(range(12)), [0.0] * 12, coarse))
    []
    """

    name = "frozen_loss"
    version = "1"
    config_class = FrozenLossConfig
    reference = "Issue threads: lit-gpt's loss frozen at ln(vocabulary), a Lightning bar's train_loss=4.600 for 8 steps"
    state_attributes = ("done", "value", "count", "since", "val_at_start", "val")

    config: FrozenLossConfig

    def __init__(self, config: FrozenLossConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported, or a policy-gradient run: idle from now on
        self.value = math.nan  # the loss being repeated (NaN: none yet)
        self.count = 0  # how many values in a row it has been logged
        self.since = -1  # the step of the repeat's first value
        self.val_at_start = math.nan  # the held-out loss when the repeat began
        self.val = math.nan  # the latest held-out loss

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric in (cfg.loss_metric, cfg.val_metric) or is_policy_gradient_metric(metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        cols = block.columns
        if idle_in_policy_gradient(self, cols):
            return []
        cfg = self.config
        loss, val = cols.get(cfg.loss_metric), cols.get(cfg.val_metric)
        if loss is None or not len(loss.values):
            if val is not None and len(val):
                self.val = float(val.values[-1])
            return []
        values = loss.values
        # The common case: no value repeats the one before it (within the block or across its start).
        if values[0] != self.value and (len(values) == 1 or not (values[1:] == values[:-1]).any()):
            self.value, self.count, self.since = float(values[-1]), 1, int(loss.steps[-1])
            self.val_at_start = self.val = float(val.values[-1]) if val is not None and len(val) else self.val
            return []
        return self._follow(loss, val)

    def _follow(self, loss, val) -> list[Finding]:
        cfg = self.config
        vi = 0
        v_steps = val.steps.tolist() if val is not None else []
        for i, (step, value) in enumerate(zip(loss.steps.tolist(), loss.values.tolist())):
            while vi < len(v_steps) and v_steps[vi] <= step:
                self.val = float(val.values[vi])
                vi += 1
            if value != self.value:
                self.value, self.count, self.since, self.val_at_start = value, 1, step, self.val
                continue
            self.count += 1
            learning = (math.isfinite(self.val_at_start) and math.isfinite(self.val)
                        and self.val < (1.0 - cfg.max_val_fall) * self.val_at_start)
            if (self.count >= cfg.patience and math.isfinite(value) and abs(value) >= cfg.min_value
                    and significant_digits(value) >= cfg.min_digits and not learning):
                self.done = True
                return [self._finding(step, float(loss.wall_times[i]))]
        return []

    def _finding(self, step: int, wall: float) -> Finding:
        cfg = self.config
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.WARNING,
            score=self.count / cfg.patience,
            step=step,
            metric=cfg.loss_metric,
            explanation=(
                f"{cfg.loss_metric} has been exactly {self.value:.6g} for {self.count} logged values in a row "
                f"(since step {self.since}): the weights are not being updated (or too little to change the printed "
                "loss), or the model gives the same output for every input; check the learning rate (0 or far too "
                "small?), that the optimizer holds the parameters being trained, and the last layer (a loss at "
                "ln(classes or vocabulary) is a uniform guess)"
            ),
            key="frozen_loss",
            wall_time=wall,
            since=self.since,
        )
