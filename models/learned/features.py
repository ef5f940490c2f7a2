"""Scale-free, streaming run features: one row per logged training loss.

Every learned detector reads the same rows. A row describes the run at one
logged loss value relative to the run itself (its start, its best point, its
own noise), never in absolute units, so a detector fitted on small CPU runs
can read a 7B fine-tune. Other metrics (learning rate, gradient norms,
validation loss, per-layer statistics) are carried forward to the loss's step,
so irregular and sparse logging (a value every 1 or every 500 steps, a
validation point every N) changes how many rows a run has, not what a row
means. Missing metrics are NaN.

Smoothing runs in observation units with a warm start (an average of
everything seen while fewer than ``1/alpha`` points have arrived), so a run
with 20 logged points and one with 2,000 both have meaningful fast and slow
levels. The detectors are trained on dense and thinned copies of each run.

Examples
--------
>>> from runwatch.models.block import MetricBlock
>>> feats = RunFeatures()
>>> rows = [{"loss": 2.3 * 0.99 ** s, "lr": 1e-3, "grad_norm": 1.0} for s in range(50)]
>>> steps, x = feats.update(MetricBlock.from_rows(list(range(50)), [0.0] * 50, rows))
>>> x.shape == (50, len(FEATURES)), round(float(x[-1, FEATURES.index("loss_vs_start")]), 1)
(True, -0.5)
>>> bool(np.isnan(x[-1, FEATURES.index("val_vs_best")]))    # no validation loss logged
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from runwatch.models.block import Column, MetricBlock
from runwatch.models.kernels import jit

FEATURES: tuple[str, ...] = (
    "loss_vs_start",  # log(smoothed loss / its level over the first 3 points)
    "loss_vs_best",  # log(smoothed loss / its running minimum), >= 0
    "loss_trend",  # log(fast / slow smoothed loss): > 0 while rising
    "loss_jump",  # (log loss - slow level) / the run's own noise: a spike in noise units
    "loss_noise",  # mean |log loss - fast level|: how noisy this run is
    "grad_vs_start",
    "grad_vs_best",
    "grad_trend",
    "grad_jump",
    "lr_vs_max",  # log(lr / highest lr before), > 0 only when the lr exceeds all it has been
    "lr_vs_at_best",  # log(lr / lr when the loss was at its best)
    "lr_change",  # log(lr / previous lr)
    "val_vs_best",  # log(validation loss / its best so far), >= 0
    "val_gap",  # log(validation loss / smoothed training loss)
    "val_gap_change",  # val_gap now minus val_gap at the best validation point
    "update_ratio",  # log10(largest per-layer update ratio) + 3 (healthy runs sit near 0)
    "layer_grad_max",  # largest per-layer log(grad norm / its first value)
    "layer_grad_min",  # smallest per-layer log(grad norm / its first value): vanishing
    "progress",  # log10(1 + loss values seen) / 3
    "nonfinite",  # 1 when this loss (or the gradient norm) is NaN/Inf
)
"""Feature names, in column order."""

N_FEATURES = len(FEATURES)


def check_feature_names(names):
    """``names`` unchanged when each is one of :data:`FEATURES`; else ValueError naming the unknown ones (for
    pydantic validators of settings that name features).

    >>> check_feature_names(("grad_vs_start",))
    ('grad_vs_start',)
    """
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; features are {list(FEATURES)}")
    return names
F = {name: i for i, name in enumerate(FEATURES)}

FEATURE_METRIC: dict[str, str] = {
    **{n: "loss" for n in FEATURES if n.startswith("loss_")},
    **{n: "grad_norm" for n in FEATURES if n.startswith("grad_")},
    **{n: "lr" for n in FEATURES if n.startswith("lr_")},
    **{n: "val/loss" for n in FEATURES if n.startswith("val_")},
    "update_ratio": "update_ratio/",
    "layer_grad_max": "grad_norm/",
    "layer_grad_min": "grad_norm/",
    "progress": "loss",
    "nonfinite": "loss",
}
"""The metric (or per-layer prefix) each feature is read from, for explanations."""

LOSS_NAMES = ("loss", "train/loss", "train_loss")
VAL_NAMES = ("val/loss", "val_loss", "eval/loss", "eval_loss")
LR_NAMES = ("lr", "learning_rate", "train/lr")
GRAD_NAMES = ("grad_norm", "train/grad_norm")
UPDATE_PREFIX = "update_ratio/"
LAYER_GRAD_PREFIX = "grad_norm/"

FAST, SLOW, NOISE_ALPHA = 0.3, 0.05, 0.1
START_POINTS = 3
_FLOOR = 1e-12
_CLIP = 20.0

# Per positive series (loss, grad norm), the kernel's state:
# 0 seen, 1 fast, 2 slow, 3 noise, 4 start sum, 5 best (of fast), 6 last output vs_start, 7 vs_best, 8 trend
SERIES_STATE = 9

_PROGRESS, _NONFINITE = F["progress"], F["nonfinite"]
_GRAD_COL_LIST = [F["grad_vs_start"], F["grad_vs_best"], F["grad_trend"], F["grad_jump"]]
_GRAD_COLS = slice(F["grad_vs_start"], F["grad_jump"] + 1)
_VAL_COLS = slice(F["val_vs_best"], F["val_gap_change"] + 1)
_LR_VS_MAX, _LR_VS_AT_BEST, _LR_CHANGE = F["lr_vs_max"], F["lr_vs_at_best"], F["lr_change"]
_LAYER_FEATURES = (("update", "update_last", F["update_ratio"]), ("max", "layer_max_last", F["layer_grad_max"]),
                   ("min", "layer_min_last", F["layer_grad_min"]))
assert _GRAD_COL_LIST == list(range(_GRAD_COLS.start, _GRAD_COLS.stop))
assert [F["val_vs_best"], F["val_gap"], F["val_gap_change"]] == list(range(_VAL_COLS.start, _VAL_COLS.stop))


@jit
def track_series(values: np.ndarray, state: np.ndarray, out: np.ndarray, improved: np.ndarray) -> None:
    """Update one positive series' smoothing state with ``values``; write 5 features per value.

    ``out[i]`` = (vs_start, vs_best, trend, jump, noise, log fast level), ``improved[i]`` = 1
    when value i set a new best. Non-finite values repeat the last features
    with a zero jump and leave the state alone.
    """
    for i in range(len(values)):
        v = float(values[i])
        improved[i] = 0.0
        if not math.isfinite(v):
            out[i, 0] = state[6]
            out[i, 1] = state[7]
            out[i, 2] = state[8]
            out[i, 3] = 0.0
            out[i, 4] = state[3]
            out[i, 5] = state[1] if state[0] > 0 else math.nan
            continue
        lv = math.log(v if v > _FLOOR else _FLOOR)
        n = state[0]
        if n == 0.0:
            state[1] = lv
            state[2] = lv
            state[3] = 0.0
            state[4] = lv
            state[5] = lv
            jump = 0.0
        else:
            noise = state[3] if state[3] > 0.02 else 0.02
            jump = (lv - state[2]) / noise
            if jump > _CLIP:
                jump = _CLIP
            elif jump < -_CLIP:
                jump = -_CLIP
            a_n = NOISE_ALPHA if NOISE_ALPHA > 1.0 / (n + 1.0) else 1.0 / (n + 1.0)
            state[3] += a_n * (abs(lv - state[1]) - state[3])
            a_f = FAST if FAST > 1.0 / (n + 1.0) else 1.0 / (n + 1.0)
            a_s = SLOW if SLOW > 1.0 / (n + 1.0) else 1.0 / (n + 1.0)
            state[1] += a_f * (lv - state[1])
            state[2] += a_s * (lv - state[2])
            if n < START_POINTS:
                state[4] += lv
        n += 1.0
        state[0] = n
        if state[1] < state[5]:
            state[5] = state[1]
            improved[i] = 1.0
        start = state[4] / (n if n < START_POINTS else START_POINTS)
        vs_start = state[1] - start
        vs_best = state[1] - state[5]
        trend = state[1] - state[2]
        state[6] = vs_start
        state[7] = vs_best
        state[8] = trend
        out[i, 0] = vs_start
        out[i, 1] = vs_best
        out[i, 2] = trend
        out[i, 3] = jump
        out[i, 4] = state[3]
        out[i, 5] = state[1]


def _finite(col: Column) -> Column | None:
    """The column without its non-finite values (the nonfinite diagnostic reports those), or None if none is left."""
    if len(col.values) == 1:  # one event (a small batch): the same answer without the array checks
        return col if math.isfinite(col.values[0]) else None
    ok = np.isfinite(col.values)
    if ok.all():
        return col
    if not ok.any():
        return None
    return Column(col.steps[ok], col.values[ok], col.wall_times[ok])


def _first_column(block: MetricBlock, names: Iterable[str]) -> Column | None:
    for name in names:
        col = block.columns.get(name)
        if col is not None:
            return _finite(col)
    return None


def _carry(
    ch_steps: np.ndarray, ch_values: np.ndarray, at: np.ndarray, before: float, increasing: bool | None = None
) -> np.ndarray:
    """The channel's latest value at or before each step of ``at`` (``before`` when none is in the block).

    ``increasing``: whether ``at`` strictly increases, when the caller knows (else checked here).
    """
    if len(ch_steps) == 0:
        return np.full(len(at), before)
    if len(at) == 1 and len(ch_steps) == 1:  # one event (a small batch): what the search below finds
        return np.array([ch_values[0] if ch_steps[0] <= at[0] else before], dtype=np.float64)
    if ch_steps is at and (increasing if increasing is not None else len(at) < 2 or bool((at[1:] > at[:-1]).all())):
        return ch_values.astype(np.float64, copy=True)  # logged at every step of ``at``: each its own value
    idx = np.searchsorted(ch_steps, at, side="right") - 1
    out = ch_values[np.maximum(idx, 0)].astype(np.float64, copy=True)
    out[idx < 0] = before
    return out


def _per_step_extreme(parts: list[tuple[np.ndarray, np.ndarray]], fn) -> tuple[np.ndarray, np.ndarray]:
    """Combine (steps, values) of several layers into one value per step with ``fn`` (np.fmax / np.fmin)."""
    first = parts[0][0]
    if len(first) == 1 and all(len(s) == 1 and s[0] == first[0] for s, _ in parts[1:]):
        # One step (a small batch): every layer's value folded in layer order, as reduceat does below.
        values = np.concatenate([v for _, v in parts])
        return first.copy(), fn.reduce(values, keepdims=True)
    if all(s is first or np.array_equal(s, first) for s, _ in parts[1:]) and (
        len(first) < 2 or bool((first[1:] > first[:-1]).all())
    ):
        # Every layer at the same increasing steps (each logged at every event): one value per layer at each
        # step, folded in layer order. The values (see _layers) are never NaN or -0.0, so fmax / fmin pick one
        # of them and ties are between equal bits: the same result as reduceat's fold below.
        out = parts[0][1].astype(np.float64, copy=True)
        for _, v in parts[1:]:
            fn(out, v, out=out)
        return first.copy(), out
    steps = np.concatenate([s for s, _ in parts])
    values = np.concatenate([v for _, v in parts])
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    uniq, starts = np.unique(steps, return_index=True)
    return uniq, fn.reduceat(values, starts)


_LAYOUTS: dict[tuple[str, ...], tuple] = {}


def _layout(columns: dict) -> tuple:
    """Where a block's channels are, by its metric names: the first present name of the loss, gradient norm,
    learning rate and validation loss (None when absent), then the per-layer columns in order as
    (name, is update ratio, layer, key).

    Cached per set of names (a run logs the same metrics block after block); the cache is bounded.
    """
    names = tuple(columns)
    found = _LAYOUTS.get(names)
    if found is None:
        layers = []
        for name in names:
            if name.startswith(UPDATE_PREFIX):
                layer = name[len(UPDATE_PREFIX):]
                layers.append((name, True, layer, "u:" + layer))
            elif name.startswith(LAYER_GRAD_PREFIX):
                layer = name[len(LAYER_GRAD_PREFIX):]
                layers.append((name, False, layer, "g:" + layer))
        first = [next((n for n in group if n in columns), None) for group in (LOSS_NAMES, GRAD_NAMES, LR_NAMES, VAL_NAMES)]
        found = (*first, tuple(layers))
        if len(_LAYOUTS) >= 512:
            _LAYOUTS.clear()
        _LAYOUTS[names] = found
    return found


def _channel(block: MetricBlock, name: str | None) -> Column | None:
    """:func:`_first_column` given the first present name (from :func:`_layout`)."""
    if name is None:
        return None
    col = block.columns[name]
    return col if block.finite else _finite(col)  # a block known to be finite needs no check per column


class RunFeatures:
    """Streaming feature state of one run (see the module docstring).

    :meth:`update` consumes a :class:`MetricBlock` and returns the steps and
    feature rows of the block's training-loss values; :meth:`state_dict`
    and :meth:`load_state_dict` checkpoint it as plain data.
    """

    def __init__(self) -> None:
        self.loss_state = np.zeros(SERIES_STATE)
        self.grad_state = np.zeros(SERIES_STATE)
        self.grad_last = np.full(5, np.nan)  # last grad features (carried to later loss steps)
        self.lr_last = math.nan
        self.lr_max = math.nan
        self.lr_at_best = math.nan
        self.lr_features = np.full(3, np.nan)
        self.val_best = math.nan
        self.val_gap_at_best = math.nan
        self.val_features = np.full(3, np.nan)
        self.update_last = math.nan
        self.layer_max_last = math.nan
        self.layer_min_last = math.nan
        self.layer_start: dict[str, float] = {}
        self.layer_latest: dict[str, float] = {}  # per-layer latest log(grad / first) and update ratio, for naming
        self.loss_fast_last = math.nan
        self.seen = 0

    state_attributes = (
        "loss_state", "grad_state", "grad_last", "lr_last", "lr_max", "lr_at_best", "lr_features", "val_best",
        "val_gap_at_best", "val_features", "update_last", "layer_max_last", "layer_min_last", "layer_start",
        "layer_latest", "loss_fast_last", "seen",
    )

    def state_dict(self) -> dict:
        return {a: getattr(self, a) for a in self.state_attributes}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunFeatures):
            return NotImplemented
        from runwatch.models.snapshot import encode

        return encode(self.state_dict()) == encode(other.state_dict())

    def load_state_dict(self, state: dict) -> None:
        for a in self.state_attributes:
            v = state[a]
            setattr(self, a, dict(v) if isinstance(v, dict) else v)

    # -- update -----------------------------------------------------------------------------

    def update(self, block: MetricBlock) -> tuple[np.ndarray, np.ndarray]:
        """Consume one block; return ``(steps, rows)`` for its training-loss values."""
        self._names = _layout(block.columns)
        loss = _channel(block, self._names[0])
        self._layers(block)
        if loss is None:
            self._side_channels(block, np.zeros(0, np.int64), np.zeros(0), self.loss_fast_last)
            return np.zeros(0, np.int64), np.zeros((0, N_FEATURES))
        steps, values = loss.steps, loss.values
        n = len(values)
        x = np.full((n, N_FEATURES), np.nan)
        prev_fast = self.loss_fast_last
        tmp = np.empty((n, 6))
        improved = np.empty(n)
        track_series(values, self.loss_state, tmp, improved)
        x[:, 0:5] = tmp[:, :5]
        self._side_channels(block, steps, tmp[:, 5], prev_fast, improved, x)
        self.loss_fast_last = float(self.loss_state[1]) if self.loss_state[0] > 0 else math.nan
        self.seen += n
        if n == 1:
            x[0, _PROGRESS] = np.log10(1.0 + self.seen - n + 1) / 3.0
        else:
            x[:, _PROGRESS] = np.log10(1.0 + self.seen - n + np.arange(1, n + 1)) / 3.0
        x[:, _NONFINITE] = 0.0  # non-finite values never enter the features (kept for the artifact's layout)
        np.minimum(np.maximum(x, -_CLIP, out=x), _CLIP, out=x)  # np.clip (NaN stays NaN), without its Python wrapper
        return steps, x

    def _side_channels(
        self,
        block: MetricBlock,
        steps: np.ndarray,
        loss_fast: np.ndarray,
        fast_before: float,
        improved: np.ndarray | None = None,
        x: np.ndarray | None = None,
    ) -> None:
        # Whether the loss steps strictly increase: checked once for every channel carried to them.
        inc = len(steps) < 2 or bool((steps[1:] > steps[:-1]).all())
        # gradient norm: its own smoothing, carried to the loss steps
        grad = _channel(block, self._names[1])
        if grad is not None and len(grad):
            g = np.empty((len(grad), 6))
            gi = np.empty(len(grad))
            track_series(grad.values, self.grad_state, g, gi)
            if x is not None and len(steps) == 1 and len(grad) == 1:  # what _carry finds for one step
                x[0, _GRAD_COLS] = g[0, :4] if grad.steps[0] <= steps[0] else self.grad_last[:4]
            elif x is not None and grad.steps is steps and inc:  # logged with every loss: each row its own values
                x[:, _GRAD_COLS] = g[:, :4]
            elif x is not None:
                for j, c in enumerate(_GRAD_COL_LIST):
                    x[:, c] = _carry(grad.steps, g[:, j], steps, self.grad_last[j], inc)
            last = np.empty(5)
            last[:4] = g[-1, :4]
            last[4] = np.nan
            self.grad_last = last
        elif x is not None:
            x[:, _GRAD_COLS] = self.grad_last[:4]

        # learning rate
        lr = _channel(block, self._names[2])
        if lr is not None and len(lr) == 1 and len(steps) <= 1:
            lr_at_loss, ch_vs_max, ch_change = self._lr_one(lr, steps)
        elif lr is not None and len(lr):
            lv = np.log(np.maximum(np.where(np.isfinite(lr.values), lr.values, np.nan), _FLOOR))
            prev = np.concatenate([[math.log(self.lr_last) if self.lr_last > 0 else np.nan], lv[:-1]])
            prev_max = np.fmax.accumulate(np.concatenate([[math.log(self.lr_max) if self.lr_max > 0 else np.nan], lv]))[:-1]
            vs_max = np.where(np.isnan(prev_max), 0.0, np.maximum(lv - prev_max, 0.0))
            change = np.where(np.isnan(prev), 0.0, lv - prev)
            lr_at_loss = _carry(lr.steps, lv, steps, math.log(self.lr_last) if self.lr_last > 0 else np.nan, inc)
            ch_vs_max = _carry(lr.steps, vs_max, steps, self.lr_features[0], inc)
            ch_change = _carry(lr.steps, change, steps, self.lr_features[2], inc)
            last = float(np.exp(lv[-1])) if np.isfinite(lv[-1]) else self.lr_last
            top = float(np.exp(np.fmax.reduce(lv)))  # np.nanmax's value (one of them, NaN only when all are) without its wrapper
            self.lr_max = top if np.isnan(self.lr_max) else max(self.lr_max, top)
            self.lr_last = last
            self.lr_features = np.array([vs_max[-1], np.nan, change[-1]])
        else:
            lr_at_loss = np.full(len(steps), math.log(self.lr_last) if self.lr_last > 0 else np.nan)
            ch_vs_max = np.full(len(steps), self.lr_features[0])
            ch_change = np.full(len(steps), 0.0 if self.lr_last > 0 else np.nan)
        if x is not None and len(steps) == 1:  # one loss row: the branch below on scalars
            if improved is not None and improved[0] > 0:
                best = lr_at_loss[0]
                if math.isfinite(best):
                    self.lr_at_best = float(np.exp(best))
            else:
                best = math.log(self.lr_at_best) if self.lr_at_best > 0 else np.nan
            x[0, _LR_VS_MAX] = ch_vs_max[0]
            x[0, _LR_VS_AT_BEST] = lr_at_loss[0] - best
            x[0, _LR_CHANGE] = ch_change[0]
        elif x is not None and len(steps):
            best_lr = np.full(len(steps), math.log(self.lr_at_best) if self.lr_at_best > 0 else np.nan)
            if improved is not None and improved.any():
                pos = np.where(improved > 0, np.arange(len(steps)), -1)
                pos = np.maximum.accumulate(pos)
                best_lr = np.where(pos >= 0, lr_at_loss[np.maximum(pos, 0)], best_lr)
                if np.isfinite(best_lr[-1]):
                    self.lr_at_best = float(np.exp(best_lr[-1]))
            x[:, F["lr_vs_max"]] = ch_vs_max
            x[:, F["lr_vs_at_best"]] = lr_at_loss - best_lr
            x[:, F["lr_change"]] = ch_change

        # validation loss: one update per validation point, carried forward
        val = _channel(block, self._names[3])
        if val is not None and len(val):
            fast_at = _carry(steps, loss_fast, val.steps, fast_before)
            before = self.val_features.copy()
            feats = np.empty((len(val), 3))
            for i, (v, lf) in enumerate(zip(val.values.tolist(), fast_at.tolist())):
                if not math.isfinite(v):
                    feats[i] = (_CLIP, self.val_features[1], self.val_features[2])
                    continue
                lvv = math.log(max(v, _FLOOR))
                gap = lvv - lf if math.isfinite(lf) else math.nan
                if not (self.val_best == self.val_best) or lvv < self.val_best:  # first point or new best
                    self.val_best = lvv
                    self.val_gap_at_best = gap
                feats[i] = (lvv - self.val_best, gap, gap - self.val_gap_at_best)
            self.val_features = feats[-1].copy()
            if x is not None:
                for j, c in enumerate([F["val_vs_best"], F["val_gap"], F["val_gap_change"]]):
                    x[:, c] = _carry(val.steps, feats[:, j], steps, before[j], inc)
        elif x is not None:
            x[:, _VAL_COLS] = self.val_features

        if x is not None and len(steps) == 1:  # one loss row: what _carry finds, written in place
            at = steps[0]
            for which, attr, c in _LAYER_FEATURES:
                s, v = self._pending[which]
                if len(s) == 1:
                    x[0, c] = v[0] if s[0] <= at else getattr(self, attr)
                else:
                    x[:, c] = _carry(s, v, steps, getattr(self, attr), inc)
        elif x is not None:
            x[:, F["update_ratio"]] = _carry(*self._layer_series("update"), steps, self.update_last, inc)
            x[:, F["layer_grad_max"]] = _carry(*self._layer_series("max"), steps, self.layer_max_last, inc)
            x[:, F["layer_grad_min"]] = _carry(*self._layer_series("min"), steps, self.layer_min_last, inc)
        self._commit_layers()

    def _lr_one(self, lr: Column, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The learning-rate branch of :meth:`_side_channels` for one (finite) lr value and at most one loss step.

        The same operations on scalars: the log is numpy's (``np.log``), as on the arrays.
        """
        v = lr.values[0]  # finite: _first_column dropped non-finite values
        lv = np.log(v if v >= _FLOOR else _FLOOR)  # np.maximum(v, _FLOOR) for a finite v
        prev = math.log(self.lr_last) if self.lr_last > 0 else math.nan
        prev_max = math.log(self.lr_max) if self.lr_max > 0 else math.nan
        vs_max = 0.0 if math.isnan(prev_max) else np.maximum(lv - prev_max, 0.0)
        change = 0.0 if math.isnan(prev) else lv - prev
        if len(steps):
            on = lr.steps[0] <= steps[0]
            lr_at_loss = np.array([lv if on else prev], dtype=np.float64)
            ch_vs_max = np.array([vs_max if on else self.lr_features[0]], dtype=np.float64)
            ch_change = np.array([change if on else self.lr_features[2]], dtype=np.float64)
        else:
            lr_at_loss = ch_vs_max = ch_change = np.zeros(0)
        e = float(np.exp(lv))
        last = e if math.isfinite(lv) else self.lr_last
        if math.isnan(lv):
            self.lr_max = float(np.exp(np.nanmax(np.array([lv]))))  # all-NaN: as the array path
        else:
            self.lr_max = e if math.isnan(self.lr_max) else max(self.lr_max, e)
        self.lr_last = last
        self.lr_features = np.array([vs_max, np.nan, change])
        return lr_at_loss, ch_vs_max, ch_change

    # -- per-layer channels ---------------------------------------------------------------------

    def _layers(self, block: MetricBlock) -> None:
        """Reduce the block's per-layer columns to one value per step (largest update ratio, extreme grad growth)."""
        if len(block.steps) == 1:
            self._layers_one(block)
            return
        if self._layers_dense(block):
            return
        upd, gmax = [], []
        for name, col in block.columns.items():
            if not (name.startswith(UPDATE_PREFIX) or name.startswith(LAYER_GRAD_PREFIX)):
                continue
            col = _finite(col)
            if col is None:
                continue
            if name.startswith(UPDATE_PREFIX):
                v = np.log10(np.maximum(np.abs(col.values), 1e-30)) + 3.0
                v = np.where(np.isfinite(col.values), v, _CLIP)
                upd.append((col.steps, v))
                self.layer_latest["u:" + name[len(UPDATE_PREFIX):]] = float(v[-1])
            elif name.startswith(LAYER_GRAD_PREFIX):
                layer = name[len(LAYER_GRAD_PREFIX):]
                vals = col.values
                start = self.layer_start.get(layer)
                if start is None:
                    finite = vals[np.isfinite(vals) & (vals > 0)]
                    if not len(finite):
                        continue
                    start = self.layer_start[layer] = float(finite[0])
                with np.errstate(over="ignore"):  # 1e308 / a tiny start is +Inf, clipped below
                    v = np.log(np.maximum(np.where(np.isfinite(vals), vals, np.inf), _FLOOR) / start)
                np.minimum(np.maximum(v, -_CLIP, out=v), _CLIP, out=v)  # np.clip, without its Python wrapper
                gmax.append((col.steps, v))
                self.layer_latest["g:" + layer] = float(v[-1])
        self._pending = {
            "update": _per_step_extreme(upd, np.fmax) if upd else (np.zeros(0, np.int64), np.zeros(0)),
            "max": _per_step_extreme(gmax, np.fmax) if gmax else (np.zeros(0, np.int64), np.zeros(0)),
            "min": _per_step_extreme(gmax, np.fmin) if gmax else (np.zeros(0, np.int64), np.zeros(0)),
        }

    def _layers_dense(self, block: MetricBlock) -> bool:
        """:meth:`_layers` when every per-layer column holds finite values at the same increasing steps (a run
        logging all its layers together, with every event or every k-th); False, doing nothing, otherwise.

        The layers are stacked into one matrix per kind, so each elementwise operation runs once instead of once
        per layer (the same operations on the same values: the same bits), and the per-step extremes are folds
        over the layer axis. fmax / fmin return one of their operands, and the values are never NaN or -0.0,
        so the result does not depend on the fold's order (:func:`_per_step_extreme`'s fast path folds layer by
        layer).
        """
        layers = self._names[4]
        if not layers:
            return False
        columns = block.columns
        steps = columns[layers[0][0]].steps
        if not bool((steps[1:] > steps[:-1]).all()):
            return False
        upd_rows, upd_keys, g_rows, g_layers, g_keys, order = [], [], [], [], [], []
        for name, is_update, layer, key in layers:
            col = columns[name]
            values = col.values
            if col.steps is not steps and not np.array_equal(col.steps, steps):
                return False
            if is_update:
                upd_rows.append(values)
                upd_keys.append(key)
            else:
                g_rows.append(values)
                g_layers.append(layer)
                g_keys.append(key)
            order.append(key)
        upd = np.array(upd_rows) if upd_rows else None
        grads = np.array(g_rows) if g_rows else None
        if not block.finite and (
            (upd is not None and not np.isfinite(upd).all()) or (grads is not None and not np.isfinite(grads).all())
        ):
            return False
        starts = []
        for layer, row in zip(g_layers, g_rows):
            start = self.layer_start.get(layer)
            if start is None:
                positive = np.flatnonzero(row > 0)
                if not len(positive):  # the general path skips such a layer until it logs a positive value
                    return False
                start = float(row[positive[0]])
            starts.append(start)
        for layer, start in zip(g_layers, starts):
            self.layer_start.setdefault(layer, start)
        latest = {}
        none = (np.zeros(0, np.int64), np.zeros(0))
        update = gmax = gmin = none
        if upd is not None:
            v = np.log10(np.maximum(np.abs(upd), 1e-30)) + 3.0
            latest.update(zip(upd_keys, v[:, -1].tolist()))
            update = (steps, np.fmax.reduce(v, axis=0))
        if grads is not None:
            with np.errstate(over="ignore"):  # 1e308 / a tiny start is +Inf, clipped below
                v = np.log(np.maximum(grads, _FLOOR) / np.array(starts)[:, None])
            np.minimum(np.maximum(v, -_CLIP, out=v), _CLIP, out=v)  # np.clip, without its Python wrapper
            latest.update(zip(g_keys, v[:, -1].tolist()))
            gmax = (steps, np.fmax.reduce(v, axis=0))  # the block's own steps: _carry sees each row's own value
            gmin = (steps, np.fmin.reduce(v, axis=0))
        for key in order:  # in column order, as the loop over columns writes them
            self.layer_latest[key] = latest[key]
        self._pending = {"update": update, "max": gmax, "min": gmin}
        return True

    def _layers_one(self, block: MetricBlock) -> None:
        """:meth:`_layers` for a block of one event: every layer's value at once, elementwise the same operations.

        Each per-layer column holds one value at the block's one step, so the per-step extremes are the
        layers' values folded in layer order (as :func:`_per_step_extreme` folds them), and the
        elementwise logs, maxima and clips over a vector of the layers give the same bits as one by one.
        """
        upd_vals, upd_keys, g_vals, g_keys, order = [], [], [], [], []
        upd_steps = g_steps = None
        columns = block.columns
        for name, is_update, layer, key in self._names[4]:
            col = columns[name]
            val = float(col.values[0])
            if not math.isfinite(val):
                continue
            if is_update:
                if upd_steps is None:
                    upd_steps = col.steps
                a = abs(val)
                upd_vals.append(a if a >= 1e-30 else 1e-30)  # np.maximum(np.abs(v), 1e-30) for a finite v
                upd_keys.append(key)
            else:
                start = self.layer_start.get(layer)
                if start is None:
                    if not val > 0:
                        continue
                    start = self.layer_start[layer] = float(val)
                if g_steps is None:
                    g_steps = col.steps
                # np.maximum(v, _FLOOR) / start for a finite v; a Python float quotient is the same IEEE
                # division (an overflow is +Inf, clipped below, as under np.errstate(over="ignore")).
                g_vals.append((val if val >= _FLOOR else _FLOOR) / start)
                g_keys.append(key)
            order.append(key)
        latest = {}
        if upd_vals:
            v = np.log10(np.array(upd_vals)) + 3.0
            latest.update(zip(upd_keys, v.tolist()))
            update = (upd_steps.copy(), np.fmax.reduce(v, keepdims=True))
        else:
            update = (np.zeros(0, np.int64), np.zeros(0))
        if g_vals:
            v = np.log(np.array(g_vals))
            np.minimum(np.maximum(v, -_CLIP, out=v), _CLIP, out=v)  # np.clip, without its Python wrapper
            latest.update(zip(g_keys, v.tolist()))
            gmax = (g_steps.copy(), np.fmax.reduce(v, keepdims=True))
            gmin = (g_steps.copy(), np.fmin.reduce(v, keepdims=True))
        else:
            gmax = gmin = (np.zeros(0, np.int64), np.zeros(0))
        for key in order:  # in column order, as the loop over columns writes them
            self.layer_latest[key] = latest[key]
        self._pending = {"update": update, "max": gmax, "min": gmin}

    def _layer_series(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        return self._pending[which]

    def _commit_layers(self) -> None:
        for which, attr, _ in _LAYER_FEATURES:
            s, v = self._pending[which]
            if len(v):
                setattr(self, attr, float(v[-1]))

    def extreme_layer(self, feature: str) -> str:
        """The layer behind a per-layer feature's current value (for explanations); ``""`` when unknown."""
        if feature == "update_ratio":
            cands = {k[2:]: v for k, v in self.layer_latest.items() if k.startswith("u:")}
            return max(cands, key=cands.get) if cands else ""
        cands = {k[2:]: v for k, v in self.layer_latest.items() if k.startswith("g:")}
        if not cands:
            return ""
        return (max if feature == "layer_grad_max" else min)(cands, key=cands.get)


def run_rows(block: MetricBlock) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of a whole run given as one block (training and offline scoring)."""
    return RunFeatures().update(block)
