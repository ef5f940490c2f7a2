"""The learning-rate warm-up of a run, read from its logged learning rate.

A run's loss barely moves while its learning rate ramps up from (almost)
zero, so a flat loss then is the schedule working, not a stuck run. The
plateau and no-learning checks ask this module whether a step falls in the
warm-up instead of guessing its length.

The warm-up is the run's first stretch over which the logged ``lr`` rises at
every value: it starts at the first value above the one before (the second
logged value) and ends at the first value that is not above the one before.
A constant learning rate has none; neither has a run that does not log
``lr``. Later rises (warm restarts, cycles) are not warm-ups.

The state is a dict of plain numbers, so it is part of a diagnostic's
checkpoint as it is.

Examples
--------
>>> from runwatch.models.block import MetricBlock
>>> state = new_state()
>>> ramp = [{"lr": 1e-3 * min(1.0, (s + 1) / 10)} for s in range(30)]   # 10-step linear warm-up, then constant
>>> observe(state, MetricBlock.from_rows(list(range(30)), [0.0] * 30, ramp))
>>> in_warmup(state, 0), in_warmup(state, 5), in_warmup(state, 9), in_warmup(state, 10)
(False, True, True, False)
>>> flat = new_state()
>>> observe(flat, MetricBlock.from_rows([0, 1, 2], [0.0] * 3, [{"lr": 0.1}] * 3))
>>> in_warmup(flat, 1)
False
"""

from __future__ import annotations

import math

from runwatch.models.block import MetricBlock

__all__ = ["LR_METRIC", "in_warmup", "new_state", "observe", "outside", "with_state"]

LR_METRIC = "lr"


def new_state() -> dict:
    """No learning rate seen yet: ``last`` value, values ``seen``, warm-up ``start`` and ``end`` steps (-1: none)."""
    return {"last": 0.0, "seen": 0, "start": -1, "end": -1}


def observe(state: dict, block: MetricBlock, metric: str = LR_METRIC) -> None:
    """Read the block's ``metric`` (learning-rate) values in step order into ``state``; once the warm-up has ended,
    nothing changes."""
    col = block.columns.get(metric)
    if col is None or state["end"] >= 0 or (state["seen"] >= 2 and state["start"] < 0):
        return
    for step, value in zip(col.steps.tolist(), col.values.tolist()):
        if not math.isfinite(value):
            continue
        state["seen"] += 1
        if state["seen"] == 2:
            if value > state["last"]:
                state["start"] = step
            else:
                return  # not rising from the start: no warm-up, ever
        elif state["seen"] > 2 and value <= state["last"]:
            state["end"] = step
            return
        state["last"] = value


def in_warmup(state: dict, step: int) -> bool:
    """Whether ``step`` falls in the warm-up as far as the values seen tell (from its start, before its end)."""
    return 0 <= state["start"] <= step and (state["end"] < 0 or step < state["end"])


def outside(state: dict, findings: list) -> list:
    """The findings whose steps are not in the warm-up."""
    return [f for f in findings if not in_warmup(state, f.step)]


def with_state(snapshot: dict, attribute: str = "_warmup") -> dict:
    """A diagnostic's snapshot from before it tracked the warm-up, with a fresh warm-up state added.

    The run's learning rate before the snapshot is unknown, so the restored run is judged as one without a
    warm-up (as it was when the snapshot was taken).
    """
    from runwatch.models.snapshot import with_default

    return with_default(snapshot, attribute, {**new_state(), "seen": 2})
