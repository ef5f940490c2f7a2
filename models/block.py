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
    finite: bool | None = None  # whether every value is finite; None = not known yet (see all_finite)
    # The values as one [events, names] matrix, columns in ``columns`` order, when every event logs the same
    # names (None otherwise): small blocks are filed as evidence a matrix at a time (RunMonitor).
    matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def all_finite(self) -> bool:
        """Whether every value of every column is finite (known from construction, else checked once).

        >>> MetricBlock.from_rows([1, 2], [0.0, 0.0], [{"loss": 0.5}, {"loss": float("nan")}]).all_finite()
        False
        """
        if self.finite is None:
            self.finite = all(bool(np.isfinite(c.values).all()) for c in self.columns.values())
        return self.finite

    def names(self) -> list[str]:
        return sorted(self.columns)

    @classmethod
    def from_rows(
        cls, steps: Sequence[int], wall_times: Sequence[float], rows: Sequence[Mapping[str, float]]
    ) -> MetricBlock:
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
    ) -> MetricBlock:
        """Build from per-event name tuples and the matching value lists (events in step order)."""
        n = len(steps)
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
        layouts = [
            (
                key,
                None if len(idx) == n else np.asarray(idx, dtype=np.intp),
                np.asarray(rows, dtype=np.float64).reshape(len(idx), len(key)),
            )
            for key, (idx, rows) in groups.items()
        ]
        return cls.from_layouts(np.fromiter(steps, np.int64, n), np.fromiter(wall_times, np.float64, n), layouts)

    @classmethod
    def from_layouts(
        cls,
        steps: np.ndarray,
        wall_times: np.ndarray,
        layouts: Sequence[tuple[tuple[str, ...], np.ndarray | None, np.ndarray]],
    ) -> MetricBlock:
        """Build from events grouped by the names they log.

        Each layout is ``(names, rows, values)``: the events at positions ``rows``
        (ascending; None = every event) log exactly ``names``, and ``values`` holds
        their values, one row per event, one column per name. Layouts come in the
        order of their first event; a name may appear in several layouts.

        Examples
        --------
        >>> b = MetricBlock.from_layouts(
        ...     np.array([1, 2, 3]), np.zeros(3),
        ...     [(("loss",), np.array([0, 2]), np.array([[0.5], [0.3]])),
        ...      (("loss", "val/loss"), np.array([1]), np.array([[0.4, 0.6]]))])
        >>> b.columns["loss"].values.tolist(), b.columns["val/loss"].steps.tolist()
        ([0.5, 0.4, 0.3], [2])
        """
        step_arr = np.asarray(steps, dtype=np.int64)
        wall_arr = np.asarray(wall_times, dtype=np.float64)
        n = len(step_arr)
        if len(layouts) == 1 and (layouts[0][1] is None or len(layouts[0][1]) == n):
            key, _, matrix = layouts[0]
            matrix = np.asarray(matrix, dtype=np.float64).reshape(n, len(key))
            # Each column its own array: evidence keeps columns of a metric that stopped being logged.
            columns = {k: Column(step_arr, matrix[:, j].copy(), wall_arr) for j, k in enumerate(key)}
            # One check of the whole matrix here saves one per column in each diagnostic that asks.
            whole = matrix if len(columns) == len(key) else None
            return cls(step_arr, wall_arr, columns, bool(np.isfinite(matrix).all()), whole)
        every = np.arange(n, dtype=np.intp)
        counts: dict[str, int] = {}  # names in order of first appearance, with how many events log them
        for key, rows, _ in layouts:
            size = n if rows is None else len(rows)
            for name in key:
                counts[name] = counts.get(name, 0) + size
        # Names every event logs (training metrics beside a validation metric, say) are filled into
        # one matrix, a layout at a time; the others are merged column by column.
        full = [name for name, c in counts.items() if c == n]
        dense = np.empty((len(full), n))
        full_row = {name: i for i, name in enumerate(full)}
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for key, rows, matrix in layouts:
            index = every if rows is None else rows
            picked = [(j, full_row[name]) for j, name in enumerate(key) if name in full_row]
            if picked:
                cols, targets = zip(*picked)
                dense[np.ix_(targets, index)] = matrix[:, list(cols)].T
            if len(picked) < len(key):
                for j, name in enumerate(key):
                    if name not in full_row:
                        parts.setdefault(name, []).append((index, matrix[:, j]))
        columns = {}
        merged: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        for name in counts:
            row = full_row.get(name)
            if row is not None:
                columns[name] = Column(step_arr, dense[row].copy(), wall_arr)
                continue
            pieces = parts[name]
            if len(pieces) == 1:
                index, col = pieces[0]
            else:
                # Columns drawn from the same layouts share one merge order: sort once.
                key = tuple(id(p[0]) for p in pieces)
                if key not in merged:
                    cat = np.concatenate([p[0] for p in pieces])
                    order = np.argsort(cat, kind="stable")
                    merged[key] = (cat[order], order)
                index, order = merged[key]
                col = np.concatenate([p[1] for p in pieces])[order]
            columns[name] = Column(step_arr[index], np.array(col), wall_arr[index])
        return cls(step_arr, wall_arr, columns)

    @classmethod
    def single(cls, step: int, wall_time: float, metrics: Mapping[str, float]) -> MetricBlock:
        return cls.from_rows([step], [wall_time], [metrics])


EMPTY_STEPS = np.zeros(0, dtype=np.int64)
EMPTY_VALUES = np.zeros(0)


def column_arrays(col: Column | None) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a column, or two empty arrays for a metric absent from the block."""
    return (col.steps, col.values) if col is not None else (EMPTY_STEPS, EMPTY_VALUES)


def column_pair(block: MetricBlock, first: str, second: str) -> tuple[Column | None, Column | None, bool]:
    """The columns of two metrics a cross-metric check combines, and whether they share their steps.

    Either may be None (absent from the block); ``second`` is None when it names the same
    metric as ``first``.

    Examples
    --------
    >>> b = MetricBlock.from_rows([1, 2], [0.0, 0.0], [{"loss": 1.0, "grad_norm": 2.0}, {"loss": 0.9, "grad_norm": 2.1}])
    >>> a, g, aligned = column_pair(b, "loss", "grad_norm")
    >>> a.values.tolist(), aligned
    ([1.0, 0.9], True)
    """
    cols = block.columns
    a = cols.get(first)
    b = cols.get(second) if second != first else None
    return a, b, a is not None and b is not None and a.steps is b.steps


def reported_indices(
    fired: np.ndarray, scores: np.ndarray | None = None, max_stretches: int = 16
) -> list[tuple[int, int]]:
    """Which firing positions of a block to report, each with the start of its stretch.

    A stretch is a run of consecutive firing positions. Of each stretch the
    first (opens an incident), the highest-scoring (may escalate it) and the
    last (keeps it open across a long block) are reported as ``(index,
    stretch_start)``; reporting every firing step would only cost time. Past
    ``max_stretches`` stretches, only the first and last stretch are kept
    whole and the rest contribute their first position.

    Examples
    --------
    >>> reported_indices(np.array([False, True, True, True, False]), np.array([0, 1.0, 5.0, 2.0, 0]))
    [(1, 1), (2, 1), (3, 1)]
    >>> reported_indices(np.array([True, False, True]))
    [(0, 0), (2, 2)]
    >>> reported_indices(np.array([False, False]))
    []
    """
    idx = np.flatnonzero(fired)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(idx)]))
    out: list[tuple[int, int]] = []
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        first = int(idx[a])
        picks = {first, int(idx[b - 1])}
        if 0 < k < len(starts) - 1 and len(starts) > max_stretches:
            picks = {first}
        elif scores is not None:
            picks.add(int(idx[a + int(np.argmax(scores[idx[a:b]]))]))
        out.extend((i, first) for i in sorted(picks))
    return out
