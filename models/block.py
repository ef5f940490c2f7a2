"""Column blocks: one run's events of one batch, metric by metric.

Diagnostics consume blocks instead of single values so their per-value work
can run in compiled or vectorized code; a block of one event is the
degenerate case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Column:
    """The values one metric took within a block, with their steps and wall times."""

    steps: np.ndarray  # int64, non-decreasing
    values: np.ndarray  # float64; NaN/Inf are data
    wall_times: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class MetricBlock:
    """Events of one run in step order, split into per-metric columns.

    Examples
    --------
    >>> b = MetricBlock.from_rows([1, 2], [10.0, 11.0], [{"loss": 0.5}, {"loss": 0.4, "val/loss": 0.6}])
    >>> b.columns["loss"].values.tolist(), b.columns["val/loss"].steps.tolist()
    ([0.5, 0.4], [2])
    >>> b.names()
    ['loss', 'val/loss']
    """

    steps: np.ndarray
    wall_times: np.ndarray
    columns: dict[str, Column]

    def __len__(self) -> int:
        return len(self.steps)

    def names(self) -> list[str]:
        return sorted(self.columns)

    @classmethod
    def from_rows(
        cls, steps: Sequence[int], wall_times: Sequence[float], rows: Sequence[Mapping[str, float]]
    ) -> "MetricBlock":
        """Build from per-event metric mappings (events in step order)."""
        names = [tuple(m) for m in rows]
        return cls.from_values(steps, wall_times, names, [[m[k] for k in key] for m, key in zip(rows, names)])

    @classmethod
    def from_values(
        cls,
        steps: Sequence[int],
        wall_times: Sequence[float],
        names: Sequence[tuple[str, ...]],
        values: Sequence[Sequence[float]],
    ) -> "MetricBlock":
        """Build from per-event name tuples and the matching value lists (events in step order)."""
        n = len(steps)
        step_arr = np.fromiter(steps, np.int64, n)
        wall_arr = np.fromiter(wall_times, np.float64, n)
        # Events usually share one or two name tuples: convert each group of rows to a
        # matrix in one call instead of value by value.
        groups: dict[tuple[str, ...], tuple[list[int], list[Sequence[float]]]] = {}
        for i, key in enumerate(names):
            g = groups.get(key)
            if g is None:
                groups[key] = ([i], [values[i]])
            else:
                g[0].append(i)
                g[1].append(values[i])
        if len(groups) == 1:
            key = names[0]
            matrix = np.asarray(values, dtype=np.float64).reshape(n, len(key))
            columns = {k: Column(step_arr, np.ascontiguousarray(matrix[:, j]), wall_arr) for j, k in enumerate(key)}
            return cls(step_arr, wall_arr, columns)
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for key, (idx, rows) in groups.items():
            index = np.asarray(idx, dtype=np.intp)
            matrix = np.asarray(rows, dtype=np.float64).reshape(len(idx), len(key))
            for j, name in enumerate(key):
                parts.setdefault(name, []).append((index, matrix[:, j]))
        columns = {}
        merged: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        for name, pieces in parts.items():
            if len(pieces) == 1:
                index, col = pieces[0]
            else:
                # Columns drawn from the same groups share one merge order: sort once.
                key = tuple(id(p[0]) for p in pieces)
                if key not in merged:
                    cat = np.concatenate([p[0] for p in pieces])
                    order = np.argsort(cat, kind="stable")
                    merged[key] = (cat[order], order)
                index, order = merged[key]
                col = np.concatenate([p[1] for p in pieces])[order]
            if len(index) == n:
                columns[name] = Column(step_arr, np.ascontiguousarray(col), wall_arr)
            else:
                columns[name] = Column(step_arr[index], np.ascontiguousarray(col), wall_arr[index])
        return cls(step_arr, wall_arr, columns)

    @classmethod
    def single(cls, step: int, wall_time: float, metrics: Mapping[str, float]) -> "MetricBlock":
        return cls.from_rows([step], [wall_time], [metrics])


def reported_indices(fired: np.ndarray, scores: np.ndarray | None = None) -> list[int]:
    """Which firing positions of a block to report: the first, the highest-scoring and the last.

    The alert policy needs the first (opens the incident), the worst (may
    escalate it) and the last (keeps it open across long blocks); reporting
    every firing step would only cost time.

    Examples
    --------
    >>> reported_indices(np.array([False, True, True, True, False]), np.array([0, 1.0, 5.0, 2.0, 0]))
    [1, 2, 3]
    >>> reported_indices(np.array([False, False]))
    []
    """
    idx = np.flatnonzero(fired)
    if len(idx) == 0:
        return []
    picks = {int(idx[0]), int(idx[-1])}
    if scores is not None:
        picks.add(int(idx[np.argmax(scores[idx])]))
    return sorted(picks)
