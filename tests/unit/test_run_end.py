"""A run that ends failed or killed raises RUN_FAILED at once (service/pipeline.py, models/run_end.py)."""

from __future__ import annotations

import math

import pytest

from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2

STATUS = {"finished": runs_pb2.RUN_STATUS_FINISHED, "failed": runs_pb2.RUN_STATUS_FAILED,
          "killed": runs_pb2.RUN_STATUS_KILLED}


@pytest.fixture
def pipeline(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path)
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    yield p
    p.store.close()


def _run(p, run_id, status, reason, losses):
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id=run_id, project="p")
    for step, loss in enumerate(losses):
        b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step).metrics["loss"] = loss
    p.ingest(b)
    end = runs_pb2.EventBatch(sequence=2)
    end.ends.add(run_id=run_id, status=STATUS[status], reason=reason)
    return [a for a in p.ingest(end).anomalies if a.kind == anomaly_pb2.ANOMALY_KIND_RUN_FAILED]


HEALTHY = [2.3 * math.exp(-s / 40) + 0.1 for s in range(120)]


@pytest.mark.parametrize("status, reason", [
    ("failed", "exit code 1"),  # a crash the loop did not print
    ("killed", "SIGKILL"),      # the host's OOM killer: nothing printed at all
])
def test_a_run_that_dies_says_so_at_once(pipeline, status, reason):
    (ended,) = _run(pipeline, f"r-{status}-{reason}".replace(" ", "-"), status, reason, HEALTHY)
    assert ended.severity == anomaly_pb2.SEVERITY_ERROR and ended.detector == "run_end" and ended.first_step == 119
    assert reason in ended.explanation and status in ended.explanation


@pytest.mark.parametrize("status, reason", [
    ("finished", "completed"),
    ("killed", "SIGTERM"),  # preempted or cancelled: stopped on purpose
    ("killed", "SIGINT"),   # a user's Ctrl-C
    ("killed", ""),
])
def test_a_run_stopped_on_purpose_or_finished_raises_nothing_at_its_end(pipeline, status, reason):
    assert _run(pipeline, f"r-{status}-{reason or 'none'}", status, reason, HEALTHY) == []


def test_a_failure_whose_cause_already_alerted_is_not_a_second_incident(pipeline):
    """One failing run, one incident: the loss turned NaN (CRITICAL), then the trainer exited 1."""
    losses = HEALTHY[:60] + [float("nan")]
    assert _run(pipeline, "r-nan", "failed", "loss became non-finite at step 60", losses) == []


def test_a_text_only_run_fails_at_the_step_its_lines_reached(pipeline):
    """`runwatch pipe`: no events, only lines whose steps and metrics the server reads."""
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="r-text", project="p")
    for step in range(1, 101):
        b.logs.add(run_id="r-text", time=1.7e9 + step, text=f"step {step} | loss: {2.0 - step * 0.001:.4f}")
    pipeline.ingest(b)
    end = runs_pb2.EventBatch(sequence=2)
    end.ends.add(run_id="r-text", status=runs_pb2.RUN_STATUS_FAILED, reason="exit code 1")
    (ended,) = [a for a in pipeline.ingest(end).anomalies if a.kind == anomaly_pb2.ANOMALY_KIND_RUN_FAILED]
    assert ended.first_step == 100 and ended.explanation == "the run ended failed (exit code 1) at step 100"
