"""Service metrics on the dashboard's /metrics (gRPC and Kafka paths), and `runwatch serve --log-format json`."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.client import RunwatchClient
from runwatch.service.background import BackgroundServer
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import runs_pb2, service_pb2_grpc


def scrape(port: int, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted label pairs): value}`` from a /metrics page."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as page:
        text = page.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def diverging(run, steps: int = 40, nan_at: int = 30) -> None:
    for step in range(steps):
        run.log({"loss": math.nan if step >= nan_at else 1.0 / (step + 1), "lr": 0.01}, step=step)


def unknown_run_batch() -> runs_pb2.EventBatch:
    bad = runs_pb2.EventBatch()
    bad.events.add(run_id="nobody", step=0).metrics["loss"] = 1.0
    bad.events.add(run_id="nobody", step=1).metrics["loss"] = 1.0
    return bad


def test_metrics_count_a_run_ingested_over_grpc(start_server):
    srv, stubs = start_server(http_port=0)
    port = srv.server.http_port
    before = scrape(port)
    assert value(before, "runwatch_active_runs") == 0
    client = RunwatchClient(srv.target)
    try:
        run = client.start_run(run_id="metered", project="m")
        diverging(run)
        assert run.flush(10)
        with pytest.raises(grpc.RpcError):  # rejected: its run was never started
            stubs.ingest.Ingest(unknown_run_batch(), timeout=10)
        during = scrape(port)
        assert value(during, "runwatch_active_runs") == 1
        run.finish()
    finally:
        client.close()
    after = scrape(port)
    assert value(after, "runwatch_ingested_items_total", outcome="accepted") >= 41  # the start and 40 events
    assert value(after, "runwatch_ingested_items_total", outcome="rejected") == 2
    assert value(after, "runwatch_rejected_items_total", reason="events.run_id") == 2
    assert value(after, "runwatch_batches_total") >= 2
    assert value(after, "runwatch_anomalies_total", kind="NONFINITE", severity="CRITICAL") >= 1
    assert value(after, "runwatch_detection_latency_seconds_count") >= 1
    assert value(after, "runwatch_batch_seconds_count") == value(after, "runwatch_batches_total")
    assert value(after, "runwatch_store_write_seconds_count") >= 1
    assert value(after, "runwatch_active_runs") == 0
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in ("runwatch_alert_deliveries_total", "runwatch_alert_failures_total", "runwatch_watchers"):
        assert f"# HELP {name}" in page


def test_metrics_count_a_run_ingested_through_kafka(kafka, tmp_path):
    srv = BackgroundServer(ServiceSettings(port=0, http_port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        batch = runs_pb2.EventBatch()
        batch.starts.add(run_id="kmetered", project="m")
        for step in range(20):
            batch.events.add(run_id="kmetered", step=step).metrics["loss"] = math.nan if step >= 15 else 1.0
        with grpc.insecure_channel(srv.target) as channel:
            stub = service_pb2_grpc.IngestServiceStub(channel)
            stub.Ingest(batch, timeout=30)  # the gRPC door produces to the topic; the consumer detects
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
        producer.send(kafka.ingest_topic, key=b"nobody", value=unknown_run_batch().SerializeToString())
        producer.flush()
        producer.close()
        expected = {  # what the scrape must show once both records are consumed and the run detected
            ("runwatch_ingested_items_total", (("outcome", "accepted"),)): lambda v: v >= 21,
            ("runwatch_rejected_items_total", (("reason", "events.run_id"),)): lambda v: v == 2,
            ("runwatch_anomalies_total", (("kind", "NONFINITE"), ("severity", "CRITICAL"))): lambda v: v >= 1,
            ("runwatch_kafka_records_total", ()): lambda v: v >= 2,
            ("runwatch_store_write_seconds_count", ()): lambda v: v >= 1,
        }

        def unmet(samples) -> dict:
            # keys as value() builds them: (name, sorted labels)
            return {
                key[0]: samples.get(key, 0.0) for key, holds in expected.items() if not holds(samples.get(key, 0.0))
            }

        # Counters move as the consumer commits, detects and acks, each on its own thread: wait for all of them.
        deadline = time.monotonic() + 60
        while (missing := unmet(scrape(srv.server.http_port))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not missing, f"not counted within 60 s: {missing}"
    finally:
        srv.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_writes_one_json_object_per_log_line(tmp_path):
    port = free_port()
    env = {**os.environ, "RUNWATCH_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.service.cli", "serve", "--port", str(port), "--http-port", "0",
         "--data-dir", str(tmp_path / "data"), "--log-level", "INFO"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        http_port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (http_port and any("runwatch serving" in x for x in lines)):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            doc = json.loads(line)
            http_port = http_port or doc.get("http_port")
        assert http_port, lines
        client = RunwatchClient(f"127.0.0.1:{port}")
        run = client.start_run(run_id="logged", project="j")
        diverging(run, steps=12, nan_at=10)
        assert run.flush(10)
        run.finish()
        client.close()
        assert value(scrape(http_port), "runwatch_anomalies_total", kind="NONFINITE", severity="CRITICAL") >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    lines += err.splitlines(keepends=True)
    assert proc.returncode == 0, err
    assert out == ""
    docs = [json.loads(line) for line in lines if line.strip()]  # every line parses
    assert docs and all({"time", "level", "logger", "message"} <= d.keys() for d in docs)
    assert all(d["time"].endswith("Z") and d["level"] in ("DEBUG", "INFO", "WARNING", "ERROR") for d in docs)
    serving = next(d for d in docs if d["message"].startswith("runwatch serving on"))
    assert serving["grpc_port"] == port and serving["logger"] == "runwatch.service"
    assert any(d.get("http_port") == http_port for d in docs)  # extra= fields become keys
