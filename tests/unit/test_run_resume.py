"""A run continued by a restarted process (RunStart.resume): service/pipeline.py, service/run_starts.py."""

from __future__ import annotations

import math

import pytest

from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2


@pytest.fixture
def pipeline(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path / "a")
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    yield p
    p.store.close()


def loss_at(step: int) -> float:
    """One NaN at step 60, healthy until step 150, then a climb to NaN (a divergence after the resume at 100)."""
    if step >= 185 or step == 60:
        return math.nan
    base = 2.3 * math.exp(-step / 40) + 0.2 + 0.01 * math.sin(step)
    return base * (1.12 ** max(0, step - 150))


def start(resume: bool = False, start_time: float = 1.7e9, hp: dict | None = None) -> runs_pb2.RunStart:
    s = runs_pb2.RunStart(run_id="r", project="p", start_time=start_time, resume=resume)
    s.hyperparameters.update(hp or {"lr": 0.1})
    return s


def events(first: int, last: int, per_batch: int = 10):
    for a in range(first, last + 1, per_batch):
        b = runs_pb2.EventBatch()
        for s in range(a, min(a + per_batch, last + 1)):
            b.events.add(run_id="r", step=s, wall_time=1.7e9 + s).metrics.update({"loss": loss_at(s), "lr": 0.1})
        yield b


def ingest(p: DetectionPipeline, batch: runs_pb2.EventBatch):
    result = p.ingest(batch)
    if result.durable is not None:
        result.durable.result()
    return result


def alerts_after(results, step: int) -> list[tuple[int, int, int]]:
    return sorted((a.kind, a.first_step, a.severity) for r in results for a in r.anomalies if a.first_step > step)


def test_a_resumed_run_is_reopened_and_its_detectors_go_on_as_if_it_never_stopped(pipeline, tmp_path):
    uninterrupted = DetectionPipeline(ServiceSettings(data_dir=tmp_path / "b"), RunStore(tmp_path / "b.db"))
    ingest(uninterrupted, runs_pb2.EventBatch(starts=[start()]))
    whole = [ingest(uninterrupted, b) for b in events(0, 199)]
    uninterrupted.store.close()

    p = pipeline
    ingest(p, runs_pb2.EventBatch(starts=[start()]))
    before = [ingest(p, b) for b in events(0, 99)]
    ingest(p, runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="r", status=runs_pb2.RUN_STATUS_FAILED)]))
    # The restarted job resumes from its checkpoint at step 90: steps 90-99 come again.
    opened = ingest(p, runs_pb2.EventBatch(starts=[start(resume=True, start_time=1.8e9, hp={"lr": 0.1, "seed": 3})]))
    assert (opened.ack.accepted, opened.ack.rejected) == (1, 0)
    after = [ingest(p, b) for b in events(90, 199)]
    assert sum(r.ack.duplicates for r in after) == 10 and sum(r.ack.rejected for r in after) == 0

    info = p.store.get_run("r")
    assert info.status == runs_pb2.RUN_STATUS_RUNNING and info.end_time == 0 and info.event_count == 200
    assert info.start.start_time == 1.7e9 and dict(info.start.hyperparameters) == {"lr": 0.1, "seed": 3.0}
    assert not info.start.resume
    assert alerts_after(before, -1) == [a for a in alerts_after(whole, -1) if a[1] < 100] != []
    expected = alerts_after(whole, 100)
    # The NaN at step 60 opened an incident the NaNs from step 185 belong to: no second NONFINITE alert.
    assert expected and anomaly_pb2.ANOMALY_KIND_NONFINITE not in {k for k, _, _ in expected}
    assert alerts_after(after, 100) == expected  # the same alerts at the same steps: no re-alert, none missed


def test_a_plain_start_for_an_ended_run_is_refused_with_the_way_to_resume_it(pipeline):
    ingest(pipeline, runs_pb2.EventBatch(starts=[start()], ends=[runs_pb2.RunEnd(run_id="r")]))
    refused = ingest(pipeline, runs_pb2.EventBatch(starts=[start(start_time=1.8e9)]))
    (v,) = refused.ack.violations
    assert v.field == "starts[0].run_id" and "already ended" in v.reason and "resume" in v.reason


def test_a_resume_names_what_it_kept_and_refuses_another_project(pipeline):
    ingest(pipeline, runs_pb2.EventBatch(starts=[start()], ends=[runs_pb2.RunEnd(run_id="r")]))
    moved = runs_pb2.RunStart(run_id="r", project="elsewhere", resume=True)
    (v,) = ingest(pipeline, runs_pb2.EventBatch(starts=[moved])).ack.violations
    assert v.field == "starts[0].project" and pipeline.store.get_run("r").status == runs_pb2.RUN_STATUS_FINISHED
    changed = ingest(pipeline, runs_pb2.EventBatch(starts=[start(resume=True, hp={"lr": 0.01})]))
    assert changed.ack.accepted == 1 and list(changed.ack.warnings) == [
        "run 'r' resumed with the recorded hyperparameters.lr: a run's start record is written once"
    ]
    again = ingest(pipeline, runs_pb2.EventBatch(starts=[start(resume=True, hp={"lr": 0.01})]))
    assert (again.ack.accepted, again.ack.duplicates) == (0, 1)  # the SDK re-sending it: nothing more happens


def test_a_running_run_resumed_by_a_new_process_keeps_going(pipeline):
    ingest(pipeline, runs_pb2.EventBatch(starts=[start()]))
    for b in events(0, 49):
        ingest(pipeline, b)
    # The job was killed without a RunEnd and restarted: its new start time no longer conflicts.
    resumed = ingest(pipeline, runs_pb2.EventBatch(starts=[start(resume=True, start_time=1.8e9, hp={"lr": 0.1, "seed": 1})]))
    assert (resumed.ack.accepted, resumed.ack.rejected) == (1, 0)
    assert ingest(pipeline, next(events(50, 59))).ack.accepted == 10


def test_resumed_steps_stay_duplicates_after_the_run_moves_to_another_instance(pipeline, tmp_path):
    ingest(pipeline, runs_pb2.EventBatch(starts=[start()], ends=[]))
    for b in events(0, 29):
        ingest(pipeline, b)
    ingest(pipeline, runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="r")]))
    ingest(pipeline, runs_pb2.EventBatch(starts=[start(resume=True)]))
    blob = pipeline.snapshot_run("r")
    other = DetectionPipeline(ServiceSettings(data_dir=tmp_path / "c"), RunStore(tmp_path / "c.db"))
    try:
        other.restore_run(blob)
        assert other.runs["r"].resumed_through == 29
        replayed = ingest(other, next(events(20, 29)))
        assert (replayed.ack.duplicates, replayed.ack.rejected) == (10, 0)
    finally:
        other.store.close()


def test_a_resumed_runs_last_stored_step_is_a_duplicate_whatever_it_logs(pipeline):
    ingest(pipeline, runs_pb2.EventBatch(starts=[start()]))
    for b in events(0, 29):
        ingest(pipeline, b)
    ingest(pipeline, runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="r")]))
    ingest(pipeline, runs_pb2.EventBatch(starts=[start(resume=True)]))
    again = runs_pb2.EventBatch()
    again.events.add(run_id="r", step=29, wall_time=1.8e9).metrics["val/loss"] = 0.5  # a name step 29 lacked
    assert (ingest(pipeline, again).ack.duplicates, pipeline.store.get_run("r").event_count) == (1, 30)
