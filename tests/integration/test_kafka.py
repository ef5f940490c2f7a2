"""Kafka transport against a real broker: any client in, anomalies out, dead letters, gRPC front, restart."""

from __future__ import annotations

import json
import logging
import math
import time

import pytest
from kafka import KafkaProducer
from kafka_broker import TopicReader, free_port, reference_anomalies, training_run

from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import codecs, dead_letters
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2, runs_pb2

pytestmark = pytest.mark.slow


@pytest.fixture
def start_kafka_server(tmp_path):
    started: list[BackgroundServer] = []

    def start(kafka, name: str = "a", **overrides) -> BackgroundServer:
        settings = ServiceSettings(port=0, data_dir=tmp_path / name, kafka=kafka, **overrides)
        srv = BackgroundServer(settings).start()
        started.append(srv)
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        return srv

    yield start
    for srv in started:
        if srv.server is not None:
            srv.stop()


def produce(bootstrap: str, topic: str, batches: list[runs_pb2.EventBatch], run_id: str) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    for b in batches:
        value, headers = codecs.encode_batch(b)
        p.send(topic, key=run_id.encode(), value=value, headers=headers)
    p.flush()
    p.close()


def anomalies_of(records) -> list[anomaly_pb2.Anomaly]:
    return [codecs.decode_anomaly(r.value, r.headers) for r in records]


def test_kafka_python_and_confluent_producers_json_and_protobuf(kafka, start_kafka_server):
    import confluent_kafka

    start_kafka_server(kafka)
    # kafka-python, protobuf with its content-type header.
    nan_run = runs_pb2.EventBatch()
    nan_run.starts.add(run_id="kp-proto", project="p")
    for i in range(10):
        nan_run.events.add(run_id="kp-proto", step=i, wall_time=1.7e9 + i).metrics["loss"] = math.nan if i >= 6 else 1.0
    produce(kafka.bootstrap, kafka.ingest_topic, [nan_run], "kp-proto")
    # confluent-kafka (librdkafka), JSON typed by hand: one record with a header, one sniffed without.
    p = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2_random"})
    p.produce(
        kafka.ingest_topic, key=b"ck-json",
        value=b'{"starts": [{"run_id": "ck-json", "project": "p"}], "events": ['
        b'{"run_id": "ck-json", "step": 0, "metrics": {"loss": 1.5}},'
        b'{"run_id": "ck-json", "step": 1, "metrics": {"loss": "NaN"}}]}',
        headers=[("content-type", b"application/json")],
    )
    p.produce(
        kafka.ingest_topic, key=b"ck-json",
        value=b'  {"events": [{"runId": "ck-json", "step": 2, "wallTime": 1700000002.5, "metrics": {"grad_norm": "Infinity"}}]}',
    )
    assert p.flush(10) == 0

    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka.bootstrap, "group.id": kafka.group + "-reader", "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,  # the broker's join waits half the session
        }
    )
    c.subscribe([kafka.anomaly_topic])
    got = []
    import time

    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    assert len(got) == 3, [m.value() for m in got]
    by_run: dict[str, list] = {}
    for m in got:
        headers = dict(m.headers())
        assert headers["content-type"] == b"application/json"
        assert headers[codecs.SCHEMA_VERSION] == b"1" and headers[codecs.SCHEMA] == b"runwatch.v1.Anomaly"
        doc = json.loads(m.value())
        assert m.key().decode() == doc["run_id"]
        assert headers[codecs.ANOMALY_ID].decode() == doc["id"]
        by_run.setdefault(doc["run_id"], []).append(doc)
    assert [(d["kind"], d["step"]) for d in by_run["kp-proto"]] == [("ANOMALY_KIND_NONFINITE", "6")]
    assert sorted((d["metrics"][0], d["step"]) for d in by_run["ck-json"]) == [("grad_norm", "2"), ("loss", "1")]


def test_poison_records_go_to_the_dlq_and_later_records_are_processed(kafka, start_kafka_server, caplog):
    caplog.set_level(logging.WARNING, logger="runwatch.kafka")
    metrics_port = free_port()
    srv = start_kafka_server(kafka, metrics_port=metrics_port)
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=2)
    good = runs_pb2.EventBatch()
    good.starts.add(run_id="dl-run", project="p")
    good.events.add(run_id="dl-run", step=0).metrics["loss"] = 1.0
    p.send(kafka.ingest_topic, key=b"dl-run", value=good.SerializeToString())
    poison = [
        (b"\x0a\xff\xff\xff\xff", []),  # truncated protobuf
        (b'{"events": [{"run_id": "dl-run", "stepp": 3}]}', []),  # JSON with a misspelt field
        (b"\x00\x01", [("content-type", b"text/csv")]),  # unsupported content type
    ]
    partial = runs_pb2.EventBatch()
    partial.events.add(run_id="dl-nobody", step=1).metrics["loss"] = 1.0  # unknown run: rejected
    partial.events.add(run_id="dl-run", step=1).metrics["loss"] = 1.0  # kept
    metas = [p.send(kafka.ingest_topic, key=b"dl-run", value=v, headers=h) for v, h in poison]
    metas.append(p.send(kafka.ingest_topic, key=b"dl-run", value=partial.SerializeToString()))
    after = runs_pb2.EventBatch()
    after.events.add(run_id="dl-run", step=2).metrics["loss"] = math.nan
    p.send(kafka.ingest_topic, key=b"dl-run", value=after.SerializeToString())
    p.flush()
    origins = [(m.get().partition, m.get().offset) for m in metas]
    p.close()

    anomalies = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
    got = anomalies_of(anomalies.read_until(lambda r: len(r) >= 1))
    anomalies.close()
    assert [(a.run_id, a.step, a.kind) for a in got] == [("dl-run", 2, anomaly_pb2.ANOMALY_KIND_NONFINITE)]

    dlq = TopicReader(kafka.bootstrap, kafka.dlq_topic)
    dead = dlq.read_until(lambda r: len(r) >= 4)
    dlq.close()
    assert len(dead) == 4
    dead.sort(key=lambda r: int(dict(r.headers)[dead_letters.ORIGIN_OFFSET]))
    for rec, (part, offset) in zip(dead, origins):
        h = dict(rec.headers)
        assert h[dead_letters.ORIGIN_TOPIC].decode() == kafka.ingest_topic
        assert (int(h[dead_letters.ORIGIN_PARTITION]), int(h[dead_letters.ORIGIN_OFFSET])) == (part, offset)
        assert rec.key == b"dl-run"
    reasons = [dict(r.headers)[dead_letters.REASON].decode() for r in dead]
    kinds = [dict(r.headers)[dead_letters.ERROR_KIND].decode() for r in dead]
    assert kinds == ["undecodable", "undecodable", "undecodable", "partial"]
    assert "not a valid runwatch.v1.EventBatch protobuf" in reasons[0]
    assert 'no field named "stepp"' in reasons[1]
    assert "unsupported content type 'text/csv'" in reasons[2]
    assert reasons[3].startswith("events[0].run_id: unknown run 'dl-nobody'") and "1 other item(s)" in reasons[3]
    assert dead[0].value == poison[0][0]  # kept byte for byte
    assert json.loads(dict(dead[3].headers)[dead_letters.VIOLATIONS])[0]["field"] == "events[0].run_id"
    # A run whose RunStart never reached the topic loses every record to the DLQ: said once, by name.
    unknown = [r.getMessage() for r in caplog.records if "no RunStart of it reached" in r.getMessage()]
    assert len(unknown) == 1 and unknown[0].startswith("records of run dl-nobody go to the dead-letter topic")
    stats = srv.server.kafka.consumer.stats
    assert stats.errors == 0 and stats.dead_letters == 4
    deadline = time.monotonic() + 10  # the commit follows the delivery the reader has just seen
    while stats.commits < stats.cycles and time.monotonic() < deadline:
        time.sleep(0.01)
    # The same counters over Prometheus's HTTP endpoint.
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        scraped = {
            s.name: s.value for f in text_string_to_metric_families(page.read().decode()) for s in f.samples
        }
    assert scraped["runwatch_kafka_dead_letters_total"] == 4
    assert scraped["runwatch_kafka_records_total"] == stats.records >= 6
    assert scraped["runwatch_kafka_commits_total"] >= 1 and scraped["runwatch_kafka_seconds_since_commit"] >= 0


def test_grpc_front_publishes_per_run_records_and_protobuf_anomalies(kafka, start_kafka_server):
    import grpc

    from runwatch.v1 import service_pb2_grpc

    k = kafka.model_copy(update={"anomaly_format": "protobuf"})
    srv = start_kafka_server(k)
    channel = grpc.insecure_channel(srv.target)
    b = runs_pb2.EventBatch(sequence=7)
    for run_id in ("front-a", "front-b"):
        b.starts.add(run_id=run_id, project="p")
    for i in range(6):
        for run_id, nan_at in (("front-a", 3), ("front-b", 5)):
            b.events.add(run_id=run_id, step=i, wall_time=1.7e9 + i).metrics["loss"] = math.nan if i >= nan_at else 1.0
    b.events.add(run_id="front-a", step=9)  # no metrics: rejected at the door
    ack = next(service_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([b]), timeout=30))
    channel.close()
    assert (ack.sequence, ack.accepted, ack.rejected) == (7, 14, 1)
    assert ack.violations[0].field == "events[12].metrics"

    ingest = TopicReader(k.bootstrap, k.ingest_topic)
    records = ingest.read_until(lambda r: len(r) >= 2)
    ingest.close()
    assert sorted(r.key for r in records) == [b"front-a", b"front-b"]
    for r in records:
        one = runs_pb2.EventBatch.FromString(r.value)
        assert {e.run_id for e in one.events} == {r.key.decode()} and len(one.starts) == 1

    reader = TopicReader(k.bootstrap, k.anomaly_topic)
    got = reader.read_until(lambda r: len(r) >= 2)
    reader.close()
    assert all(dict(r.headers)["content-type"].startswith(b"application/x-protobuf") for r in got)
    assert sorted((a.run_id, a.step) for a in anomalies_of(got)) == [("front-a", 3), ("front-b", 5)]


def test_restart_resumes_from_committed_offsets(kafka, start_kafka_server, tmp_path):
    runs = {
        f"rs-{i}": training_run(f"rs-{i}", 600, 50, seed=i, spike_every=150, nan_at=560 if i == 0 else -1)
        for i in range(3)
    }
    expected = reference_anomalies(runs, tmp_path / "reference")
    first_half = {r: b[:6] for r, b in runs.items()}
    second_half = {r: b[6:] for r, b in runs.items()}
    srv = start_kafka_server(kafka, "first")
    for run_id, batches in first_half.items():
        produce(kafka.bootstrap, kafka.ingest_topic, batches, run_id)
    n_first = sum(len(b.events) for bs in first_half.values() for b in bs)
    consumer = srv.server.kafka.consumer
    import time

    deadline = time.monotonic() + 30
    while consumer.stats.events < n_first and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop()  # graceful: the cycle in hand is committed

    for run_id, batches in second_half.items():
        produce(kafka.bootstrap, kafka.ingest_topic, batches, run_id)
    srv2 = start_kafka_server(kafka, "second")  # another host: nothing local, state from the checkpoints
    n_second = sum(len(b.events) for bs in second_half.values() for b in bs)
    reader = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
    records = reader.read_until(lambda r: {(a.id, a.revision) for a in anomalies_of(r)} >= expected, timeout=40)
    reader.close()
    got = [(a.id, a.revision) for a in anomalies_of(records)]
    assert set(got) == expected and len(expected) >= 4
    assert len(got) == len(set(got))  # nothing re-processed, nothing published twice
    stats2 = srv2.server.kafka.consumer.stats
    assert stats2.restored_runs == 3
    # A run's last anomaly can be delivered with a cycle before the one holding its last records.
    deadline = time.monotonic() + 10
    while srv2.server.pipeline.counters["accepted"] < n_second and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv2.server.pipeline.counters["accepted"] == n_second
    assert srv2.server.pipeline.counters["duplicates"] == 0


def test_a_backlog_is_detected_in_short_cycles_committed_in_order(kafka, start_kafka_server, tmp_path):
    """librdkafka prefetches a whole backlog; cycles still end on time and commit in order, one in flight."""
    runs = {
        f"bl-{i}": training_run(f"bl-{i}", 900, 5, seed=10 + i, spike_every=200, nan_at=850 if i == 1 else -1)
        for i in range(3)
    }
    expected = reference_anomalies(runs, tmp_path / "reference")
    for run_id, batches in runs.items():
        produce(kafka.bootstrap, kafka.ingest_topic, batches, run_id)
    n_records = sum(len(b) for b in runs.values())
    srv = start_kafka_server(kafka.model_copy(update={"commit_interval_ms": 0}), "backlog")
    reader = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
    records = reader.read_until(lambda r: {(a.id, a.revision) for a in anomalies_of(r)} >= expected, timeout=60)
    reader.close()
    got = [(a.id, a.revision) for a in anomalies_of(records)]
    assert set(got) == expected and len(got) == len(set(got)) and len(expected) >= 4
    stats = srv.server.kafka.consumer.stats
    deadline = time.monotonic() + 10
    while (stats.records < n_records or stats.commits < stats.cycles) and time.monotonic() < deadline:
        time.sleep(0.01)
    # commit_interval_ms=0: every slice of 32 records (or less, when a poll brings less) is its own cycle.
    assert stats.records == n_records == 540 and stats.cycles >= n_records // 32
    assert stats.commits == stats.cycles and stats.commit_failures == 0 and stats.errors == 0
    # The group's committed offsets are the ends of the partitions: the last cycle's commit came last.
    from kafka import KafkaConsumer, TopicPartition

    ingest = TopicReader(kafka.bootstrap, kafka.ingest_topic)
    ingested = ingest.read_until(lambda r: len(r) >= n_records)
    ingest.close()
    ends = {}  # read, not end_offsets(): the test broker answers that wrongly
    for r in ingested:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    probe = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=kafka.group, enable_auto_commit=False)
    committed = {p: probe.committed(TopicPartition(kafka.ingest_topic, p)) for p in ends}
    probe.close()
    assert len(ingested) == n_records and len(ends) >= 2
    assert committed == ends
