"""Compiled per-value kernels of the diagnostics.

Each diagnostic keeps its per-value state machine here, as a plain function
over numpy arrays: the values of a block's watched columns (concatenated,
with ``offsets`` delimiting the columns; ``steps`` is the columns' shared
step array when they are *aligned*, i.e. all come from every event of the
block), a small float64 state (one row per metric for per-metric checks, a
flat array for cross-metric ones) that the kernel updates in place, scalar
parameters, and an ``out`` array (:func:`scratch`) into which it writes one
row of numbers per *firing* position: the column, the index in it, and what
the explanation needs. It returns how many rows it wrote; the diagnostic
turns those rows into :class:`~runwatch.models.findings.Finding` s.
Cross-metric kernels visit the values of a block in the order event-by-event
feeding delivers them: by step, and within a step by metric name
(:func:`merge_order`, :func:`_x_first`). Non-finite values are skipped (the
nonfinite diagnostic reports them), so NaN/Inf never enter a state.

:func:`jit` compiles with ``numba.njit(cache=True, nogil=True)`` when numba
imports and the environment variable ``RUNWATCH_JIT`` is not ``"0"``;
otherwise it is the identity and the same code runs as plain Python (slow but
identical: kernels read every array element through ``float()`` / ``int()``,
so the fallback computes with Python floats, not numpy scalars). Kernels
registered with :func:`kernel` are compiled (or loaded from numba's on-disk
cache) by :func:`warm_up`, which the service calls at start so the first
batch does not pay for compilation.

All kernels live in this one module on purpose: numba's cache is invalidated
by a change to the file that defines a function, not to the files of the
functions it calls, so helpers shared across modules could go stale.

Examples
--------
>>> states = np.zeros((2, 2))             # per column: finite values seen, current streak
>>> values = np.array([0.95, 0.97, np.nan, 0.99, 0.5, 0.93])
>>> out = np.empty((6, FRACTION_OUT))
>>> fraction_streak(values, np.array([0, 4, 6]), np.array([0, 1]), states, 0.9, 2, 0, out)
2
>>> out[:2, :2].tolist(), states.tolist()   # column 0 fired at its positions 1 and 3
([[0.0, 1.0], [0.0, 3.0]], [[3.0, 3.0], [2.0, 1.0]])
"""

# ruff: noqa: PLR1730, FURB136  (numba kernels: plain comparisons instead of min()/max() calls)

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _load_numba() -> Any:
    if os.environ.get("RUNWATCH_JIT", "").strip() == "0":
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency, but optional in spirit
        return None
    return numba


_numba = _load_numba()

JIT: bool = _numba is not None
"""Whether kernels are compiled (numba imported and ``RUNWATCH_JIT`` is not ``"0"``)."""


_CACHE = __name__ == "runwatch.models.kernels"
"""Cache compiled code on disk only when imported as part of the package. Loaded as a loose file
(``python -m doctest models/kernels.py``) this module is named ``kernels``; code cached under that
name, in the same ``__pycache__``, could not be loaded by ``runwatch.models.kernels``."""


def jit(fn: Callable) -> Callable:
    """``numba.njit(cache=True, nogil=True)`` when :data:`JIT`, else the identity."""
    if _numba is None:
        return fn
    return _numba.njit(cache=_CACHE, nogil=True)(fn)


KERNELS: dict[str, tuple[Callable, Callable[[], tuple]]] = {}
"""Registered kernels by name: the (compiled) kernel and a function returning example arguments."""


def kernel(example: Callable[[], tuple]) -> Callable[[Callable], Callable]:
    """Decorator: :func:`jit` the function and register it for :func:`warm_up`.

    ``example()`` returns arguments of the exact types the diagnostics pass
    (float64 / int64 arrays, Python floats, ints and bools), so warming up
    compiles the specialisation used at run time.
    """

    def register(fn: Callable) -> Callable:
        compiled = jit(fn)
        KERNELS[fn.__name__] = (compiled, example)
        return compiled

    return register


def warm_up() -> dict[str, float]:
    """Call every registered kernel once on tiny arrays; return seconds per kernel.

    Compiles each kernel, or loads it from numba's on-disk cache (milliseconds),
    so that the first real batch does not pay for it. Harmless without numba.

    Examples
    --------
    >>> sorted(warm_up()) == sorted(KERNELS)
    True
    """
    times = {}
    for name, (fn, example) in KERNELS.items():
        t0 = time.perf_counter()
        fn(*example())
        times[name] = time.perf_counter() - t0
    return times


# ----------------------------------------------------------------- shared helpers

OUT_WIDTH = 11
"""Columns of the :func:`scratch` array: at least every kernel's ``*_OUT`` row width."""

_local = threading.local()


def scratch(rows: int) -> np.ndarray:
    """A float64 work array of at least ``rows`` x :data:`OUT_WIDTH` for kernels' ``out``, reused per thread.

    Read the rows a kernel wrote (``out[:nf].tolist()``) before the next
    kernel call on the same thread overwrites them.

    Examples
    --------
    >>> out = scratch(3)
    >>> out.shape[0] >= 3 and out.shape[1] == OUT_WIDTH and scratch(2) is out
    True
    """
    try:
        buf = _local.out
    except AttributeError:
        buf = None
    if buf is None or len(buf) < rows:
        buf = _local.out = np.empty((max(rows, 512), OUT_WIDTH))
    return buf


MAD_TO_SIGMA = 1.2533
"""Gaussian sigma per unit of mean absolute deviation (sqrt(pi/2)), as in the EWMA mean / mean-absolute-deviation estimator of :func:`~runwatch.models.kernels.robust_spike`."""


def _steps(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def _values(n: int) -> np.ndarray:
    return np.linspace(1.0, 2.0, n)


def _out(n: int, width: int) -> np.ndarray:
    return np.empty((n, width))


@jit
def log_trend(steps: np.ndarray, vals: np.ndarray, end: int, size: int, m: int, floor: float) -> tuple[float, float]:
    """Least-squares slope of ``log(max(v, floor))`` over step, and its R².

    Fits the ``m`` newest points of the ring buffer ``(steps, vals)`` of
    capacity ``size`` whose next write index is ``end``; x is the step
    relative to the newest point, so large step numbers lose no precision.
    O(m); callers evaluate it only when a cheap gate is open.

    Examples
    --------
    >>> xs, ys = np.array([0.0, 1.0, 2.0, 3.0]), np.exp(np.arange(4.0))
    >>> slope, r2 = log_trend(xs, ys, 0, 4, 4, 1e-12)
    >>> round(slope, 6), round(r2, 6)
    (1.0, 1.0)
    """
    x0 = float(steps[(end - 1) % size])
    sx = sy = sxx = sxy = syy = 0.0
    for k in range(end - m, end):
        j = k % size
        x = float(steps[j]) - x0
        v = float(vals[j])
        y = math.log(v if v > floor else floor)
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
        syy += y * y
    den_x = m * sxx - sx * sx
    if m < 2 or den_x <= 0.0:
        return 0.0, 0.0
    num = m * sxy - sx * sy
    den_y = m * syy - sy * sy
    den = den_x * den_y
    r2 = num * num / den if den_y > 0.0 and den != 0.0 else 0.0  # den is 0 only by underflow
    return num / den_x, r2


@jit
def _r2(n: int, den_x: float, den_y: float, num: float) -> float:
    """R² of a least-squares line from its running-sum terms, as a least-squares fit's R²."""
    if n < 3 or den_x <= 0.0 or den_y <= 0.0:
        return 0.0
    den = den_x * den_y
    return (num * num) / den if den != 0.0 else 0.0  # den is 0 only by underflow


@jit
def _x_first(sx: int, sy: int, ix: int, iy: int, x_first: bool, aligned: bool) -> bool:
    """Merge rule of two columns: is ``x[ix]`` due before ``y[iy]``?

    By step; on equal steps, aligned columns (the same events) go event by
    event, others column by column; within one event the metric whose name
    sorts first (``x_first``) goes first, as the default block adapter and
    event-by-event feeding order them.
    """
    if sx != sy:
        return sx < sy
    if aligned and ix != iy:
        return ix < iy
    return x_first


@jit
def merge_order(steps: np.ndarray, offsets: np.ndarray, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    """Order in which to visit the values of ``k`` concatenated columns: (column, position) pairs.

    ``offsets`` (length ``k + 1``) delimits the columns in the concatenation,
    in metric-name order. Aligned columns (all from the same events; ``steps``
    is then the shared step array) are visited event by event, each event's
    values in name order, as event-by-event feeding sees them. Otherwise
    ``steps`` is the concatenation of the columns' steps, and values are
    visited by step, equal steps in name order (a stable sort), which is the
    same order whenever a block's steps are distinct.

    Examples
    --------
    >>> col, pos = merge_order(np.array([1, 3, 2, 3]), np.array([0, 2, 4]), False)
    >>> col.tolist(), pos.tolist()
    ([0, 1, 0, 1], [0, 0, 1, 1])
    """
    k = len(offsets) - 1
    total = int(offsets[k])
    col = np.empty(total, np.int64)
    pos = np.empty(total, np.int64)
    if aligned:
        n = int(offsets[1] - offsets[0]) if k > 0 else 0
        t = 0
        for e in range(n):
            for j in range(k):
                col[t] = j
                pos[t] = e
                t += 1
        return col, pos
    order = np.argsort(steps, kind="mergesort")
    for t in range(total):
        idx = int(order[t])
        j = 0
        while int(offsets[j + 1]) <= idx:
            j += 1
        col[t] = j
        pos[t] = idx - int(offsets[j])
    return col, pos


# ---------------------------------------------------------- robust spike (z-score)

SPIKE_STATE = 5
"""Per metric: mean, mad, peak, finite values seen, current streak."""
SPIKE_OUT = 6
"""Per firing position: column, index in it, z, baseline before the value, scale, streak."""


def spike_state() -> np.ndarray:
    """Initial state row of :func:`robust_spike`."""
    return np.array([0.0, 0.0, -math.inf, 0.0, 0.0])


@kernel(
    lambda: (
        *(_values(6), np.array([0, 3, 6]), np.array([1, 0]), np.stack([spike_state(), spike_state()])),
        *(0.05, 2, 8.0, 3.0, 0.05, 0.0, 0.02, -math.inf, 1, 1e4),
        _out(6, SPIKE_OUT),
    )
)
def robust_spike(
    values: np.ndarray,
    offsets: np.ndarray,
    rows: np.ndarray,
    states: np.ndarray,
    alpha: float,
    warmup: int,
    z_threshold: float,
    clip_z: float,
    rel_floor: float,
    abs_floor: float,
    level_floor: float,
    min_value: float,
    patience: int,
    early_ratio: float,
    out: np.ndarray,
) -> int:
    """Upward spikes of one metric against an EWMA / MAD baseline (loss spike, latency, error rate).

    The baseline is the estimator of the EWMA mean / mean-absolute-deviation estimator of :func:`~runwatch.models.kernels.robust_spike`
    (EWMA mean, EWMA mean absolute deviation, robust scale ``1.2533 * mad``).
    The scale is floored at ``max(abs_floor, rel_floor * |mean|, level_floor *
    peak)`` where ``peak`` is the highest baseline mean seen so far. A value
    above ``mean + clip_z * scale`` updates the baseline as if it were exactly
    at that bound (winsorised); downward moves are absorbed at full weight.
    Fires once more than ``warmup`` finite values were seen, while ``z >=
    z_threshold`` and ``value >= min_value`` have held for ``patience``
    consecutive values. Within the warm-up, with ``early_ratio`` > 0, a value at least
    ``early_ratio`` x the highest baseline so far fires already (its row: ``z`` = that
    ratio, run -1).

    ``values`` concatenates the watched columns (delimited by ``offsets``);
    column ``j`` keeps its baseline in row ``rows[j]`` of ``states``.
    """
    nf = 0
    for j in range(len(offsets) - 1):
        nf = _spike_column(
            values[offsets[j] : offsets[j + 1]],
            states[rows[j]],
            alpha,
            warmup,
            z_threshold,
            clip_z,
            rel_floor,
            abs_floor,
            level_floor,
            min_value,
            patience,
            early_ratio,
            out,
            nf,
            j,
        )
    return nf


@jit
def _spike_column(
    values: np.ndarray,
    state: np.ndarray,
    alpha: float,
    warmup: int,
    z_threshold: float,
    clip_z: float,
    rel_floor: float,
    abs_floor: float,
    level_floor: float,
    min_value: float,
    patience: int,
    early_ratio: float,
    out: np.ndarray,
    nf: int,
    column: int,
) -> int:
    """:func:`robust_spike` on column ``column``: appends its rows to ``out`` after the first ``nf``; returns the count."""
    mean = float(state[0])
    mad = float(state[1])
    peak = float(state[2])
    n = int(state[3])
    run = int(state[4])
    for i in range(len(values)):
        value = float(values[i])
        if value - value != 0.0:  # NaN / +-Inf: reported by the nonfinite diagnostic
            continue
        if n == 0:
            mean = value
            peak = value
            n = 1
            continue
        scale = MAD_TO_SIGMA * mad
        floor = rel_floor * (mean if mean >= 0.0 else -mean)
        if floor < abs_floor:
            floor = abs_floor
        lf = level_floor * peak
        if floor < lf:
            floor = lf
        if scale < floor:
            scale = floor
        dev = value - mean
        if scale > 0.0:
            z = dev / scale
            lim = clip_z * scale
            if dev > lim:
                dev = lim
        else:  # no spread and no floor yet: only an exact repeat is unsurprising
            z = 0.0 if dev <= 0.0 else math.inf
        mad += alpha * ((dev if dev >= 0.0 else -dev) - mad)
        base = mean
        top = peak
        mean += alpha * dev
        if mean > peak:
            peak = mean
        n += 1
        if n <= warmup and early_ratio > 0.0 and top > 0.0 and value >= early_ratio * top and value >= min_value:
            out[nf, 0] = column
            out[nf, 1] = i
            out[nf, 2] = value / top
            out[nf, 3] = top
            out[nf, 4] = scale
            out[nf, 5] = -1.0
            nf += 1
            run = 0
            continue
        if z < z_threshold or n <= warmup or value < min_value:
            run = 0
            continue
        run += 1
        if run < patience:
            continue
        out[nf, 0] = column
        out[nf, 1] = i
        out[nf, 2] = z
        out[nf, 3] = base
        out[nf, 4] = scale
        out[nf, 5] = run
        nf += 1
    state[0] = mean
    state[1] = mad
    state[2] = peak
    state[3] = n
    state[4] = run
    return nf




# ------------------------------------------------------------------- divergence

DIVERGENCE_SCALARS = 14
"""end, smoothed loss, slowly smoothed loss, its minimum, initial level, points since the minimum,
rising streak, hits, gradient writes, values in a row at ``shift_ratio`` x the reference, the
learning rate as the slow level sees it (a slow EWMA that follows a fall at once) and its value
when the slow level reached its minimum (NaN: unknown), the first loss step, and whether the log
starts mid-run (1: its first loss is not the run's initial level); then four rings of ``window``:
loss steps and values, gradient steps and values."""
MID_RUN_GAPS = 10
"""A loss log whose first step is more than this many of its first gaps into the run starts mid-run
(a resumed run, an excerpt): its first value says nothing of the run's initial level."""
DIVERGENCE_OUT = 11
"""Per firing position: index in the loss column, loss log-slope, R², gradient log-slope,
span, loss / reference, loss climbs (0/1), gradient climbs (0/1), loss / initial level (NaN: a log
that starts mid-run, whose initial level is unknown), loss values in a row at ``shift_ratio`` x the reference, learning rate now / at the
reference minimum (NaN: unknown)."""


def divergence_state(window: int) -> np.ndarray:
    state = np.zeros(DIVERGENCE_SCALARS + 4 * window)
    state[10:12] = math.nan  # no learning rate seen
    return state


@kernel(
    lambda: (
        *(_steps(8), _values(8), _values(8), _steps(8), _values(8)),
        *(False, True, divergence_state(30)),
        *(30, 0.3, 0.05, 2.0, 5, 6, 0.05, 0.6, 3, 0.05, 0.1, 3.0, 10),
        _out(8, DIVERGENCE_OUT),
    )
)
def divergence(
    loss_steps: np.ndarray,
    loss_values: np.ndarray,
    loss_lr: np.ndarray,
    grad_steps: np.ndarray,
    grad_values: np.ndarray,
    loss_first: bool,
    aligned: bool,
    state: np.ndarray,
    w: int,
    alpha: float,
    alpha2: float,
    ratio: float,
    warmup: int,
    min_points: int,
    min_slope: float,
    min_r2: float,
    patience: int,
    level_floor: float,
    g_min_slope: float,
    shift_ratio: float,
    shift_patience: int,
    out: np.ndarray,
) -> int:
    """Exponential climb of the loss (and of the gradient norm) above the loss's reference level.

    Visits the loss and gradient-norm values in event order (:func:`_x_first`).
    A gradient norm only enters its ring buffer; each loss value updates a
    fast and a slow EWMA, the running minimum of the slow one (the
    reference, floored at ``level_floor`` x the initial level) and, while the
    fast EWMA is ``ratio`` x above the reference, fits ``log(loss)`` and
    ``log(grad_norm)`` against the step (:func:`log_trend`). A fast EWMA that
    has stayed ``shift_ratio`` x above the reference fires whatever the fit
    says when it is also back above the initial level (``shift_ratio`` 0:
    never): the loss jumped, stayed up and lost all its progress; or when it
    has stayed there for ``shift_patience`` values: the loss jumped and stayed up.
    A log that starts mid-run (its first step more than ``MID_RUN_GAPS`` of its
    first gaps in) has no initial level to lose progress against: only the
    second way counts there.
    ``loss_lr`` is the learning rate in effect at each loss value (NaN: not logged); the
    finding compares it with the rate the slow level had seen at its minimum.
    """
    end = int(state[0])
    s = float(state[1])
    s2 = float(state[2])
    s_min = float(state[3])
    peak = float(state[4])
    since_min = int(state[5])
    rising = int(state[6])
    hits = int(state[7])
    g_end = int(state[8])
    up = int(state[9])
    lr_slow = float(state[10])
    lr_at_min = float(state[11])
    first_step = float(state[12])
    mid_run = state[13] != 0.0
    base = DIVERGENCE_SCALARS
    steps = state[base : base + w]
    vals = state[base + w : base + 2 * w]
    g_steps = state[base + 2 * w : base + 3 * w]
    g_vals = state[base + 3 * w : base + 4 * w]
    nl = len(loss_values)
    ng = len(grad_values)
    il = 0
    ig = 0
    nf = 0
    while il < nl or ig < ng:
        if ig >= ng or (
            il < nl and _x_first(int(loss_steps[il]), int(grad_steps[ig]), il, ig, loss_first, aligned)
        ):
            i = il
            il += 1
            value = float(loss_values[i])
            if value - value != 0.0:
                continue
            step = int(loss_steps[i])
            lr_now = float(loss_lr[i])
            if lr_now - lr_now != 0.0:
                pass  # not logged: the learning rate as seen so far stands
            elif not (lr_slow < lr_now) or lr_slow - lr_slow != 0.0:
                lr_slow = lr_now  # a fall (or the first value) at once
            else:
                lr_slow += alpha2 * (lr_now - lr_slow)
            j = end % w
            steps[j] = step
            vals[j] = value
            end += 1
            if end == 1:
                s = value
                s2 = value
                s_min = value
                peak = value
                lr_at_min = lr_slow
                first_step = step
                continue
            if end == 2:
                mid_run = first_step > MID_RUN_GAPS * (step - first_step) and first_step > 0
            prev = s
            s += alpha * (value - s)
            s2 += alpha2 * (value - s2)
            rising = rising + 1 if s > prev else 0
            if s2 < s_min:
                s_min = s2
                since_min = 0
                lr_at_min = lr_slow
            else:
                since_min += 1
            if end <= warmup and s > peak:
                # The initial level; frozen after warm-up so a divergence cannot raise it, and capped at
                # shift_ratio x the reference so a blow-up within the warm-up cannot either.
                capped = s if shift_ratio <= 0.0 or s < shift_ratio * s_min else shift_ratio * s_min
                if capped > peak:
                    peak = capped
            ref = level_floor * peak
            if ref < s_min:
                ref = s_min
            up = up + 1 if shift_ratio > 0.0 and ref > 0.0 and s >= shift_ratio * ref else 0
            if s < ratio * ref or ref <= 0.0:
                hits = 0
                continue
            m = end if end < w else w
            slope = 0.0
            r2 = 0.0
            g_slope = 0.0
            g_r2 = 0.0
            if end > warmup:
                # Gate open: the smoothed loss is `ratio` x above its minimum. Fit the climb, over
                # the points since the minimum and over the current uninterrupted rise. (Within the
                # warm-up there are too few points to fit; only a jump that stays up counts there.)
                floor = level_floor * peak if level_floor * peak > 1e-30 else 1e-30
                m = since_min + 1
                if m < min_points:
                    m = min_points
                if m > w:
                    m = w
                if m > end:
                    m = end
                slope, r2 = log_trend(steps, vals, end, w, m, floor)
                if (slope < min_slope or r2 < min_r2) and rising >= min_points and rising + 1 < m:
                    m = rising + 1
                    slope, r2 = log_trend(steps, vals, end, w, m, floor)
                if g_end >= min_points:
                    gm = m if m < g_end else g_end
                    g_slope, g_r2 = log_trend(g_steps, g_vals, g_end, w, gm, 1e-30)
            loss_climbs = slope >= min_slope and r2 >= min_r2
            grad_climbs = g_slope >= g_min_slope and g_r2 >= min_r2
            # all progress lost, or the loss has stayed shift_ratio x up for shift_patience values
            shifted = up > 0 and ((s >= peak and not mid_run) or up >= shift_patience)
            if not (loss_climbs or grad_climbs or shifted):
                hits = 0
                continue
            hits += 1
            if hits < patience:
                continue
            out[nf, 0] = i
            out[nf, 1] = slope
            out[nf, 2] = r2
            out[nf, 3] = g_slope
            out[nf, 4] = step - float(steps[(end - m) % w])
            out[nf, 5] = s / ref
            out[nf, 6] = 1.0 if loss_climbs else 0.0
            out[nf, 7] = 1.0 if grad_climbs else 0.0
            out[nf, 8] = math.nan if mid_run else s / peak if peak > 0.0 else math.inf
            out[nf, 9] = up
            out[nf, 10] = lr_now / lr_at_min if lr_at_min > 0.0 else math.nan
            nf += 1
        else:
            value = float(grad_values[ig])
            step = int(grad_steps[ig])
            ig += 1
            if value - value != 0.0:
                continue
            j = g_end % w
            g_steps[j] = step
            g_vals[j] = value
            g_end += 1
    state[0] = end
    state[1] = s
    state[2] = s2
    state[3] = s_min
    state[4] = peak
    state[5] = since_min
    state[6] = rising
    state[7] = hits
    state[8] = g_end
    state[9] = up
    state[10] = lr_slow
    state[11] = lr_at_min
    state[12] = first_step
    state[13] = 1.0 if mid_run else 0.0
    return nf


# ------------------------------------------------------------ exploding gradients

EXPLODING_SCALARS = 4
"""Per metric: writes, baseline mean, mean absolute deviation, peak baseline; then rings of
``points`` steps and values."""
EXPLODING_OUT = 9
"""Per firing position: column, index in it, kind (0 spike, 1 growth), ratio to the peak typical
level, that level, robust z, log-slope, R², span."""


def exploding_state(points: int) -> np.ndarray:
    """Initial state row of :func:`exploding_gradient`."""
    return np.zeros(EXPLODING_SCALARS + 2 * points)


@kernel(
    lambda: (
        *(_steps(3), _values(6), np.array([0, 3, 6]), True, np.array([0, 1]), np.zeros((2, 4 + 2 * 8))),
        *(8, 0.05, 20, 6.0, 10.0, 3.0, 0.1, 0.8, 3.0, 1e5),
        _out(6, EXPLODING_OUT),
    )
)
def exploding_gradient(
    steps: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    aligned: bool,
    rows: np.ndarray,
    states: np.ndarray,
    m: int,
    alpha: float,
    warmup: int,
    z_thr: float,
    spike_ratio: float,
    growth_ratio: float,
    min_slope: float,
    min_r2: float,
    clip: float,
    early_ratio: float,
    out: np.ndarray,
) -> int:
    """Gradient-norm spikes and exponential growth against the norm's peak typical level.

    The baseline is an EWMA mean and mean absolute deviation of the norm,
    each value entering it capped at ``clip`` x the mean. A value at least
    ``growth_ratio`` x the peak baseline is a spike when it is ``spike_ratio``
    x that level with robust z ``>= z_thr``, else growth when ``log(norm)``
    over the last ``m`` values climbs at ``min_slope`` per step with R² ``>=
    min_r2``. Within the first ``warmup`` values, before a noise level is known, only a value
    ``early_ratio`` x the peak typical level is a spike (kind 2).

    ``values`` concatenates the watched columns (delimited by ``offsets``;
    ``steps`` is their shared step array when ``aligned``, else their
    concatenated steps); column ``j`` keeps its state in row ``rows[j]`` of
    ``states``.
    """
    nf = 0
    for j in range(len(offsets) - 1):
        a = offsets[j]
        b = offsets[j + 1]
        s0 = 0 if aligned else a
        nf = _exploding_column(
            steps[s0 : s0 + b - a],
            values[a:b],
            states[rows[j]],
            m,
            alpha,
            warmup,
            z_thr,
            spike_ratio,
            growth_ratio,
            min_slope,
            min_r2,
            clip,
            early_ratio,
            out,
            nf,
            j,
        )
    return nf


@jit
def _exploding_column(
    steps: np.ndarray,
    values: np.ndarray,
    state: np.ndarray,
    m: int,
    alpha: float,
    warmup: int,
    z_thr: float,
    spike_ratio: float,
    growth_ratio: float,
    min_slope: float,
    min_r2: float,
    clip: float,
    early_ratio: float,
    out: np.ndarray,
    nf: int,
    column: int,
) -> int:
    """:func:`exploding_gradient` on column ``column``: appends its rows to ``out`` after the first ``nf``."""
    end = int(state[0])
    mean = float(state[1])
    mad = float(state[2])
    peak = float(state[3])
    ring_steps = state[EXPLODING_SCALARS : EXPLODING_SCALARS + m]
    ring_vals = state[EXPLODING_SCALARS + m : EXPLODING_SCALARS + 2 * m]
    for i in range(len(values)):
        value = float(values[i])
        if value - value != 0.0 or value < 0.0:
            continue
        step = int(steps[i])
        j = end % m
        ring_steps[j] = step
        ring_vals[j] = value
        end += 1
        if end == 1:
            mean = value
            peak = value
            continue
        typical = peak
        x = value if value <= clip * mean or mean <= 0.0 else clip * mean
        dev = x - mean
        mad += alpha * ((dev if dev >= 0.0 else -dev) - mad)
        mean += alpha * dev
        if mean > peak:
            peak = mean
        if end <= warmup:
            if typical > 0.0 and value >= early_ratio * typical:
                out[nf, 0] = column
                out[nf, 1] = i
                out[nf, 2] = 2.0
                out[nf, 3] = value / typical
                out[nf, 4] = typical
                nf += 1
            continue
        if value < growth_ratio * typical or typical <= 0.0:
            continue
        # Rare path: the norm is several times anything typical so far.
        ratio = value / typical
        if ratio >= spike_ratio:
            scale = MAD_TO_SIGMA * mad
            if scale < 0.1 * typical:
                scale = 0.1 * typical
            z = (value - typical) / scale if scale != 0.0 else math.inf
            if z >= z_thr:
                out[nf, 0] = column
                out[nf, 1] = i
                out[nf, 2] = 0.0
                out[nf, 3] = ratio
                out[nf, 4] = typical
                out[nf, 5] = z
                nf += 1
                continue
        if end < m:
            continue
        slope, r2 = log_trend(ring_steps, ring_vals, end, m, m, 1e-30)
        if slope < min_slope or r2 < min_r2:
            continue
        out[nf, 0] = column
        out[nf, 1] = i
        out[nf, 2] = 1.0
        out[nf, 3] = ratio
        out[nf, 4] = typical
        out[nf, 6] = slope
        out[nf, 7] = r2
        out[nf, 8] = step - float(ring_steps[end % m])
        nf += 1
    state[0] = end
    state[1] = mean
    state[2] = mad
    state[3] = peak
    return nf




# ------------------------------------------------------------ vanishing gradients

VANISHING_TOP = 6
"""Step max: a step seen (0/1), that step, its largest value so far and that layer's id,
the previous step's largest value and its layer id."""
VANISHING_OUT = 6
"""Per firing position: column, index in it, value, reference (largest norm), its layer id, streak."""


def vanishing_top() -> np.ndarray:
    return np.array([0.0, 0.0, 0.0, -1.0, 0.0, -1.0])


@kernel(
    lambda: (
        *(_steps(3), np.concatenate([_values(3), _values(3) * 1e-9]), np.array([0, 3, 6]), True),
        *(np.array([0, 1]), np.zeros((2, 2)), vanishing_top()),
        *(1e-7, 1e-4, 10, 5),
        _out(6, VANISHING_OUT),
    )
)
def vanishing_gradient(
    steps: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    aligned: bool,
    ids: np.ndarray,
    layers: np.ndarray,
    top: np.ndarray,
    abs_thr: float,
    rel: float,
    patience: int,
    warmup: int,
    out: np.ndarray,
) -> int:
    """Per-layer gradient norms below an absolute floor or a fraction of the step's largest one.

    ``values`` concatenates the per-layer columns (name order, delimited by
    ``offsets``), visited in event order (:func:`merge_order`); ``ids`` maps
    each column to its row of ``layers`` (observations, streak). A layer is
    compared with the larger of the running maximum of its own step and the
    previous step's maximum (``top``).
    """
    col, pos = merge_order(steps, offsets, aligned)
    has = top[0] != 0.0
    top_step = int(top[1])
    cur = float(top[2])
    cur_id = int(top[3])
    prev = float(top[4])
    prev_id = int(top[5])
    nf = 0
    for t in range(len(col)):
        j = int(col[t])
        i = int(pos[t])
        idx = int(offsets[j]) + i
        value = float(values[idx])
        if value - value != 0.0 or value < 0.0:
            continue
        step = int(steps[i]) if aligned else int(steps[idx])
        layer = int(ids[j])
        if not has or step != top_step:
            if has:
                prev = cur
                prev_id = cur_id
            has = True
            top_step = step
            cur = value
            cur_id = layer
        elif value > cur:
            cur = value
            cur_id = layer
        if cur >= prev:
            ref = cur
            ref_id = cur_id
        else:
            ref = prev
            ref_id = prev_id
        n = layers[layer, 0] + 1.0
        layers[layer, 0] = n
        if value >= abs_thr and value >= rel * ref:
            layers[layer, 1] = 0.0
            continue
        run = layers[layer, 1] + 1.0
        layers[layer, 1] = run
        if run < patience or n <= warmup:
            continue
        out[nf, 0] = j
        out[nf, 1] = i
        out[nf, 2] = value
        out[nf, 3] = ref
        out[nf, 4] = ref_id
        out[nf, 5] = run
        nf += 1
    top[0] = 1.0 if has else 0.0
    top[1] = top_step
    top[2] = cur
    top[3] = cur_id
    top[4] = prev
    top[5] = prev_id
    return nf


# ------------------------------------------------------------------ update ratio

UPDATE_OUT = 4
"""Per firing position: column, index in it, value, streak."""


@kernel(
    lambda: (
        *(_steps(3), np.concatenate([_values(3), np.zeros(3)]), np.array([0, 3, 6]), True),
        *(np.array([-1, 0]), np.zeros((1, 2)), np.array([-1.0, 0.0])),
        *(10.0, 1e-8, 10, 3, 1e-3),
        _out(6, UPDATE_OUT),
    )
)
def update_ratio(
    steps: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    aligned: bool,
    ids: np.ndarray,
    layers: np.ndarray,
    lr: np.ndarray,
    large: float,
    small: float,
    warmup: int,
    patience: int,
    annealed: float,
    out: np.ndarray,
) -> int:
    """Per-layer update ratios outside ``[small, large]``, unless an annealed learning rate explains it.

    ``values`` concatenates the learning-rate column (``ids`` -1) and the
    per-layer columns (``ids``: row of ``layers``, observations and streak),
    in name order, visited in event order (:func:`merge_order`). ``lr`` holds
    the latest learning rate (-1: unknown) and its peak.
    """
    col, pos = merge_order(steps, offsets, aligned)
    lr_now = float(lr[0])
    lr_peak = float(lr[1])
    nf = 0
    for t in range(len(col)):
        j = int(col[t])
        i = int(pos[t])
        value = float(values[int(offsets[j]) + i])
        if value - value != 0.0:
            continue
        layer = int(ids[j])
        if layer < 0:
            lr_now = value
            if value > lr_peak:
                lr_peak = value
            continue
        n = layers[layer, 0] + 1.0
        layers[layer, 0] = n
        if small <= value <= large or n <= warmup:
            layers[layer, 1] = 0.0
            continue
        if value < small and 0.0 <= lr_now <= annealed * lr_peak:
            layers[layer, 1] = 0.0  # the schedule explains it
            continue
        run = layers[layer, 1] + 1.0
        layers[layer, 1] = run
        if run < patience:
            continue
        out[nf, 0] = j
        out[nf, 1] = i
        out[nf, 2] = value
        out[nf, 3] = run
        nf += 1
    lr[0] = lr_now
    lr[1] = lr_peak
    return nf


# ------------------------------------------------------- activations (fractions)

FRACTION_OUT = 4
"""Per firing position: column, index in it, value, streak."""


@kernel(lambda: (_values(6), np.array([0, 3, 6]), np.array([1, 0]), np.zeros((2, 2)), 0.9, 10, 10, _out(6, FRACTION_OUT)))
def fraction_streak(
    values: np.ndarray,
    offsets: np.ndarray,
    rows: np.ndarray,
    states: np.ndarray,
    threshold: float,
    patience: int,
    warmup: int,
    out: np.ndarray,
) -> int:
    """A per-layer fraction at or above ``threshold`` for ``patience`` consecutive values, after ``warmup``.

    ``values`` concatenates the watched columns (delimited by ``offsets``);
    column ``j`` keeps its state (finite values seen, current streak) in row
    ``rows[j]`` of ``states``.
    """
    nf = 0
    for j in range(len(offsets) - 1):
        nf = _fraction_column(
            values[offsets[j] : offsets[j + 1]], states[rows[j]], threshold, patience, warmup, out, nf, j
        )
    return nf


@jit
def _fraction_column(
    values: np.ndarray,
    state: np.ndarray,
    threshold: float,
    patience: int,
    warmup: int,
    out: np.ndarray,
    nf: int,
    column: int,
) -> int:
    """:func:`fraction_streak` on column ``column``: appends its rows to ``out`` after the first ``nf``."""
    n = int(state[0])
    run = int(state[1])
    for i in range(len(values)):
        value = float(values[i])
        if value - value != 0.0:
            continue
        n += 1
        if value < threshold:
            run = 0
            continue
        run += 1
        if run < patience or n <= warmup:
            continue
        out[nf, 0] = column
        out[nf, 1] = i
        out[nf, 2] = value
        out[nf, 3] = run
        nf += 1
    state[0] = n
    state[1] = run
    return nf




# ---------------------------------------------------------------------- plateau

PLATEAU_SCALARS = 15
"""Finite values seen, first step, EWMA level, MAD, converged floor, first value's scale, sum of
the window's y, points in the trend, the trend's sums x, y, xx, xy, yy, the window's length in
values (0 until sized) and the check interval in values; then rings of ``capacity`` x and y."""
PLATEAU_OUT = 6
"""Per firing position: index, best-case improvement, span, level (relative), fitted change."""


def plateau_state(capacity: int) -> np.ndarray:
    return np.zeros(PLATEAU_SCALARS + 2 * capacity)


@kernel(
    lambda: (
        *(_steps(3), _values(3), plateau_state(20)),
        *(20, 20, 10, 10, 0.005, 2.0, 100.0, 0.01, 0.05, 0.1, 0.05),
        _out(3, PLATEAU_OUT),
    )
)
def plateau(
    steps: np.ndarray,
    values: np.ndarray,
    state: np.ndarray,
    capacity: int,
    patience: int,
    min_points: int,
    every: int,
    min_delta: float,
    zc: float,
    warmup_steps: float,
    abs_floor: float,
    rel_floor: float,
    max_rise: float,
    late_rate: float,
    out: np.ndarray,
) -> int:
    """No clear relative improvement of a loss over a sliding window of about ``patience`` steps.

    The window's length in values is sized once, when the ``min_points``-th
    finite value arrives: ``round(patience / g)`` values for the median step
    gap ``g`` (at least 1) of those first values, but at least
    ``min_points`` and at most ``capacity`` (the rings' length,
    ``max(patience, min_points)``); the check interval becomes
    ``max(1, min(every, round(every * window / patience)))`` values, i.e.
    about every ``every`` steps (unchanged when logged every step). A least-squares line
    (running sums, O(1) per value) through the window's values
    divided by the first value, values more than 3 robust SDs above an EWMA
    level (alpha 0.05) entering winsorised. At each check, once the
    window is full and the step is ``warmup_steps`` past the first, the
    fitted change over the window's span and its upper confidence bound
    (``zc`` standard errors of the slope) are computed; it fires when the
    bound is below ``min_delta``, unless the level is converged (at most
    ``max(abs_floor, rel_floor * first value)``) or the fitted change is a
    rise above ``max_rise``. Late in a long run the bar is lowered to
    ``late_rate * span / elapsed`` where that is below ``min_delta`` (0:
    never lowered).
    """
    n = int(state[0])
    first_step = int(state[1])
    ew = float(state[2])
    mad = float(state[3])
    floor = float(state[4])
    v0 = float(state[5])
    sum_y = float(state[6])
    tn = int(state[7])
    sx = float(state[8])
    sy = float(state[9])
    sxx = float(state[10])
    sxy = float(state[11])
    syy = float(state[12])
    window = int(state[13])
    check = int(state[14])
    xs = state[PLATEAU_SCALARS : PLATEAU_SCALARS + capacity]
    ys = state[PLATEAU_SCALARS + capacity : PLATEAU_SCALARS + 2 * capacity]
    nf = 0
    for i in range(len(values)):
        value = float(values[i])
        if value - value != 0.0:
            continue
        step = int(steps[i])
        if n == 0:
            first_step = step
            ew = value
            v0 = abs(value) if value != 0.0 else 1.0
            lim = rel_floor * value
            floor = (lim if lim > abs_floor else abs_floor) / v0
        dev = value - ew
        cap = 3.76 * mad  # 3 robust SDs: one spiking batch must not tilt the fitted line
        if dev > cap and n > 1:
            dev = cap
        y = (ew + dev) / v0
        x = float(step - first_step)
        j = n % capacity
        ox = 0.0
        oy = 0.0
        if window > 0 and n >= window:  # the value leaving the window
            k = (n - window) % capacity
            ox = float(xs[k])
            oy = float(ys[k])
        sum_y += y - oy
        if window > 0 and tn == window:
            sx -= ox
            sy -= oy
            sxx -= ox * ox
            sxy -= ox * oy
            syy -= oy * oy
        else:
            tn += 1
        xs[j] = x
        ys[j] = y
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
        syy += y * y
        mad += 0.05 * ((dev if dev >= 0.0 else -dev) - mad)
        ew += 0.05 * dev
        n += 1
        if window == 0:
            if n < min_points:
                continue
            # Size the window from the logging interval: the median gap of the first values.
            gaps = np.sort(np.diff(xs[:n]))
            m = len(gaps)
            gap = float(gaps[m // 2]) if m % 2 else 0.5 * (float(gaps[m // 2 - 1]) + float(gaps[m // 2]))
            if gap < 1.0:
                gap = 1.0
            window = int(patience / gap + 0.5)
            if window < min_points:
                window = min_points
            if window > capacity:
                window = capacity
            check = int(every * window / patience + 0.5)  # about every ``every`` steps
            if check > every:
                check = every
            if check < 1:
                check = 1
        if n % check or n < window or x < warmup_steps:
            continue
        level = sum_y / window  # mean of the window, in units of the first value
        if level <= floor:
            continue
        den = tn * sxx - sx * sx
        slope = 0.0 if tn < 2 or den <= 0.0 else (tn * sxy - sx * sy) / den
        r2 = _r2(tn, den, tn * syy - sy * sy, tn * sxy - sx * sy)
        q = slope * slope * (1.0 - r2) / (r2 * (window - 2)) if r2 > 0.0 else 0.0
        se = q**0.5 if q > 0.0 else 0.0
        span = x - float(xs[(n - window) % capacity])
        scale = span / level
        change = slope * scale  # fitted relative change over the window (negative = improving)
        if change > max_rise:
            continue  # rising fast: a divergence or a spike, not a plateau
        best_case = (se * zc - slope) * scale
        bar = min_delta
        if late_rate > 0.0 and x > 0.0 and late_rate * span / x < bar:
            bar = late_rate * span / x  # a power-law curve improves ~exponent * span / elapsed per window
        if best_case >= bar:
            continue
        out[nf, 0] = i
        out[nf, 1] = best_case
        out[nf, 2] = span
        out[nf, 3] = level
        out[nf, 4] = change
        out[nf, 5] = bar
        nf += 1
    state[0] = n
    state[1] = first_step
    state[2] = ew
    state[3] = mad
    state[4] = floor
    state[5] = v0
    state[6] = sum_y
    state[7] = tn
    state[8] = sx
    state[9] = sy
    state[10] = sxx
    state[11] = sxy
    state[12] = syy
    state[13] = window
    state[14] = check
    return nf


# ------------------------------------------------------------------ overfitting


@jit
def positive_losses(best: float, train_at_best: float, train: float) -> bool:
    """Whether the overfitting test compares ratios: a validation best and both training levels above zero.

    >>> positive_losses(0.5, 0.7, 0.3), positive_losses(-0.51, -0.8, -1.0)
    (True, False)
    """
    return best > 0.0 and train_at_best > 0.0 and train > 0.0


OVERFITTING_STATE = 11
"""Smoothed training loss, training values seen, validation values seen, streak, best validation
value, its step, the smoothed training loss then, minimum rise, the last training value's step (NaN:
unknown, a checkpoint from before it was kept), training values since the last validation value, and
training values between the last two validation values (0: not known yet)."""
OVERFITTING_OUT = 7
"""Per firing position: index in the validation column, value, best, its step, streak,
training loss at the best, training loss now."""


@kernel(
    lambda: (
        *(_steps(3), _values(3), _steps(3), _values(3), True, True, np.zeros(OVERFITTING_STATE)),
        *(0.05, 0.5, 1.1, 0.9, 0.1, 3, 3, 0.01),
        _out(3, OVERFITTING_OUT),
    )
)
def overfitting(
    train_steps: np.ndarray,
    train_values: np.ndarray,
    val_steps: np.ndarray,
    val_values: np.ndarray,
    train_first: bool,
    aligned: bool,
    state: np.ndarray,
    alpha: float,
    max_weight: float,
    grow: float,
    keep: float,
    gap_thr: float,
    patience: int,
    warmup: int,
    level_floor: float,
    out: np.ndarray,
) -> int:
    """Validation loss rising above its best while the (EWMA-smoothed) training loss keeps falling.

    The validation-to-training ratio must also have grown ``1 + gap_thr`` x since the best.

    Training and validation values are visited in event order
    (:func:`_x_first`); a training value only updates the EWMA, a validation
    value decides. ``alpha`` is the EWMA weight per step: a value logged ``g``
    steps after the previous one weighs ``1 - (1 - alpha) ** g``, at most
    ``max_weight`` (and at least ``alpha``).
    """
    tr_s = float(state[0])
    tr_n = int(state[1])
    n = int(state[2])
    run = int(state[3])
    best = float(state[4])
    best_step = int(state[5])
    train_at_best = float(state[6])
    min_rise = float(state[7])
    last_step = float(state[8])
    since_val = int(state[9])
    per_val = int(state[10])
    nt = len(train_values)
    nv = len(val_values)
    it = 0
    iv = 0
    nf = 0
    while it < nt or iv < nv:
        if iv >= nv or (it < nt and _x_first(int(train_steps[it]), int(val_steps[iv]), it, iv, train_first, aligned)):
            value = float(train_values[it])
            step = float(train_steps[it])
            it += 1
            if value - value != 0.0:
                continue
            if tr_n:
                weight = alpha
                if last_step == last_step and step - last_step > 1.0:  # sparse logging: memory in steps
                    weight = 1.0 - (1.0 - alpha) ** (step - last_step)
                    if weight > max_weight:
                        weight = max_weight
                    if weight < alpha:
                        weight = alpha
                if 0 < per_val <= 2 and weight < max_weight:
                    # at most two training values per evaluation: a log written once per epoch (Keras's CSVLogger,
                    # epoch-indexed: one step per epoch), each value an epoch's mean, not one noisy mini-batch
                    weight = max_weight
                tr_s += weight * (value - tr_s)
            else:
                tr_s = value
            tr_n += 1
            since_val += 1
            last_step = step
            continue
        i = iv
        iv += 1
        value = float(val_values[i])
        if value - value != 0.0:
            continue
        if since_val > 0:
            per_val = since_val
        since_val = 0
        n += 1
        train = tr_s if tr_n else 0.0
        if n == 1:
            min_rise = level_floor * abs(value)
        if n == 1 or value < best:
            best = value
            best_step = int(val_steps[i])
            train_at_best = train
            run = 0
            continue
        if positive_losses(best, train_at_best, train):
            rose = (
                value >= grow * best
                and train <= keep * train_at_best
                and value * train_at_best > (1.0 + gap_thr) * best * train
            )
        else:
            # A loss that goes below zero (a negative log-likelihood) is no ratio scale: the same rise and fall
            # relative to the magnitudes, and the gap as the difference val - train widening.
            rose = (
                value - best >= (grow - 1.0) * abs(best)
                and train - train_at_best <= (keep - 1.0) * abs(train_at_best)
                and (value - train) - (best - train_at_best) > gap_thr * abs(best - train_at_best)
            )
        if not (rose and value - best >= min_rise and tr_n):
            run = 0
            continue
        run += 1
        if run < patience or n <= warmup:
            continue
        out[nf, 0] = i
        out[nf, 1] = value
        out[nf, 2] = best
        out[nf, 3] = best_step
        out[nf, 4] = run
        out[nf, 5] = train_at_best
        out[nf, 6] = train
        nf += 1
    state[0] = tr_s
    state[1] = tr_n
    state[2] = n
    state[3] = run
    state[4] = best
    state[5] = best_step
    state[6] = train_at_best
    state[7] = min_rise
    state[8] = last_step
    state[9] = since_val
    state[10] = per_val
    return nf


# ---------------------------------------------------------------- memory growth

MEMORY_SCALARS = 9
"""Per metric: positive values seen, first step and value of the trend, points in the trend, and
its sums x, y, xx, xy, yy; then rings of ``window`` x and y."""
MEMORY_OUT = 7
"""Per firing position: column, index in it, growth, slope (relative), R², span, first value."""


def memory_state(window: int) -> np.ndarray:
    """Initial state row of :func:`memory_growth`."""
    state = np.zeros(MEMORY_SCALARS + 2 * window)
    state[2] = 1.0
    return state


@kernel(
    lambda: (
        *(_steps(3), _values(6), np.array([0, 3, 6]), True, np.array([0, 1]), np.stack([memory_state(100)] * 2)),
        *(100, 20, 0.05, 0.9, 10),
        _out(6, MEMORY_OUT),
    )
)
def memory_growth(
    steps: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    aligned: bool,
    rows: np.ndarray,
    states: np.ndarray,
    window: int,
    warmup: int,
    min_growth: float,
    min_r2: float,
    every: int,
    out: np.ndarray,
) -> int:
    """Steady linear growth of a positive series over a sliding window of ``window`` values.

    After ``warmup`` values, a least-squares line (running sums, as
    running least-squares sums) through value / first value
    against step - first step; every ``every`` values, once the window is
    full, fires when the line rises by ``min_growth`` of the current level
    across the window with R² ``>= min_r2``.

    ``values`` concatenates the watched columns (delimited by ``offsets``;
    ``steps`` is their shared step array when ``aligned``, else their
    concatenated steps); column ``j`` keeps its state in row ``rows[j]`` of
    ``states``.
    """
    nf = 0
    for j in range(len(offsets) - 1):
        a = offsets[j]
        b = offsets[j + 1]
        s0 = 0 if aligned else a
        nf = _memory_column(
            steps[s0 : s0 + b - a], values[a:b], states[rows[j]], window, warmup, min_growth, min_r2, every, out, nf, j
        )
    return nf


@jit
def _memory_column(
    steps: np.ndarray,
    values: np.ndarray,
    state: np.ndarray,
    window: int,
    warmup: int,
    min_growth: float,
    min_r2: float,
    every: int,
    out: np.ndarray,
    nf: int,
    column: int,
) -> int:
    """:func:`memory_growth` on column ``column``: appends its rows to ``out`` after the first ``nf``."""
    n = int(state[0])
    step0 = int(state[1])
    v0 = float(state[2])
    tn = int(state[3])
    sx = float(state[4])
    sy = float(state[5])
    sxx = float(state[6])
    sxy = float(state[7])
    syy = float(state[8])
    xs = state[MEMORY_SCALARS : MEMORY_SCALARS + window]
    ys = state[MEMORY_SCALARS + window : MEMORY_SCALARS + 2 * window]
    for i in range(len(values)):
        value = float(values[i])
        if value - value != 0.0 or value <= 0.0:
            continue
        n += 1
        if n <= warmup:
            continue
        step = int(steps[i])
        k = n - warmup - 1  # observations in the trend so far, before this one
        if k == 0:
            step0 = step
            v0 = value
        x = float(step - step0)
        y = value / v0
        j = k % window
        if tn == window:
            ox = float(xs[j])
            oy = float(ys[j])
            sx -= ox
            sy -= oy
            sxx -= ox * ox
            sxy -= ox * oy
            syy -= oy * oy
        else:
            tn += 1
        xs[j] = x
        ys[j] = y
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
        syy += y * y
        if n % every or tn != window:
            continue
        den = tn * sxx - sx * sx
        slope = 0.0 if tn < 2 or den <= 0.0 else (tn * sxy - sx * sy) / den
        if slope <= 0.0:
            continue
        span = x - float(xs[(k + 1) % window])
        growth = slope * span * v0 / value
        if growth < min_growth:
            continue
        r2 = _r2(tn, den, tn * syy - sy * sy, tn * sxy - sx * sy)
        if r2 < min_r2:
            continue
        out[nf, 0] = column
        out[nf, 1] = i
        out[nf, 2] = growth
        out[nf, 3] = slope
        out[nf, 4] = r2
        out[nf, 5] = span
        out[nf, 6] = v0
        nf += 1
    state[0] = n
    state[1] = step0
    state[2] = v0
    state[3] = tn
    state[4] = sx
    state[5] = sy
    state[6] = sxx
    state[7] = sxy
    state[8] = syy
    return nf




# -------------------------------------------------------------- data bottleneck

BOTTLENECK_STATE = 4
"""EWMA of the data wait and its count, EWMA of the step time and its count."""
BOTTLENECK_OUT = 3
"""Per firing position: index in the data column, smoothed wait, smoothed step time."""


@kernel(
    lambda: (
        *(_steps(3), _values(3), _steps(3), _values(3), True, True, np.zeros(BOTTLENECK_STATE)),
        *(0.05, 0.5, 20, 0.0),
        _out(3, BOTTLENECK_OUT),
    )
)
def data_bottleneck(
    data_steps: np.ndarray,
    data_values: np.ndarray,
    step_steps: np.ndarray,
    step_values: np.ndarray,
    data_first: bool,
    aligned: bool,
    state: np.ndarray,
    alpha: float,
    thr: float,
    warmup: int,
    min_data: float,
    out: np.ndarray,
) -> int:
    """``EWMA(data_time) / EWMA(step_time)`` above ``thr``, decided on each data-time value.

    Data-time and step-time values are visited in event order (:func:`_x_first`).
    """
    mean = float(state[0])
    n = int(state[1])
    st_mean = float(state[2])
    st_n = int(state[3])
    nd = len(data_values)
    ns = len(step_values)
    idt = 0
    ist = 0
    nf = 0
    while idt < nd or ist < ns:
        if ist >= ns or (
            idt < nd and _x_first(int(data_steps[idt]), int(step_steps[ist]), idt, ist, data_first, aligned)
        ):
            i = idt
            idt += 1
            value = float(data_values[i])
            if value - value != 0.0 or value < 0.0:
                continue
            mean = mean + alpha * (value - mean) if n else value
            n += 1
            if mean <= thr * st_mean or n <= warmup or st_n <= warmup or mean < min_data:
                continue
            out[nf, 0] = i
            out[nf, 1] = mean
            out[nf, 2] = st_mean
            nf += 1
        else:
            value = float(step_values[ist])
            ist += 1
            if value - value != 0.0 or value < 0.0:
                continue
            if st_n:
                st_mean += alpha * (value - st_mean)
            else:
                st_mean = value
            st_n += 1
    state[0] = mean
    state[1] = n
    state[2] = st_mean
    state[3] = st_n
    return nf


# ---------------------------------------------------------------------- stalled

STALLED_STATE = 3
"""Last wall time, typical gap, gaps seen."""


@kernel(lambda: (np.array([1.0, 2.0, 4.0]), np.zeros(STALLED_STATE), 0.1))
def event_gaps(wall_times: np.ndarray, state: np.ndarray, alpha: float) -> int:
    """EWMA of the positive gaps between wall times, each capped at 3x the current estimate."""
    last = float(state[0])
    typical = float(state[1])
    gaps = int(state[2])
    for i in range(len(wall_times)):
        wall_time = float(wall_times[i])
        gap = wall_time - last
        if last > 0.0 and gap > 0.0:
            if gaps == 0:
                typical = gap
            else:  # one long pause (evaluation, checkpoint) enters at most 3x the typical gap
                cap = 3.0 * typical
                typical = typical + alpha * ((cap if cap < gap else gap) - typical)
            gaps += 1
        last = wall_time
    state[0] = last
    state[1] = typical
    state[2] = gaps
    return 0


assert OUT_WIDTH >= max(
    SPIKE_OUT,
    DIVERGENCE_OUT,
    EXPLODING_OUT,
    VANISHING_OUT,
    UPDATE_OUT,
    FRACTION_OUT,
    PLATEAU_OUT,
    OVERFITTING_OUT,
    MEMORY_OUT,
    BOTTLENECK_OUT,
)
