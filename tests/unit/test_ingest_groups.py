"""Batches applied in groups (one commit, one detection call per run) give what they give one by one.

The server applies the batches its streams delivered meanwhile as one group
(``DetectionPipeline.begin_group`` / ``end_group``): the same acknowledgements,
the same anomalies (per run, in the same order), the same stored rows, and no
batch's result is durable before the group's commit.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from runwatch.v1 import anomaly_pb2, runs_pb2
from tests.unit.test_eviction import interleaved, pipeline_at, training_run


def comparable(a: anomaly_pb2.Anomaly) -> bytes:
    """The anomaly less the wall clock of the ingest (its detection time; a log finding's time)."""
    a = anomaly_pb2.Anomaly.FromString(a.SerializeToString())
    a.detected_time = 0.0
    if a.detector == "log_text":
        a.wall_time = 0.0
    return a.SerializeToString(deterministic=True)


def workload() -> list[bytes]:
    """Small batches of several runs, interleaved, with the item-by-item cases among them."""
    runs = {f"g-{i}": training_run(f"g-{i}", 520, size, seed=i) for i, size in enumerate((1, 2, 3, 7, 1))}
    batches = interleaved(runs)
    out = []
    for k, b in enumerate(batches):
        out.append(b.SerializeToString())
        if k == 300:  # a re-sent batch: duplicates
            out.append(b.SerializeToString())
        if k == 700:  # a bad metric name: rejected, the batch goes item by item
            bad = runs_pb2.EventBatch()
            bad.events.add(run_id="g-0", step=10_000, wall_time=1.7e9).metrics["bad name\x00"] = 1.0
            out.append(bad.SerializeToString())
        if k == 900:  # a log line and the end of one run, mid-stream
            other = runs_pb2.EventBatch()
            other.logs.add(run_id="g-4", time=1.7e9, text="RuntimeError: CUDA out of memory")
            other.ends.add(run_id="g-4", end_time=1.7e9 + 10)
            out.append(other.SerializeToString())
    out.append(b"\xff\xff not a batch")
    return out


def ingest_all(tmp_path, raws: list[bytes], groups: list[int] | None, hold: bool = False, evict_every: int = 0):
    published: list[anomaly_pb2.Anomaly] = []
    # With hold, a run's events wait for later groups until 32 of them are there (an hour is never reached here).
    p = pipeline_at(tmp_path, detection_hold_s=3600.0) if hold else pipeline_at(tmp_path)
    p.publish = published.append
    held_groups = 0
    acks = []
    i = 0
    while i < len(raws):
        size = 1 if groups is None else groups[i % len(groups)]
        chunk = raws[i : i + size]
        i += size
        if groups is None:
            results = [p.ingest_bytes(raw) for raw in chunk]
        else:
            p.begin_group()
            results = [p.ingest_bytes(raw) for raw in chunk]
            durable = p.end_group(hold=hold)
            held_groups += p.holding
            assert all(r.durable is durable for r in results if not r.exhausted)
            if evict_every and i % evict_every < size:
                for run_id in list(p.runs):
                    p.evict_run(run_id)  # its checkpoint has seen its held events; its next item restores it
        for r in results:
            r.durable.result(30)
            acks.append(r.ack.SerializeToString(deterministic=True))
    p.flush_held()
    assert not p.holding
    if hold:
        assert held_groups > len(raws) // max(groups) // 2, "most groups held some run's events"
    p.store.flush()
    by_run = defaultdict(list)
    for a in published:
        by_run[a.run_id].append(comparable(a))
    chunks = {run_id: p.store.event_chunks(run_id) for run_id in sorted(by_run) + ["g-0", "g-1", "g-2", "g-3", "g-4"]}
    stored = sorted(comparable(a) for a in p.store.anomalies())
    counters = dict(p.counters)
    p.store.close()
    return acks, dict(by_run), chunks, stored, counters


@pytest.fixture(scope="module")
def raws():
    return workload()


@pytest.fixture(scope="module")
def reference(raws, tmp_path_factory):
    ref = ingest_all(tmp_path_factory.mktemp("one-by-one"), raws, None)
    _, by_run, _, _, counters = ref
    assert sum(len(v) for v in by_run.values()) >= 8, "the workload raises anomalies"
    assert counters["duplicates"] and counters["rejected"]
    return ref


@pytest.mark.parametrize("groups", [[1], [2], [16, 1, 5], [64], [1000]], ids=lambda g: "-".join(map(str, g)))
def test_groups_give_what_batches_one_by_one_give(raws, reference, tmp_path, groups):
    got = ingest_all(tmp_path, raws, groups)
    acks, by_run, chunks, stored, counters = got
    ref_acks, ref_by_run, ref_chunks, ref_stored, ref_counters = reference
    assert acks == ref_acks
    assert by_run == ref_by_run
    assert chunks == ref_chunks
    assert stored == ref_stored
    assert counters == ref_counters


@pytest.mark.parametrize("groups", [[1], [4], [16, 1, 5]], ids=lambda g: "-".join(map(str, g)))
def test_held_detection_gives_what_batches_one_by_one_give(raws, reference, tmp_path, groups):
    """end_group(hold=True) leaves small runs' events to the next group's detection: the same alerts, at last."""
    got = ingest_all(tmp_path, raws, groups, hold=True)
    assert got[0] == reference[0]  # acknowledgements
    assert got[1] == reference[1]  # anomalies published, per run, in order
    assert got[2] == reference[2] and got[3] == reference[3]  # events and anomalies stored
    assert got[4] == reference[4]


def test_a_checkpoint_of_a_held_run_has_seen_its_events(raws, reference, tmp_path):
    got = ingest_all(tmp_path, raws, [3], hold=True, evict_every=50)
    assert got[1] == reference[1] and got[3] == reference[3]


def test_held_events_wait_for_the_next_group_unless_they_stand_out(tmp_path):
    """Held: not detected at their group's end (their batch is durable all the same); detected with the next
    group, or at once with the events that come with a value unlike those last detected (the hold's screen)."""
    p = pipeline_at(tmp_path, detection_hold_s=3600.0, detection_hold_events=3)
    published = []
    p.publish = published.append

    def ingest(step: int, loss: float):
        b = runs_pb2.EventBatch(sequence=step)
        if step == 0:
            b.starts.add(run_id="h", project="p", start_time=1.7e9)
        b.events.add(run_id="h", step=step, wall_time=1.7e9 + step).metrics["loss"] = loss
        p.begin_group()
        result = p.ingest_bytes(b.SerializeToString())
        p.end_group(hold=True).result(30)
        return result

    # Step 0 (with the run's start) goes item by item; step 1 is detected at once (nothing detected in a
    # held group yet: no range to screen it by); 2 and 3 are held, and 4 makes three events: detected.
    holding = []
    for step in range(5):
        ingest(step, 2.0 - 0.1 * step)
        holding.append(p.holding)
    assert holding == [False, False, True, True, False]
    result = ingest(5, 1.5)  # inside the range last detected (1.6-1.8, widened): held
    assert result.ack.accepted == 1 and p.holding and not published  # stored, acknowledged, not yet detected
    assert p.store.event_chunks("h")  # its events are stored
    result = ingest(6, float("nan"))  # unlike anything detected: detected at once, with the held step 5
    assert not p.holding
    assert [(a.kind, a.step) for a in published] == [(anomaly_pb2.ANOMALY_KIND_NONFINITE, 6)]
    assert [a.step for a in result.anomalies] == [6]
    p.store.close()


def test_random_groups(raws, reference, tmp_path):
    rng = random.Random(3)
    got = ingest_all(tmp_path, raws, [rng.randint(1, 40) for _ in range(97)])
    assert got[0] == reference[0] and got[1] == reference[1] and got[2] == reference[2]


def test_a_group_must_be_ended_before_another_begins(tmp_path):
    p = pipeline_at(tmp_path)
    p.begin_group()
    with pytest.raises(RuntimeError):
        p.begin_group()
    p.end_group().result(30)
    with pytest.raises(RuntimeError):
        p.end_group()
    p.store.close()


def test_runs_sending_large_batches_keep_no_screen(tmp_path):
    """A run whose batches hold as many events as a hold waits for is never held: its range is not kept."""
    p = pipeline_at(tmp_path, detection_hold_s=3600.0, detection_hold_events=8)

    def group(run_id: str, steps: range, start: bool = False) -> None:
        b = runs_pb2.EventBatch()
        if start:
            b.starts.add(run_id=run_id, project="p", start_time=1.7e9)
        for step in steps:
            b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step).metrics["loss"] = 2.0
        p.begin_group()
        p.ingest_bytes(b.SerializeToString())
        p.end_group(hold=True).result(30)

    group("small", range(0, 1), start=True)
    group("large", range(0, 1), start=True)
    group("small", range(1, 2))
    group("large", range(1, 9))
    assert p.runs["small"].bands is not None
    assert p.runs["large"].bands is None
    group("large", range(9, 10))  # a small batch again: not held (no range to screen it by), its range kept
    assert not p.holding and p.runs["large"].bands is not None
    p.store.close()
