"""Overfitting: validation loss rising above its best while training loss keeps falling."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock, column_arrays, column_pair
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import OVERFITTING_STATE, overfitting, positive_losses, scratch
from runwatch.models.snapshot import with_default


class OverfittingConfig(DiagnosticConfig):
    """Settings of :class:`OverfittingDiagnostic`.

    Parameters
    ----------
    train_metric, val_metric
        Default ``"loss"`` and ``"val/loss"``.
    alpha
        EWMA weight smoothing the mini-batch training loss, per step. Default
        0.05 (a memory of ~20 steps). A value logged ``g`` steps after the
        previous one weighs ``1 - (1 - alpha) ** g``, at most ``max_weight``:
        a log written every 500 steps (the HF Trainer's default) would
        otherwise take 20 values, 10,000 steps, to follow its loss, and a
        5-evaluation fine-tune could never show its training loss falling.
    max_weight
        The largest weight of one training value. Default 0.5: the smoothed
        loss always keeps a memory of about two logged values (one can be a
        noisy minibatch).
    rise
        The validation loss must be at least ``(1 + rise)`` x its best.
        Default 0.1 (10 %): the validation loss of a healthy run wobbles by a
        few percent around its trend, a model memorising its training set
        drifts upward steadily.
    ratio_threshold
        The generalisation gap must have widened: ``val / train`` at least
        ``(1 + ratio_threshold)`` x what it was at the best validation point.
        Default 0.1 (the number of SageMaker ``Overfit``'s test, which asks
        for ``(val - train) / train`` above it instead). A net trained with
        dropout or augmentation evaluates below its training loss (Keras
        histories: val 0.025 against train 0.066 at the best epoch); when its
        validation loss then doubles while the training loss keeps falling it
        overfits all the same, and SageMaker's absolute gap never opens: 3 of
        the 13 lasting overfits in 80 real Keras/PyTorch histories were missed
        for it alone.
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
    alert_patience
        Until the tests have held this many consecutive validation points the
        finding stays INFO (the dashboard shows it, nobody is paged). Default
        5: a small or noisy validation set makes a healthy run's validation
        loss rebound for a few evaluations and come back down (the corpus's
        healthy runs on tiny tabular sets, a real ViT fine-tune on 12
        evaluations); at 5 points, on the corpus training split and the two
        validation corpora of new datasets, healthy runs with a WARNING fell
        from 8 to 6, 9 to 5 and 11 to 9 of 252/144/144 with every injected
        overfit still caught, 2 validation intervals later (median delay after
        onset +50 to +87 steps).
    end_patience
        A run that finishes while its validation loss has stood above its best
        for this many points (fewer than ``patience``: no more evaluations will
        come) is reported then, if the rise reached ``alert_rise``. Default 2,
        the real-log labels' own two evaluations: a fine-tune evaluated once
        per epoch for 5 epochs, best after the third, has only two left.
    warmup
        Validation points before the first finding. Default 3.
    alert_rise
        Below ``(1 + alert_rise)`` x its best the finding is INFO (the
        early-stopping point has passed; the dashboard shows it, nobody is
        paged); from there on it is a WARNING, an ERROR at 2x. Default 0.25:
        in the corpus's training split the validation loss of 28 of 252
        healthy runs rose 11-27 % above its best at some point (it recovers,
        or the run ends there), of 3 more 36-110 %; every injected overfit
        reached 33 % or more.
    """

    train_metric: str = "loss"
    val_metric: str = "val/loss"
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    max_weight: float = Field(default=0.5, gt=0.0, le=1.0)
    rise: float = Field(default=0.1, gt=0.0)
    ratio_threshold: float = Field(default=0.1, ge=0.0)
    train_drop: float = Field(default=0.1, ge=0.0, lt=1.0)
    level_floor: float = Field(default=0.01, ge=0.0)
    patience: int = Field(default=3, ge=1)
    alert_patience: int = Field(default=5, ge=1)
    end_patience: int = Field(default=2, ge=1)
    warmup: int = Field(default=3, ge=0)
    alert_rise: float = Field(default=0.25, ge=0.0)


class OverfittingDiagnostic(Diagnostic):
    """Flags a widening generalisation gap.

    Follows SageMaker Debugger's ``Overfit`` rule in a scale-free form (the
    gap ``val / train`` has widened by ``ratio_threshold`` since the best
    validation point) and adds the early-stopping criterion (Prechelt 1998, "Early stopping -- but when?"):
    the validation loss is ``rise`` above its best (and ``level_floor`` x its
    first value above it) for ``patience`` consecutive validation points
    while the smoothed training loss kept falling (``train_drop`` below its
    value at the best validation point).
    Training-loss values only maintain its EWMA; validation values, every
    few steps, decide. Both run in the compiled
    :func:`~runwatch.models.kernels.overfitting` kernel, which visits them in
    the order event-by-event feeding delivers them (by step; within a step,
    by metric name).

    A loss that goes below zero (a negative log-likelihood, an ELBO) is no
    ratio scale: there the same tests take rises and falls over the values'
    magnitudes (``val - best >= rise * |best|``, the training loss down by
    ``train_drop * |train_at_best|``) and the gap as the difference
    ``val - train`` widening by ``ratio_threshold`` of its size at the best.

    Score: ``1 + (val - best_val) / |best_val|`` (``val / best_val`` for a positive loss).

    Examples
    --------
    >>> d = OverfittingDiagnostic()
    >>> rows = []
    >>> for step in range(200):
    ...     row = {"loss": 2.0 * 0.97 ** step}
    ...     if step % 10 == 9:
    ...         row["val/loss"] = 0.5 + abs(step - 59) * 0.004   # best at step 59, then rising
    ...     rows.append(row)
    >>> found = d.observe_block(MetricBlock.from_rows(list(range(200)), [0.0] * 200, rows))
    >>> first = found[0]
    >>> first.step, first.kind.name
    (99, 'OVERFITTING')
    >>> first.explanation
    'val/loss 0.66 is 32% above its best 0.5 (step 59) for 3 validation points while loss fell 0.666 -> 0.22; val/train gap 3x (was 0.751x at the best)'
    """

    name = "overfitting"
    version = "1"
    config_class = OverfittingConfig
    reference = "SageMaker Debugger Overfit (ratio_threshold 0.1); Prechelt 1998 early stopping"
    state_attributes = ("_state", "_held")
    state_neutral_settings = ("alert_patience",)  # severity only

    config: OverfittingConfig

    def __init__(self, config: OverfittingConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._state = np.zeros(OVERFITTING_STATE)
        self._params = (
            float(cfg.alpha),
            float(max(cfg.max_weight, cfg.alpha)),
            1.0 + cfg.rise,
            1.0 - cfg.train_drop,
            float(cfg.ratio_threshold),
            int(min(cfg.patience, cfg.end_patience)),  # rows below patience only wait for the run's end
            int(cfg.warmup),
            float(cfg.level_floor),
        )
        self._train_first = cfg.train_metric < cfg.val_metric
        # The last kernel row not paged yet (INFO for want of alert_patience points, or not reported for want of
        # patience), as [step, wall time, kernel row...]; a run that finishes while it still holds ends overfit.
        self._held: list[float] = []

    def load_state_dict(self, snapshot: dict) -> bool:
        """Restore :meth:`state_dict` output; a snapshot from before held findings (or the last training step)
        were kept restores none (the step: unknown, the next value weighs ``alpha``)."""
        if not super().load_state_dict(with_default(snapshot, "_held", [])):
            return False
        before_cadence = OVERFITTING_STATE - 2  # the last two scalars, the evaluation cadence, came later
        if len(self._state) < before_cadence:  # from before the last training step was kept: unknown
            self._state = np.concatenate([self._state, np.full(before_cadence - len(self._state), np.nan)])
        if len(self._state) < OVERFITTING_STATE:  # from before the evaluation cadence was kept: not known yet
            self._state = np.concatenate([self._state, np.zeros(OVERFITTING_STATE - len(self._state))])
        return True

    def watches(self, metric: str) -> bool:
        return metric in (self.config.train_metric, self.config.val_metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        train, val, aligned = column_pair(block, self.config.train_metric, self.config.val_metric)
        if val is None and train is None:
            return []
        val_steps, val_values = column_arrays(val)
        nf = overfitting(
            *column_arrays(train),
            val_steps,
            val_values,
            self._train_first,
            aligned,
            self._state,
            *self._params,
            out := scratch(len(val_values)),
        )
        if not nf:
            if len(val_values) and self._state[3] == 0:
                self._held = []  # the rise is over
            return []
        rows = out[:nf].tolist()
        last = rows[-1]
        held = last[4] < self.config.alert_patience
        self._held = [float(val.steps[int(last[0])]), float(val.wall_times[int(last[0])]), *last[1:]] if held else []
        patience = self.config.patience
        return [
            self._finding(int(val.steps[int(r[0])]), float(val.wall_times[int(r[0])]), r[1:])
            for r in rows if r[4] >= patience
        ]

    def on_end(self) -> list[Finding]:
        """A finished run whose validation loss still stands above its best (for ``end_patience`` points) ended overfit.

        Its last finding was INFO only for want of ``alert_patience`` points, or not reported for want of
        ``patience`` points, which a short run never gets.
        """
        if not self._held or self._state[3] < min(self.config.patience, self.config.end_patience):
            return []
        step, wall, *row = self._held
        self._held = []
        f = self._finding(int(step), wall, row, ended=True)
        f.explanation += "; the run ended so"
        return [f]

    def _finding(self, step: int, wall_time: float, row: list[float], ended: bool = False) -> Finding:
        value, best, best_step, run, train_at_best, train = row[0], row[1], int(row[2]), int(row[3]), row[4], row[5]
        metric, train_metric = self.config.val_metric, self.config.train_metric
        # the rise over the best's magnitude: value / best for a positive loss, and defined below zero too
        x = 1.0 + (value - best) / abs(best) if best != 0.0 else math.inf
        severity = Severity.ERROR if x >= 2.0 else Severity.WARNING if x >= 1.0 + self.config.alert_rise else Severity.INFO
        if run < self.config.alert_patience and not ended:
            severity = Severity.INFO
        return Finding(
            AnomalyKind.OVERFITTING,
            severity,
            score=x,
            step=step,
            metric=metric,
            explanation=(
                f"{metric} {value:.3g} is {x - 1.0:.0%} above its best {best:.3g} (step {best_step}) "
                f"for {run} validation points while {train_metric} fell {train_at_best:.3g} -> {train:.3g}; "
                + (
                    f"val/train gap {value / train:.3g}x"
                    + (f" (was {best / train_at_best:.3g}x at the best)" if train_at_best > 0.0 else "")
                    if positive_losses(best, train_at_best, train)
                    else f"val - train gap {value - train:.3g} (was {best - train_at_best:.3g} at the best)"
                )
            ),
            related=(train_metric,),
            wall_time=wall_time,
            # One stretch since the best: evaluations further apart than the alert policy's cool-down (an HF run
            # evaluating every 400 steps) opened a new incident at each one.
            since=best_step,
        )
