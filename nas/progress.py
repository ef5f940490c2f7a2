"""How far a run's training loss got relative to its own start: the self-relative underfitting signal.

Comparing a run's final training loss with other runs' only works on one
loss scale (cross-entropy over 10 classes starts near 2.3, over 2 classes near
0.69, a standardised regression near 1). The run's own loss at its first steps
is on its scale: for a classifier it is about the chance level, ``ln(classes)``.
A run *stalled* when

- its training loss stayed within a factor of two of where it started: it
  did not reach half of it (``final > STALL_RATIO * initial``) nor double it
  (``final <= initial / STALL_RATIO``; a loss that grew that much, or went
  non-finite, is instability, not underfitting),
- it was no longer falling (over the last third of the run it fell by less
  than ``1 - PLATEAU_RATIO`` = 10 %, measured from the lower of its start and
  its two-thirds level: a noisy loss that rose in between was not falling):
  more steps would not have fixed it,
- and its validation loss stays close to the training loss
  (``val <= CLOSE_RATIO * train``): the gap is not the problem.

A run *did not learn* at all (:attr:`LossProgress.not_learning`) when its final
training loss is still at least ``NO_LEARNING_RATIO`` = 95 % of where it
started, without having grown past twice that (the real-log labels' and the
``no_learning`` diagnostic's criterion, on the whole run).

These are conventions (round numbers a practitioner would use), not fitted to
any benchmark. ``initial`` is the median of the first 5 % of the logged
training-loss points, ``final`` of the last 10 %, ``two_thirds`` of the 10 %
before the two-thirds mark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from runwatch.nas.features import train_loss_name
from runwatch.nas.history import RunObservation

__all__ = ["CLOSE_RATIO", "NO_LEARNING_RATIO", "PLATEAU_RATIO", "STALL_RATIO", "LossProgress", "loss_progress"]

STALL_RATIO = 0.5
NO_LEARNING_RATIO = 0.95
PLATEAU_RATIO = 0.9
CLOSE_RATIO = 1.5
_MIN_POINTS = 10


def _median(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


@dataclass(frozen=True)
class LossProgress:
    """A run's training loss at its start, two thirds in and at its end; its final validation loss.

    Examples
    --------
    >>> p = LossProgress(initial=2.3, two_thirds=1.75, final=1.7, final_val=1.8)
    >>> round(p.ratio, 2), p.stalled
    (0.74, True)
    >>> LossProgress(initial=2.3, two_thirds=0.9, final=0.4, final_val=0.5).stalled  # it trained
    False
    >>> LossProgress(initial=2.3, two_thirds=9.0, final=40.0).stalled  # it diverged
    False
    >>> LossProgress(initial=2.31, two_thirds=2.30, final=2.30).not_learning, p.not_learning
    (True, False)
    """

    initial: float
    two_thirds: float
    final: float
    final_val: float = math.nan
    finite: bool = True

    @property
    def ratio(self) -> float:
        """``final / initial`` (NaN when either is missing or the start is not positive)."""
        return self.final / self.initial if self.initial > 0 and math.isfinite(self.final) else math.nan

    @property
    def plateaued(self) -> bool:
        """The loss fell by less than 10 % over the last third of the run (from the lower of start and two thirds)."""
        level = min(self.two_thirds, self.initial)
        return math.isfinite(level) and self.final >= PLATEAU_RATIO * level

    @property
    def val_close(self) -> bool:
        """No validation loss, or one within ``CLOSE_RATIO`` times the training loss."""
        return not math.isfinite(self.final_val) or self.final_val <= CLOSE_RATIO * max(self.final, 0.0)

    @property
    def stalled(self) -> bool:
        """Did not halve its starting loss, stopped falling, and validation is not the problem."""
        ratio = self.ratio
        if not (self.finite and math.isfinite(ratio)):
            return False
        return STALL_RATIO < ratio <= 1 / STALL_RATIO and self.plateaued and self.val_close

    @property
    def not_learning(self) -> bool:
        """The final loss is still at least 95 % of the start (and did not blow up: that is instability)."""
        ratio = self.ratio
        return self.finite and math.isfinite(ratio) and NO_LEARNING_RATIO <= ratio <= 1 / STALL_RATIO

    def describe(self) -> str:
        """One sentence a user can check against the logs."""
        text = (
            f"training loss {self.initial:.3g} at the start -> {self.final:.3g} at the end "
            f"({100 * self.ratio:.0f}% of its start), {100 * (1 - self.final / self.two_thirds):.0f}% lower than "
            "two thirds in"
        )
        if math.isfinite(self.final_val):
            text += f"; val/loss {self.final_val:.3g}"
        return text


def loss_progress(run: RunObservation) -> LossProgress | None:
    """The run's :class:`LossProgress`; ``None`` without at least 10 finite training-loss points.

    Examples
    --------
    >>> steps = np.arange(300)
    >>> flat = RunObservation("r", None, series={"loss": (steps, 2.3 - 0.6 * (1 - np.exp(-steps / 30)))})
    >>> p = loss_progress(flat)
    >>> round(p.initial, 2), round(p.final, 2), p.stalled
    (2.18, 1.7, True)
    """
    name = train_loss_name(run.series)
    if not name:
        return None
    steps, values = (np.asarray(a, dtype=float) for a in run.series[name])
    keep = np.isfinite(values)
    finite = bool(keep.all())
    steps, values = steps[keep], values[keep]
    n = values.size
    if n < _MIN_POINTS:
        return None
    head = max(1, round(0.05 * n))
    tail = max(1, round(0.10 * n))
    mark = int(np.searchsorted(steps, steps[0] + (2 / 3) * (steps[-1] - steps[0]), side="right"))
    two_thirds = _median(values[max(0, mark - tail) : max(1, mark)])
    final_val = math.nan
    for val_name in ("val/loss", "val_loss"):
        if val_name in run.series:
            vv = np.asarray(run.series[val_name][1], dtype=float)
            vv = vv[np.isfinite(vv)]
            if vv.size:
                final_val = float(vv[-1])
            break
    return LossProgress(_median(values[:head]), two_thirds, _median(values[-tail:]), final_val, finite)
