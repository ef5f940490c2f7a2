"""Column reads of a batch's metric events: field by field over the batch, values straight into arrays.

:class:`RunEvents` holds one run's events of one batch as columns: steps, wall
times, and per *layout* (the events logging the same metric names) a matrix of
values. :func:`read_runs` fills it from a parsed ``EventBatch``;
:mod:`runwatch.service.event_scan` fills it straight from the serialized bytes
(faster, for the plain encoding). Nothing is checked or changed here:
validation is the pipeline's job.

Reading protobuf map values one by one is the costly part of reading a parsed
batch. Here a run's events are read one field at a time over the whole batch,
with one ``.get`` per value and the names read once per layout rather than once
per event. ``.get`` (never ``[...]``) because indexing a protobuf map with a
missing key inserts it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import chain

import numpy as np

# Default of ``.get`` for a name an event does not log: a quiet NaN with a payload no
# arithmetic produces. A sent value with exactly these bits only sends its events down the
# exact (slower) read, so it needs no special meaning.
MISSING_BITS = 0x7FF8_D15C_A5ED_0001
MISSING = struct.unpack("<d", struct.pack("<Q", MISSING_BITS))[0]

# Largest value of each varint length (1..9 bytes); anything larger takes 10.
_VARINT_LIMITS = np.array([(1 << (7 * k)) - 1 for k in range(1, 10)], dtype=np.uint64)


@dataclass(slots=True)
class Layout:
    """Events of one run that log exactly the same metric names."""

    names: tuple[str, ...]
    rows: np.ndarray | None  # ascending positions of these events among the run's; None = all of them
    values: np.ndarray  # float64, one row per event, one column per name


@dataclass(slots=True)
class RunEvents:
    """One run's events of one batch, read column by column (batch order kept).

    Examples
    --------
    >>> from runwatch.v1 import runs_pb2
    >>> b = runs_pb2.EventBatch()
    >>> for step, m in [(1, {"loss": 0.5}), (2, {"loss": 0.4, "val/loss": 0.6}), (3, {"loss": 0.3})]:
    ...     b.events.add(run_id="r1", step=step, wall_time=10.0 + step).metrics.update(m)
    >>> (run,) = read_runs(b.events)
    >>> run.run_id, run.steps.tolist(), [sorted(lay.names) for lay in run.layouts]  # map order is upb's
    ('r1', [1, 2, 3], [['loss'], ['loss', 'val/loss']])
    >>> run.layouts[0].rows.tolist(), run.layouts[0].values.ravel().tolist()
    ([0, 2], [0.5, 0.3])
    >>> run.wire_size() == b.ByteSize()
    True
    """

    run_id: str
    positions: np.ndarray | None  # of these events in the batch's ``events``; None = all of them
    steps: np.ndarray  # int64
    wall_times: np.ndarray  # float64, as sent (0.0 = not set)
    layouts: list[Layout]  # in the order of their first event
    wire_ranges: np.ndarray | None = None  # (start, stop) rows: where these events' fields lie in the received bytes

    def __len__(self) -> int:
        return len(self.steps)

    def messages(self, events) -> list:
        """These events' messages, from the batch's ``events``."""
        if self.positions is None:
            return list(events)
        return [events[i] for i in self.positions.tolist()]

    def wire(self, raw: bytes) -> bytes | None:
        """These events as a serialized ``EventBatch``, cut from the received ``raw`` (None if not located there)."""
        if self.wire_ranges is None:
            return None
        if len(self.wire_ranges) == 1:
            start, stop = self.wire_ranges[0].tolist()
            return raw[start:stop]
        return b"".join([raw[a:b] for a, b in self.wire_ranges.tolist()])

    def layout_ids(self) -> np.ndarray:
        """Per event, the position of its layout in :attr:`layouts`."""
        ids = np.zeros(len(self.steps), dtype=np.intp)
        for j, layout in enumerate(self.layouts):
            if layout.rows is not None:
                ids[layout.rows] = j
        return ids

    def names_of(self, i: int, ids: np.ndarray | None = None) -> tuple[str, ...]:
        """Metric names of the ``i``-th event."""
        if len(self.layouts) == 1:
            return self.layouts[0].names
        return self.layouts[int((self.layout_ids() if ids is None else ids)[i])].names

    def wire_size(self) -> int:
        """Bytes these events take in an ``EventBatch`` as protobuf serializes them (unknown fields excluded).

        Equals the events' share of ``EventBatch.ByteSize()``: a received batch whose
        length differs from this (plus its other fields) carried unknown fields or an
        unusual encoding.
        """
        n = len(self.steps)
        if n == 0:
            return 0
        rid = len(self.run_id.encode())
        size = np.full(n, 1 + _varint_size(rid) + rid if rid else 0, dtype=np.int64)
        steps = self.steps
        size += np.where(steps != 0, 1 + varint_sizes(steps), 0)
        size += np.where(self.wall_times.view(np.uint64) != 0, 9, 0)  # -0.0 is sent, +0.0 is not
        per_layout = [_metrics_size(layout.names) for layout in self.layouts]
        if len(per_layout) == 1:
            size += per_layout[0]
        else:
            size += np.asarray(per_layout, dtype=np.int64)[self.layout_ids()]
        return int((1 + varint_sizes(size) + size).sum())


def group_by_run(events) -> dict[str, tuple[np.ndarray | None, list]]:
    """A batch's events by run id: ``{run_id: (positions in the batch or None for all, messages)}``.

    Runs come in order of first appearance, events in batch order.
    """
    evs = list(events)
    if not evs:
        return {}
    run_ids = [ev.run_id for ev in evs]
    first = run_ids[0]
    if run_ids.count(first) == len(run_ids):
        return {first: (None, evs)}
    by_run: dict[str, tuple[list[int], list]] = {}
    for i, (run_id, ev) in enumerate(zip(run_ids, evs)):
        group = by_run.get(run_id)
        if group is None:
            by_run[run_id] = ([i], [ev])
        else:
            group[0].append(i)
            group[1].append(ev)
    return {run_id: (np.asarray(rows, dtype=np.intp), group) for run_id, (rows, group) in by_run.items()}


def read_runs(events) -> list[RunEvents]:
    """Split a batch's events by run (in order of first appearance) and read each run's columns."""
    return [read_run(run_id, group, positions) for run_id, (positions, group) in group_by_run(events).items()]


def read_run(run_id: str, events: list, positions: np.ndarray | None = None) -> RunEvents:
    """Read one run's events (``MetricEvent`` messages in batch order, at ``positions``) into columns."""
    n = len(events)
    steps = np.fromiter([ev.step for ev in events], np.int64, n)
    wall_times = np.fromiter([ev.wall_time for ev in events], np.float64, n)
    maps = [ev.metrics for ev in events]
    sizes = np.fromiter(map(len, maps), np.intp, n)
    if n == 0 or sizes.min() == sizes.max():
        layouts = _read_same_size(maps, None)
    else:
        # Events logging the same names have the same count: group by count, then check.
        counts, first = np.unique(sizes, return_index=True)
        layouts = []
        for count in counts[np.argsort(first)].tolist():
            rows = np.flatnonzero(sizes == count)
            layouts.extend(_read_same_size([maps[i] for i in rows.tolist()], rows))
        if len(layouts) > 1:
            layouts.sort(key=lambda lay: lay.rows[0])
    return RunEvents(run_id, positions, steps, wall_times, layouts)


def _read_same_size(maps: list, rows: np.ndarray | None) -> list[Layout]:
    """Layouts of events with equally many metrics (``rows``: their positions, None = all)."""
    if not maps:
        return []
    names = tuple(maps[0])
    width = len(names)
    missing = (MISSING,) * width
    values = np.fromiter(
        chain.from_iterable([map(m.get, names, missing) for m in maps]), np.float64, len(maps) * width
    ).reshape(len(maps), width)
    if not (values.view(np.uint64) == MISSING_BITS).any():
        return [Layout(names, rows, values)]
    # Some event logs other names (or sent the MISSING bits): read each event's own names.
    keys = [tuple(m) for m in maps]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    layouts = []
    for key, members in groups.items():
        block = np.fromiter(
            chain.from_iterable([map(maps[i].get, key) for i in members]), np.float64, len(members) * len(key)
        ).reshape(len(members), len(key))
        positions = np.asarray(members, dtype=np.intp)
        layouts.append(Layout(key, positions if rows is None else rows[positions], block))
    if len(layouts) == 1:
        layouts[0].rows = rows
    return layouts


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of each value as a protobuf varint (int64 negatives take 10)."""
    u = np.asarray(values).astype(np.int64, copy=False).view(np.uint64)
    return np.searchsorted(_VARINT_LIMITS, u, side="left").astype(np.int64) + 1


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _metrics_size(names: tuple[str, ...]) -> int:
    """Bytes of a ``map<string, double>`` holding ``names`` (each entry: key and value, both always written)."""
    total = 0
    for name in names:
        k = len(name.encode())
        entry = 1 + _varint_size(k) + k + 9
        total += 1 + _varint_size(entry) + entry
    return total


def sequence_size(sequence: int) -> int:
    """Bytes of an ``EventBatch.sequence`` field."""
    return 1 + _varint_size(sequence) if sequence else 0
