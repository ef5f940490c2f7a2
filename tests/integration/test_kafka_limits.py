"""Bounded memory and shutdown with a real broker: evicted runs keep their partition checkpoints right,
and SIGTERM exits within the grace period even with the broker frozen.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from kafka import KafkaProducer
from kafka_broker import TopicReader, reference_anomalies, serve_process, training_run

from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import codecs
from runwatch.service.settings import ServiceSettings

pytestmark = pytest.mark.slow


def produce_interleaved(bootstrap: str, topic: str, runs: dict[str, list]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    for i in range(max(len(b) for b in runs.values())):
        for run_id, batches in runs.items():
            if i < len(batches):
                value, headers = codecs.encode_batch(batches[i])
                p.send(topic, key=run_id.encode(), value=value, headers=headers)
    p.flush()
    p.close()


def wait_events(srv: BackgroundServer, n: int, timeout: float = 60) -> None:
    consumer = srv.server.kafka.consumer
    deadline = time.monotonic() + timeout
    while consumer.stats.events < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumer.stats.events >= n, f"{consumer.stats.events} of {n} events consumed"


def test_runs_evicted_mid_cycle_are_checkpointed_and_restored_elsewhere_exactly(kafka, tmp_path):
    runs = {
        f"kev-{i}": training_run(f"kev-{i}", 600, 50, seed=i, spike_every=150, nan_at=560 if i == 0 else -1)
        for i in range(6)
    }
    expected = reference_anomalies(runs, tmp_path / "reference")
    first_half = {r: b[:6] for r, b in runs.items()}
    second_half = {r: b[6:] for r, b in runs.items()}
    # Two runs in memory at most: nearly every record evicts a run its cycle touched before the cycle's
    # checkpoints are taken.
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "first", kafka=kafka, max_active_runs=2)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30)
        produce_interleaved(kafka.bootstrap, kafka.ingest_topic, first_half)
        wait_events(srv, sum(len(b.events) for bs in first_half.values() for b in bs))
        evicted = srv.server.pipeline.evictions
        assert evicted >= 10 and len(srv.server.pipeline.runs) <= 2
    finally:
        srv.stop()  # graceful: the cycle in hand is committed

    produce_interleaved(kafka.bootstrap, kafka.ingest_topic, second_half)
    # Another host: nothing local, every run's state from the checkpoints (also those evicted at the first).
    srv2 = BackgroundServer(
        ServiceSettings(port=0, data_dir=tmp_path / "second", kafka=kafka, max_active_runs=2)
    ).start()
    try:
        assert srv2.server.kafka.consumer.ready.wait(30)
        reader = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
        records = reader.read_until(lambda r: {(a.id, a.revision) for a in map(decode, r)} >= expected, timeout=60)
        reader.close()
        got = [(a.id, a.revision) for a in map(decode, records)]
        assert set(got) == expected and len(expected) >= 6
        assert len(got) == len(set(got))  # nothing published twice
        assert srv2.server.kafka.consumer.stats.restored_runs == len(runs)
        assert srv2.server.pipeline.counters["duplicates"] == 0
        print(f"\nkafka eviction: {evicted} evictions at the first instance, {len(expected)} anomalies, 0 duplicated")
    finally:
        srv2.stop()


def decode(record):
    return codecs.decode_anomaly(record.value, record.headers)


def test_sigterm_with_the_broker_frozen_exits_within_the_grace_period(own_broker, tmp_path):
    from kafka_broker import kafka_settings

    k = kafka_settings(own_broker.bootstrap)
    log = tmp_path / "serve.log"
    proc = serve_process(k, tmp_path / "data", log, RUNWATCH_SHUTDOWN_GRACE_S="8")
    try:
        deadline = time.monotonic() + 60
        while "assigned partitions" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        produce_interleaved(k.bootstrap, k.ingest_topic, {"frozen": training_run("frozen", 200, 50)})
        time.sleep(2.0)
        own_broker.pause()  # gone: nothing answers, connections stay open
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        took = time.monotonic() - t0
    finally:
        own_broker.resume()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert took <= 8.5, f"exited {took:.1f} s after SIGTERM (grace 8 s)"
    assert re.search(r"shutting down: draining streams, committing \(at most 8 s\)", text)
    print(f"\nSIGTERM with the broker frozen: exit {code} after {took:.1f} s (grace 8 s)")
