"""Limits over real gRPC on loopback: RESOURCE_EXHAUSTED for streams, watchers and a project's runs;
idle runs evicted and restored with identical anomalies; SIGTERM drains, commits and exits in time.
"""

from __future__ import annotations

import math
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runwatch.client as rw
from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_eviction import comparable, training_run


def own_channel(target: str) -> grpc.Channel:
    """A channel with a connection of its own (channels in one process otherwise share one: one peer)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


class OpenStream:
    """A StreamEvents call fed from a queue; acks (or the final error) are collected on a thread."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.acks: list[service_pb2.IngestAck] = []
        self.error: grpc.RpcError | None = None
        self.got = threading.Event()
        self.ended = threading.Event()
        stub = service_pb2_grpc.IngestServiceStub(channel)
        self.call = stub.StreamEvents(iter(self.requests.get, None), timeout=60)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for ack in self.call:
                self.acks.append(ack)
                self.got.set()
        except grpc.RpcError as exc:
            self.error = exc
        self.got.set()
        self.ended.set()

    def send(self, batch: runs_pb2.EventBatch) -> None:
        self.requests.put(batch)

    def opened(self, sequence: int) -> OpenStream:
        """Send an empty batch and wait for its ack (so the server counts this stream) or the refusal."""
        self.send(runs_pb2.EventBatch(sequence=sequence))
        assert self.got.wait(10)
        return self

    def close(self) -> None:
        self.requests.put(None)
        self.ended.wait(10)


def test_streams_beyond_the_limits_are_refused_with_resource_exhausted(start_server):
    srv, stubs = start_server(max_streams_per_peer=2, max_streams=3)
    a1, a2 = OpenStream(stubs.channel).opened(1), OpenStream(stubs.channel).opened(2)
    assert a1.error is None and a2.error is None
    a3 = OpenStream(stubs.channel).opened(3)
    assert a3.error is not None and a3.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert a3.error.details().startswith("max_streams_per_peer: this connection (ipv4:127.0.0.1:")
    other = own_channel(srv.target)
    b1 = OpenStream(other).opened(4)  # another connection: 3 streams in all
    assert b1.error is None
    b2 = OpenStream(other).opened(5)
    assert b2.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert b2.error.details() == ("max_streams: 3 StreamEvents streams are open on this server, the limit; retry later")
    a1.close()
    deadline = time.time() + 5
    while srv.server.limits.streams > 2 and time.time() < deadline:
        time.sleep(0.01)
    b3 = OpenStream(other).opened(6)  # a stream ended: room again
    assert b3.error is None and b3.acks[0].sequence == 6
    assert srv.server.limits.refused == {"max_streams_per_peer": 1, "max_streams": 1}
    for s in (a2, b1, b3):
        s.close()
    other.close()


def test_watchers_beyond_the_limit_are_refused_with_resource_exhausted(start_server):
    srv, stubs = start_server(max_watchers=2)
    calls = [stubs.watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=30) for _ in range(2)]
    deadline = time.time() + 5
    while srv.server.hub.watchers < 2 and time.time() < deadline:
        time.sleep(0.01)
    refused = stubs.watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        next(refused)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details().startswith("max_watchers: 2 WatchAnomalies streams are open on this server")
    calls[0].cancel()
    deadline = time.time() + 5
    while srv.server.limits.watchers > 1 and time.time() < deadline:
        time.sleep(0.01)
    again = stubs.watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=30)
    while srv.server.hub.watchers < 2 and time.time() < deadline:  # subscribed before the anomaly is raised
        time.sleep(0.01)
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="watched", project="w")
    for i in range(6):
        b.events.add(run_id="watched", step=i).metrics["loss"] = math.nan if i >= 3 else 1.0
    stubs.ingest.Ingest(b, timeout=10)
    assert next(again).run_id == "watched"
    for c in (calls[1], again):
        c.cancel()


def test_watchers_beyond_the_per_connection_limit_are_refused_and_other_connections_are_not(start_server):
    srv, stubs = start_server(max_watchers_per_peer=1, max_watchers=10)
    first = stubs.watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=30)
    deadline = time.time() + 5
    while srv.server.hub.watchers < 1 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as info:
        next(stubs.watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=30))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details().startswith("max_watchers_per_peer: this connection (ipv4:127.0.0.1:")
    other = own_channel(srv.target)
    second = service_pb2_grpc.WatchServiceStub(other).WatchAnomalies(service_pb2.WatchRequest(), timeout=30)
    while srv.server.hub.watchers < 2 and time.time() < deadline:  # another connection has room
        time.sleep(0.01)
    assert srv.server.hub.watchers == 2
    assert srv.server.limits.refused == {"max_watchers_per_peer": 1}
    for c in (first, second):
        c.cancel()
    other.close()


def test_calls_beyond_the_concurrent_limit_are_refused_and_nothing_refused_is_stored(start_server):
    srv, stubs = start_server(max_unary_calls=1, max_streams=1, max_watchers=1)  # 3 calls in progress at most
    health = health_pb2_grpc.HealthStub(stubs.channel)
    held = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(3)]  # open, limited by nothing else
    for call in held:
        assert next(call).status == health_pb2.HealthCheckResponse.SERVING

    def batch(run_id: str) -> runs_pb2.EventBatch:
        b = runs_pb2.EventBatch(sequence=1)
        b.starts.add(run_id=run_id, project="u")
        b.events.add(run_id=run_id, step=0).metrics["loss"] = 1.0
        return b

    with pytest.raises(grpc.RpcError) as info:
        stubs.ingest.Ingest(batch("refused"), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    held[0].cancel()
    deadline = time.time() + 10
    while True:  # the cancelled call's slot frees once the server has seen the cancellation
        try:
            assert stubs.ingest.Ingest(batch("stored"), timeout=10).accepted == 2
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.time() < deadline
            time.sleep(0.05)
    for call in held[1:]:
        call.cancel()
    srv.server.store.flush()
    listed = {r.run_id for r in stubs.runs.ListRuns(service_pb2.ListRunsRequest(project="u")).runs}
    assert listed == {"stored"}  # the refused batch was never read, so never stored


def test_the_sdk_keeps_and_resends_what_the_project_limit_refused(start_server, tmp_path):
    srv, stubs = start_server(max_active_runs_per_project=1)
    first = rw.init(project="capped", run_id="cap-first", target=srv.target, flush_on_exit=False, system_metrics=False)
    first.log({"loss": 1.0}, step=0)
    assert first.flush(timeout=10)
    waiting = rw.init(
        project="capped", run_id="cap-waiting", target=srv.target, spool_dir=tmp_path / "spool",
        flush_on_exit=False, system_metrics=False,
    )  # fmt: skip
    for step in range(50):
        waiting.log({"loss": 1.0 / (step + 1)}, step=step)
    time.sleep(4.0)  # refused again and again, with back-off
    stats = waiting.stats()
    assert stats.acked == 0 and stats.dropped == 0 and stats.rejected == 0  # kept, not dropped after 3 failures
    assert stats.reconnects >= 4, stats
    assert "RESOURCE_EXHAUSTED" in stats.last_error and "max_active_runs_per_project=1" in stats.last_error
    with pytest.raises(grpc.RpcError) as info:  # the unary call says the same
        b = runs_pb2.EventBatch()
        b.starts.add(run_id="cap-unary", project="capped")
        stubs.ingest.Ingest(b, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details().startswith("starts[0].project: project 'capped' has 1 active runs, the limit")
    assert first.finish(timeout=10)  # room for the waiting run
    assert waiting.finish(timeout=30)
    stats = waiting.stats()
    assert stats.dropped == 0 and stats.rejected == 0
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="cap-waiting"), timeout=10).run
    assert info.event_count == 50 and info.status == runs_pb2.RUN_STATUS_FINISHED
    assert srv.server.pipeline.refused_batches >= 4


def test_idle_runs_are_evicted_and_restored_with_identical_anomalies(start_server, tmp_path):
    batches = training_run("idle-evicted", 700, 50, seed=1)
    settings = ServiceSettings(port=0, data_dir=tmp_path / "reference")
    reference = DetectionPipeline(settings, RunStore(settings.db_path))
    expected = {}
    for b in batches:
        for a in reference.ingest(runs_pb2.EventBatch.FromString(b.SerializeToString())).anomalies:
            expected[a.id] = comparable(a)  # the latest revision of each incident
    reference.store.close()
    assert len(expected) >= 2 and any(anomaly_pb2.Anomaly.FromString(a).revision > 1 for a in expected.values())

    srv, stubs = start_server(idle_evict_s=0.2, stall_check_seconds=0.05)
    for b in batches:
        stubs.ingest.Ingest(b, timeout=10)
        time.sleep(0.35)  # idle long enough to be evicted before the next batch
    assert srv.server.pipeline.evictions >= len(batches) - 2
    assert srv.server.pipeline.restores >= len(batches) - 3
    found = stubs.runs.ListAnomalies(service_pb2.ListAnomaliesRequest(run_id="idle-evicted"), timeout=10).anomalies
    assert {a.id: comparable(a) for a in found} == expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, data_dir: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.time() < deadline:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return proc
            except grpc.RpcError:
                time.sleep(0.1)
    proc.kill()
    raise AssertionError("runwatch serve did not start")


@pytest.mark.slow
def test_sigterm_mid_stream_acks_only_what_it_stored_and_exits_within_the_grace_period(tmp_path):
    port, data, grace = free_port(), tmp_path / "data", 10.0
    proc = serve(port, data, "--shutdown-grace-s", str(grace))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        watcher = service_pb2_grpc.WatchServiceStub(channel).WatchAnomalies(service_pb2.WatchRequest(), timeout=60)
        stream = OpenStream(channel)
        sent: dict[int, range] = {}
        step = 0
        for seq in range(1, 100_000):
            b = runs_pb2.EventBatch(sequence=seq)
            if seq == 1:
                b.starts.add(run_id="drained", project="drain")
            for _ in range(20):
                b.events.add(run_id="drained", step=step).metrics.update({"loss": 1.0 / (step + 1), "lr": 0.01})
                step += 1
            sent[seq] = range(step - 20, step)
            stream.send(b)
            if seq == 200:
                while len(stream.acks) < 50:
                    time.sleep(0.01)
                t_term = time.monotonic()
                proc.send_signal(signal.SIGTERM)  # mid-stream: batches in flight
            if stream.ended.is_set():
                break
            time.sleep(0.002)
        code = proc.wait(grace + 5)
        took = time.monotonic() - t_term
        stderr = proc.stderr.read().decode(errors="replace")
        assert code == 0, stderr[-2000:]
        assert took < grace, f"exited {took:.1f} s after SIGTERM"
        assert stream.error is not None and stream.error.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in stream.error.details()
        with pytest.raises(grpc.RpcError) as info:
            next(watcher)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    acked = [a.sequence for a in stream.acks]
    assert len(acked) >= 50 and acked == sorted(acked)
    store = RunStore(data / "runwatch.db")
    steps = [ev.step for ev in store.events("drained")]
    assert len(steps) == len(set(steps))  # nothing twice
    stored = set(steps)
    lost = [seq for seq in acked if not set(sent[seq]) <= stored]
    assert not lost, f"acknowledged but not stored: batches {lost[:10]}"
    print(f"\nSIGTERM: {len(acked)} batches acknowledged, {len(stored)} events stored, exit {code} after {took:.2f} s")
    # The running run was checkpointed: a restart continues its detection exactly.
    assert store.run_checkpoint("drained") is not None
    store.close()
    with sqlite3.connect(data / "runwatch.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
