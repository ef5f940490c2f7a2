"""One event per Kafka record (a producer sending a record per step): applied many records to a batch, same results."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer
from kafka_broker import TopicReader, reference_anomalies, training_run

from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import codecs, dead_letters
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import runs_pb2

pytestmark = pytest.mark.slow


def test_records_of_one_event_give_the_reference_anomalies_and_exact_dead_letters(kafka, tmp_path):
    """Small events-only records are joined into batches; a poison record among them still costs only itself."""
    runs = {
        f"sr-{i}": training_run(f"sr-{i}", 400, 1, seed=20 + i, spike_every=120, nan_at=370 if i == 0 else -1)
        for i in range(3)
    }
    expected = reference_anomalies(runs, tmp_path / "reference")
    n_events = sum(len(b.events) for bs in runs.values() for b in bs)

    def poison_of(step: int) -> list[tuple[bytes, bytes, str]]:
        """(key, value, expected error kind) of bad records sent among sr-1's records, after its ``step``."""
        bad = runs_pb2.EventBatch(sequence=7)
        bad.events.add(run_id="sr-1", step=step + 1, wall_time=1.7e9).metrics["bad name"] = 1.0  # not a metric name
        nobody = runs_pb2.EventBatch()
        nobody.events.add(run_id="sr-nobody", step=1, wall_time=1.7e9).metrics["loss"] = 1.0  # unknown run
        return [
            (b"sr-1", bad.SerializeToString(), "rejected"),
            (b"sr-1", b"\x12\xff\xff\xff\xff", "undecodable"),  # a truncated event
            (b"sr-1", nobody.SerializeToString(), "rejected"),
        ]

    # A backlog (the records are there before the instance starts): polls bring many records at once.
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    content_type = codecs.encode_batch(runs_pb2.EventBatch())[1]
    poison_keys = []
    n_records = 0
    for i in range(max(len(b) for b in runs.values())):  # runs interleaved, one event per record
        for run_id, batches in runs.items():
            if i < len(batches):
                b = batches[i]
                b.sequence = i  # each record has its own sequence: joined batches leave it out
                value, headers = codecs.encode_batch(b)
                p.send(kafka.ingest_topic, key=run_id.encode(), value=value, headers=headers)
                n_records += 1
            if run_id == "sr-1" and i == 200:
                for key, value, kind in poison_of(200):
                    poison_keys.append(kind)
                    p.send(kafka.ingest_topic, key=key, value=value, headers=content_type)
                    n_records += 1
    p.flush()
    p.close()

    settings = ServiceSettings(port=0, data_dir=tmp_path / "a", kafka=kafka)
    srv = BackgroundServer(settings).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        reader = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
        records = reader.read_until(lambda r: {(a.id, a.revision) for a in map(_anomaly, r)} >= expected, timeout=90)
        reader.close()
        got = [(a.id, a.revision) for a in map(_anomaly, records)]
        assert set(got) == expected and len(expected) >= 4
        assert len(got) == len(set(got))

        dlq = TopicReader(kafka.bootstrap, kafka.dlq_topic)
        dead = dlq.read_until(lambda r: len(r) >= 3)
        dlq.close()
        dead.sort(key=lambda r: int(dict(r.headers)[dead_letters.ORIGIN_OFFSET]))
        assert [dict(r.headers)[dead_letters.ERROR_KIND].decode() for r in dead] == poison_keys
        reasons = [dict(r.headers)[dead_letters.REASON].decode() for r in dead]
        assert "metric names must be" in reasons[0] and "not a valid" in reasons[1] and "sr-nobody" in reasons[2]

        stats = srv.server.kafka.consumer.stats
        deadline = time.monotonic() + 30
        while (stats.records < n_records or stats.commits < stats.cycles) and time.monotonic() < deadline:
            time.sleep(0.05)
        counters = srv.server.pipeline.counters
        assert stats.records == n_records and stats.dead_letters == 3 and stats.errors == 0
        assert counters["accepted"] == n_events + len(runs) and counters["duplicates"] == 0  # events and starts
        # Most records went in joined batches: far fewer pipeline batches than records.
        assert counters["batches"] < n_records / 4, counters
        # Every event is stored once, in order.
        for run_id in runs:
            assert srv.server.store.get_run(run_id).last_step == 399
    finally:
        srv.stop()


def _anomaly(record):
    return codecs.decode_anomaly(record.value, record.headers)
