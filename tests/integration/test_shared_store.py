"""Two instances sharing one PostgreSQL store: every run and every anomaly is visible on both.

Over gRPC (two in-process servers, each ingesting its own runs) and over Kafka
(two ``runwatch serve`` processes splitting one ingest topic's partitions). A
WatchAnomalies stream on either instance gets each anomaly revision exactly
once: from its own hub for what it raised, through PostgreSQL LISTEN/NOTIFY for
what the other one committed.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from kafka_broker import reference_anomalies, serve_process, training_run

from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc


class Watcher:
    """Everything a WatchAnomalies stream delivers, read on a thread."""

    def __init__(self, stub: service_pb2_grpc.WatchServiceStub, request=None) -> None:
        self.items: list[anomaly_pb2.Anomaly] = []
        self.call = stub.WatchAnomalies(request or service_pb2.WatchRequest(), timeout=300)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for a in self.call:
                self.items.append(a)
        except grpc.RpcError:
            pass

    def keys(self) -> Counter:
        return Counter((a.id, a.revision) for a in list(self.items))

    def wait_for(self, wanted: set, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.keys()):
            assert time.monotonic() < deadline, f"missing {sorted(wanted - set(self.keys()))}"
            time.sleep(0.05)

    def close(self) -> None:
        self.call.cancel()


def nan_run(run_id: str, project: str, nan_at: int, steps: int = 10) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project, start_time=1.7e9)
    for i in range(steps):
        b.events.add(run_id=run_id, step=i, wall_time=1.7e9 + i).metrics["loss"] = float("nan") if i >= nan_at else 1.0
    return b


def wait_for_watchers(srv, n: int) -> None:
    deadline = time.monotonic() + 10
    while srv.server.hub.watchers < n:
        assert time.monotonic() < deadline, "the watch stream did not subscribe"
        time.sleep(0.01)


def test_two_instances_over_grpc_share_runs_dashboard_and_anomalies(start_server, pg_url, tmp_path):
    a, on_a = start_server(store=pg_url, data_dir=tmp_path / "a")
    b, on_b = start_server(store=pg_url, data_dir=tmp_path / "b", http_port=0)
    watch_a, watch_b = Watcher(on_a.watch), Watcher(on_b.watch)
    wait_for_watchers(a, 1)
    wait_for_watchers(b, 1)
    try:
        assert on_a.ingest.Ingest(nan_run("via-a", "shared", nan_at=3), timeout=10).accepted == 11
        assert on_b.ingest.Ingest(nan_run("via-b", "shared", nan_at=6), timeout=10).accepted == 11

        # Runs ingested through one instance are answered by the other, dashboard included.
        listed_on_b = on_b.runs.ListRuns(service_pb2.ListRunsRequest(project="shared")).runs
        assert sorted(r.run_id for r in listed_on_b) == ["via-a", "via-b"]
        summary = on_b.runs.GetRun(service_pb2.GetRunRequest(run_id="via-a"))
        assert summary.run.event_count == 10 and [x.step for x in summary.anomalies] == [3]
        assert [r.run_id for r in on_a.runs.ListRuns(service_pb2.ListRunsRequest()).runs] == ["via-b", "via-a"]
        with urllib.request.urlopen(f"http://127.0.0.1:{b.server.http_port}/api/run?run=via-a", timeout=10) as r:
            assert json.loads(r.read())["run"]["run_id"] == "via-a"

        # Each watcher gets both anomalies once: its own instance's from the hub, the other's from PostgreSQL.
        raised = {(x.id, x.revision) for x in on_a.runs.ListAnomalies(service_pb2.ListAnomaliesRequest()).anomalies}
        assert len(raised) == 2
        watch_a.wait_for(raised, timeout=15)
        watch_b.wait_for(raised, timeout=15)
        time.sleep(0.5)  # time for a duplicate to arrive, were there one
        assert watch_a.keys() == watch_b.keys() == Counter(raised)
    finally:
        watch_a.close()
        watch_b.close()



def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_queries_answer_store_unavailable_while_the_database_is_down(start_server, pg_url, tmp_path):
    """The database ends the instance's sessions and takes no new ones (as while it is down): queries answer gRPC
    UNAVAILABLE and the dashboard 503, each "store unavailable: ..." with the password hidden. Before, gRPC said
    UNKNOWN "Unexpected <class 'psycopg.OperationalError'>" (or StoreError) and the dashboard a bare 500."""
    import psycopg

    url = pg_url.replace("runwatch@", "runwatch:s3cret@")
    srv, stubs = start_server(store=url, data_dir=tmp_path / "a", http_port=0)
    srv.server.store.write_retry_s = 0.5  # a write caught by the outage gives up soon: queries wait for the writer
    assert stubs.ingest.Ingest(nan_run("r1", "p", nan_at=99), timeout=10).accepted == 11
    api = f"http://127.0.0.1:{srv.server.http_port}/api/runs?project=p"
    assert _get_json(api)[0] == 200
    dbname = pg_url.rsplit("/", 1)[1]
    admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            # A write meanwhile fails past its retries and leaves the writer without a connection: ListRuns, which
            # waits for the writer, then fails with the driver's own error ("the connection is closed").
            with pytest.raises(psycopg.OperationalError):
                srv.server.store.submit([lambda conn: conn.execute("SELECT 1")]).result(60)
            for call in (lambda: stubs.runs.ListRuns(service_pb2.ListRunsRequest(), timeout=60),
                         lambda: stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1"), timeout=60),
                         lambda: stubs.runs.ListAnomalies(service_pb2.ListAnomaliesRequest(run_id="r1"), timeout=60)):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert info.value.details().startswith("store unavailable: "), info.value.details()
                assert "s3cret" not in info.value.details()
            status, body = _get_json(api)
            assert status == 503 and body["error"].startswith("store unavailable: ") and "s3cret" not in body["error"]
        finally:
            admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
    # The database is back: the next queries reconnect and answer.
    assert [r.run_id for r in stubs.runs.ListRuns(service_pb2.ListRunsRequest(), timeout=60).runs] == ["r1"]
    assert stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1"), timeout=60).run.event_count == 10
    assert _get_json(api)[0] == 200


def _port(log: Path, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while (m := re.search(r"runwatch serving on [0-9.]+:(\d+)", log.read_text(errors="replace"))) is None:
        assert time.monotonic() < deadline, f"no server started: {log.read_text(errors='replace')[-2000:]}"
        time.sleep(0.1)
    return int(m.group(1))


def _assigned(log: Path) -> bool:
    return "runwatch.kafka: assigned partitions" in log.read_text(errors="replace")


@pytest.mark.slow
def test_two_kafka_instances_share_one_view_of_runs_and_anomalies(kafka, pg_url, tmp_path):
    from kafka import KafkaProducer

    from runwatch.service.kafka import codecs

    runs = {f"pg-{i}": training_run(f"pg-{i}", 300, 50, seed=i, nan_at=150 + 20 * i) for i in range(6)}
    expected = reference_anomalies(runs, tmp_path / "reference")
    warm = {"warm-up": training_run("warm-up", 100, 50, seed=9, nan_at=50)}
    expected_warm = reference_anomalies(warm, tmp_path / "reference-warm")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs: list[subprocess.Popen] = []
    watchers: list[Watcher] = []
    channels: list[grpc.Channel] = []
    try:
        procs.append(serve_process(kafka, tmp_path / "a", logs[0], RUNWATCH_STORE=pg_url))
        deadline = time.monotonic() + 90
        while not _assigned(logs[0]):
            assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        procs.append(serve_process(kafka, tmp_path / "b", logs[1], RUNWATCH_STORE=pg_url))
        while not (_assigned(logs[1]) and logs[0].read_text(errors="replace").count("assigned partitions") >= 2):
            assert time.monotonic() < deadline and procs[1].poll() is None, logs[1].read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        channels = [grpc.insecure_channel(f"127.0.0.1:{_port(log)}") for log in logs]
        watchers = [Watcher(service_pb2_grpc.WatchServiceStub(c)) for c in channels]

        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=2)

        def produce(batches: dict[str, list]) -> None:
            for i in range(max(len(b) for b in batches.values())):
                for run_id, bs in batches.items():
                    if i < len(bs):
                        value, headers = codecs.encode_batch(bs[i])
                        producer.send(kafka.ingest_topic, key=run_id.encode(), value=value, headers=headers)
            producer.flush()

        # A warm-up run first: once both watchers have its anomaly, both streams are subscribed.
        produce(warm)
        for w in watchers:
            w.wait_for(expected_warm, timeout=60)
        produce(runs)
        producer.close()
        for w in watchers:
            w.wait_for(expected, timeout=90)
        time.sleep(1.0)  # time for a duplicate to arrive, were there one
        for w in watchers:
            assert w.keys() == Counter(expected | expected_warm), "each revision exactly once on every instance"

        # One view: both instances list every run, whichever instance's partitions it came through.
        for c in channels:
            stub = service_pb2_grpc.RunServiceStub(c)
            listed = {r.run_id: r for r in stub.ListRuns(service_pb2.ListRunsRequest(project="kafka")).runs}
            assert set(listed) == set(runs) | set(warm)
            assert all(listed[r].event_count == 300 for r in runs)
        owners = [len(re.findall(r"assigned partitions", log.read_text(errors="replace"))) for log in logs]
        assert all(owners), f"the partitions were not split between the instances: {owners}"
    finally:
        for w in watchers:
            w.close()
        for c in channels:
            c.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
