"""Run outlier detector: PyOD over run-prefix summaries, across a project's runs.

A run prefix (the run so far) is summarised by the maximum, last and mean of
each feature (:func:`prefix_summary`). The detector holds a *reference* set
of summaries of healthy run prefixes and scores a new prefix with a PyOD
model fitted on it (``IForest`` by default; ``ECOD`` and ``COPOD`` compare).
The artifact stores the reference matrix, not the fitted trees: loading
refits the model deterministically from it (seeded), so no pickle is needed
and the model is the same on every load. Refitting on a project's own
finished runs is :meth:`RunOutlierDetector.refit`. Scores follow PyOD:
**higher = more anomalous**. :meth:`RunOutlierDetector.explain` names the
summary features furthest from the reference (robust z-scores).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(200, 4))
>>> det = RunOutlierDetector(RunOutlierConfig(method="iforest", seed=0)).fit(ref, ["a", "b", "c", "d"])
>>> s = det.score_samples(np.array([[0.0, 0, 0, 0], [0.0, 0, 9.0, 0]]))
>>> bool(s[1] > s[0])
True
>>> det.explain(np.array([0.0, 0, 9.0, 0]))[0][0]
'c'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig

SUMMARIES = ("max", "last", "mean")


def summary_names(features: Sequence[str]) -> list[str]:
    return [f"{agg}:{f}" for agg in SUMMARIES for f in features]


class PrefixSummary:
    """Running max / last / mean of each feature over a run prefix (NaN-aware, streaming)."""

    def __init__(self, n_features: int) -> None:
        self.max = np.full(n_features, np.nan)
        self.last = np.full(n_features, np.nan)
        self.sum = np.zeros(n_features)
        self.count = np.zeros(n_features)

    def update(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        n = len(rows)
        if n == 1:
            # One row: its own max, and the n < 8 branch below with every reduction over one value
            # (a one-value sum is the value itself, a non-finite one counts as +0.0).
            row = rows[0]
            finite = np.isfinite(row)
            self.max = np.fmax(self.max, row)
            self.last = np.where(finite, row, self.last)
            self.sum = self.sum + np.where(finite, row, 0.0)
            self.count = self.count + finite
            return
        finite = np.isfinite(rows)
        self.max = np.fmax(self.max, np.fmax.reduce(rows, axis=0))
        if n < 8:
            # Column by column costs ~4 us a feature. Under 8 values numpy sums a column in order,
            # as the row-wise sum below does (non-finite values count as +0.0): the same bits.
            has = finite.any(axis=0)
            last = n - 1 - np.argmax(finite[::-1], axis=0)
            self.last = np.where(has, rows[last, np.arange(rows.shape[1])], self.last)
            self.sum = self.sum + np.where(has, np.where(finite, rows, 0.0).sum(axis=0), 0.0)
            self.count = self.count + finite.sum(axis=0)
            return
        whole = finite.all(axis=0)
        if whole.any():
            # Features finite on every row: each sum over one contiguous row of the transposed copy is
            # the same pairwise sum, bit for bit, as over the column alone.
            self.sum[whole] += np.ascontiguousarray(rows[:, whole].T).sum(axis=1)
            self.last[whole] = rows[-1, whole]
            self.count[whole] += n
        for j in np.flatnonzero(~whole).tolist():
            col = rows[finite[:, j], j]
            if len(col):
                self.last[j] = col[-1]
                self.sum[j] += col.sum()
                self.count[j] += len(col)

    def vector(self) -> np.ndarray:
        mean = np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)
        return np.concatenate([self.max, self.last, mean])

    def state_dict(self) -> dict:
        return {"max": self.max, "last": self.last, "sum": self.sum, "count": self.count}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrefixSummary):
            return NotImplemented
        return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(self.state_dict().values(), other.state_dict().values()))

    def load_state_dict(self, state: dict) -> None:
        self.max, self.last, self.sum, self.count = state["max"], state["last"], state["sum"], state["count"]


def prefix_summary(rows: np.ndarray) -> np.ndarray:
    """Summary vector of a run prefix given its feature rows."""
    s = PrefixSummary(rows.shape[1])
    s.update(rows)
    return s.vector()


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """Mean path length of an unsuccessful search in a binary tree of ``n`` points (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class FlatForest:
    """A fitted isolation forest as flat node arrays, scored for a few rows at a time without joblib.

    scikit-learn scores tree by tree through joblib, ~7 ms for one row of a 100-tree forest;
    a monitor scores one prefix at a time, so that overhead would cap a service at a few thousand
    runs' checkpoints a second. The scores are PyOD's ``IForest.decision_function`` exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from pyod.models.iforest import IForest
    >>> x = np.random.default_rng(0).normal(size=(300, 5))
    >>> pyod = IForest(n_estimators=20, random_state=0).fit(x)
    >>> bool(np.allclose(FlatForest(pyod).decision_function(x[:7]), pyod.decision_function(x[:7]), rtol=0, atol=1e-12))
    True
    """

    def __init__(self, pyod_iforest) -> None:
        forest = pyod_iforest.detector_
        lefts, rights, features, thresholds, path = [], [], [], [], []
        roots, offset = [], 0
        for tree, used in zip(forest.estimators_, forest.estimators_features_):
            t = tree.tree_
            leaf = t.children_left == -1
            depth = np.zeros(t.node_count)
            for node in range(t.node_count):  # parents precede children in sklearn's node order
                if not leaf[node]:
                    depth[t.children_left[node]] = depth[t.children_right[node]] = depth[node] + 1
            roots.append(offset)
            lefts.append(np.where(leaf, np.arange(t.node_count), t.children_left) + offset)
            rights.append(np.where(leaf, np.arange(t.node_count), t.children_right) + offset)
            features.append(np.where(leaf, 0, np.asarray(used)[np.maximum(t.feature, 0)]))
            thresholds.append(t.threshold)
            path.append(np.where(leaf, depth + _average_path_length(t.n_node_samples), 0.0))
            offset += t.node_count
        self.left, self.right = np.concatenate(lefts), np.concatenate(rights)
        self.feature, self.threshold = np.concatenate(features), np.concatenate(thresholds)
        self.path = np.concatenate(path)
        self.roots = np.asarray(roots)
        self.normaliser = len(roots) * float(_average_path_length(np.array([forest.max_samples_]))[0])
        self.offset = float(forest.offset_)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Higher = more anomalous, as PyOD's ``IForest.decision_function``."""
        x = np.asarray(x, dtype=np.float32)  # sklearn's trees compare float32 inputs
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        while True:
            inner = self.left[node] != node
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        depth = self.path[node].sum(axis=1)
        return 2.0 ** (-depth / self.normaliser) + self.offset


def _column_nanmedian(x: np.ndarray) -> np.ndarray:
    """``np.nanmedian(x, axis=0)`` (NaN for an all-NaN column) without its "All-NaN slice" RuntimeWarning.

    >>> _column_nanmedian(np.array([[1.0, np.nan], [3.0, np.nan]])).tolist()
    [2.0, nan]
    """
    out = np.full(x.shape[1], np.nan)
    some = ~np.isnan(x).all(axis=0)
    if some.any():
        out[some] = np.nanmedian(x[:, some], axis=0)
    return out


class RunOutlierConfig(DiagnosticConfig):
    """Settings of :class:`RunOutlierDetector`."""

    method: Literal["iforest", "ecod", "copod"] = "iforest"
    n_estimators: int = Field(100, ge=10)
    seed: int = 0


class RunOutlierDetector:
    """PyOD detector over run-prefix summaries with ``fit`` / ``score_samples`` / ``refit``."""

    def __init__(self, config: RunOutlierConfig | None = None) -> None:
        self.config = config or RunOutlierConfig()
        self.reference: np.ndarray | None = None
        self.names: list[str] = []
        self._model = None

    def _impute(self, x: np.ndarray) -> np.ndarray:
        # a missing summary (e.g. no validation loss) reads as the reference's typical value
        return np.where(np.isfinite(x), np.clip(x, -1e6, 1e6), self.median[None, :])

    def fit(self, reference: np.ndarray, names: Sequence[str]) -> RunOutlierDetector:
        """Fit on summaries of healthy run prefixes ``[N, D]`` (NaN = missing)."""
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or reference.shape[1] != len(names):
            raise ValueError(f"reference: expected shape [N, {len(names)}], got {list(reference.shape)}")
        if len(reference) < 8:
            raise ValueError(f"reference: at least 8 run prefixes are needed, got {len(reference)}")
        self.reference = reference
        self.names = list(names)
        # A summary no reference run has (e.g. runs that log no validation loss) is all NaN: median 0, spread 1.
        if np.isfinite(reference).any():
            self.median = np.nan_to_num(_column_nanmedian(reference))
        else:
            self.median = np.zeros(reference.shape[1])
        dev = _column_nanmedian(np.abs(reference - self.median))
        self.mad = np.where(np.nan_to_num(dev) > 1e-9, np.nan_to_num(dev), 1.0) * 1.4826
        self._model = self._build().fit(self._impute(reference))
        self._scorer = FlatForest(self._model) if self.config.method == "iforest" else self._model
        return self

    def refit(self, extra: np.ndarray) -> RunOutlierDetector:
        """Refit on the reference plus ``extra`` summaries (a project's own finished runs)."""
        if self.reference is None:
            raise RuntimeError("RunOutlierDetector is not fitted")
        return self.fit(np.concatenate([self.reference, np.asarray(extra, dtype=np.float64)]), self.names)

    def _build(self):
        c = self.config
        if c.method == "iforest":
            from pyod.models.iforest import IForest

            return IForest(n_estimators=c.n_estimators, random_state=c.seed)
        if c.method == "ecod":
            from pyod.models.ecod import ECOD

            return ECOD()
        from pyod.models.copod import COPOD

        return COPOD()

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """Outlier score per summary (PyOD ``decision_function``; higher = more anomalous)."""
        if self._model is None:
            raise RuntimeError("RunOutlierDetector is not fitted")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != len(self.names):
            raise ValueError(f"x: expected {len(self.names)} summary features, got {x.shape[1]}")
        return np.asarray(self._scorer.decision_function(self._impute(x)), dtype=np.float64)

    def explain(self, x: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` summary features furthest from the reference, as (name, robust z)."""
        z = (np.asarray(x, dtype=np.float64) - self.median) / self.mad
        z = np.where(np.isfinite(z), z, 0.0)
        order = np.argsort(-np.abs(z))[:top]
        return [(self.names[i], float(z[i])) for i in order]

    def tensors(self, prefix: str = "run_outlier") -> dict[str, np.ndarray]:
        if self.reference is None:
            raise RuntimeError("RunOutlierDetector is not fitted")
        return {f"{prefix}.reference": self.reference}

    @classmethod
    def from_tensors(
        cls, config: RunOutlierConfig, tensors: dict[str, np.ndarray], names: Sequence[str], prefix: str = "run_outlier"
    ) -> RunOutlierDetector:
        return cls(config).fit(tensors[f"{prefix}.reference"].astype(np.float64), names)
