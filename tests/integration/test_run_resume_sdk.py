"""A job restarted with the same run id continues its run, through the SDK and real gRPC (RunStart.resume)."""

from __future__ import annotations

import math

import pytest

import runwatch.client as rw
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2


def summary(stubs, run_id: str) -> service_pb2.RunSummary:
    return stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)


def test_init_with_resume_continues_the_run_where_it_stopped(server, tmp_path):
    srv, stubs = server
    first = rw.init(project="resume", run_id="job-7", config={"lr": 0.1, "batch_size": 32}, target=srv.target,
                    spool_dir=False, system_metrics=False, capture_env=False)
    for _ in range(40):
        first.log({"loss": 1.0})
    first.log({"loss": math.nan})  # alerted once, before the restart
    assert first.finish("failed", "preempted", timeout=30)

    second = rw.init(project="resume", run_id="job-7", config={"lr": 0.1, "batch_size": 32, "resumed": True},
                     target=srv.target, spool_dir=False, system_metrics=False, capture_env=False, resume=True)
    assert second.step == 41  # log() without a step goes on after the stored steps
    for _ in range(40):
        second.log({"loss": 1.0})
    second.log({"loss": math.nan})  # the same incident, still open: not a second alert
    assert second.finish(timeout=30)

    s = summary(stubs, "job-7")
    assert s.run.status == runs_pb2.RUN_STATUS_FINISHED and s.run.event_count == 82 and s.run.last_step == 81
    assert s.run.start.hyperparameters["resumed"] is True  # new keys join the record
    nonfinite = [a for a in s.anomalies if a.kind == anomaly_pb2.ANOMALY_KIND_NONFINITE]
    assert [a.first_step for a in nonfinite] == [40]


def test_resume_env_var_is_read_and_a_typo_is_named(server, monkeypatch):
    srv, _ = server
    monkeypatch.setenv("RUNWATCH_RESUME", "ture")
    with pytest.raises(ValueError, match="RUNWATCH_RESUME"):
        rw.init(project="resume", run_id="job-8", target=srv.target, spool_dir=False, system_metrics=False)
    monkeypatch.setenv("RUNWATCH_RESUME", "1")
    run = rw.init(project="resume", run_id="job-8", target=srv.target, spool_dir=False, system_metrics=False)
    assert run.start_message.resume and run.step == 0  # a run resumed before it existed is simply opened
    assert run.finish(timeout=30)


def test_a_resume_that_cannot_reach_the_server_says_how_steps_will_be_counted(tmp_path, caplog):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    run = rw.init(project="resume", run_id="job-9", target=nobody, spool_dir=tmp_path / "spool",
                  system_metrics=False, capture_env=False, resume=True)
    try:
        assert run.step == 0
        (warning,) = [r.getMessage() for r in caplog.records if "left off" in r.getMessage()]
        assert "job-9" in warning and "pass step=" in warning
    finally:
        run.finish(timeout=0)
