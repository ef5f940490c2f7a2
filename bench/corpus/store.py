"""Compact storage of one recorded run: a compressed ``.npz`` of sparse metric columns.

Layout (all arrays, ``E`` events, ``M`` metric names, ``N`` values):

- ``steps`` int64 [E], ``wall`` float64 [E]: each logged event's step and wall time;
- ``names`` str [M]: metric names in the order they first appeared in the
  run's metric dicts (the order the SDK would send them);
- ``offsets`` int64 [M+1], ``rows`` int32 [N], ``values`` float64 [N]: metric
  ``names[j]`` took ``values[offsets[j]:offsets[j+1]]`` at events
  ``rows[offsets[j]:offsets[j+1]]`` (NaN and Inf are values, kept as is);
- ``meta``: JSON of the run's spec, facts and labels.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from runwatch.models.block import Column, MetricBlock


@dataclass
class RunRecord:
    """One recorded run, column-wise."""

    steps: np.ndarray
    wall: np.ndarray
    columns: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (event rows, values), in first-seen order
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    def __len__(self) -> int:
        return len(self.steps)

    @classmethod
    def from_events(cls, events: Sequence[tuple[int, float, Mapping[str, float]]], meta: dict[str, Any]) -> RunRecord:
        rows: dict[str, list[int]] = {}
        vals: dict[str, list[float]] = {}
        for i, (_, _, metrics) in enumerate(events):
            for k, v in metrics.items():
                if k not in rows:
                    rows[k], vals[k] = [], []
                rows[k].append(i)
                vals[k].append(v)
        columns = {k: (np.asarray(rows[k], np.int32), np.asarray(vals[k], np.float64)) for k in rows}
        steps = np.asarray([e[0] for e in events], np.int64)
        wall = np.asarray([e[1] for e in events], np.float64)
        return cls(steps, wall, columns, meta)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric; empty arrays when the run never logged it."""
        if name not in self.columns:
            return np.zeros(0, np.int64), np.zeros(0)
        rows, values = self.columns[name]
        return self.steps[rows], values

    def without(self, prefixes: Iterable[str]) -> RunRecord:
        """The same run with the metrics under ``prefixes`` removed (e.g. ``dbg/``)."""
        prefixes = tuple(prefixes)
        cols = {k: v for k, v in self.columns.items() if not k.startswith(prefixes)}
        return RunRecord(self.steps, self.wall, cols, self.meta)

    def blocks(self, max_events: int = 50, flush_gap_s: float = 1.0) -> Iterable[tuple[MetricBlock, int, int]]:
        """The run as the SDK would batch it: ``(block, first event, end event)``.

        A block holds at most ``max_events`` events and is cut where the wall
        clock jumps by more than ``flush_gap_s`` (the SDK flushes what it has
        within its flush interval, so a pause never sits inside a batch).
        Columns keep the run's metric order, as ``MetricBlock.from_values`` builds them.
        """
        n = len(self.steps)
        if n == 0:
            return
        gaps = set((np.flatnonzero(np.diff(self.wall) > flush_gap_s) + 1).tolist())
        bounds = [0]
        for i in range(1, n):
            if i - bounds[-1] >= max_events or i in gaps:
                bounds.append(i)
        bounds.append(n)
        # per metric, the position in its rows where each block starts
        starts = {k: np.searchsorted(rows, bounds) for k, (rows, _) in self.columns.items()}
        for b, (lo, hi) in enumerate(pairwise(bounds)):
            steps, wall = self.steps[lo:hi], self.wall[lo:hi]
            cols = {}
            for k, (rows, values) in self.columns.items():
                a, z = starts[k][b], starts[k][b + 1]
                if z > a:
                    r = rows[a:z]
                    if z - a == hi - lo:
                        cols[k] = Column(steps, values[a:z].copy(), wall)
                    else:
                        cols[k] = Column(self.steps[r], values[a:z].copy(), self.wall[r])
            yield MetricBlock(steps, wall, cols), lo, hi

    def events(self) -> list[tuple[int, float, dict[str, float]]]:
        """Back to per-event metric dicts (slow; for tests and small runs)."""
        out: list[tuple[int, float, dict[str, float]]] = [(int(s), float(w), {}) for s, w in zip(self.steps, self.wall)]
        for k, (rows, values) in self.columns.items():
            for r, v in zip(rows.tolist(), values.tolist()):
                out[r][2][k] = v
        return out


def save(record: RunRecord, path: str | Path) -> None:
    names = list(record.columns)
    sizes = [len(record.columns[k][0]) for k in names]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.concatenate([record.columns[k][0] for k in names]) if names else np.zeros(0, np.int32)
    values = np.concatenate([record.columns[k][1] for k in names]) if names else np.zeros(0)
    np.savez_compressed(
        path,
        steps=record.steps,
        wall=record.wall,
        names=np.asarray(names, dtype=str),
        offsets=offsets,
        rows=rows.astype(np.int32),
        values=values.astype(np.float64),
        meta=np.asarray(json.dumps(record.meta, sort_keys=True)),
    )


def load(path: str | Path) -> RunRecord:
    with np.load(path, allow_pickle=False) as z:
        names = z["names"].tolist()
        offsets, rows, values = z["offsets"], z["rows"], z["values"]
        columns = {k: (rows[offsets[j] : offsets[j + 1]], values[offsets[j] : offsets[j + 1]]) for j, k in enumerate(names)}
        return RunRecord(z["steps"], z["wall"], columns, json.loads(str(z["meta"])))
