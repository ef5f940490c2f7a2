"""A training loss that fell abruptly to exactly 0 and stays there: it no longer carries a training signal."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.no_learning import idle_in_policy_gradient, is_policy_gradient_metric
from runwatch.models.findings import AnomalyKind, Finding, Severity


class ZeroLossConfig(DiagnosticConfig):
    """Settings of :class:`ZeroLossDiagnostic`.

    Parameters
    ----------
    loss_metric, grad_metric, val_metric
        The training loss, the gradient norm and the held-out loss. Defaults
        ``"loss"``, ``"grad_norm"`` and ``"val/loss"``.
    patience
        Consecutive logged losses of exactly 0. Default 5 (the real-log labels'
        ``collapse`` stretch).
    min_before
        The last non-zero loss before the stretch is at least this (or the
        stretch starts the run): an abrupt fall, not a converged loss that the
        log rounded to 0.0000 after 0.0004, 0.0001, ... Default 0.01.
    max_val_fall
        A held-out loss that falls by more than this fraction during the
        stretch means the model still learns: the zero is the training loss's
        logging, not the training. Default 0.05.
    """

    loss_metric: str = "loss"
    grad_metric: str = "grad_norm"
    val_metric: str = "val/loss"
    patience: int = Field(default=5, ge=2)
    min_before: float = Field(default=0.01, ge=0.0)
    max_val_fall: float = Field(default=0.05, ge=0.0, lt=1.0)


class ZeroLossDiagnostic(Diagnostic):
    """Flags a training loss logged as exactly 0 for ``patience`` values after an abrupt fall.

    A cross-entropy or regression loss does not reach exactly 0 in one
    logging interval: a loss that goes 0.03 -> 0.0 and stays there is
    computed over nothing (every label masked to -100, an empty batch after
    filtering, a loss multiplied by a zero weight) or lost to an fp16
    overflow that a quantised optimizer logs as 0. Training then does
    nothing while every curve looks calm. Guards from the real-log labels'
    ``collapse`` rule (bench/real_labels/README.md): where the gradient norm
    is logged during the stretch it must not vary (gradients that flow mean
    the zero is only the logged value), a held-out loss must not improve
    meanwhile, and policy-gradient runs (``reward`` / ``kl`` logged), whose
    surrogate loss is routinely exactly 0, are not judged. On 4,126 runs of
    the tuning sets (corpus training split, novel-21/22/27/39, the real
    logs' training half: MLPerf, nanoGPT, Lightning, TensorBoard, Trainer
    states) it fires on none.

    Raises ``PLATEAU`` (ERROR) once per run. Score: the stretch's length over
    ``patience``.

    Examples
    --------
    >>> d = ZeroLossDiagnostic()
    >>> rows = [{"loss": v} for v in (0.41, 0.0328, 0.0, 0.0, 0.0, 0.0, 0.0)]
    >>> (f,) = d.observe_block(MetricBlock.from_rows(list(range(10, 80, 10)), [0.0] * 7, rows))
    >>> f.step, f.kind.name, f.severity.name
    (70, 'PLATEAU', 'ERROR')
    >>> f.explanation[:71]
    'loss has been exactly 0 for 5 logged values (since step 30, after 0.032'
    >>> rows = [{"loss": v} for v in (0.002, 0.0004, 0.0001, 0.0, 0.0, 0.0, 0.0, 0.0)]   # converged, rounded
    >>> ZeroLossDiagnostic().observe_block(MetricBlock.from_rows(list(range(8)), [0.0] * 8, rows))
    []
    """

    name = "zero_loss"
    version = "1"
    config_class = ZeroLossConfig
    reference = "The real-log labels' collapse rule (bench/real_labels/README.md) made causal"
    state_attributes = ("done", "zeros", "since", "before", "grads", "val_at_start", "val")

    config: ZeroLossConfig

    def __init__(self, config: ZeroLossConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported, or a policy-gradient run: idle from now on
        self.zeros = 0  # consecutive exact zeros so far
        self.since = -1  # step of the stretch's first zero
        self.before = math.nan  # the last non-zero finite loss (NaN: none yet)
        self.grads: list[float] = []  # distinct gradient norms logged during the stretch (at most 2 kept)
        self.val_at_start = math.nan  # the held-out loss when the stretch began
        self.val = math.nan  # the latest held-out loss

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric in (cfg.loss_metric, cfg.grad_metric, cfg.val_metric) or is_policy_gradient_metric(metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        cols = block.columns
        if idle_in_policy_gradient(self, cols):
            return []
        cfg = self.config
        loss = cols.get(cfg.loss_metric)
        val = cols.get(cfg.val_metric)
        grad = cols.get(cfg.grad_metric)
        if loss is None:
            if val is not None and len(val):
                self.val = float(val.values[-1])
            if grad is not None and self.zeros:
                self._note_grads(grad.values.tolist())
            return []
        values = loss.values
        if not self.zeros and not (values == 0.0).any():  # the common case: nothing to follow
            finite = values[np.isfinite(values)]
            if len(finite):
                self.before = float(finite[-1])
            if val is not None and len(val):
                self.val = float(val.values[-1])
            return []
        return self._follow(loss, val, grad)

    def _note_grads(self, values: list[float]) -> None:
        for g in values:
            if math.isfinite(g) and g not in self.grads and len(self.grads) < 2:
                self.grads.append(g)

    def _follow(self, loss, val, grad) -> list[Finding]:
        """Step through the block's loss values, with the gradient norms and held-out losses logged up to each."""
        cfg = self.config
        gi = vi = 0
        g_steps = grad.steps.tolist() if grad is not None else []
        v_steps = val.steps.tolist() if val is not None else []
        for i, (step, value) in enumerate(zip(loss.steps.tolist(), loss.values.tolist())):
            while vi < len(v_steps) and v_steps[vi] <= step:
                self.val = float(val.values[vi])
                vi += 1
            first_g = gi
            while gi < len(g_steps) and g_steps[gi] <= step:
                gi += 1
            if not math.isfinite(value):
                continue
            if value != 0.0:
                self.zeros, self.grads, self.before = 0, [], value
                continue
            if self.zeros == 0:
                self.since, self.grads, self.val_at_start = step, [], self.val
            self._note_grads(grad.values[first_g:gi].tolist() if grad is not None else [])
            self.zeros += 1
            abrupt = not math.isfinite(self.before) or self.before >= cfg.min_before
            learning = (math.isfinite(self.val_at_start) and math.isfinite(self.val)
                        and self.val < (1.0 - cfg.max_val_fall) * self.val_at_start)
            if self.zeros >= cfg.patience and abrupt and len(self.grads) <= 1 and not learning:
                self.done = True
                return [self._finding(step, float(loss.wall_times[i]))]
        return []

    def _finding(self, step: int, wall: float) -> Finding:
        cfg = self.config
        after = f", after {self.before:.3g}" if math.isfinite(self.before) else ", from the run's first value"
        grads = f"; {cfg.grad_metric} {self.grads[0]:.3g} throughout" if self.grads else ""
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.ERROR,
            score=self.zeros / cfg.patience,
            step=step,
            metric=cfg.loss_metric,
            explanation=(
                f"{cfg.loss_metric} has been exactly 0 for {self.zeros} logged values (since step {self.since}{after})"
                f"{grads}: it no longer carries a training signal; check that the labels are not all masked "
                f"(-100), that batches are not empty after filtering, and for fp16 overflow in the loss"
            ),
            key="zero_loss",
            wall_time=wall,
            since=self.since,
        )
