"""Checkpoints: a run snapshotted mid-way and restored elsewhere raises exactly the alerts of an uninterrupted run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_diagnostics import run

from runwatch.models.block import MetricBlock
from runwatch.models.registry import DIAGNOSTICS, DiagnosticSuite, SuiteConfig
from runwatch.models.snapshot import SnapshotError
from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2

CACHES = {"_watch_cache", "_handlers", "_selected"}
RUNS = ["diverge_momentum", "bad_batch_scaled", "vanishing", "dead_relu", "saturated_tanh", "frozen_fc1", "leak"]
RUNS += ["slow_data", "adam_bs16", "overfit"]


def summary(alerts):
    return [(a.finding.detector, a.finding.kind, a.finding.key, a.finding.step, a.state, a.revision, a.finding.score,
             a.incident_id, a.occurrences) for a in alerts]


def blocks(events, size=64):
    for i in range(0, len(events), size):
        yield MetricBlock.from_rows(*zip(*events[i : i + size]))


def same_state(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    if hasattr(a, "__slots__") and not isinstance(a, (int, float, str)):
        return all(same_state(getattr(a, s), getattr(b, s)) for s in a.__slots__ if s != "_by_names")
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("name", RUNS)
def test_restored_monitor_continues_exactly(name):
    suite = DiagnosticSuite(SuiteConfig(enabled=list(DIAGNOSTICS)))  # the learned detector's state too
    events = run(name).events
    whole = suite.monitor("r")
    expected = [a for b in blocks(events) for a in whole.observe_block(b)]

    cut = (len(events) // 2) // 64 * 64 + 5  # mid-run, not on a block boundary
    first = suite.monitor("r")
    got = [a for b in blocks(events[:cut]) for a in first.observe_block(b)]
    checkpoint = json.dumps(first.state_dict())  # it must survive a trip through JSON text
    second = suite.monitor("r")
    assert second.load_state_dict(json.loads(checkpoint)) == []
    for before, after in zip(first.diagnostics, second.diagnostics):
        extra = set(vars(before)) - set(before.state_attributes) - set(before.transient_attributes) - CACHES - {"config"}
        for attr in extra:  # everything not declared as state must derive from the config
            assert same_state(getattr(before, attr), getattr(type(before)(before.config), attr)), (before.name, attr)
        for attr in before.state_attributes:
            assert same_state(getattr(before, attr), getattr(after, attr)), (before.name, attr)
    got += [a for b in blocks(events[cut:]) for a in second.observe_block(b)]
    assert summary(got) == summary(expected)
    assert [a.finding.evidence for a in got] == [a.finding.evidence for a in expected]


def test_a_changed_config_restores_the_rest_and_says_which(tmp_path):
    events = run("diverge_momentum").events
    first = DiagnosticSuite().monitor("r")
    for b in blocks(events[:100]):
        first.observe_block(b)
    from runwatch.models.registry import SuiteConfig

    other = DiagnosticSuite(SuiteConfig(settings={"loss_spike": {"z_threshold": 5.0}})).monitor("r")
    assert other.load_state_dict(json.loads(json.dumps(first.state_dict()))) == ["loss_spike"]


def _pipeline(path):
    settings = ServiceSettings(port=0, data_dir=path)
    return DetectionPipeline(settings, RunStore(settings.db_path))


def _batches(events, run_id, size=50):
    for i in range(0, len(events), size):
        b = runs_pb2.EventBatch()
        if i == 0:
            b.starts.add(run_id=run_id, project="ckpt")
        for step, wall, metrics in events[i : i + size]:
            b.events.add(run_id=run_id, step=step, wall_time=wall).metrics.update(metrics)
        yield b


def test_run_moves_between_pipelines_without_losing_detection(tmp_path):
    events = run("diverge_momentum").events
    batches = list(_batches(events, "moving"))
    whole = _pipeline(tmp_path / "whole")
    expected = [(a.id, a.kind, a.step, a.revision) for b in batches for a in whole.ingest(b).anomalies]
    assert any(k == 3 for _, k, _, _ in expected)  # DIVERGENCE_PREDICTED among them

    a, b = _pipeline(tmp_path / "a"), _pipeline(tmp_path / "b")
    half = len(batches) // 2
    got = [(x.id, x.kind, x.step, x.revision) for batch in batches[:half] for x in a.ingest(batch).anomalies]
    assert b.restore_run(a.snapshot_run("moving")) == "moving"
    got += [(x.id, x.kind, x.step, x.revision) for batch in batches[half:] for x in b.ingest(batch).anomalies]
    assert got == expected
    b.store.flush()
    info = b.store.get_run("moving")
    assert info is not None and info.project == "ckpt" and info.event_count == sum(len(x.events) for x in batches[half:])
    # Re-sent events from before the move are recognised as duplicates, not errors.
    ack = b.ingest(batches[half - 1]).ack
    assert ack.rejected == 0
    for p in (whole, a, b):
        p.store.close()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xff not json", "not JSON"),
        (b'{"format": "other"}', "format: expected 'runwatch.run-state/1'"),
        (b'{"format": "runwatch.run-state/1", "run_id": "bad id"}', "run_id: invalid"),
        (b'{"format": "runwatch.run-state/1", "run_id": "r1"}', "checkpoint of 'r1': KeyError"),
    ],
)
def test_bad_checkpoints_are_rejected_with_the_reason(tmp_path, blob, message):
    p = _pipeline(tmp_path)
    with pytest.raises(SnapshotError, match=message):
        p.restore_run(blob)
    assert p.runs == {}
    p.store.close()


def test_arrays_of_unknown_dtype_are_refused():
    from runwatch.models.snapshot import decode

    with pytest.raises(SnapshotError, match="unsupported dtype"):
        decode({"nd": "|O", "shape": [1], "b64": ""})


def test_events_of_an_unknown_run_cost_one_store_lookup_per_batch(tmp_path):
    p = _pipeline(tmp_path)
    lookups = []
    real_get_run = p.store.get_run
    p.store.get_run = lambda run_id: lookups.append(run_id) or real_get_run(run_id)
    batch = runs_pb2.EventBatch()
    for step in range(500):
        batch.events.add(run_id="ghost", step=step).metrics["loss"] = 1.0
    ack = p.ingest(batch).ack
    assert (ack.accepted, ack.rejected) == (0, 500)
    assert ack.violations[0].field == "events[0].run_id" and "unknown run 'ghost'" in ack.violations[0].reason
    assert lookups == ["ghost"]
    p.store.close()


def test_a_run_that_goes_quiet_right_before_moving_is_still_flagged_as_stalled(tmp_path):
    a, b = _pipeline(tmp_path / "a"), _pipeline(tmp_path / "b")
    events = [(i, 1.7e9 + i, {"loss": 1.0 / (i + 1)}) for i in range(40)]
    for batch in _batches(events, "quiet"):
        a.ingest(batch)
    last_heard = a.runs["quiet"].last_received
    assert last_heard > 0
    b.restore_run(a.snapshot_run("quiet"))
    assert b.runs["quiet"].last_received == last_heard
    assert b.tick(now=last_heard + 60) == []  # within the 900 s default
    (stalled,) = b.tick(now=last_heard + 1000)
    assert stalled.run_id == "quiet" and stalled.kind == anomaly_pb2.ANOMALY_KIND_STALLED
    for p in (a, b):
        p.store.close()
