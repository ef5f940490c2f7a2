"""A training loss that made real progress and went back to where it started: everything learned is lost."""

from __future__ import annotations

import math
import statistics

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.no_learning import idle_in_policy_gradient, is_policy_gradient_metric
from runwatch.models.findings import AnomalyKind, Finding, Severity

#: Blocks of at most this many loss values are followed in plain Python (a live stream's usual few events).
SMALL_BLOCK = 16


class RelapseConfig(DiagnosticConfig):
    """Settings of :class:`RelapseDiagnostic`.

    Parameters
    ----------
    loss_metric, lr_metric
        The training loss and the learning rate. Defaults ``"loss"`` and ``"lr"``.
    window
        The loss's level is the median of its latest ``window`` values, and its
        start the median of its first ``window``. Default 5: a median of five
        ignores one or two odd minibatches.
    min_progress
        Progress counts once the level is this fraction below the start.
        Default 0.3.
    back
        The level is back at the start from this fraction of it. Default 0.95.
    patience
        Consecutive logged values back at the start. Default 10: on the tuning
        sets 5 flagged 2 healthy runs of 448 (minibatch noise early in a run)
        and 10 none.
    progress_hold
        Progress counts once the level has stayed below that bar for this many
        logged values in a row. Default 5: a noisy per-step loss (batch size 8)
        dips there by chance and comes back, which is no relapse.
    sparse_patience, span_steps
        ... or ``sparse_patience`` logged values in a row back at the start that span at
        least ``span_steps`` steps: a sparse log (the Trainer's loss every 50-500 steps)
        records a relapse in fewer values, while the minibatch noise that 5 values caught on
        the tuning sets lasted a few dense steps. Defaults 5 and 250 (a wav2vec2 CTC run whose
        loss fell 8,560 -> 2,114 and came back to 8,500 for 8 values, logged every 50 steps).
    lr_restart
        No finding while the learning rate is at least this multiple of the
        rate at the loss's best level: a warm restart or a cycle's climb raises
        the loss by design. Default 2.0.
    """

    loss_metric: str = "loss"
    lr_metric: str = "lr"
    window: int = Field(default=5, ge=1)
    min_progress: float = Field(default=0.3, gt=0.0, lt=1.0)
    back: float = Field(default=0.95, gt=0.0)
    patience: int = Field(default=10, ge=1)
    lr_restart: float = Field(default=2.0, gt=1.0)
    progress_hold: int = Field(default=5, ge=1)
    sparse_patience: int = Field(default=5, ge=1)
    span_steps: int = Field(default=250, ge=0)


class RelapseDiagnostic(Diagnostic):
    """Flags a training loss that fell well below its start and came back to it for good.

    A classifier that learned (0.67 -> 0.31) and then sits at chance again
    (0.69 = ln 2) for the rest of the run has lost everything it learned: a
    learning-rate or loss-scale blow-up that reset the weights to a constant
    predictor, corrupted data, a broken resume. The divergence rule's shift
    needs the loss at three times its minimum, which a loss bounded by its
    chance level never reaches (here 2.2x), and the no-learning rule compares
    only the first and the latest values. The rule: the median of the latest
    ``window`` losses stayed at least ``min_progress`` below the median of the
    first ``window`` for ``progress_hold`` values, and later is back at
    ``back`` x that start or above for ``patience`` logged values in a row,
    while the learning rate is below ``lr_restart`` x its value at the loss's
    best level. Policy-gradient runs (``reward``/``kl`` logged) are not judged:
    their surrogate loss is not expected to fall. On the tuning sets (the
    corpus's training split, 448 runs; the real logs' training half: nanoGPT,
    Lightning, TensorBoard, text, Trainer states, MLPerf, 2,719 runs) it flags
    no healthy run; it fires on 28 faulty corpus runs, all of which other rules
    catch too (docs/benchmarks.md, "A loss back at its start").

    Raises ``DIVERGENCE_PREDICTED`` (ERROR; the divergence has happened) once per
    run. Score: the level over the start.

    Examples
    --------
    >>> d = RelapseDiagnostic()
    >>> losses = [0.67, 0.66, 0.68, 0.65, 0.66] + [0.5, 0.4, 0.35, 0.32, 0.31, 0.3] + [0.7] * 14
    >>> rows = [{"loss": v} for v in losses]
    >>> (f,) = d.observe_block(MetricBlock.from_rows([10 * i for i in range(len(rows))], [0.0] * len(rows), rows))
    >>> f.step, f.kind.name, f.severity.name
    (220, 'DIVERGENCE_PREDICTED', 'ERROR')
    >>> f.explanation[:86]
    'loss is back at its start for 10 logged values: level 0.7 against a start of 0.66 afte'
    >>> steady = [2.3 * 0.98 ** i for i in range(200)]
    >>> RelapseDiagnostic().observe_block(MetricBlock.from_rows(list(range(200)), [0.0] * 200,
    ...                                                         [{"loss": v} for v in steady]))
    []
    """

    name = "relapse"
    version = "2"
    config_class = RelapseConfig
    reference = "runwatch: all progress lost, the no-learning rule's comparison with the start made after progress"
    state_attributes = ("done", "first", "recent", "best", "lr_at_best", "lr", "run", "low_run", "run_since")

    config: RelapseConfig

    def __init__(self, config: RelapseConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported, or a policy-gradient run: idle from now on
        self.first: list[float] = []  # the first `window` finite losses
        self.recent: list[float] = []  # the latest `window - 1` finite losses (the next level's other values)
        self.best = math.inf  # the lowest level since progress was made (inf: no progress yet)
        self.lr_at_best = math.nan  # the learning rate when that level was reached
        self.lr = math.nan  # the latest learning rate
        self.run = 0  # consecutive levels back at the start
        self.low_run = 0  # consecutive levels below the progress bar, until progress is made
        self.run_since = -1  # the step of the run's first level back at the start

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric in (cfg.loss_metric, cfg.lr_metric) or is_policy_gradient_metric(metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        cols = block.columns
        if idle_in_policy_gradient(self, cols):
            return []
        cfg = self.config
        lr = cols.get(cfg.lr_metric)
        loss = cols.get(cfg.loss_metric)
        if loss is None:
            return self._note_lr(lr)
        # small blocks (a live stream's few events) in plain Python: numpy's per-call overhead would dominate
        small = len(loss.values) <= SMALL_BLOCK
        if small:
            rows = [r for r in zip(loss.values.tolist(), loss.steps.tolist(), loss.wall_times.tolist()) if math.isfinite(r[0])]
            values, steps, walls = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        else:
            ok = np.isfinite(loss.values)
            values, steps, walls = loss.values[ok], loss.steps[ok], loss.wall_times[ok]
        need = cfg.window - len(self.first)
        if need > 0:  # the start's values are not judged themselves
            head = [float(v) for v in values[:need]]
            self.first.extend(head)
            joined = self.recent + head
            self.recent = joined[max(0, len(joined) - (cfg.window - 1)):]
            values, steps, walls = values[need:], steps[need:], walls[need:]
        if not len(values):
            return self._note_lr(lr)
        start = statistics.median(self.first)
        if not start > 0.0:
            self.done = True  # a loss at or below 0 is no ratio of anything
            return []
        lr_steps = None if lr is None else (lr.steps.tolist() if small else lr.steps)
        lr_values = None if lr is None else (lr.values.tolist() if small else lr.values)
        found = (self._scan_small(values, steps, walls, start, lr_steps, lr_values) if small
                 else self._scan(values, steps, walls, start, lr_steps, lr_values))
        self._note_lr(lr)
        return found

    def _note_lr(self, lr) -> list[Finding]:
        if lr is not None and len(lr.values):
            self.lr = float(lr.values[-1])
        return []

    def _scan_small(self, values, steps, walls, start, lr_steps, lr_values) -> list[Finding]:
        cfg = self.config
        history = self.recent + values
        levels = [statistics.median(history[j : j + cfg.window]) for j in range(len(values))]
        self.recent = history[max(0, len(history) - (cfg.window - 1)):]
        progressed = [level <= (1.0 - cfg.min_progress) * start for level in levels]
        high = [level >= cfg.back * start for level in levels]
        if not any(high) and not any(progressed):
            self.run = self.low_run = 0
            return []
        return self._follow(levels, progressed, high, steps, walls, start, lr_steps, lr_values)

    def _scan(self, values, steps, walls, start, lr_steps, lr_values) -> list[Finding]:
        cfg = self.config
        history = np.concatenate([np.asarray(self.recent, dtype=np.float64), values])
        windows = sliding_window_view(history, cfg.window)
        half = cfg.window // 2  # np.median's checks cost more than the partition itself on 5-value windows
        levels = np.partition(windows, half, axis=1)[:, half] if cfg.window % 2 else np.median(windows, axis=1)
        self.recent = history[max(0, len(history) - (cfg.window - 1)):].tolist()
        progressed = levels <= (1.0 - cfg.min_progress) * start
        high = levels >= cfg.back * start
        if not high.any() and not progressed.any():
            self.run = self.low_run = 0
            return []
        if math.isfinite(self.best) and not high.any():  # the common case once a run learned: nothing to follow
            j = int(np.argmin(levels))
            if levels[j] < self.best:  # what _follow does value by value, at once
                self.best = float(levels[j])
                k = -1 if lr_steps is None else int(np.searchsorted(lr_steps, steps[j], side="right")) - 1
                self.lr_at_best = float(lr_values[k]) if k >= 0 else self.lr
            self.run = 0
            return []
        return self._follow(levels.tolist(), progressed.tolist(), high.tolist(), steps, walls, start, lr_steps, lr_values)

    def _follow(self, levels, progressed, high, steps, walls, start, lr_steps, lr_values) -> list[Finding]:
        """Value by value: progress held long enough, then the stretch back at the start."""
        cfg = self.config
        li = 0
        for i, level in enumerate(levels):
            if lr_steps is not None:
                while li < len(lr_steps) and lr_steps[li] <= steps[i]:
                    self.lr = float(lr_values[li])
                    li += 1
            if math.isinf(self.best):  # progress counts once held; from then on every lower level is the best
                self.low_run = self.low_run + 1 if progressed[i] else 0
                if self.low_run >= cfg.progress_hold:
                    self.best, self.lr_at_best = level, self.lr
            elif level < self.best:
                self.best, self.lr_at_best = level, self.lr
            restart = (math.isfinite(self.lr) and math.isfinite(self.lr_at_best) and self.lr_at_best > 0.0
                       and self.lr >= cfg.lr_restart * self.lr_at_best)
            if math.isfinite(self.best) and high[i] and not restart:
                self.run += 1
                if self.run == 1:
                    self.run_since = int(steps[i])
                spanned = self.run >= cfg.sparse_patience and int(steps[i]) - self.run_since >= cfg.span_steps
                if self.run >= cfg.patience or spanned:
                    self.done = True
                    return [self._finding(int(steps[i]), float(walls[i]), level, start)]
            else:
                self.run = 0
        return []

    def _finding(self, step: int, wall: float, level: float, start: float) -> Finding:
        cfg = self.config
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.ERROR,
            score=level / start,
            step=step,
            metric=cfg.loss_metric,
            explanation=(
                f"{cfg.loss_metric} is back at its start for {self.run} logged values: level {level:.3g} against a "
                f"start of {start:.3g} after it had reached {self.best:.3g}; everything learned is lost (a blow-up "
                f"that reset the model to a constant prediction, corrupted data, a broken resume): resume from the "
                f"last checkpoint before the rise with a lower learning rate, and check the data and the loss scale"
            ),
            key="relapse",
            wall_time=wall,
        )
