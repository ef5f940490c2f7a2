"""Small O(1) streaming statistics shared by the diagnostics."""

from __future__ import annotations

import math


class EwmStats:
    """Exponentially weighted mean and mean absolute deviation.

    The robust scale is ``1.2533 * mad`` (for Gaussian data the mean absolute
    deviation is sigma * sqrt(2/pi)), so :meth:`zscore` is comparable to a
    classic z-score but far less sensitive to the outliers it should detect.

    Examples
    --------
    >>> s = EwmStats(alpha=0.5)
    >>> for x in [1.0, 1.0, 1.0, 1.0]:
    ...     s.update(x)
    >>> s.mean
    1.0
    """

    __slots__ = ("alpha", "count", "mad", "mean")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.mad = 0.0
        self.count = 0

    def update(self, x: float) -> None:
        if self.count == 0:
            self.mean = x
        else:
            a = self.alpha
            self.mad += a * (abs(x - self.mean) - self.mad)
            self.mean += a * (x - self.mean)
        self.count += 1

    def zscore(self, x: float, floor: float = 0.0) -> float:
        """Robust z-score of ``x`` against the current baseline (not updated)."""
        scale = max(1.2533 * self.mad, floor)
        if scale <= 0.0:
            return 0.0 if x == self.mean else math.inf
        return (x - self.mean) / scale


class LinearTrend:
    """Least-squares slope of y over x in a fixed-size sliding window.

    Keeps running sums, so each update and :meth:`slope` are O(1).

    Examples
    --------
    >>> t = LinearTrend(window=4)
    >>> for i in range(6):
    ...     t.update(float(i), 2.0 * i + 1.0)
    >>> round(t.slope(), 6)
    2.0
    """

    __slots__ = ("_i", "_n", "_sx", "_sxx", "_sxy", "_sy", "_syy", "_xs", "_ys", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._xs = [0.0] * window
        self._ys = [0.0] * window
        self._i = 0
        self._n = 0
        self._sx = self._sy = self._sxx = self._sxy = self._syy = 0.0

    def update(self, x: float, y: float) -> None:
        i = self._i
        if self._n == self.window:
            ox, oy = self._xs[i], self._ys[i]
            self._sx -= ox
            self._sy -= oy
            self._sxx -= ox * ox
            self._sxy -= ox * oy
            self._syy -= oy * oy
        else:
            self._n += 1
        self._xs[i] = x
        self._ys[i] = y
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        self._syy += y * y
        self._i = (i + 1) % self.window

    @property
    def full(self) -> bool:
        return self._n == self.window

    @property
    def count(self) -> int:
        return self._n

    def slope(self) -> float:
        n = self._n
        den = n * self._sxx - self._sx * self._sx
        if n < 2 or den <= 0.0:
            return 0.0
        return (n * self._sxy - self._sx * self._sy) / den

    def r2(self) -> float:
        """Coefficient of determination of the fitted line (0 when undefined)."""
        n = self._n
        den_x = n * self._sxx - self._sx * self._sx
        den_y = n * self._syy - self._sy * self._sy
        if n < 3 or den_x <= 0.0 or den_y <= 0.0:
            return 0.0
        num = n * self._sxy - self._sx * self._sy
        return (num * num) / (den_x * den_y)
