"""Ingest fast path: batches read column by column, or straight from their bytes, give what the item-by-item path gives.

The pipeline accepts a batch whose every event passes with per-run column work
(service/event_columns.py reads the parsed message, service/event_scan.py the
bytes); anything else goes item by item. These tests hold the readers to the
protobuf parser on random and malformed bytes, and the whole pipeline to the
item-by-item path on random streams with every kind of bad, duplicate and
re-sent input.
"""

from __future__ import annotations

import math
import random
import struct
import time

import pytest
from google.protobuf.message import DecodeError

from runwatch.models.registry import DIAGNOSTICS, SuiteConfig
from runwatch.service.event_columns import MISSING, read_runs, sequence_size
from runwatch.service.event_scan import JIT, scan_batch
from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import runs_pb2

NAMES = ["loss", "lr", "grad_norm", "grad_norm/fc1", "act/zero_frac/fc1", "step_time", "val/loss", "ü/名前", "x" * 140]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def truth(batch: runs_pb2.EventBatch) -> dict[str, list]:
    """Per run, its events as the parser reads them: (step, wall bits, {name: value bits})."""
    out: dict[str, list] = {}
    for ev in batch.events:
        out.setdefault(ev.run_id, []).append((ev.step, bits(ev.wall_time), {k: bits(v) for k, v in ev.metrics.items()}))
    return out


def as_read(runs) -> dict[str, list]:
    """The same view of :class:`RunEvents` (as either reader returns them)."""
    out = {}
    for run in runs:
        rows: list = [None] * len(run)
        for layout in run.layouts:
            positions = range(len(run)) if layout.rows is None else layout.rows.tolist()
            for r, i in enumerate(positions):
                rows[i] = {k: bits(v) for k, v in zip(layout.names, layout.values[r].tolist())}
        out[run.run_id] = [(s, bits(w), m) for s, w, m in zip(run.steps.tolist(), run.wall_times.tolist(), rows)]
    return out


def random_batch(rng: random.Random) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch(sequence=rng.choice([0, 1, 300, 2**64 - 1]))
    if rng.random() < 0.2:
        b.starts.add(run_id="r1", project="p")
    layouts = [tuple(rng.sample(NAMES, rng.randint(0, 4))) for _ in range(rng.randint(1, 3))]
    for _ in range(rng.randint(1, 25)):
        ev = b.events.add(
            run_id=rng.choice(["r1", "r1", "r1", "r2", "", "ü" * 50]),
            step=rng.choice([0, 1, 5, 127, 128, 2**40, -1, -(2**63), rng.randint(0, 10**6)]),
            wall_time=rng.choice([0.0, -0.0, 1.7e9, math.nan, math.inf]),
        )
        for name in rng.choice(layouts):
            ev.metrics[name] = rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, MISSING, rng.random()])
    if rng.random() < 0.2:
        b.ends.add(run_id="r1")
    return b


def test_readers_agree_with_the_parser_on_random_batches():
    rng = random.Random(7)
    for _ in range(400):
        b = random_batch(rng)
        raw = b.SerializeToString()
        parsed = runs_pb2.EventBatch.FromString(raw)
        expected = truth(parsed)
        columns = read_runs(parsed.events)
        assert as_read(columns) == expected
        if not (b.starts or b.ends):
            assert sum(r.wire_size() for r in columns) + sequence_size(b.sequence) == len(raw)
        scanned = scan_batch(raw)
        assert (scanned is not None) == JIT  # plain serializer output is always read from the bytes
        if scanned is not None:
            assert as_read(scanned.runs) == expected
            assert (scanned.sequence, scanned.n_events, scanned.other_items) == (
                parsed.sequence,
                len(parsed.events),
                bool(parsed.starts or parsed.ends),
            )
            for run in scanned.runs:  # the events cut from the bytes are these events
                assert truth(runs_pb2.EventBatch.FromString(run.wire(raw))) == {run.run_id: expected[run.run_id]}


def _event_bytes(body: bytes) -> bytes:
    return b"\x12" + _varint(len(body)) + body


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


ENTRY = b"\x22\x0d\x0a\x02lr\x11" + bits(0.5)  # metrics {"lr": 0.5}
ODD_EVENTS = {
    # encodings the parser accepts but the byte reader leaves to it (each changes what the parser keeps)
    "unknown field in an event": b"\x0a\x01r\x10\x01" + ENTRY + b"\x98\x06\x01",
    "unknown field in an entry": b"\x0a\x01r\x22\x0f\x0a\x02lr\x11" + bits(0.5) + b"\x18\x01",
    "step twice": b"\x0a\x01r\x10\x01\x10\x02" + ENTRY,
    "run id twice": b"\x0a\x01r\x0a\x01s\x10\x01" + ENTRY,
    "wall time twice": b"\x0a\x01r\x19" + bits(1.0) + b"\x19" + bits(2.0) + ENTRY,
    "entry value first": b"\x0a\x01r\x22\x0d\x11" + bits(0.5) + b"\x0a\x02lr",
    "entry without value": b"\x0a\x01r\x22\x04\x0a\x02lr",
    "entry without key": b"\x0a\x01r\x22\x09\x11" + bits(0.5),
    "name twice": b"\x0a\x01r" + ENTRY + b"\x22\x0d\x0a\x02lr\x11" + bits(0.25),
    "step as a length-delimited field": b"\x0a\x01r\x12\x01\x01" + ENTRY,
}


@pytest.mark.parametrize("case", sorted(ODD_EVENTS))
def test_unusual_encodings_are_left_to_the_parser(case):
    raw = _event_bytes(b"\x0a\x01r\x10\x00" + ENTRY) + _event_bytes(ODD_EVENTS[case])
    parsed = runs_pb2.EventBatch.FromString(raw)  # the parser accepts every one of them
    assert len(parsed.events) == 2
    assert scan_batch(raw) is None


def test_unknown_field_on_the_batch_is_left_to_the_parser():
    b = runs_pb2.EventBatch(sequence=3)
    b.events.add(run_id="r", step=1).metrics["lr"] = 0.5
    raw = b.SerializeToString() + b"\x98\x06\x01"
    assert len(runs_pb2.EventBatch.FromString(raw).events) == 1
    assert scan_batch(raw) is None
    long_tag = b"\x92\x00" + b.SerializeToString()[1:]  # the events tag in two bytes: the parser's to read
    assert scan_batch(long_tag) is None


def test_non_minimal_varints_are_read_as_the_parser_reads_them():
    body = b"\x0a\x01r\x10\x85\x80\x80\x00" + b"\x22\x8e\x00\x0a\x82\x00lr\x11" + bits(0.5)
    raw = _event_bytes(body)
    parsed = runs_pb2.EventBatch.FromString(raw)
    scanned = scan_batch(raw)
    assert scanned is None or as_read(scanned.runs) == truth(parsed) == {"r": [(5, bits(0.0), {"lr": bits(0.5)})]}


@pytest.mark.parametrize(
    "body",
    [b"\x0a\x01\xff" + ENTRY, b"\x0a\x01r\x22\x0d\x0a\x02\xc3\x28\x11" + bits(0.5), b"\x0a\x03\xed\xa0\x80" + ENTRY],
    ids=["run id", "metric name", "surrogate"],
)
def test_strings_that_are_not_utf8_are_left_to_the_parser(body):
    raw = _event_bytes(b"\x0a\x01r" + ENTRY) + _event_bytes(body)
    with pytest.raises(DecodeError):
        runs_pb2.EventBatch.FromString(raw)
    assert scan_batch(raw) is None


def test_damaged_bytes_are_never_read_differently_from_the_parser():
    rng = random.Random(11)
    read = 0
    for _ in range(3000):
        raw = bytearray(random_batch(rng).SerializeToString())
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw))
            kind = rng.random()
            if kind < 0.5:
                raw[i] = rng.randrange(256)
            elif kind < 0.75:
                del raw[i:]
                if not raw:
                    raw = bytearray(b"\x28\x01")
            else:
                raw[i:i] = bytes([rng.randrange(256)])
        scanned = scan_batch(bytes(raw))
        try:
            parsed = runs_pb2.EventBatch.FromString(bytes(raw))
        except DecodeError:
            # never read what the parser refuses (starts, logs and ends are the parser's to check)
            assert scanned is None or scanned.other_items
            continue
        if scanned is not None:
            read += 1
            assert as_read(scanned.runs) == truth(parsed)
            assert (scanned.sequence, scanned.n_events) == (parsed.sequence, len(parsed.events))
    assert read > 100 or not JIT


# -- the whole pipeline, against its item-by-item path ------------------------------------------------


class _ItemByItem(DetectionPipeline):
    """The pipeline with the column reads switched off: every batch is parsed and goes item by item."""

    def _ingest_scanned(self, scanned, raw, arrival):
        return None

    def _ingest(self, batch, arrival, raw_size, raw, scanned):
        return super()._ingest(batch, arrival, raw_size, raw, None)

    def _read_open_runs(self, batch, scanned):
        return None


UNKNOWN = b"\x98\x06\x01"  # field 99 = 1: a field this schema does not have


def _stream(rng: random.Random, n_batches: int) -> list[tuple[bytes, bool]]:
    """Random batches for runs r0..r2 with bad, duplicate and re-sent input; (bytes, send without the bytes)."""
    steps = {"r0": 0, "r1": 0, "r2": 0}
    level = {r: 2.0 for r in steps}
    validated = {r: -1 for r in steps}  # last step with a validation event
    train = ("loss", "lr", "grad_norm", "grad_norm/fc1", "act/zero_frac/fc1", "step_time")
    sent: list[bytes] = []
    out = []
    open_runs = ["r0", "r1"]
    for seq in range(n_batches):
        if seq > 1 and rng.random() < 0.08:  # a batch re-sent after a reconnect
            out.append((rng.choice(sent), False))
            continue
        b = runs_pb2.EventBatch(sequence=seq)
        if seq == 0:
            for r in ("r0", "r1"):
                b.starts.add(run_id=r, project="p")
        elif seq >= 5 and len(open_runs) == 2:
            b.starts.add(run_id="r2", project="p")
            open_runs.append("r2")
        if seq == n_batches - 3:
            b.ends.add(run_id="r1")
        runs = ["r0"] if rng.random() < 0.6 else rng.sample(open_runs, 2)
        # Most batches hold only valid events (validation at a training step, other layouts, times
        # left to the server); the rest mix in every kind of bad, duplicate and unknown input.
        dirty = 1.0 if rng.random() < 0.4 else 0.0
        for _ in range(rng.randint(1, 60)):
            r = rng.choice(runs)
            level[r] *= 0.995
            loss = level[r] * (1 + rng.gauss(0, 0.02)) * (8.0 if rng.random() < 0.01 else 1.0)
            m = {
                "loss": math.nan if rng.random() < 0.003 else loss,
                "lr": 1e-3,
                "grad_norm": 1 + rng.random() * 0.1,
                "grad_norm/fc1": 0.5,
                "act/zero_frac/fc1": 0.4 + rng.random() * 0.01,
                "step_time": 0.05,
            }
            step = steps[r]
            roll = rng.random()
            if not dirty and 0.03 <= roll < 0.075:
                roll = 0.068  # another layout instead of a bad event
            if roll < 0.03 and validated[r] >= step - 1:
                roll = 0.5
            if roll < 0.03 and validated[r] < step - 1:
                m = {"val/loss": loss * 1.1}  # validation at the training step just logged
                step -= 1
                validated[r] = step
            elif roll < 0.04:
                m = {"loss": loss}  # the same step again, a name already logged: duplicate or rejected
                step -= 1
            elif roll < 0.05:
                step -= rng.randint(2, 40)  # going back: recently seen (duplicate) or not (rejected)
            elif roll < 0.055:
                m = {"bad name": 1.0}
            elif roll < 0.06:
                m = {}
            elif roll < 0.065:
                step = -1
            elif roll < 0.07:
                m = {n: m[n] for n in train[:3]}  # another layout
                steps[r] += 1
            elif roll < 0.075:
                r = rng.choice(["ghost", "bad id!", ""])
            else:
                steps[r] += 1
            wall = 1.7e9 + step if rng.random() > 0.02 else rng.choice([0.0, 0.0] + [math.nan, -1.0] * int(dirty))
            ev = b.events.add(run_id=r, step=step, wall_time=wall)
            ev.metrics.update(m)
            if rng.random() < 0.003 * dirty:  # a field this schema does not know
                ev.ParseFromString(ev.SerializeToString() + b"\x98\x06\x01")
        if rng.random() < 0.2:
            unknown = UNKNOWN if rng.random() < dirty * 0.5 else b""
            b.logs.add().ParseFromString(
                runs_pb2.LogLine(run_id="r0", time=1.7e9, level=2, text="x").SerializeToString() + unknown
            )
        if dirty and rng.random() < 0.1:  # a re-sent start, an end of a run never started: with unknown fields
            b.starts.add().ParseFromString(runs_pb2.RunStart(run_id="r0", project="p").SerializeToString() + UNKNOWN)
            b.ends.add().ParseFromString(runs_pb2.RunEnd(run_id="ghost").SerializeToString() + UNKNOWN)
        raw = b.SerializeToString()
        sent.append(raw)
        out.append((raw, rng.random() < 0.1))
    return out


def _stored(store: RunStore) -> dict:
    store.flush()
    runs = {}
    for info in store.list_runs(limit=100):
        events = [
            (e.step, bits(e.wall_time), sorted((k, bits(v)) for k, v in e.metrics.items()))
            for e in store.events(info.run_id)
        ]
        runs[info.run_id] = (info.status, info.last_step, info.event_count, info.last_event_time, events)
    anomalies = sorted((a.id, a.revision, a.step, a.kind, a.severity, a.score) for a in store.anomalies())
    return {"runs": runs, "anomalies": anomalies}


def _ingest_all(pipeline, stream):
    acks, anomalies, writes = [], [], []
    for raw, without_bytes in stream:
        if without_bytes:
            result = pipeline.ingest(runs_pb2.EventBatch.FromString(raw))
        else:
            result = pipeline.ingest_bytes(raw)
        writes.append(result.durable)
        acks.append(result.ack.SerializeToString())
        anomalies.append(sorted((a.id, a.revision, a.step, a.kind, a.score, a.explanation) for a in result.anomalies))
        assert result.run_ids >= {ev.run_id for ev in runs_pb2.EventBatch.FromString(raw).events}
    for done in writes:
        done.result(timeout=30)  # every write committed (a failed op would roll back its whole group)
    return acks, anomalies


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pipeline_gives_what_the_item_by_item_path_gives(seed, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1.7e9 + 12345.0)  # one clock for both: filled-in times match
    stream = _stream(random.Random(seed), 60)
    results = []
    for name, kind in (("fast", DetectionPipeline), ("items", _ItemByItem)):
        settings = ServiceSettings(data_dir=tmp_path / name)
        store = RunStore(settings.db_path)
        pipeline = kind(settings, store)
        acks, anomalies = _ingest_all(pipeline, stream)
        state = {r: (s.last_step, frozenset(s.last_names), list(s.recent)) for r, s in pipeline.runs.items()}
        results.append((acks, anomalies, state, _stored(store), dict(pipeline.counters)))
        store.close()
    fast, items = results
    assert fast[0] == items[0]  # acknowledgements, byte for byte: every violation named the same way
    assert fast[1] == items[1]
    assert fast[2] == items[2]
    assert fast[3] == items[3]
    assert fast[4] == items[4]
    counters = fast[4]
    assert counters["rejected"] > 0 and counters["duplicates"] > 0 and counters["anomalies"] > 0


def _clean_stream(n_batches: int, events: int) -> list[bytes]:
    """What the SDK sends: training metrics every step, validation every 50th step at the same step."""
    rng = random.Random(0)
    out = []
    for seq in range(n_batches):
        b = runs_pb2.EventBatch(sequence=seq)
        if seq == 0:
            b.starts.add(run_id="sdk", project="p")
        for i in range(seq * events, (seq + 1) * events):
            m = {"loss": 2.0 / (1 + i) ** 0.5 * (1 + rng.gauss(0, 0.02)), "lr": 1e-3, "grad_norm": 1.0 + rng.random()}
            m.update({f"grad_norm/fc{k}": 0.5 + rng.random() * 0.01 for k in range(4)})
            b.events.add(run_id="sdk", step=i, wall_time=1.7e9 + i).metrics.update(m)
            if i % 50 == 49:
                b.events.add(run_id="sdk", step=i, wall_time=1.7e9 + i).metrics["val/loss"] = m["loss"] * 1.1
        out.append(b.SerializeToString())
    return out


def test_clean_batches_never_go_item_by_item(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a clean batch went item by item")

    settings = ServiceSettings(data_dir=tmp_path)
    store = RunStore(settings.db_path)
    pipeline = DetectionPipeline(settings, store)
    monkeypatch.setattr(pipeline, "_apply_events", refuse)
    for raw in _clean_stream(6, 200):
        ack = pipeline.ingest_bytes(raw).ack
        assert ack.rejected == 0 and ack.duplicates == 0
    assert pipeline.counters["accepted"] == 1 + 6 * 204
    assert pipeline.runs["sdk"].last_names == frozenset(
        ["loss", "lr", "grad_norm", "val/loss"] + [f"grad_norm/fc{k}" for k in range(4)]
    )
    store.close()


@pytest.mark.skipif(not JIT, reason="the byte reader needs compiled kernels")
def test_batch_at_once_costs_well_under_item_by_item(tmp_path):
    stream = _clean_stream(12, 500)
    cost = {}
    # The decode paths are what is compared; the learned detector costs the same on both and would
    # only dilute the ratio, so the rules run alone here.
    rules = SuiteConfig(enabled=[n for n in DIAGNOSTICS if n != "learned"])
    for name, kind in (("fast", DetectionPipeline), ("items", _ItemByItem)):
        settings = ServiceSettings(data_dir=tmp_path / name, diagnostics=rules)
        store = RunStore(settings.db_path)
        pipeline = kind(settings, store)
        pipeline.ingest_bytes(stream[0])  # opens the run, warms up
        t0 = time.thread_time()
        for raw in stream[1:]:
            pipeline.ingest_bytes(raw)
        cost[name] = time.thread_time() - t0
        store.close()
    # Measured 2.5x on 2 shared cores; 1.5x leaves room for noise without hiding a lost fast path.
    assert cost["fast"] * 1.5 < cost["items"], cost


def test_missing_marker_in_the_data_is_only_data(tmp_path):
    # A value with the bits of the column reader's "not logged" marker must be kept like any other value.
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="m", project="p")
    for i in range(4):
        b.events.add(run_id="m", step=i, wall_time=1.7e9).metrics.update(
            {"loss": MISSING if i == 2 else 1.0, "lr": 0.1}
        )
    parsed = runs_pb2.EventBatch.FromString(b.SerializeToString())
    assert as_read(read_runs(parsed.events)) == truth(parsed)
    settings = ServiceSettings(data_dir=tmp_path)
    store = RunStore(settings.db_path)
    ack = DetectionPipeline(settings, store).ingest(parsed).ack  # without the bytes: the column reader
    assert (ack.accepted, ack.rejected) == (5, 0)
    store.flush()
    assert [bits(e.metrics["loss"]) for e in store.events("m")] == [bits(1.0), bits(1.0), bits(MISSING), bits(1.0)]
    store.close()


def test_ingest_events_bytes_applies_clean_batches_and_leaves_the_rest_untouched(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path)
    store = RunStore(settings.db_path)
    pipeline = DetectionPipeline(settings, store)
    opening = runs_pb2.EventBatch(sequence=1)
    opening.starts.add(run_id="k", project="p")
    opening.events.add(run_id="k", step=10, wall_time=1.7e9).metrics["loss"] = 1.0
    assert pipeline.ingest(opening).ack.accepted == 2

    def events(seq, steps, run_id="k"):
        b = runs_pb2.EventBatch(sequence=seq)
        for step in steps:
            b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step).metrics["loss"] = 0.5
        return b

    with_start = events(2, [11])
    with_start.starts.add(run_id="k2", project="p")
    untouched = {
        "a step going back": events(2, [11, 9]),
        "a re-sent step": events(2, [10]),
        "an unknown run": events(2, [11], run_id="ghost"),
        "a start": with_start,
    }
    before = (dict(pipeline.counters), pipeline.runs["k"].last_step, list(pipeline.runs["k"].recent))
    for case, b in untouched.items():
        assert pipeline.ingest_events_bytes(b.SerializeToString()) is None, case
    assert (dict(pipeline.counters), pipeline.runs["k"].last_step, list(pipeline.runs["k"].recent)) == before
    result = pipeline.ingest_events_bytes(events(3, [11, 12, 13]).SerializeToString())
    if JIT:
        assert (result.ack.sequence, result.ack.accepted, result.run_ids) == (3, 3, frozenset(["k"]))
        assert pipeline.runs["k"].last_step == 13
        result.durable.result(timeout=30)
        assert store.get_run("k").event_count == 4
    else:
        assert result is None
    store.close()


def test_blocks_from_layouts_hold_each_metrics_values_in_event_order():
    import numpy as np

    from runwatch.models.block import MetricBlock

    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 30)
        choices = [tuple(rng.sample("abcdef", rng.randint(1, 4))) for _ in range(rng.randint(1, 4))]
        names = [rng.choice(choices) for _ in range(n)]
        values = [[rng.random() for _ in key] for key in names]
        steps = np.arange(n) * 2
        walls = np.arange(n) + 0.5
        layouts = []
        for key in dict.fromkeys(names):  # in order of first appearance, as the readers give them
            rows = [i for i in range(n) if names[i] == key]
            matrix = np.array([values[i] for i in rows]).reshape(len(rows), len(key))
            layouts.append((key, None if len(rows) == n else np.array(rows), matrix))
        block = MetricBlock.from_layouts(steps, walls, layouts)
        expected: dict[str, list] = {}
        for i, (key, vals) in enumerate(zip(names, values)):
            for name, v in zip(key, vals):
                expected.setdefault(name, []).append((int(steps[i]), float(walls[i]), v))
        assert list(block.columns) == list(expected)  # metrics in order of first appearance
        for name, points in expected.items():
            col = block.columns[name]
            assert list(zip(col.steps.tolist(), col.wall_times.tolist(), col.values.tolist())) == points
            base = col.values.base  # its own memory, not a view into a matrix of other metrics
            assert col.values.flags.c_contiguous and (base is None or base.size == len(points))
            assert (col.steps is block.steps) == (len(points) == n)  # shared steps mean aligned columns
