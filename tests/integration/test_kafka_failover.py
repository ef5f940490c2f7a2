"""Scale-out and outages with a real broker: SIGKILL of one of two `runwatch serve` processes, broker SIGSTOP."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer
from kafka_broker import TopicReader, reference_anomalies, serve_process, training_run

from runwatch.service.kafka import codecs
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2_grpc

pytestmark = pytest.mark.slow


def serve(kafka, data_dir: Path, log: Path) -> subprocess.Popen:
    """`runwatch serve` with Kafka flags, the group and anomaly format from the environment."""
    return serve_process(kafka, data_dir, log)


def assignments(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if "runwatch.kafka: assigned partitions" in line]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_checkpoint(kafka, log: Path, timeout: float = 30.0) -> None:
    """Until the state topic holds a run checkpoint of a partition the instance logging to ``log`` owns.

    Without it the kill below may land before the instance's first checkpoint cycle (a loaded machine), and the
    survivor then has nothing to restore: the test's last check would fail for a reason the product does not have.
    """
    owned = {int(p) for p in re.findall(r"\d+", assignments(log)[-1].split("assigned partitions", 1)[1].split("]")[0])}
    reader = TopicReader(kafka.bootstrap, kafka.state_topic)
    try:
        records = reader.read_until(
            lambda rs: any(r.partition in owned and r.value is not None and not r.key.startswith(b"\x00fence/") for r in rs),
            timeout=timeout,
        )
    finally:
        reader.close()
    assert any(r.partition in owned and r.value is not None for r in records), f"no checkpoint of partitions {owned}"


def test_two_instances_one_killed_mid_stream_loses_no_anomaly(kafka, tmp_path):
    runs = {
        f"fo-{i}": training_run(f"fo-{i}", 1200, 50, seed=i, spike_every=170 + 10 * i, nan_at=1100 if i % 3 == 0 else -1)
        for i in range(8)
    }
    expected = reference_anomalies(runs, tmp_path / "reference")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [serve(kafka, tmp_path / "a", logs[0])]
    try:
        wait_for(lambda: assignments(logs[0]), 60, "instance a to get partitions")
        procs.append(serve(kafka, tmp_path / "b", logs[1]))
        wait_for(lambda: assignments(logs[1]) and len(assignments(logs[0])) >= 2, 60, "the group to spread over a and b")
        assert procs[0].poll() is None and procs[1].poll() is None

        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=2)
        rounds = max(len(b) for b in runs.values())
        for i in range(rounds):
            for run_id, batches in runs.items():
                if i < len(batches):
                    value, headers = codecs.encode_batch(batches[i])
                    producer.send(kafka.ingest_topic, key=run_id.encode(), value=value, headers=headers)
            producer.flush()
            if i == rounds // 2 - 5:
                wait_for_checkpoint(kafka, logs[0])  # so that the survivor has a run of a's to restore
            if rounds // 2 - 4 <= i < rounds // 2:
                continue  # a burst, so that the kill lands while a has records in hand
            if i == rounds // 2:
                time.sleep(0.03)
                procs[0].send_signal(signal.SIGKILL)  # mid-stream, no goodbye to the group
                procs[0].wait(10)
            time.sleep(0.02)
        producer.close()

        reader = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
        records = reader.read_until(
            lambda r: {(a.id, a.revision) for a in (codecs.decode_anomaly(x.value, x.headers) for x in r)} >= expected,
            timeout=60,
        )
        reader.close()
        got = Counter((a.id, a.revision) for a in (codecs.decode_anomaly(r.value, r.headers) for r in records))
        missing = expected - set(got)
        duplicates = sum(n - 1 for n in got.values())
        extra = set(got) - expected
        print(
            f"\nfailover: {len(expected)} anomalies expected, {len(records)} records published, "
            f"{len(missing)} missing, {duplicates} duplicates, {len(extra)} not raised by a single instance"
        )
        assert not missing, f"lost anomalies: {sorted(missing)}"
        assert len(expected) >= 10
        assert not extra, f"anomalies a single instance would not raise: {sorted(extra)}"
        assert procs[1].poll() is None
        restored = [int(m) for m in re.findall(r"restored (\d+) run\(s\)", logs[1].read_text())]
        assert sum(restored) >= 1, "the survivor restored no run of the killed instance"
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def test_broker_paused_and_resumed_processing_resumes(own_broker, tmp_path):
    from kafka_broker import kafka_settings

    # In its own process: a frozen broker makes kafka-python's buffers grow, which should not weigh
    # on the memory figures of later tests in this process.
    k = kafka_settings(own_broker.bootstrap)
    log = tmp_path / "serve.log"
    proc = serve(k, tmp_path / "data", log)
    try:
        wait_for(lambda: assignments(log), 60, "partitions assigned")

        def send(run_id: str, nan_at: int) -> None:
            b = runs_pb2.EventBatch()
            b.starts.add(run_id=run_id, project="p")
            for i in range(8):
                b.events.add(run_id=run_id, step=i, wall_time=1.7e9 + i).metrics["loss"] = math.nan if i >= nan_at else 1.0
            p = KafkaProducer(bootstrap_servers=k.bootstrap, linger_ms=2)
            value, headers = codecs.encode_batch(b)
            p.send(k.ingest_topic, key=run_id.encode(), value=value, headers=headers)
            p.flush()
            p.close()

        def anomalies(n: int) -> list[anomaly_pb2.Anomaly]:
            reader = TopicReader(k.bootstrap, k.anomaly_topic)
            got = reader.read_until(lambda r: len(r) >= n, timeout=60)
            reader.close()
            return [codecs.decode_anomaly(r.value, r.headers) for r in got]

        send("before-pause", 4)
        assert [a.run_id for a in anomalies(1)] == ["before-pause"]
        own_broker.pause()
        # While the front's producer is stuck on the frozen broker, the server's event loop still answers.
        port = int(re.search(r"runwatch serving on [0-9.]+:(\d+)", log.read_text()).group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stuck = runs_pb2.EventBatch()
        stuck.starts.add(run_id="during-pause", project="p")
        pending = service_pb2_grpc.IngestServiceStub(channel).Ingest.future(stuck, timeout=30)
        time.sleep(1.0)
        t0 = time.monotonic()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() - t0 < 2.0
        time.sleep(7)  # longer than the session timeout
        own_broker.resume()
        try:
            pending.result()  # delivered once the broker is back, or a named failure to re-send
        except grpc.RpcError as exc:
            assert "re-send" in exc.details() or exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
        channel.close()
        send("after-pause", 6)
        got = anomalies(2)
        assert sorted((a.run_id, a.step) for a in got) == [("after-pause", 6), ("before-pause", 4)]
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0  # SIGTERM: the cycle in hand is committed, the group left
