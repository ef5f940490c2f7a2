"""Kafka outages against a real broker: a frozen broker, an oversized dead letter, a broker gone for good.

Each test is a regression test of a defect found by outside testing (issue 12, defects 1, 2 and 6).
"""

from __future__ import annotations

import logging
import math
import queue
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer
from kafka_broker import TopicReader, free_port, kafka_settings, serve_process

import runwatch.client as rw
from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import codecs, dead_letters
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.log_repeats import RepeatFilter
from runwatch.service.kafka.producer import wait_for_cluster
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def serve(kafka, data_dir: Path, log: Path, **env: str) -> subprocess.Popen:
    """`runwatch serve` with Kafka flags and a short reconnect back-off; ``env`` adds RUNWATCH_* variables."""
    return serve_process(kafka, data_dir, log, RUNWATCH_KAFKA_RECONNECT_BACKOFF_MAX_MS="1000", **env)


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - t0


def assigned(log: Path) -> bool:
    return "runwatch.kafka: assigned partitions" in log.read_text(errors="replace")


def target_of(log: Path) -> str:
    port = re.search(r"runwatch serving on [0-9.]+:(\d+)", log.read_text(errors="replace")).group(1)
    return f"127.0.0.1:{port}"


def health(channel: grpc.Channel) -> int:
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return -1


class RawStream:
    """One StreamEvents call written batch by batch; ``send`` returns the ack, or the call's error."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.call = service_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for ack in self.call:
                self.answers.put(ack)
        except grpc.RpcError as exc:
            self.answers.put(exc)

    def send(self, batch: runs_pb2.EventBatch, timeout: float):
        self.requests.put(batch)
        return self.answers.get(timeout=timeout)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


def events(run_id: str, steps: range, start: bool = False) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    if start:
        b.starts.add(run_id=run_id, project="outage")
    for step in steps:
        b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step).metrics["loss"] = 1.0
    return b


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_sdk_run_through_a_frozen_broker_loses_and_duplicates_nothing(own_broker, tmp_path):
    """Defect 1: 300 events logged while the broker is frozen all arrive once; refusals are retryable."""
    k = kafka_settings(own_broker.bootstrap)
    log = tmp_path / "serve.log"
    # A short delivery timeout, so the outage is noticed within the test's time.
    proc = serve(k, tmp_path / "data", log, RUNWATCH_KAFKA_DELIVERY_TIMEOUT_MS="4000")
    try:
        wait_for(lambda: assigned(log), 60, "partitions assigned")
        target = target_of(log)
        channel = grpc.insecure_channel(target)
        runs = service_pb2_grpc.RunServiceStub(channel)
        run = rw.init(
            project="outage", run_id="frozen-broker", target=target, spool_dir=tmp_path / "spool",
            flush_on_exit=False, capture_env=False, system_metrics=False,
        )
        assert run.flush(timeout=30)  # the RunStart is in
        # Two raw streams: one writes during the freeze, the other only before and after it.
        busy, idle = RawStream(channel), RawStream(channel)
        assert busy.send(events("busy-stream", range(0), start=True), timeout=30).accepted == 1
        assert idle.send(events("idle-stream", range(0), start=True), timeout=30).accepted == 1

        own_broker.pause()
        paused_at = time.monotonic()
        for step in range(300):
            run.log({"loss": 1.0 / (step + 1), "lr": 0.01}, step=step)
            if step % 10 == 9:
                time.sleep(0.05)  # many batches, in flight at every stage when the broker stops answering
        wait_for(lambda: health(channel) == NOT_SERVING, 20, "health NOT_SERVING during the freeze")
        noticed = time.monotonic() - paused_at
        # A stream writing during the outage is answered, not left hanging: UNAVAILABLE ends it.
        refusal = busy.send(events("busy-stream", range(10)), timeout=15)
        assert isinstance(refusal, grpc.RpcError) and refusal.code() == grpc.StatusCode.UNAVAILABLE, refusal

        # Once the outage is known, a batch is refused at once, with a status clients retry.
        refused = runs_pb2.EventBatch()
        refused.starts.add(run_id="refused-during-outage", project="outage")
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            service_pb2_grpc.IngestServiceStub(channel).Ingest(refused, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "re-send" in err.value.details() and time.monotonic() - t0 < 2.0

        time.sleep(max(0.0, 12.0 - (time.monotonic() - paused_at)))  # frozen 12 s in all
        own_broker.resume()
        back = wait_for(lambda: health(channel) == SERVING, 30, "health SERVING once the broker is back")
        # A stream that only waited through the outage goes on as if nothing happened.
        assert idle.send(events("idle-stream", range(10)), timeout=15).accepted == 10
        busy.close()
        idle.close()

        assert run.finish(timeout=45), run.stats()
        stats = run.stats()
        assert stats.dropped == 0 and stats.rejected == 0, stats
        assert stats.reconnects >= 1  # the refused stream ended with UNAVAILABLE, and the SDK re-sent

        def stored() -> service_pb2.RunSummary:
            return runs.GetRun(service_pb2.GetRunRequest(run_id="frozen-broker"), timeout=10)

        def count() -> int:
            try:
                return stored().run.event_count
            except grpc.RpcError:  # NOT_FOUND until the consumer has caught up with the run's start
                return -1

        wait_for(lambda: count() >= 300, 30, "every event detected and stored")
        time.sleep(1.0)  # room for a late duplicate to show
        summary = stored()
        loss = next(m for m in summary.metrics if m.name == "loss")
        assert summary.run.event_count == 300 and loss.count == 300 and summary.run.last_step == 299
        # Refused, never re-sent: not stored either.
        with pytest.raises(grpc.RpcError) as err:
            runs.GetRun(service_pb2.GetRunRequest(run_id="refused-during-outage"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert runs.GetRun(service_pb2.GetRunRequest(run_id="busy-stream"), timeout=10).run.event_count == 0
        wait_for(
            lambda: runs.GetRun(service_pb2.GetRunRequest(run_id="idle-stream"), timeout=10).run.event_count == 10,
            10,
            "the idle stream's events stored",
        )
        channel.close()
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and proc.poll() is None
        print(
            f"\nfrozen broker: NOT_SERVING {noticed:.1f} s after the freeze, SERVING {back:.1f} s after the thaw; "
            f"{stats.resent} item(s) re-sent over {stats.reconnects} reconnect(s), "
            f"{stats.duplicates} recognised as duplicates; 300/300 stored once"
        )
    finally:
        own_broker.resume()
        stop(proc)


@pytest.fixture
def kafka_server(tmp_path):
    started: list[BackgroundServer] = []

    def start(kafka) -> BackgroundServer:
        srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
        started.append(srv)
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        return srv

    yield start
    for srv in started:
        if srv.server is not None:
            srv.stop()


def test_an_invalid_record_too_large_for_the_dlq_is_dead_lettered_once_truncated(kafka, kafka_server):
    """Defect 2: a 1.5 MiB undecodable record (the README allows 2 MiB) must not stall the cycle."""
    srv = kafka_server(kafka)
    consumer = srv.server.kafka.consumer
    run_id = "next-to-a-big-one"
    before, after = runs_pb2.EventBatch(), runs_pb2.EventBatch()
    before.starts.add(run_id=run_id, project="p")
    for step in range(12):
        into = before if step < 6 else after
        ev = into.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step)
        ev.metrics["loss"] = math.nan if step >= 8 else 1.0
    big = b"\xff" * (1536 << 10)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=50, max_request_size=4 << 20)
    for value in (codecs.encode_batch(before)[0], big, codecs.encode_batch(after)[0]):
        # One key: one partition, so the dead letter and the anomaly share a cycle.
        producer.send(kafka.ingest_topic, key=run_id.encode(), value=value)
    producer.flush()
    producer.close()

    dlq = TopicReader(kafka.bootstrap, kafka.dlq_topic)
    anomalies = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
    letters = dlq.read_until(lambda r: len(r) >= 1, timeout=30)
    found = anomalies.read_until(lambda r: len(r) >= 1, timeout=30)
    assert letters and found
    time.sleep(3.0)  # a cycle that never commits would publish both again meanwhile
    letters = dlq.read_until(lambda r: False, timeout=1.0)
    found = anomalies.read_until(lambda r: False, timeout=1.0)
    dlq.close()
    anomalies.close()

    assert len(letters) == 1, f"{len(letters)} dead letters for one record"
    letter = letters[0]
    headers = dict(letter.headers)
    assert headers[dead_letters.TRUNCATED] == b"value"
    assert int(headers[dead_letters.ORIGINAL_SIZE]) == len(big)
    assert headers[dead_letters.ERROR_KIND] == b"undecodable"
    assert headers[dead_letters.ORIGIN_TOPIC] == kafka.ingest_topic.encode()
    assert int(headers[dead_letters.ORIGIN_OFFSET]) == 1  # where the whole record still is
    assert 0 < len(letter.value) < kafka.max_message_bytes and big.startswith(letter.value)
    ids = Counter((a.id, a.revision) for a in (codecs.decode_anomaly(r.value, r.headers) for r in found))
    assert ids and max(ids.values()) == 1, f"anomalies published more than once: {ids}"
    stats = consumer.stats
    assert stats.dead_letters == 1 and stats.commits >= 1 and stats.errors == 0
    assert srv.server.kafka.producer.recreated == 0  # delivered at the first try
    print(f"\noversized dead letter: {len(letter.value)} of {len(big)} bytes kept, {len(ids)} anomaly published once")


def test_broker_gone_the_log_stays_short(own_broker, tmp_path):
    """Defect 6: with the broker gone, repeated errors are held back instead of flooding the log."""
    k = kafka_settings(own_broker.bootstrap)
    log = tmp_path / "serve.log"
    proc = serve(k, tmp_path / "data", log, RUNWATCH_KAFKA_DELIVERY_TIMEOUT_MS="3000")
    try:
        wait_for(lambda: assigned(log), 60, "partitions assigned")
        channel = grpc.insecure_channel(target_of(log))
        ingest = service_pb2_grpc.IngestServiceStub(channel)

        def lines() -> list[str]:
            return log.read_text(errors="replace").splitlines()

        start = len(lines())
        own_broker.stop()  # gone: every connection attempt is refused
        codes = []
        for i in range(20):  # gRPC traffic throughout the outage
            b = runs_pb2.EventBatch()
            b.starts.add(run_id=f"during-{i}", project="p")
            try:
                ingest.Ingest(b, timeout=10)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
            time.sleep(0.5)
        early = len(lines()) - start
        time.sleep(10)
        outage = lines()[start:]
        kinds = Counter(re.sub(r"\d+", "#", line.split(" ", 3)[-1])[:80] for line in outage)
        print(f"\nbroker gone ~20 s: {len(outage)} log lines ({early} early); most frequent: {kinds.most_common(5)}")
        assert set(codes) == {"UNAVAILABLE"}, codes
        assert len(outage) <= 60, "\n".join(outage[-80:])
        assert len(outage) - early <= 15, "the log keeps growing:\n" + "\n".join(outage[early:])
        assert proc.poll() is None
        channel.close()
    finally:
        proc.send_signal(signal.SIGKILL)  # a graceful stop without a broker is not what this test is about
        proc.wait(10)


def test_repeat_filter_logs_the_first_and_then_counts():
    """The filter on its own, with a short window (real loggers and handlers)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("kafka.test-repeats")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Keep()
    logger.addHandler(handler)
    repeats = RepeatFilter(window_s=0.5)
    logger.addFilter(repeats)
    try:
        for i in range(20):
            logger.error("connection to node %d refused (backoff %.2f s)", 100 + i, 0.05 * i)
            logger.info("info lines pass as they are")
            time.sleep(0.05)
        logger.warning("another kind")
        logged = [r for r in records if r.startswith("connection")]
        repeats.flush()  # what was held back since the last line of its kind
    finally:
        logger.removeFilter(repeats)
        logger.removeHandler(handler)
    errors = [r for r in records if r.startswith("connection")]
    assert records.count("info lines pass as they are") == 20 and "another kind" in records
    assert errors[0] == "connection to node 100 refused (backoff 0.00 s)"
    assert 2 <= len(logged) <= 8 and len(errors) == len(logged) + 1, errors
    counted = [int(n) for e in errors for n in re.findall(r"\(repeated (\d+) times? in the last", e)]
    assert len(logged) + repeats.held_back == 20 and sum(counted) == repeats.held_back, errors


def test_no_broker_at_start_gives_up_after_the_start_timeout(tmp_path):
    """Sweep item 1: RUNWATCH_KAFKA_START_TIMEOUT_S=5 took 38 s (kafka-python's own 30 s bootstrap wait came first)."""
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"no Kafka broker answered at {bootstrap} within 3 s"):
        wait_for_cluster(KafkaSettings(bootstrap=bootstrap, start_timeout_s=3))
    waited = time.monotonic() - t0
    assert 2.5 <= waited < 3 + 5, f"gave up after {waited:.1f} s with a 3 s start timeout"

    # The same through `runwatch serve`: exit 2 with the reason, the wait bounded by the setting.
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    proc = serve(kafka_settings(bootstrap), tmp_path / "data", log, RUNWATCH_KAFKA_START_TIMEOUT_S="3")
    try:
        code = proc.wait(120)
    finally:
        stop(proc)
    took = time.monotonic() - t0
    text = log.read_text(errors="replace")
    assert code == 2, text[-2000:]
    assert f"error: no Kafka broker answered at {bootstrap} within 3 s" in text, text[-2000:]
    assert took < 3 + 15, f"`runwatch serve` exited {took:.1f} s after its start (start timeout 3 s)"  # start-up too
    print(f"\nno broker, 3 s start timeout: wait_for_cluster gave up after {waited:.1f} s, serve after {took:.1f} s")
