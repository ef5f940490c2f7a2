"""A training loss's recent values, to tell a loss that comes down in steps from one that is stuck.

Multi-epoch fine-tunes drop their training loss at each epoch boundary (the
model meets examples it has already seen) and keep it flat in between. Inside
an epoch that is a plateau by any window-sized rule; over a few windows the
loss is clearly falling. The plateau rule asks :func:`fall` how far the loss
fell over a longer horizon before it calls a flat window a stuck run.

The state is a dict of plain numbers and two short arrays, so it is part of a
diagnostic's checkpoint as it is: the run's first finite values, then every
``every``-th one (``every`` sized from the plateau window, so that a window holds
about 20 of them), by their index in the run, so the same values are kept however
the run is batched. :func:`observe` adds a block's; :func:`trim` keeps the last
``capacity`` after the block's findings were judged, so a finding sees the
same values in every batching.

Examples
--------
>>> from runwatch.models.block import Column
>>> import numpy as np
>>> state = new_state()
>>> steps = np.arange(0, 1000, 10)
>>> stairs = 3.0 - 0.3 * (steps // 250)             # flat for 250 steps, then 0.3 lower
>>> observe(state, Column(steps, stairs.astype(float), np.zeros(len(steps))), every=1, first=0)
>>> round(fall(state, 990, span=200, windows=3), 3)  # 2.1 now against 2.7 600 steps before
0.222
>>> flat = new_state()
>>> observe(flat, Column(steps, np.full(len(steps), 2.0), np.zeros(len(steps))), every=1, first=0)
>>> fall(flat, 990, span=200, windows=3)
0.0
>>> import math; math.isnan(fall(flat, 300, span=200, windows=3))  # not that much history yet
True
"""

from __future__ import annotations

import math

import numpy as np

from runwatch.models.block import Column

__all__ = ["SAMPLES_PER_WINDOW", "fall", "new_state", "observe", "sample_every", "trim", "with_state"]

MIN_POINTS = 3  # values in each stretch compared; fewer cannot give a level
SAMPLES_PER_WINDOW = 20  # values kept per plateau window: 10 per half-window level


def new_state() -> dict:
    """No values yet: finite values ``seen``, the kept ``steps`` and ``values``."""
    return {"seen": 0, "steps": np.zeros(0, np.int64), "values": np.zeros(0)}


def sample_every(window: int) -> int:
    """Keep every this many values for a window of ``window`` values (0: not sized yet: every value)."""
    return max(1, -(-window // SAMPLES_PER_WINDOW))


def _sampled(index, first: int, every: int):
    """Whether the run's ``index``-th finite value is kept (an int, or an array of them)."""
    return (index < first) | ((index - first) % every == 0)


def observe(state: dict, col: Column, every: int, first: int) -> None:
    """Add the column's finite values (in step order): the run's first ``first``, then every ``every``-th."""
    if len(col.values) == 1:  # one event (a small batch): the same choice without the arrays
        value = float(col.values[0])
        if not math.isfinite(value):
            return
        seen = int(state["seen"])
        state["seen"] = seen + 1
        if _sampled(seen, first, every):
            state["steps"] = np.append(state["steps"], col.steps[0])
            state["values"] = np.append(state["values"], value)
        return
    values = col.values
    keep = np.isfinite(values)
    steps = col.steps
    if not keep.all():
        steps, values = steps[keep], values[keep]
    n = len(values)
    if not n:
        return
    seen = int(state["seen"])
    state["seen"] = seen + n
    if every > 1:
        pick = _sampled(np.arange(seen, seen + n), first, every)
        steps, values = steps[pick], values[pick]
    state["steps"] = np.concatenate((state["steps"], steps))
    state["values"] = np.concatenate((state["values"], values))


def trim(state: dict, capacity: int) -> None:
    """Keep the last ``capacity`` values."""
    if len(state["values"]) > capacity:
        state["steps"] = state["steps"][-capacity:].copy()  # a view would keep the whole block alive
        state["values"] = state["values"][-capacity:].copy()


def fall(state: dict, step: int, span: float, windows: int) -> float:
    """How far the loss fell over ``windows`` spans of ``span`` steps up to ``step``: 1 - level now / level then.

    A level is the median of the values within half a span: the one ending at ``step``, and the one ending
    ``windows * span`` steps earlier. NaN when either stretch has fewer than 3 values or the earlier level
    is not positive (the run is younger than the horizon, or logged too sparsely for it).
    """
    steps, values = state["steps"], state["values"]
    half = span / 2.0
    then_end = step - windows * span
    now = values[(steps > step - half) & (steps <= step)]
    then = values[(steps > then_end - half) & (steps <= then_end)]
    if len(now) < MIN_POINTS or len(then) < MIN_POINTS:
        return math.nan
    level_then = float(np.median(then))
    if not level_then > 0:
        return math.nan
    return 1.0 - float(np.median(now)) / level_then


def with_state(snapshot: dict, attribute: str = "_stairs") -> dict:
    """A plateau snapshot from before it kept recent values, with none kept (the guard waits for new ones)."""
    from runwatch.models.snapshot import with_default

    return with_default(snapshot, attribute, {})
