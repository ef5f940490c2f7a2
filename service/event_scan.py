"""Metric events read straight from a serialized ``EventBatch``: one compiled pass over the bytes.

Reading a protobuf map from Python costs a call and a float object per value;
this pass reads every event's run id, step, wall time and metric values out of
the wire bytes into arrays, and groups events by run and by the exact sequence
of metric names they log (their *layout*), so names are decoded once per
layout, not once per event.

It reads only the plain encoding protobuf serializers produce, and reports
anything else as not read (None from :func:`scan_batch`) instead of
interpreting it: an unknown field, a wrong wire type or a tag over one byte
anywhere on the batch or in its events, a singular field sent twice, a map
entry that is not exactly a key followed by a value, a name logged twice in
one event, a string that is not UTF-8. The caller then parses the message,
which knows every rule. What is read here is what the parser reads, and bytes
read here parse: every byte of the batch's own fields and of its events is
checked, and every string is decoded (events of one layout or run carry
byte-identical names or run ids). Only the contents of ``starts``, ``logs`` and
``ends`` are skipped (:attr:`ScannedBatch.other_items`): a batch holding any is
left to the parser for those.

A batch read here carries no unknown fields: every field of the batch and its
events was recognised.
"""

# ruff: noqa: PLR1730  (numba code: plain comparisons instead of min()/max() calls)

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runwatch.models import kernels
from runwatch.service.event_columns import Layout, RunEvents

#: Distinct runs / metric-name layouts one batch may hold for the compiled read (more: not read here).
MAX_RUNS = 64
MAX_LAYOUTS = 64

OK = 0
NOT_READ = 1  # something this reader does not interpret; the parsed message decides

# EventBatch fields (one-byte tags: field number << 3 | wire type)
_STARTS, _EVENTS, _LOGS, _ENDS, _SEQUENCE = 0x0A, 0x12, 0x1A, 0x22, 0x28
# MetricEvent fields, and the key / value of a metrics entry
_RUN_ID, _STEP, _WALL_TIME, _METRICS = 0x0A, 0x10, 0x19, 0x22
_KEY, _VALUE = 0x0A, 0x11

JIT = kernels.JIT
_CACHE = __name__ == "runwatch.service.event_scan"
"""Cache compiled code on disk only when imported as part of the package (as models/kernels.py does): loaded
as a loose file (``pytest --doctest-modules service/event_scan.py``) this module has another name, and code
cached under it, in the same ``__pycache__``, could not be loaded by ``runwatch.service.event_scan``."""


def jit(fn):
    """``numba.njit(cache=True, nogil=True)`` when kernels are compiled, else the identity."""
    if not JIT:
        return fn
    import numba

    return numba.njit(cache=_CACHE, nogil=True)(fn)


def kernel(example):
    """Decorator: :func:`jit` and register with the diagnostics' kernels, so the service's warm-up compiles it."""

    def register(fn):
        compiled = jit(fn)
        kernels.KERNELS[f"{__name__}.{fn.__name__}"] = (compiled, example)
        return compiled

    return register


@jit
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """Varint at ``pos`` as int64 bits: (value, position after it); position -1 if cut off or over 64 bits."""
    result = 0
    shift = 0
    while pos < end:
        b = np.int64(buf[pos])
        pos += 1
        if shift == 63 and b > 1:
            return 0, -1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            return 0, -1
    return 0, -1


@jit
def _fixed64(buf: np.ndarray, pos: int) -> int:
    """Little-endian 8 bytes at ``pos`` as int64 bits."""
    value = 0
    for k in range(8):
        value |= np.int64(buf[pos + k]) << (8 * k)
    return value


@jit
def _same_bytes(buf: np.ndarray, a: int, b: int, n: int) -> bool:
    for k in range(n):
        if buf[a + k] != buf[b + k]:
            return False
    return True


@jit
def _same_keys(buf: np.ndarray, key_pos: np.ndarray, key_len: np.ndarray, e0: int, f0: int, width: int) -> bool:
    """Whether the ``width`` keys from entry ``e0`` equal those from entry ``f0``, in order."""
    for k in range(width):
        n = key_len[e0 + k]
        if key_len[f0 + k] != n or not _same_bytes(buf, key_pos[e0 + k], key_pos[f0 + k], n):
            return False
    return True


@kernel(lambda: (np.frombuffer(b"\x12\x00\x28\x01", dtype=np.uint8),))
def count_events(buf: np.ndarray) -> int:
    """How many ``events`` fields the batch in ``buf`` holds (-1 if its framing is not read here)."""
    end = len(buf)
    pos = 0
    n = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == _SEQUENCE:
            _, pos = _varint(buf, pos, end)
        elif tag == _EVENTS or tag == _STARTS or tag == _LOGS or tag == _ENDS:
            size, pos = _varint(buf, pos, end)
            if pos < 0 or size < 0 or size > end - pos:
                return -1
            pos += size
            n += tag == _EVENTS
        else:
            return -1
        if pos < 0:
            return -1
    return n


def _scan_example() -> tuple:
    raw = b"\x12\x10\n\x01r\x10\x01\x19\x00\x00\x00\x00\x00\x00\xf0?"  # one event, no metrics
    ev = [np.zeros(1, np.int64) for _ in range(6)]
    return (np.frombuffer(raw, dtype=np.uint8), *ev, np.zeros(2, np.int64), *(np.zeros(1, np.int64) for _ in range(3)),
            *(np.zeros(MAX_RUNS, np.int64) for _ in range(2)), *(np.zeros(MAX_LAYOUTS, np.int64) for _ in range(3)),
            np.zeros(COUNTS, np.int64))  # fmt: skip


COUNTS = 7
"""Length of :func:`scan_events`' ``counts``: events, entries, runs, layouts, sequence, whether the
sequence was sent, how many starts, logs and ends fields were skipped."""


@kernel(_scan_example)
def scan_events(
    buf: np.ndarray,
    ev_run: np.ndarray,
    ev_layout: np.ndarray,
    ev_step: np.ndarray,
    ev_wall: np.ndarray,
    ev_start: np.ndarray,
    ev_stop: np.ndarray,
    ev_entry0: np.ndarray,
    key_pos: np.ndarray,
    key_len: np.ndarray,
    value_bits: np.ndarray,
    run_pos: np.ndarray,
    run_len: np.ndarray,
    layout_entry0: np.ndarray,
    layout_width: np.ndarray,
    layout_count: np.ndarray,
    counts: np.ndarray,
) -> int:
    """Read the events of the ``EventBatch`` in ``buf`` into the arrays; OK or NOT_READ.

    Per event ``i`` (int64 arrays throughout): its run (index into
    ``run_pos``/``run_len``: byte ranges of the distinct run ids, in order of
    first appearance), its layout (index into ``layout_entry0``/
    ``layout_width``/``layout_count``: the entries of the first event with that
    sequence of names, and how many events have it), its step, wall time
    (float64 bits), the byte range of the whole ``events`` field
    (``ev_start:ev_stop``, tag included) and its entries
    ``ev_entry0[i]:ev_entry0[i + 1]`` of ``key_pos``, ``key_len`` (byte ranges
    of the names) and ``value_bits`` (float64 bits). ``counts`` receives
    :data:`COUNTS` numbers. Output arrays must hold the batch's events (+1 for
    ``ev_entry0``) and entries.
    """
    end = len(buf)
    n_cap = len(ev_step)
    m_cap = len(value_bits)
    pos = 0
    n = 0
    m = 0
    n_runs = 0
    n_layouts = 0
    sequence = 0
    seen_sequence = False
    other_items = 0
    while pos < end:
        field_start = pos
        tag = buf[pos]
        pos += 1
        if tag == _SEQUENCE:
            if seen_sequence:
                return NOT_READ
            sequence, pos = _varint(buf, pos, end)
            if pos < 0:
                return NOT_READ
            seen_sequence = True
            continue
        if tag != _EVENTS and tag != _STARTS and tag != _LOGS and tag != _ENDS:
            return NOT_READ  # a field this schema does not have, another wire type, or a longer tag
        size, pos = _varint(buf, pos, end)
        if pos < 0 or size < 0 or size > end - pos:
            return NOT_READ
        stop = pos + size
        if tag != _EVENTS:  # starts, logs, ends: left to the parser
            other_items += 1
            pos = stop
            continue
        if n == n_cap:
            return NOT_READ
        # One MetricEvent in buf[pos:stop].
        rid_pos = pos
        rid_len = -1
        step = 0
        wall = 0
        seen_step = False
        seen_wall = False
        e0 = m
        p = pos
        while p < stop:
            t = buf[p]
            p += 1
            if t == _METRICS:  # exactly key then value
                size, p = _varint(buf, p, stop)
                if p < 0 or size < 0 or size > stop - p:
                    return NOT_READ
                q = p + size
                if p >= q or buf[p] != _KEY:
                    return NOT_READ
                klen, kp = _varint(buf, p + 1, q)
                if kp < 0 or klen < 0 or klen > q - kp:
                    return NOT_READ
                vp = kp + klen
                if vp + 9 != q or buf[vp] != _VALUE or m == m_cap:
                    return NOT_READ
                key_pos[m] = kp
                key_len[m] = klen
                value_bits[m] = _fixed64(buf, vp + 1)
                m += 1
                p = q
            elif t == _RUN_ID:
                if rid_len >= 0:
                    return NOT_READ
                size, p = _varint(buf, p, stop)
                if p < 0 or size < 0 or size > stop - p:
                    return NOT_READ
                rid_pos = p
                rid_len = size
                p += size
            elif t == _STEP:
                if seen_step:
                    return NOT_READ
                step, p = _varint(buf, p, stop)
                if p < 0:
                    return NOT_READ
                seen_step = True
            elif t == _WALL_TIME:
                if seen_wall or p + 8 > stop:
                    return NOT_READ
                wall = _fixed64(buf, p)
                p += 8
                seen_wall = True
            else:
                return NOT_READ
        if rid_len < 0:
            rid_len = 0
        # Which run: most events repeat the previous event's.
        run = -1
        if n > 0:
            r = ev_run[n - 1]
            if run_len[r] == rid_len and _same_bytes(buf, run_pos[r], rid_pos, rid_len):
                run = r
        if run < 0:
            for r in range(n_runs):
                if run_len[r] == rid_len and _same_bytes(buf, run_pos[r], rid_pos, rid_len):
                    run = r
                    break
        if run < 0:
            if n_runs == len(run_pos):
                return NOT_READ
            run_pos[n_runs] = rid_pos
            run_len[n_runs] = rid_len
            run = n_runs
            n_runs += 1
        # Which layout: the same test, on the sequence of names.
        width = m - e0
        layout = -1
        if n > 0:
            j = ev_layout[n - 1]
            if layout_width[j] == width and _same_keys(buf, key_pos, key_len, e0, layout_entry0[j], width):
                layout = j
        if layout < 0:
            for j in range(n_layouts):
                if layout_width[j] == width and _same_keys(buf, key_pos, key_len, e0, layout_entry0[j], width):
                    layout = j
                    break
        if layout < 0:
            if n_layouts == len(layout_width):
                return NOT_READ
            layout_entry0[n_layouts] = e0
            layout_width[n_layouts] = width
            layout_count[n_layouts] = 0
            layout = n_layouts
            n_layouts += 1
        layout_count[layout] += 1
        ev_run[n] = run
        ev_layout[n] = layout
        ev_step[n] = step
        ev_wall[n] = wall
        ev_start[n] = field_start
        ev_stop[n] = stop
        ev_entry0[n] = e0
        n += 1
        pos = stop
    ev_entry0[n] = m
    counts[0] = n
    counts[1] = m
    counts[2] = n_runs
    counts[3] = n_layouts
    counts[4] = sequence
    counts[5] = seen_sequence
    counts[6] = other_items
    return OK


@dataclass(slots=True)
class ScannedBatch:
    """What :func:`scan_batch` read from a serialized ``EventBatch``."""

    sequence: int
    runs: list[RunEvents]  # the events by run, runs in order of first appearance
    n_events: int
    other_items: bool  # the batch also holds starts, logs or ends (left to the parser)


def scan_batch(raw: bytes) -> ScannedBatch | None:
    """Read the serialized ``EventBatch`` ``raw``'s events; None where this reader leaves it to the parser.

    None for bytes outside the plain encoding (see the module docstring), a batch
    with no events, or without compiled kernels (``RUNWATCH_JIT=0``: a
    byte-by-byte read in Python would be slower than the parser's). Each run's
    :attr:`~RunEvents.wire_ranges` locate its events in ``raw``.

    Examples
    --------
    >>> from runwatch.service.event_columns import read_runs
    >>> from runwatch.v1 import runs_pb2
    >>> b = runs_pb2.EventBatch(sequence=7)
    >>> for step, m in [(1, {"loss": 0.5}), (2, {"loss": 0.4, "val/loss": 0.6}), (3, {"loss": 0.3})]:
    ...     b.events.add(run_id="r1", step=step, wall_time=10.0 + step).metrics.update(m)
    >>> scanned = scan_batch(b.SerializeToString())  # None without compiled kernels (RUNWATCH_JIT=0)
    >>> runs = scanned.runs if scanned is not None else read_runs(b.events)  # the parser's read agrees
    >>> [(r.run_id, r.steps.tolist(), [sorted(lay.names) for lay in r.layouts]) for r in runs]
    [('r1', [1, 2, 3], [['loss'], ['loss', 'val/loss']])]
    """
    if not JIT:
        return None
    buf = np.frombuffer(raw, dtype=np.uint8)
    n_events = count_events(buf)
    if n_events <= 0:
        return None
    # Each entry takes at least 13 bytes (tag, length, key tag, key length, value tag, 8 bytes).
    m_cap = len(raw) // 13 + 1
    ev = np.empty((6, n_events), np.int64)
    ev_run, ev_layout, ev_step, ev_wall, ev_start, ev_stop = ev
    ev_entry0 = np.empty(n_events + 1, np.int64)
    key_pos, key_len, value_bits = np.empty((3, m_cap), np.int64)
    tables = np.empty((5, max(MAX_RUNS, MAX_LAYOUTS)), np.int64)
    run_pos, run_len = tables[0, :MAX_RUNS], tables[1, :MAX_RUNS]
    layout_entry0, layout_width, layout_count = (t[:MAX_LAYOUTS] for t in tables[2:])
    counts = np.zeros(COUNTS, np.int64)
    status = scan_events(
        buf, ev_run, ev_layout, ev_step, ev_wall, ev_start, ev_stop, ev_entry0, key_pos, key_len, value_bits,
        run_pos, run_len, layout_entry0, layout_width, layout_count, counts,
    )  # fmt: skip
    n, m, n_runs, n_layouts, sequence, _, other_items = counts.tolist()
    if status != OK or n != n_events:
        return None
    values = value_bits[:m].view(np.float64)
    walls = ev_wall.view(np.float64)
    try:
        names = []
        for e0, width in zip(layout_entry0[:n_layouts].tolist(), layout_width[:n_layouts].tolist()):
            spans = zip(key_pos[e0 : e0 + width].tolist(), key_len[e0 : e0 + width].tolist())
            key = tuple([raw[p : p + k].decode() for p, k in spans])
            if len(set(key)) != width:
                return None  # a name logged twice in one event: the parser keeps the last value
            names.append(key)
        run_ids = [raw[p : p + k].decode() for p, k in zip(run_pos[:n_runs].tolist(), run_len[:n_runs].tolist())]
    except UnicodeDecodeError:
        return None  # the parser refuses it, and says so
    sequence &= (1 << 64) - 1
    if n_runs == 1:
        if n_layouts == 1:
            layouts = [Layout(names[0], None, values.reshape(n, len(names[0])))]
        else:
            # Layout ids number layouts in order of first appearance; a stable sort groups their events.
            order = np.argsort(ev_layout, kind="stable")
            bounds = np.cumsum(layout_count[:n_layouts]).tolist()
            layouts = []
            for j, (lo, hi) in enumerate(zip([0, *bounds[:-1]], bounds)):
                rows = order[lo:hi]
                layouts.append(Layout(names[j], rows, _gather(values, ev_entry0[rows], len(names[j]))))
        # Own copies: blocks keep their steps and times (as evidence), not the scan's work arrays.
        runs = [RunEvents(run_ids[0], None, ev_step.copy(), walls.copy(), layouts, _ranges(ev_start, ev_stop))]
        return ScannedBatch(sequence, runs, n, bool(other_items))
    runs = []
    for r, run_id in enumerate(run_ids):
        positions = np.flatnonzero(ev_run == r)
        lay = ev_layout[positions]
        starts = ev_entry0[positions]
        ids, first = np.unique(lay, return_index=True)
        layouts = []
        for j in ids[np.argsort(first)].tolist():
            rows = np.flatnonzero(lay == j) if len(ids) > 1 else None
            picked = starts if rows is None else starts[rows]
            layouts.append(Layout(names[j], rows, _gather(values, picked, len(names[j]))))
        run = RunEvents(
            run_id, positions, ev_step[positions], walls[positions], layouts,
            _ranges(ev_start[positions], ev_stop[positions]),
        )  # fmt: skip
        runs.append(run)
    return ScannedBatch(sequence, runs, n, bool(other_items))


def _gather(values: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` consecutive values beginning at each of ``starts``."""
    return values[starts[:, None] + np.arange(width)]


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Byte ranges ``(start, stop)`` covering the given fields, adjacent ones merged."""
    if len(starts) <= 16:  # small batches: a loop costs a fraction of the array calls below
        s, e = starts.tolist(), stops.tolist()
        out = [[s[0], e[0]]]
        for a, b in zip(s[1:], e[1:]):
            if a == out[-1][1]:
                out[-1][1] = b
            else:
                out.append([a, b])
        return np.array(out, dtype=np.int64)
    breaks = np.flatnonzero(starts[1:] != stops[:-1]) + 1
    return np.stack((starts[np.concatenate(([0], breaks))], stops[np.concatenate((breaks - 1, [len(stops) - 1]))]), 1)
