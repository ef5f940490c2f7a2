"""Whether a run's newest events look like the ones its detectors last saw: the detection hold's screen.

Under load the pipeline may leave a run's few events to the next group's detection call
(``detection_hold_s``): one call for both groups costs about as much as one call for either.
Held events raise their alerts later, so only unremarkable ones may wait. A value outside the
range of the values the run's last detection call saw (widened by a margin), a NaN or an
infinity, or a set of metric names that call did not see, is detected at once: a loss spike,
a gradient blow-up or a NaN is raised as fast as with no hold at all, and the hold delays
only the slow conditions (plateaus, overfitting, drifts) that events close to the last ones
can bring on.
"""

from __future__ import annotations

import numpy as np

#: Sets of metric names remembered per run; a run whose names keep changing starts again past this.
MAX_LAYOUTS = 64


class ValueBands:
    """Per set of metric names, the range of values a run's last detection call saw, widened.

    ``learn`` takes the layouts ``(names, rows, values)`` of the events just detected;
    ``admits`` says whether new events stay inside: every value finite and within
    ``[lo - w, hi + w]`` of its metric, where ``lo``/``hi`` are that metric's smallest and
    largest value in the last call and ``w = max(hi - lo, margin * max(|lo|, |hi|))``.

    Examples
    --------
    >>> bands = ValueBands(margin=0.5)
    >>> names = ("loss", "grad_norm")
    >>> bands.learn([(names, None, np.array([[2.0, 1.0], [1.9, 1.1]]))])
    >>> bands.admits([(names, None, np.array([[1.8, 1.05]]))])
    True
    >>> bands.admits([(names, None, np.array([[9.0, 1.05]]))])  # a loss spike
    False
    >>> bands.admits([(names, None, np.array([[np.nan, 1.05]]))])
    False
    >>> bands.admits([(("loss",), None, np.array([[1.8]]))])  # names the last call did not see
    False
    """

    __slots__ = ("_bands", "margin")

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self._bands: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def learn(self, layouts) -> None:
        """Remember the range of each set of names in ``layouts`` (the events of one detection call)."""
        by_names: dict[tuple[str, ...], list[np.ndarray]] = {}
        for names, _, values in layouts:
            by_names.setdefault(names, []).append(values)
        if len(self._bands) + len(by_names) > MAX_LAYOUTS:
            self._bands.clear()
        for names, parts in by_names.items():
            values = parts[0] if len(parts) == 1 else np.concatenate(parts)
            lo, hi = np.fmin.reduce(values, axis=0), np.fmax.reduce(values, axis=0)  # NaNs ignored
            width = np.maximum(hi - lo, self.margin * np.maximum(np.abs(lo), np.abs(hi)))
            self._bands[names] = (lo - width, hi + width)  # NaN where a metric was never finite: admits nothing

    def admits(self, layouts) -> bool:
        """Whether every value of ``layouts`` is finite and inside its metric's band."""
        for names, _, values in layouts:
            band = self._bands.get(names)
            if band is None:
                return False
            lo, hi = band
            # NaN fails both comparisons; an infinity fails one.
            if not ((values >= lo) & (values <= hi)).all():
                return False
        return True

    def clear(self) -> None:
        self._bands.clear()
