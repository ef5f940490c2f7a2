"""The service over real gRPC on loopback: health, reflection, watch, queries, persistence, advisor."""

from __future__ import annotations

import math
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from runwatch.service.server import SERVICE_NAMES
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2


def nan_run(run_id: str, project: str, nan_at: int, steps: int = 10) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project)
    for i in range(steps):
        b.events.add(run_id=run_id, step=i).metrics["loss"] = math.nan if i >= nan_at else 1.0
    return b


class Collector:
    """Reads a WatchAnomalies stream on a thread until ``n`` anomalies arrived."""

    def __init__(self, stubs, request: service_pb2.WatchRequest, n: int) -> None:
        self.items: list[anomaly_pb2.Anomaly] = []
        self.done = threading.Event()
        self.call = stubs.watch.WatchAnomalies(request, timeout=30)
        self.thread = threading.Thread(target=self._read, args=(n,), daemon=True)
        self.thread.start()

    def _read(self, n: int) -> None:
        try:
            for a in self.call:
                self.items.append(a)
                if len(self.items) >= n:
                    break
        except grpc.RpcError:
            pass
        self.done.set()

    def wait(self, timeout: float = 10) -> list[anomaly_pb2.Anomaly]:
        self.done.wait(timeout)
        self.call.cancel()
        return self.items


def wait_for_watchers(srv, n: int) -> None:
    import time

    deadline = time.time() + 5
    while srv.server.hub.watchers < n and time.time() < deadline:
        time.sleep(0.01)
    assert srv.server.hub.watchers >= n


def test_health_and_reflection(server):
    _, stubs = server
    health = health_pb2_grpc.HealthStub(stubs.channel)
    for name in ("", *SERVICE_NAMES):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    listed = {s.name for s in reply.list_services_response.service}
    assert set(SERVICE_NAMES) <= listed and "grpc.health.v1.Health" in listed


def test_watch_filters_by_project_run_and_severity(server):
    srv, stubs = server
    everything = Collector(stubs, service_pb2.WatchRequest(), 2)
    only_p2 = Collector(stubs, service_pb2.WatchRequest(project="p2"), 1)
    only_run1 = Collector(stubs, service_pb2.WatchRequest(run_id="w-run-1"), 1)
    too_high = Collector(stubs, service_pb2.WatchRequest(min_severity=anomaly_pb2.SEVERITY_CRITICAL), 2)
    wait_for_watchers(srv, 4)
    stubs.ingest.Ingest(nan_run("w-run-1", "p1", nan_at=5), timeout=10)
    stubs.ingest.Ingest(nan_run("w-run-2", "p2", nan_at=3), timeout=10)
    got = everything.wait()
    assert sorted((a.run_id, a.step, a.kind) for a in got) == [
        ("w-run-1", 5, anomaly_pb2.ANOMALY_KIND_NONFINITE),
        ("w-run-2", 3, anomaly_pb2.ANOMALY_KIND_NONFINITE),
    ]
    assert [a.run_id for a in only_p2.wait()] == ["w-run-2"]
    assert [a.run_id for a in only_run1.wait()] == ["w-run-1"]
    assert len(too_high.wait()) == 2  # NONFINITE is CRITICAL
    a = got[0]
    assert a.id and a.detector == "nonfinite" and a.state == anomaly_pb2.ANOMALY_STATE_OPEN
    assert "NaN" in a.explanation and a.evidence[-1].step == a.step and math.isnan(a.evidence[-1].value)


def test_one_incident_yields_one_anomaly(server):
    srv, stubs = server
    watcher = Collector(stubs, service_pb2.WatchRequest(run_id="inc-1"), 10)
    wait_for_watchers(srv, 1)
    stubs.ingest.Ingest(nan_run("inc-1", "p", nan_at=2, steps=50), timeout=10)  # 48 NaN steps
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="inc-1"))
    assert len(summary.anomalies) == 1
    assert watcher.wait(timeout=1.0)[0].id == summary.anomalies[0].id
    assert len(watcher.items) == 1


def test_history_replay_then_live(server):
    srv, stubs = server
    stubs.ingest.Ingest(nan_run("h-1", "hist", nan_at=1), timeout=10)
    watcher = Collector(stubs, service_pb2.WatchRequest(project="hist", include_history=True), 2)
    wait_for_watchers(srv, 1)
    stubs.ingest.Ingest(nan_run("h-2", "hist", nan_at=4), timeout=10)
    assert [a.run_id for a in watcher.wait()] == ["h-1", "h-2"]


def test_restart_keeps_runs_events_and_anomalies(start_server, tmp_path):
    data = tmp_path / "persist"
    srv, stubs = start_server(data_dir=data)
    stubs.ingest.Ingest(nan_run("p-1", "persist", nan_at=6), timeout=10)
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="p-2", project="persist")
    b.events.add(run_id="p-2", step=3).metrics["loss"] = 0.7
    stubs.ingest.Ingest(b, timeout=10)
    before = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="p-1"))
    stubs.channel.close()
    srv.stop()

    _, stubs2 = start_server(data_dir=data)
    after = stubs2.runs.GetRun(service_pb2.GetRunRequest(run_id="p-1"))
    assert after.run.event_count == 10 and after.run.last_step == 9
    assert [a.id for a in after.anomalies] == [a.id for a in before.anomalies] and len(after.anomalies) == 1
    listed = stubs2.runs.ListRuns(service_pb2.ListRunsRequest(project="persist")).runs
    assert sorted(r.run_id for r in listed) == ["p-1", "p-2"]
    # The run goes on after the restart; steps before the stored last step are still refused.
    ack = stubs2.ingest.Ingest(
        runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="p-2", step=4, metrics={"loss": 0.6})]), timeout=10
    )
    assert ack.accepted == 1
    with pytest.raises(grpc.RpcError) as err:
        stubs2.ingest.Ingest(
            runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="p-2", step=1, metrics={"loss": 0.6})]),
            timeout=10,
        )
    assert "steps must not decrease" in err.value.details()
    assert stubs2.runs.GetRun(service_pb2.GetRunRequest(run_id="p-2")).run.event_count == 2


def test_stalled_run_is_flagged_by_the_periodic_check(start_server):
    from runwatch.models.registry import SuiteConfig

    srv, stubs = start_server(
        stall_check_seconds=0.1,
        diagnostics=SuiteConfig(enabled=["stalled"], settings={"stalled": {"timeout_s": 0.5, "gap_factor": 0.0}}),
    )
    watcher = Collector(stubs, service_pb2.WatchRequest(run_id="stall-1"), 1)
    wait_for_watchers(srv, 1)
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="stall-1", project="p")
    for i in range(5):
        b.events.add(run_id="stall-1", step=i).metrics["loss"] = 1.0
    stubs.ingest.Ingest(b, timeout=10)
    (a,) = watcher.wait(timeout=10)
    assert a.kind == anomaly_pb2.ANOMALY_KIND_STALLED and a.run_id == "stall-1" and a.step == 4


def _stuck_run(run_id: str, values: int = 10, every: int = 50) -> runs_pb2.EventBatch:
    """A binary classifier at chance (ln 2, +-3 % noise) logged every ``every`` steps: too short to judge live."""
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project="short")
    for i in range(values):
        b.events.add(run_id=run_id, step=every * i).metrics["loss"] = math.log(2.0) * (1.0 + 0.03 * math.sin(1.7 * i))
    return b


def test_a_short_run_that_never_learned_is_reported_when_it_finishes_not_when_it_is_killed(server):
    srv, stubs = server
    watcher = Collector(stubs, service_pb2.WatchRequest(project="short"), 1)
    wait_for_watchers(srv, 1)
    for run_id in ("short-done", "short-killed"):
        ack = stubs.ingest.Ingest(_stuck_run(run_id), timeout=10)
        assert ack.accepted == 11 and not stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id)).anomalies
    end = runs_pb2.EventBatch()
    end.ends.add(run_id="short-killed", status=runs_pb2.RUN_STATUS_KILLED)
    end.ends.add(run_id="short-done", status=runs_pb2.RUN_STATUS_FINISHED)
    assert stubs.ingest.Ingest(end, timeout=10).accepted == 2
    (found,) = watcher.wait()
    assert found.run_id == "short-done" and found.kind == anomaly_pb2.ANOMALY_KIND_PLATEAU
    assert found.step == 450 and "ended the run where it started" in found.explanation
    assert not stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="short-killed")).anomalies
