"""Where a text log holds several trainings: the lines at which a new one starts.

A script that trains several models in turn (a sweep, a notebook's second ``fit()``,
a k-fold loop) prints them to one file, and each starts its steps or epochs again.
A run's steps never go back, so read as one run the later trainings would be
dropped (:class:`~runwatch.models.text.extract.MetricExtractor` drops an event
below the last step), and joined they would read as a relapse. Replay
(:mod:`runwatch.client.importers.text_log`) sends each training as a run of its own.

A training starts again when, after at least ``min_events`` events, an event comes
back to the training's first steps (at or below its second event's step), and the
lines from there, read on their own, give ``confirm`` training losses at rising
steps while the training so far takes none of them. So a resume from a checkpoint
(it goes back only to that checkpoint), a summary line counted on another scale
(one event between taken ones) and a progress bar that starts again each epoch
(the extractor counts it on) stay in their run. The new training starts on the
line after the last one that gave the previous training an event, so a header
printed before it ("Training fold 2", "Epoch 1/10") goes with it.

Examples
--------
>>> lines = [f"epoch {e} loss={1 / e:.3f}" for e in range(1, 7)] * 2
>>> training_starts(lines)
[0, 6]
>>> training_starts([f"step {s} loss=0.5" for s in (10, 20, 30, 40, 50, 60, 40, 50)])  # a resume: one run
[0]
"""

from __future__ import annotations

from collections.abc import Sequence

from runwatch.models.text.extract import MetricExtractor

#: Events a training must have given before a step going back to its start begins another.
MIN_EVENTS = 3
#: Training-loss values at rising steps that the next training must give, none of them taken by the training so
#: far: a new training, not a summary line counted on another scale (a Flair "EPOCH 3 done" between its iteration
#: lines) nor a final evaluation (Keras's ``model.evaluate`` bar and "Test loss: ..." after ``fit``).
CONFIRM_LOSSES = 3


def training_starts(texts: Sequence[str], min_events: int = MIN_EVENTS, confirm: int = CONFIRM_LOSSES) -> list[int]:
    """Indices of ``texts`` at which each training starts (the first is 0)."""
    starts = [0]
    x = MetricExtractor()
    steps: list[int] = []  # the first two steps of the current training
    events = 0
    last_emit = -1  # the last line that gave the current training an event
    # The next training, while it is only a candidate: where it would start, and its own extractor and losses.
    candidate: tuple[int, MetricExtractor, list[int]] | None = None
    for i, text in enumerate(texts):
        before = x.dropped
        emitted = x.extract(text)
        if emitted:
            candidate = None  # the training goes on: what it dropped was not a new start
            for step, _ in emitted:
                if len(steps) < 2 and (not steps or step > steps[0]):
                    steps.append(step)
            events += len(emitted)
            last_emit = i
            continue
        if candidate is None and x.dropped > before and events >= min_events and len(steps) == 2 \
                and x.dropped_step is not None and x.dropped_step <= steps[1]:
            start = max(last_emit + 1, starts[-1] + 1)
            candidate = (start, MetricExtractor(), [])
            lines = texts[start:i]
        elif candidate is not None:
            lines = []
        else:
            continue
        start, y, losses = candidate
        for line in [*lines, text]:
            for step, metrics in y.extract(line):
                if "loss" in metrics and (not losses or step > losses[-1]):
                    losses.append(step)
        if len(losses) >= confirm:
            starts.append(start)
            # The candidate's extractor has read the new training so far: it goes on from here.
            x, steps, events, last_emit, candidate = y, losses[:2], len(losses), i, None
    return starts
