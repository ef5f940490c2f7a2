"""Bounded memory: idle and least recently active runs go to the store and come back with identical alerts.

Also the per-project limit of active runs (a whole batch refused, nothing of it applied).
"""

from __future__ import annotations

import math
import random
import sqlite3

import pytest

from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2


def training_run(run_id: str, steps: int, batch: int, seed: int, project: str = "evict") -> list[runs_pb2.EventBatch]:
    """A noisy power-law loss with spikes every ~150 steps; NaN near the end of even seeds, divergence in odd ones."""
    rng = random.Random(seed)
    nan_at = steps - 40 if seed % 2 == 0 else -1
    out = []
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project, start_time=1.7e9)
    for step in range(steps):
        loss = 2.3 * (1.0 + step / 50.0) ** -0.5 * (1.0 + rng.gauss(0, 0.03))
        grad = 1.0 + rng.random() * 0.2
        if step % (140 + 10 * seed) == 139:
            loss *= 8.0
        if seed % 2 and step >= 450:  # diverges: the loss and the gradients grow
            loss *= 1.03 ** (step - 450)
            grad *= 1.05 ** (step - 450)
        if 0 <= nan_at <= step:
            loss = math.nan
        ev = b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step)
        ev.metrics.update({"loss": loss, "lr": 1e-3, "grad_norm": grad})
        if len(b.events) >= batch:
            out.append(b)
            b = runs_pb2.EventBatch()
    if len(b.events) or len(b.starts):
        out.append(b)
    return out


def pipeline_at(path, **settings) -> DetectionPipeline:
    s = ServiceSettings(port=0, data_dir=path, **settings)
    return DetectionPipeline(s, RunStore(s.db_path))


def comparable(a: anomaly_pb2.Anomaly) -> bytes:
    """The anomaly as published, less the time it was detected at (the wall clock of the ingest)."""
    a = anomaly_pb2.Anomaly.FromString(a.SerializeToString())
    a.detected_time = 0.0
    return a.SerializeToString(deterministic=True)


def interleaved(runs: dict[str, list]) -> list[runs_pb2.EventBatch]:
    out = []
    for i in range(max(len(b) for b in runs.values())):
        out.extend(batches[i] for batches in runs.values() if i < len(batches))
    return out


@pytest.fixture(scope="module")
def runs():
    return {f"ev-{i}": training_run(f"ev-{i}", 700, 50, seed=i) for i in range(4)}


@pytest.fixture(scope="module")
def reference(runs, tmp_path_factory):
    p = pipeline_at(tmp_path_factory.mktemp("reference"))
    got = [comparable(a) for b in interleaved(runs) for a in p.ingest(b).anomalies]
    p.store.close()
    assert len(got) >= 8 and any(anomaly_pb2.Anomaly.FromString(x).revision > 1 for x in got)
    return got


def test_eviction_between_every_batch_gives_identical_anomalies(runs, reference, tmp_path):
    p = pipeline_at(tmp_path)
    got = []
    for i, b in enumerate(interleaved(runs)):
        got += [comparable(a) for a in p.ingest(b).anomalies]
        for run_id in list(p.runs):
            assert p.evict_run(run_id)
        if i % 3 == 0:
            p.store.flush()  # restored from the committed row (else from the checkpoint still being written)
            p._settle_evictions()
    assert got == reference  # same ids, revisions, steps, scores, evidence, in the same order
    assert p.evictions >= len(interleaved(runs)) and p.restores >= p.evictions - len(runs)
    p.store.flush()
    for run_id, batches in runs.items():
        info = p.store.get_run(run_id)
        assert info.event_count == sum(len(b.events) for b in batches) and info.project == "evict"
    p.store.close()


def test_least_recently_active_runs_beyond_max_active_runs_are_evicted(runs, reference, tmp_path):
    p = pipeline_at(tmp_path, max_active_runs=2)
    got = []
    for b in interleaved(runs):
        got += [comparable(a) for a in p.ingest(b).anomalies]
        assert len(p.runs) <= 2
    assert got == reference
    assert p.evictions > 10
    p.store.close()


def test_idle_runs_are_evicted_and_a_stall_still_fires_with_its_escalation(tmp_path):
    batches = training_run("quiet", 120, 40, seed=1)
    stay, leave = pipeline_at(tmp_path / "stay", idle_evict_s=60), pipeline_at(tmp_path / "leave", idle_evict_s=60)
    for b in batches:
        stay.ingest(runs_pb2.EventBatch.FromString(b.SerializeToString()))
        leave.ingest(b)
    t = leave.runs["quiet"].last_received
    stay.runs["quiet"].last_received = t  # the same clock for both

    def at(now):
        a, b = stay.tick(now), leave.tick(now)
        leave.evict_idle(now)
        return a, b

    assert at(t + 30) == ([], []) and "quiet" in leave.runs
    assert at(t + 61) == ([], []) and "quiet" not in leave.runs  # idle for idle_evict_s: gone from memory
    assert leave.evicted_waiting == 1
    (warning,), (warned,) = at(t + 901)  # past the stall timeout (900 s): restored for it, then evicted again
    assert comparable(warning) == comparable(warned) and warned.kind == anomaly_pb2.ANOMALY_KIND_STALLED
    assert warned.severity == anomaly_pb2.SEVERITY_WARNING and "quiet" not in leave.runs
    assert at(t + 2700) == ([], [])
    (error,), (escalated,) = at(t + 3601)  # past 4x the timeout: the ERROR revision
    assert (escalated.id, escalated.revision, escalated.severity) == (error.id, 2, anomaly_pb2.SEVERITY_ERROR)
    assert leave.evicted_waiting == 0  # nothing more can fire while it stays quiet: no more restores
    restores = leave.restores
    assert at(t + 15000)[1] == [] and leave.restores == restores
    # It speaks again: restored, and detection goes on from where it stood.
    b = runs_pb2.EventBatch()
    b.events.add(run_id="quiet", step=500, wall_time=1.7e9 + 500).metrics.update({"loss": 0.5})
    assert leave.ingest(b).ack.accepted == 1 and leave.runs["quiet"].last_step == 500
    for p in (stay, leave):
        p.store.close()


def test_a_restart_restores_evicted_runs_from_an_existing_database(runs, tmp_path):
    # A database made before the checkpoint table existed.
    db = tmp_path / "runwatch.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, kind INTEGER NOT NULL, "
            "status INTEGER NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL DEFAULT 0, "
            "end_reason TEXT NOT NULL DEFAULT '', last_step INTEGER NOT NULL DEFAULT -1, "
            "last_event_time REAL NOT NULL DEFAULT 0, event_count INTEGER NOT NULL DEFAULT 0, "
            "start_record BLOB NOT NULL)"
        )
    batches = runs["ev-0"]
    whole = pipeline_at(tmp_path / "whole")
    expected = [comparable(a) for b in batches for a in whole.ingest(b).anomalies]
    whole.store.close()

    first = pipeline_at(tmp_path)
    half = len(batches) // 2
    got = [comparable(a) for b in batches[:half] for a in first.ingest(b).anomalies]
    assert first.checkpoint_all() == 1  # what a graceful shutdown does
    first.store.close()

    second = pipeline_at(tmp_path)  # a restart: nothing in memory
    assert second.store.run_checkpoint("ev-0") is not None
    got += [comparable(a) for b in batches[half:] for a in second.ingest(b).anomalies]
    assert got == expected
    second.store.flush()
    assert second.store.run_checkpoint("ev-0") is None  # restored: the row is gone
    second.store.close()


def test_snapshot_of_an_evicted_run_is_its_checkpoint_and_forgetting_drops_only_a_private_one(runs, tmp_path, store_location):
    # SQLite, then PostgreSQL (tests/conftest.py): checkpoints live in either.
    p = pipeline_at(tmp_path, store=store_location if isinstance(store_location, str) else None)
    for b in runs["ev-1"][:5]:
        p.ingest(b)
    before = p.snapshot_run("ev-1")
    assert p.evict_run("ev-1") and "ev-1" not in p.runs
    assert p.snapshot_run("ev-1") == before  # pending write
    p.store.flush()
    p._settle_evictions()
    assert p.snapshot_run("ev-1") == before  # from the store
    p.forget_runs(["ev-1"])  # its Kafka partition moved: the state topic's checkpoint wins
    p.store.flush()
    if p.store.shared:  # the new owner reads the same database: the checkpoint stays for it
        assert p.store.run_checkpoint("ev-1") is not None
    else:
        assert p.store.run_checkpoint("ev-1") is None and p.snapshot_run("ev-1") is None
    p.store.close()


def test_a_batch_opening_a_run_beyond_the_project_limit_is_refused_whole(tmp_path):
    p = pipeline_at(tmp_path, max_active_runs_per_project=2)
    for run_id in ("a1", "a2"):
        b = runs_pb2.EventBatch()
        b.starts.add(run_id=run_id, project="alpha")
        assert p.ingest(b).ack.accepted == 1
    counters = dict(p.counters)
    b = runs_pb2.EventBatch(sequence=7)
    b.starts.add(run_id="other", project="beta")  # another project: room
    b.starts.add(run_id="a3", project="alpha")
    b.events.add(run_id="a1", step=0).metrics["loss"] = 1.0
    result = p.ingest(b)
    assert result.exhausted.startswith("starts[1].project: project 'alpha' has 2 active runs")
    assert "max_active_runs_per_project=2" in result.exhausted
    assert result.anomalies == [] and result.ack.sequence == 7
    p.store.flush()
    assert p.store.get_run("other") is None and p.store.get_run("a3") is None  # nothing of it applied
    assert p.runs["a1"].last_step == -1 and dict(p.counters) == counters
    # An evicted run leaves room; a run that ends too.
    p.evict_run("a2")
    assert not p.ingest(b).exhausted
    end = runs_pb2.EventBatch()
    end.ends.add(run_id="a1")
    p.ingest(end)
    b4 = runs_pb2.EventBatch()
    b4.starts.add(run_id="a4", project="alpha")
    assert not p.ingest(b4).exhausted
    # Restoring an evicted run is not opening one: it is never refused.
    e = runs_pb2.EventBatch()
    e.events.add(run_id="a2", step=0).metrics["loss"] = 1.0
    assert p.ingest(e).ack.accepted == 1 and sum(s.project == "alpha" for s in p.runs.values()) == 3
    p.store.close()


def test_runs_opened_by_their_events_count_in_project_default(tmp_path):
    p = pipeline_at(tmp_path, max_active_runs_per_project=1, auto_create_runs=True)
    b = runs_pb2.EventBatch()
    b.events.add(run_id="x1", step=0).metrics["loss"] = 1.0
    assert p.ingest(b).ack.accepted == 1
    b = runs_pb2.EventBatch()
    b.events.add(run_id="x1", step=1).metrics["loss"] = 1.0
    b.events.add(run_id="x2", step=0).metrics["loss"] = 1.0
    result = p.ingest(b)
    assert result.exhausted.startswith("events[1].run_id: project 'default' has 1 active runs")
    assert p.runs["x1"].last_step == 0
    p.store.close()


def test_kafka_mode_applies_no_project_limit(tmp_path):
    from runwatch.service.kafka.config import KafkaSettings

    p = pipeline_at(tmp_path, max_active_runs_per_project=1, kafka=KafkaSettings(bootstrap="127.0.0.1:1"))
    for run_id in ("k1", "k2"):
        b = runs_pb2.EventBatch()
        b.starts.add(run_id=run_id, project="alpha")
        assert not p.ingest(b).exhausted
    p.store.close()
