"""Predict divergence: the loss climbing exponentially before it becomes non-finite."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock, column_arrays, column_pair
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import DIVERGENCE_SCALARS, divergence, divergence_state, scratch
from runwatch.models.snapshot import with_default

_NO_LR = np.zeros(0)


class DivergenceConfig(DiagnosticConfig):
    """Settings of :class:`DivergenceDiagnostic`.

    Parameters
    ----------
    loss_metric, grad_metric, lr_metric
        The training loss, the global gradient norm and the learning rate.
        Defaults ``"loss"``, ``"grad_norm"``, ``"lr"`` (the learning rate only
        tells a warm restart from a jump: see ``shift_patience``).
    alpha
        EWMA weight of the fast-smoothed loss, the "current" level. Default
        0.3: it smooths mini-batch noise but lags an exponential climb by only
        ~2 steps.
    baseline_alpha
        EWMA weight of the slow-smoothed loss whose running minimum is the
        reference. Default 0.05: the minimum of a ~20-step average, not of a
        lucky mini-batch (the running minimum of a fast EWMA of batch-16
        losses sits well below the typical level and makes noise look like a
        climb).
    ratio
        The fast-smoothed loss must be at least this multiple of the
        reference. Default 2.0.
    window
        At most this many recent points are fitted. Default 30.
    min_points
        At least this many points are fitted. Default 6.
    min_log_slope
        Minimum slope of ``log(loss)`` per step, i.e. the loss grows by at
        least ``exp(min_log_slope)`` per step. Default 0.05 (x1.6 every 10
        steps).
    min_r2
        Minimum R² of the log-linear fit: the climb must be steady, not one
        jump. Default 0.6.
    patience
        Consecutive loss values the condition must hold. Default 3.
    warmup
        Loss values seen before the climb is fitted. Default 5: a learning
        rate that is far too high makes the loss explode from the first steps,
        and the reference and fit need only a handful of points. Within the
        warm-up only ``shift_ratio`` counts, and the initial level it sets is
        capped at ``shift_ratio`` x the start: a loss that leaves its start for
        good in one step (0.69 -> 2,441 -> 36,094 at Adam lr 0.76) is reported
        on its third value up, where a level taken from the blow-up itself
        had hidden it for the whole run.
    level_floor
        The reference is at least this fraction of the initial level (the
        highest fast-smoothed loss during warm-up) and losses below that floor
        are fitted as the floor: a converged loss wiggling near zero has large
        log-ratios that mean nothing. Default 0.05 (0.115 for a 10-class
        cross-entropy starting at 2.3): with it the gate opened on 3 of
        ~25,000 steps of healthy digits runs with batch size 16.
    grad_min_log_slope
        A global gradient norm whose log grows at least this fast (with R² >=
        ``min_r2``) while the loss is ``ratio`` x above its reference also
        predicts divergence, and together with the loss climb raises the
        severity to CRITICAL. Default 0.1 (x2.7 every 10 steps).
    shift_ratio
        A smoothed loss that has stayed this multiple of its reference, and
        above its initial level (all progress lost), for ``patience`` values
        has diverged whatever the shape of its rise: a jump that stays up,
        which is how a sparse log (a loss every 10-500 steps) records a
        blow-up, fits no steady per-step climb. Default 3.0, the corpus' own
        definition of a manifested divergence; 0 disables. The initial-level
        condition keeps a converged loss's noise (0.01 -> 0.05) out of it.
    shift_patience
        A smoothed loss that has stayed ``shift_ratio`` x its reference for
        this many values has diverged even with progress left (below its
        initial level): a loss that jumped and stays up, as corrupted data
        makes it (0.15 -> 1.2 against a start of 3.4). Default 10. Not while
        the learning rate is at least twice what the slowly smoothed loss had
        seen at its minimum: after a warm restart or in a cycle's climb the
        loss rises and stays up by design.
    progress_info_below
        A finding while the smoothed loss is below this fraction of its
        initial level (most of the run's progress kept) is INFO, shown and not
        paged, until the loss has stayed up for ``shift_patience`` values.
        Default 0.5, the plateau rule's bar for "most of the progress"
        (``PlateauConfig.progress_info_below``). A converged net's minibatch
        loss bursts (0.02 -> 0.25 for five steps against a start of 0.7) and
        comes back: 4 of the 6 healthy runs this rule flagged on the three
        novel-domain tuning corpora, while on them and the training split
        every first finding of this rule that came before its
        run's manifestation sat at 1.1x its initial level or above
        (docs/benchmarks.md, "Divergence with most of the progress kept").
        0 turns this off.
    """

    loss_metric: str = "loss"
    grad_metric: str = "grad_norm"
    lr_metric: str = "lr"
    alpha: float = Field(default=0.3, gt=0.0, le=1.0)
    baseline_alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    ratio: float = Field(default=2.0, gt=1.0)
    window: int = Field(default=30, ge=3)
    min_points: int = Field(default=6, ge=3)
    min_log_slope: float = Field(default=0.05, gt=0.0)
    min_r2: float = Field(default=0.6, ge=0.0, le=1.0)
    patience: int = Field(default=3, ge=1)
    warmup: int = Field(default=5, ge=0)
    level_floor: float = Field(default=0.05, ge=0.0)
    grad_min_log_slope: float = Field(default=0.1, gt=0.0)
    shift_ratio: float = Field(default=3.0, ge=0.0)
    shift_patience: int = Field(default=10, ge=1)
    progress_info_below: float = Field(default=0.5, ge=0.0)


class DivergenceDiagnostic(Diagnostic):
    """Predicts divergence while the loss is still finite.

    Divergence is predicted when the (fast-)smoothed loss has risen
    ``ratio`` x above its reference -- the running minimum of a slowly
    smoothed loss, floored at ``level_floor`` x the initial level -- **and**
    is climbing exponentially: ``log(loss)``
    rises linearly (slope >= ``min_log_slope`` per step, R² >= ``min_r2``)
    over the points since that minimum (between ``min_points`` and
    ``window`` of them), or over the current uninterrupted rise of the
    smoothed loss, for ``patience`` consecutive steps. A global gradient
    norm growing exponentially at the same time is corroborating evidence
    (and enough on its own while the loss is ``ratio`` x up). These are the
    textbook signatures of a learning rate above the stability limit: the
    error along the sharpest direction is multiplied by ``|1 - lr * lambda|
    > 1`` every step (Goodfellow et al., *Deep Learning*, sec. 8.2; Cohen et
    al. 2021, "Gradient descent on neural networks typically occurs at the
    edge of stability").

    The quiet path is two EWMAs, a running minimum and a ring-buffer write;
    the O(window) fit runs only while the loss is ``ratio`` x above its
    reference (on 3 of ~25,000 steps of healthy batch-16 digits runs). Both
    run in the compiled :func:`~runwatch.models.kernels.divergence` kernel,
    which visits the loss and gradient-norm values of a block in the order
    event-by-event feeding delivers them (by step; within a step, by metric
    name).

    Examples
    --------
    >>> d = DivergenceDiagnostic()
    >>> healthy = [{"grad_norm": 1.0, "loss": 2.0 / (1 + 0.1 * step)} for step in range(40)]  # loss decreasing
    >>> d.observe_block(MetricBlock.from_rows(list(range(40)), [0.0] * 40, healthy))
    []
    >>> # lr too high: loss and gradients grow 25 % per step
    >>> climb = [{"grad_norm": 1.25 ** (step - 40), "loss": 0.4 * 1.25 ** (step - 40)} for step in range(40, 60)]
    >>> f = d.observe_block(MetricBlock.from_rows(list(range(40, 60)), [0.0] * 20, climb))[0]
    >>> f.step, f.kind.name, f.severity.name
    (50, 'DIVERGENCE_PREDICTED', 'CRITICAL')
    >>> f.explanation
    'loss rose 3.31x above its minimum over the last 8 steps (log-slope 0.22/step, R² 1.00); grad_norm grows too (log-slope 0.22/step); divergence likely'
    """

    name = "divergence"
    version = "1"
    config_class = DivergenceConfig
    reference = (
        "Exponential loss/gradient growth under a learning rate above the stability limit "
        "(Goodfellow et al. 2016, sec. 8.2; Cohen et al. 2021, edge of stability)"
    )
    state_attributes = ("_state", "_lr")
    state_neutral_settings = ("progress_info_below",)  # a finding's severity, not run state

    config: DivergenceConfig

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._state = divergence_state(cfg.window)
        self._params = (
            int(cfg.window),
            float(cfg.alpha),
            float(cfg.baseline_alpha),
            float(cfg.ratio),
            int(cfg.warmup),
            int(cfg.min_points),
            float(cfg.min_log_slope),
            float(cfg.min_r2),
            int(cfg.patience),
            float(cfg.level_floor),
            float(cfg.grad_min_log_slope),
            float(cfg.shift_ratio),
            int(cfg.shift_patience),
        )
        self._loss_first = cfg.loss_metric < cfg.grad_metric
        self._lr = [math.nan]  # the last learning rate logged, carried to the next block's losses

    def watches(self, metric: str) -> bool:
        return metric in (self.config.loss_metric, self.config.grad_metric, self.config.lr_metric)

    def load_state_dict(self, snapshot: dict) -> bool:
        if not super().load_state_dict(with_default(snapshot, "_lr", [math.nan])):
            return False
        if len(self._state) == 9 + 4 * self.config.window:
            # from before the row at shift_ratio x the reference and the learning rate were kept (scalars 9-11):
            # no row yet, the learning rate unknown
            self._state = np.insert(self._state, 9, [0.0, math.nan, math.nan])
        if len(self._state) == 12 + 4 * self.config.window:
            # from before the first loss step was kept (scalars 12-13): the log taken to start at the run's start
            self._state = np.insert(self._state, 12, [0.0, 0.0])
        return len(self._state) == DIVERGENCE_SCALARS + 4 * self.config.window

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        grad, loss, aligned = column_pair(block, self.config.grad_metric, self.config.loss_metric)
        lr = block.columns.get(self.config.lr_metric)
        loss_lr = self._lr_at(loss, lr)
        if loss is None and grad is None:
            return []
        out = scratch(len(loss) if loss is not None else 0)
        loss_steps, loss_values = column_arrays(loss)
        nf = divergence(
            loss_steps,
            loss_values,
            loss_lr,
            *column_arrays(grad),
            self._loss_first,
            aligned,
            self._state,
            *self._params,
            out,
        )
        if not nf:
            return []
        return [self._finding(loss, row) for row in out[:nf].tolist()]

    def _lr_at(self, loss: Column | None, lr: Column | None) -> np.ndarray:
        """The learning rate in effect at each loss value: the last one logged at or before its step (NaN: none)."""
        last = self._lr[0]
        n = len(loss.values) if loss is not None else 0
        if lr is None:
            return np.full(n, last)
        if len(lr.values) == 1:  # one event per block, the SDK's live stream: scalars, no array passes
            value = float(lr.values[0])
            if not math.isfinite(value):
                return np.full(n, last)
            self._lr[0] = value
            if n == 1:
                return np.array([value if lr.steps[0] <= loss.steps[0] else last])
            return np.where(loss.steps >= lr.steps[0], value, last) if n else _NO_LR
        ok = np.isfinite(lr.values)
        lr_steps, lr_values = lr.steps[ok], lr.values[ok]
        if not len(lr_values):
            return np.full(n, last)
        self._lr[0] = float(lr_values[-1])
        if not n:
            return _NO_LR
        idx = np.searchsorted(lr_steps, loss.steps, side="right") - 1
        return np.where(idx >= 0, lr_values[np.maximum(idx, 0)], last).astype(np.float64)

    def _finding(self, col: Column, row: list[float]) -> Finding:
        i = int(row[0])
        slope, r2, g_slope, span, x = row[1], row[2], row[3], row[4], row[5]
        loss_climbs, grad_climbs = row[6] != 0.0, row[7] != 0.0
        level, up, lr_vs_at_min = row[8], int(row[9]), row[10]
        cfg = self.config
        # The learning rate is twice what the loss's slow level had seen at its minimum (a warm restart, a cycle):
        # a loss that stays up then is the schedule's doing.
        schedule = lr_vs_at_min >= 2.0
        stayed_up = up >= cfg.shift_patience and not schedule
        metric, grad_metric = cfg.loss_metric, cfg.grad_metric
        parts = [f"{metric} rose {x:.3g}x above its minimum over the last {span:.0f} steps"]
        if not (loss_climbs or grad_climbs):
            # The levels are the smoothed loss's: a last value back down after a blow-up does not undo them yet.
            parts[0] += (" and its smoothed level is back above its initial level (all progress lost; no steady climb)"
                         if level >= 1.0
                         else f" and has stayed {cfg.shift_ratio:g}x above it for {up} values (no steady climb)")
        if loss_climbs:
            parts[0] += f" (log-slope {slope:.2f}/step, R² {r2:.2f})"
        if grad_climbs:
            parts.append(
                f"{grad_metric} grows {'too' if loss_climbs else 'exponentially'} (log-slope {g_slope:.2f}/step)"
            )
        both = loss_climbs and grad_climbs
        # Shown, not paged: a loss that stayed up (no climb) after the learning rate went up without losing all
        # progress, and a rise that keeps most of it (a converged net's loss bursting from 0.02 to 0.25 and back,
        # against a start of 0.7) until it has stayed up for shift_patience values.
        after_lr = schedule and level < 1.0 and not (loss_climbs or grad_climbs)
        kept = level < cfg.progress_info_below and not stayed_up
        if after_lr:
            parts.append(f"the learning rate is {lr_vs_at_min:.3g}x what it was at the loss's minimum (a warm restart "
                         "or cycle), and not all progress is lost")
        elif kept:
            parts.append(f"still at {level:.2g}x its initial level, most of the progress kept")
        else:
            parts.append("divergence likely")
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.INFO if after_lr or kept else Severity.CRITICAL if both else Severity.ERROR,
            score=x * (2.0 if both else 1.0),
            step=int(col.steps[i]),
            metric=metric,
            explanation="; ".join(parts),
            related=(grad_metric,) if grad_climbs else (),
            key=metric,
            wall_time=float(col.wall_times[i]),
        )
