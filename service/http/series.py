"""A run's metric curves for the dashboard: columns read from the store, and per-pixel downsampling.

:class:`RunColumns` reads a run's stored event chunks (``RunStore.event_chunks``)
into one step array and one value array per metric, and later reads only the
chunks written since, so a live run costs one small query per refresh.
:func:`downsample` keeps, per pixel-wide bucket of the step axis, the minimum
and the maximum (so a spike one step wide still shows at any zoom), the first
non-finite value (drawn as a gap), and every point at an anomaly's step.

Examples
--------
>>> import numpy as np
>>> steps = np.arange(100_000)
>>> values = np.sin(steps / 500.0)
>>> values[70_001] = 9.0  # a one-step spike
>>> x, y = downsample(steps, values, width=500, keep=np.array([12_345]))
>>> len(x) <= 2 * 500 + 3, 70_001 in x, 12_345 in x
(True, True, True)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from runwatch.service.event_columns import read_runs
from runwatch.service.event_scan import scan_batch
from runwatch.v1 import runs_pb2

#: Widest request honoured (buckets); a wider one is clipped.
MAX_WIDTH = 8192


def downsample(
    steps: np.ndarray,
    values: np.ndarray,
    width: int,
    lo: float | None = None,
    hi: float | None = None,
    keep: np.ndarray | None = None,
) -> tuple[list[int], list[float | None]]:
    """At most about ``2 * width`` points of one curve over steps ``[lo, hi]``, as JSON-ready lists.

    ``steps`` ascend; non-finite values come out as None (a gap). Points whose step
    is in ``keep`` (anomaly steps) are always kept, as are the first and last point.
    """
    i0 = 0 if lo is None else int(np.searchsorted(steps, lo, "left"))
    i1 = len(steps) if hi is None else int(np.searchsorted(steps, hi, "right"))
    s, v = steps[i0:i1], values[i0:i1]
    n = len(s)
    if n == 0:
        return [], []
    width = max(1, min(int(width), MAX_WIDTH))
    if n <= 2 * width:
        picked = np.arange(n)
    else:
        first, last = int(s[0]), int(s[-1])
        span = last - first + 1
        bucket = (s - first) * width // span
        starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
        seg = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
        finite = np.isfinite(v)
        low = np.where(finite, v, np.inf)
        high = np.where(finite, v, -np.inf)
        mins = np.minimum.reduceat(low, starts)
        maxs = np.maximum.reduceat(high, starts)
        parts = [
            _first_per_segment(seg, (low == mins[seg]) & finite),
            _first_per_segment(seg, (high == maxs[seg]) & finite),
            _first_per_segment(seg, ~finite),
            np.array([0, n - 1]),
        ]
        if keep is not None and len(keep):
            parts.append(np.flatnonzero(np.isin(s, keep)))
        picked = np.unique(np.concatenate(parts))
    x = s[picked].tolist()
    y = v[picked].tolist()
    return x, [value if math.isfinite(value) else None for value in y]


def _first_per_segment(seg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Position of the first True of ``mask`` in each segment that has one."""
    hits = np.flatnonzero(mask)
    if not len(hits):
        return hits
    keep = np.concatenate(([True], seg[hits][1:] != seg[hits][:-1]))
    return hits[keep]


@dataclass
class _Curve:
    """One metric's points, in chunks until read (appending stays cheap while a run is live)."""

    steps: list = field(default_factory=list)
    values: list = field(default_factory=list)
    count: int = 0

    def add(self, steps: np.ndarray, values: np.ndarray) -> None:
        self.steps.append(steps)
        self.values.append(values)
        self.count += len(steps)

    def tail(self, since: int) -> tuple[np.ndarray, np.ndarray]:
        """Points at steps >= ``since``, reading only the chunks that hold them (a live page's poll)."""
        i = len(self.steps)
        while i > 0 and len(self.steps[i - 1]) and self.steps[i - 1][0] >= since:
            i -= 1
        if i > 0:
            i -= 1  # the chunk that straddles ``since``
        if i == len(self.steps):
            return np.empty(0, np.int64), np.empty(0)
        j = int(np.searchsorted(self.steps[i], since, "left"))
        return (
            np.concatenate([self.steps[i][j:], *self.steps[i + 1 :]]),
            np.concatenate([self.values[i][j:], *self.values[i + 1 :]]),
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.steps) != 1:
            s = np.concatenate(self.steps) if self.steps else np.empty(0, np.int64)
            v = np.concatenate(self.values) if self.values else np.empty(0)
            if len(s) > 1 and (np.diff(s) < 0).any():  # chunks of equal steps written out of order
                order = np.argsort(s, kind="stable")
                s, v = s[order], v[order]
            self.steps, self.values = [s], [v]
        return self.steps[0], self.values[0]


class RunColumns:
    """Every metric of one run as step and value arrays, refreshed from the store incrementally.

    Thread-safe: the dashboard reads it from worker threads.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from runwatch.service.store import RunStore, append_events_op
    >>> store = RunStore(Path(tempfile.mkdtemp()) / "runwatch.db")
    >>> b = runs_pb2.EventBatch()
    >>> for step in range(3):
    ...     b.events.add(run_id="r1", step=step).metrics.update({"loss": 1.0 / (step + 1)})
    >>> store.submit([append_events_op("r1", 0, 2, 3, b.SerializeToString(), 0.0)]).result()
    >>> cols = RunColumns("r1")
    >>> sorted(cols.refresh(store)), cols.curve("loss")[0].tolist(), cols.refresh(store)
    (['loss'], [0, 1, 2], {})
    >>> store.close()
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.after = 0  # rowid of the last chunk read
        self.curves: dict[str, _Curve] = {}
        self.last_step = -1
        self.lock = threading.Lock()

    def refresh(self, store) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Read chunks stored since the last refresh; returns the points they added, by metric."""
        with self.lock:
            added: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
            for rowid, blob in store.event_chunks(self.run_id, self.after):
                self.after = rowid
                for name, steps, values in _chunk_columns(blob, self.run_id):
                    self.curves.setdefault(name, _Curve()).add(steps, values)
                    added.setdefault(name, []).append((steps, values))
                    if len(steps):
                        self.last_step = max(self.last_step, int(steps[-1]))
            return {
                name: (np.concatenate([s for s, _ in parts]), np.concatenate([v for _, v in parts]))
                for name, parts in added.items()
            }

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.curves)

    def points(self) -> int:
        with self.lock:
            return sum(c.count for c in self.curves.values())

    def curve(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self.lock:
            c = self.curves.get(name)
            return None if c is None else c.arrays()

    def tail(self, name: str, since: int) -> tuple[np.ndarray, np.ndarray] | None:
        """One metric's points at steps >= ``since`` (cheap while ``since`` is recent)."""
        with self.lock:
            c = self.curves.get(name)
            return None if c is None else c.tail(since)


def _chunk_columns(blob: bytes, run_id: str):
    """``(metric, steps, values)`` of one stored chunk's events of ``run_id``, each metric's steps ascending.

    A chunk is read one layout (set of metric names) at a time, so a metric logged at steps with
    different company (the SDK's watch() metrics every N steps) comes in pieces that interleave;
    they are merged here, because the live tail relies on each chunk being in step order.
    """
    pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, steps, values in _layout_columns(blob, run_id):
        pieces.setdefault(name, []).append((steps, values))
    for name, parts in pieces.items():
        yield (name, *_in_step_order(parts))


def _layout_columns(blob: bytes, run_id: str):
    """``(metric, steps, values)`` per layout of one stored chunk's events of ``run_id``."""
    scanned = scan_batch(blob)
    runs = scanned.runs if scanned is not None else read_runs(runs_pb2.EventBatch.FromString(blob).events)
    for run in runs:
        if run.run_id != run_id:
            continue
        for layout in run.layouts:
            steps = run.steps if layout.rows is None else run.steps[layout.rows]
            for j, name in enumerate(layout.names):
                yield name, steps, np.ascontiguousarray(layout.values[:, j])


def _in_step_order(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One metric's pieces as one steps array and one values array, sorted by step (stable)."""
    if len(parts) == 1:
        return parts[0]
    steps = np.concatenate([s for s, _ in parts])
    values = np.concatenate([v for _, v in parts])
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


class ColumnCache:
    """The :class:`RunColumns` of the runs viewed lately, at most ``max_points`` points in all (LRU).

    Examples
    --------
    >>> cache = ColumnCache(max_points=10)
    >>> cache.get("r1") is cache.get("r1")
    True
    """

    def __init__(self, max_points: int = 5_000_000) -> None:
        self.max_points = max_points
        self._runs: OrderedDict[str, RunColumns] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunColumns:
        with self._lock:
            cols = self._runs.get(run_id)
            if cols is None:
                cols = self._runs[run_id] = RunColumns(run_id)
            self._runs.move_to_end(run_id)
            return cols

    def trim(self) -> None:
        """Forget the least recently viewed runs while the cache holds more than ``max_points``."""
        with self._lock:
            total = sum(c.points() for c in self._runs.values())
            while total > self.max_points and len(self._runs) > 1:
                _, cols = self._runs.popitem(last=False)
                total -= cols.points()
