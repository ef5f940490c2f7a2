"""How much a configuration looks like the history's best runs: TPE's good/bad density ratio, per feature.

A tree ensemble regresses the whole history, so its ranking at the very top is
pulled towards the mean by the many poor runs (broken cells, diverged
settings). Tree-structured Parzen estimators (Bergstra et al. 2011) ask a
different question: split the history at its best ``gamma`` fraction and
prefer configurations whose values are common among those best runs and rare
among the rest, ``l(x) / g(x)``. :class:`DensityRatio` computes that ratio
exactly (no sampling) with one categorical estimator per few-valued feature
column (widths, activations, dropouts, a cell's operation on each edge),
Laplace-smoothed, summed in log space as TPE's independent estimators are.
Continuous columns (many distinct values) are left out. Scores are clipped to
the range the history's own runs take, so a configuration never counts as
more like the best runs than the most alike run of the history: the sum over
many columns would otherwise reward combinations no run ever tried.

The surrogate (:class:`runwatch.nas.surrogate.Surrogate`) adds it to its
prediction only with a weight chosen by cross-validation on held-out groups
of the history, so a history where "looks like the best runs" does not
transfer (other training settings, say) keeps weight 0.

Score convention: higher = more like the best runs.

Examples
--------
>>> import numpy as np
>>> x = np.array([[0, 16], [0, 32], [1, 16], [1, 32]] * 5, dtype=float)
>>> z = np.array([1.0, 2.0, 0.1, 0.2] * 5)            # a loss: column 0 == 1 is what the best runs share
>>> dr = DensityRatio(gamma=0.25).fit(x, z, sign=1.0)
>>> s = dr.score(np.array([[1, 16], [0, 32]], dtype=float))
>>> bool(s[0] > 0 > s[1])
True
"""

from __future__ import annotations

import math

import numpy as np


class DensityRatio:
    """``log l(x) - log g(x)`` over the few-valued columns of a feature matrix (see the module docstring).

    Parameters
    ----------
    gamma
        Share of the history that counts as good. Default 0.1.
    max_levels
        A column with more distinct finite values than this in the history is continuous: not used.
    min_good
        Fewer good runs than this: no ratio (every score 0).
    """

    def __init__(self, gamma: float = 0.1, max_levels: int = 12, min_good: int = 3) -> None:
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma: {gamma} must be in (0, 1)")
        self.gamma = gamma
        self.max_levels = max_levels
        self.min_good = min_good
        self.tables: list[tuple[int, np.ndarray, np.ndarray]] = []  # (column, its levels, log ratio per level)
        self.range = (0.0, 0.0)  # the history's own scores: every score is clipped to it

    def fit(self, x: np.ndarray, z: np.ndarray, sign: float = 1.0) -> DensityRatio:
        """Learn the ratio from feature rows ``x`` and targets ``z`` (lower ``sign * z`` = better)."""
        x = np.asarray(x, dtype=float)
        t = sign * np.asarray(z, dtype=float)
        self.tables = []
        n = len(t)
        n_good = math.ceil(self.gamma * n)
        if n_good < self.min_good or n_good >= n:
            return self
        good = np.zeros(n, dtype=bool)
        good[np.argsort(t, kind="stable")[:n_good]] = True
        for c in range(x.shape[1]):
            col = x[:, c]
            finite = np.isfinite(col)
            levels = np.unique(col[finite])
            if not 2 <= levels.size <= self.max_levels:
                continue
            idx = np.searchsorted(levels, col[finite])
            g = np.bincount(idx[good[finite]], minlength=levels.size) + 1.0
            b = np.bincount(idx[~good[finite]], minlength=levels.size) + 1.0
            self.tables.append((c, levels, np.log(g / g.sum()) - np.log(b / b.sum())))
        if self.tables:
            own = self._raw(x)
            self.range = (float(own.min()), float(own.max()))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """The summed log ratio of each row (a value the history never had, or NaN, adds 0), clipped to :attr:`range`."""
        return np.clip(self._raw(x), *self.range)

    def _raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.zeros(len(x))
        for c, levels, ratio in self.tables:
            col = x[:, c]
            idx = np.clip(np.searchsorted(levels, col), 0, levels.size - 1)
            known = np.isfinite(col) & (levels[idx] == col)
            out += np.where(known, ratio[idx], 0.0)
        return out
