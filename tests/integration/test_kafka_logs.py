"""The Kafka logs topic against a real broker: raw lines produced by kcat become runs' log lines.

kcat (librdkafka) writes the records exactly as a log shipper would: key =
run id, value = the line, headers from ``-H``. Lines hashed to another
partition than their run's (librdkafka's default CRC32 partitioner) are
forwarded to it; malformed records land in the dead-letter topic with a
reason naming the part and the problem, and the records after them go on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import zlib

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaProducer
from kafka_broker import TopicReader, kafka_settings, kcat_env

from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import codecs, dead_letters
from runwatch.service.kafka.logs_topic import FORWARDED_FROM, Owners
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import anomaly_pb2, runs_pb2

pytestmark = pytest.mark.slow

PARTITIONS = 4
OOM = [
    "Traceback (most recent call last):",
    '  File "train.py", line 88, in <module>',
    "    loss.backward()",
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "79.10 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.03 GiB memory in use."
    ),
]


@pytest.fixture
def kcat(tmp_path_factory):
    found = kcat_env(tmp_path_factory.mktemp("kcat"))
    if isinstance(found, str):
        pytest.skip(found)
    return found


def produce_with_kcat(kcat, bootstrap: str, topic: str, lines: list[bytes], *options: str) -> None:
    binary, env = kcat
    # -K: key and line are split at the first tab; -z none keeps the records as written.
    args = [binary, "-b", bootstrap, "-P", "-t", topic, "-K", "\t", *options]
    done = subprocess.run(
        args, input=b"".join(x + b"\n" for x in lines), env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def logs_settings(bootstrap: str):
    kafka = kafka_settings(bootstrap, partitions=PARTITIONS)
    kafka.logs_topic = kafka.ingest_topic.removesuffix(".events") + ".logs"
    return kafka


def crc32_partition(run_id: str) -> int:
    """Where librdkafka's default partitioner (consistent_random: CRC32) puts a key."""
    return zlib.crc32(run_id.encode()) % PARTITIONS


def lines_of(store, run_id: str, n: int, timeout: float = 30.0) -> list[runs_pb2.LogLine]:
    deadline = time.monotonic() + timeout
    while True:
        got = store.log_lines(run_id)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_kcat_lines_become_log_lines_of_their_runs(kafka_broker, kcat, tmp_path):
    kafka = logs_settings(kafka_broker.bootstrap)
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        owners = Owners(PARTITIONS)
        # A run keyed the murmur2 way lands on its own partition; another lands elsewhere under CRC32.
        direct = "kc-murmur"
        moved = next(
            f"kc-crc-{i}" for i in range(100) if crc32_partition(f"kc-crc-{i}") != owners(f"kc-crc-{i}".encode())
        )
        iterations = [
            f" iteration {i:5d}/  100 | consumed samples: {i * 32:6d} | learning rate: 1.500E-04 | "
            f"lm loss: {3.0 - i * 0.01:.6E} | loss scale: 4096.0 | grad norm: 1.2 |"
            for i in range(1, 41)
        ]
        produce_with_kcat(
            kcat, kafka.bootstrap, kafka.logs_topic,
            [f"{direct}\t{line}".encode() for line in iterations], "-X", "partitioner=murmur2_random",
        )  # fmt: skip
        produce_with_kcat(
            kcat, kafka.bootstrap, kafka.logs_topic, [f"{moved}\t{line}".encode() for line in [*iterations[:5], *OOM]],
            "-H", "project=shipped", "-H", "source=stderr",
        )  # fmt: skip
        # Malformed records, between good ones: no key, not UTF-8, over 64 KiB, a bad level header.
        produce_with_kcat(
            kcat, kafka.bootstrap, kafka.logs_topic,
            [b"a line without a key", f"{direct}\tbad \xff byte".encode("latin-1"), direct.encode() + b"\t" + b"x" * 70_000],
            "-X", "partitioner=murmur2_random",
        )  # fmt: skip
        produce_with_kcat(
            kcat, kafka.bootstrap, kafka.logs_topic, [f"{direct}\tloud line".encode()], "-H", "level=loud"
        )
        produce_with_kcat(
            kcat,
            kafka.bootstrap,
            kafka.logs_topic,
            [f"{direct}\tafter the bad ones".encode()],
            "-X",
            "partitioner=murmur2_random",
        )

        store = srv.server.store
        got = lines_of(store, direct, 41)
        assert [x.text for x in got] == [*iterations, "after the bad ones"]  # in order, none lost
        assert {x.level for x in got} == {runs_pb2.LOG_LEVEL_INFO} and all(x.time > 1.7e9 for x in got)
        got_moved = lines_of(store, moved, 9)
        assert [x.text for x in got_moved] == [*iterations[:5], *OOM]  # forwarded to its run's partition, in order
        assert got_moved[0].level == runs_pb2.LOG_LEVEL_WARNING and got_moved[-1].level == runs_pb2.LOG_LEVEL_ERROR
        assert srv.server.kafka.consumer.stats.forwarded >= 9

        info = store.get_run(direct)
        assert info.project == "default" and info.status == runs_pb2.RUN_STATUS_RUNNING  # opened by its lines
        assert store.get_run(moved).project == "shipped"  # the project header

        dlq = TopicReader(kafka.bootstrap, kafka.dlq_topic)
        dead = dlq.read_until(lambda r: len(r) >= 4)
        dlq.close()
        reasons = sorted(dict(r.headers)[dead_letters.REASON].decode() for r in dead)
        assert len(dead) == 4, reasons
        assert reasons[0].startswith("header level: unknown level b'loud'")
        assert reasons[1] == "key: no run id: key each record with the id of the run the line belongs to"
        assert reasons[2] == "value: 70000 bytes is over the limit of 65536 bytes for one line"
        assert reasons[3] == "value: not UTF-8: byte 0xff at offset 4"
        for r in dead:  # kept as they came, with where they came from
            assert dict(r.headers)[dead_letters.ORIGIN_TOPIC].decode() == kafka.logs_topic

        # The OOM traceback that came through the logs topic is analysed like any line.
        anomalies = TopicReader(kafka.bootstrap, kafka.anomaly_topic)
        found = anomalies.read_until(lambda r: any(json.loads(x.value)["run_id"] == moved for x in r), timeout=20)
        anomalies.close()
        mine = [codecs.decode_anomaly(r.value, r.headers) for r in found if json.loads(r.value)["run_id"] == moved]
        assert any(a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN for a in mine), [a.kind for a in mine]

        # Offsets of the logs topic are committed like the ingest topic's (each cycle once delivered).
        deadline = time.monotonic() + 20
        reader = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": kafka.group})
        try:
            while True:
                committed = reader.committed(
                    [TopicPartition(kafka.logs_topic, p) for p in range(PARTITIONS)], timeout=10
                )
                total = sum(max(tp.offset, 0) for tp in committed)
                if total >= 40 + 9 + 3 + 1 + 1 + 9 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            reader.close()
        assert total == 40 + 9 + 3 + 1 + 1 + 9  # every record read, plus the 9 forwarded copies
    finally:
        srv.stop()


def test_forwarded_records_say_where_they_came_from(kafka_broker, kcat, tmp_path):
    kafka = logs_settings(kafka_broker.bootstrap)
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30)
        owners = Owners(PARTITIONS)
        moved = next(f"fw-{i}" for i in range(100) if crc32_partition(f"fw-{i}") != owners(f"fw-{i}".encode()))
        produce_with_kcat(kcat, kafka.bootstrap, kafka.logs_topic, [f"{moved}\tepoch 1 loss=0.5".encode()])
        reader = TopicReader(kafka.bootstrap, kafka.logs_topic)
        records = reader.read_until(lambda r: len(r) >= 2)
        reader.close()
        original, copy = sorted(records, key=lambda r: FORWARDED_FROM in dict(r.headers))
        assert original.partition == crc32_partition(moved) and copy.partition == owners(moved.encode())
        assert dict(copy.headers)[FORWARDED_FROM].decode() == f"{original.partition}@{original.offset}"
        assert copy.key == original.key and copy.value == original.value
        assert [x.text for x in lines_of(srv.server.store, moved, 1)] == ["epoch 1 loss=0.5"]
    finally:
        srv.stop()


def test_topics_lost_by_the_broker_are_read_again_once_recreated(own_broker, tmp_path, caplog):
    """Sweep item 2: a broker that came back empty, its topics recreated by producers one after the other.

    The logs topic came back after the ingest topic, and was never assigned again (nothing logged)
    until another instance forced a rebalance. Now the topics are looked up every 10 s, the group
    rebalances when one appears, a partial assignment is a WARNING naming the missing topic, and
    assignments name topic and partitions.
    """
    caplog.set_level(logging.INFO, logger="runwatch.kafka")
    kafka = logs_settings(own_broker.bootstrap)
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
    consumer = srv.server.kafka.consumer
    both = f"{kafka.ingest_topic}[0,1,2,3] {kafka.logs_topic}[0,1,2,3]"

    def logged(level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "runwatch.kafka" and r.levelno == level]

    def wait(predicate, timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while not predicate():
            assert time.monotonic() - t0 < timeout, f"{what} not within {timeout:g} s:\n" + "\n".join(logged())
            time.sleep(0.1)
        return time.monotonic() - t0

    try:
        assert consumer.ready.wait(30), "no partitions assigned in 30 s"
        assert f"assigned partitions [0, 1, 2, 3]: {both} (new [0, 1, 2, 3], lost [])" in logged()

        own_broker.restart_empty()
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=2)
        # A producer recreates the ingest topic first (Tansu creates a topic on its first record) ...
        opening = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="back-ev", project="p")])
        opening.events.add(run_id="back-ev", step=0).metrics["loss"] = 1.0
        producer.send(kafka.ingest_topic, key=b"back-ev", value=opening.SerializeToString())
        producer.flush()
        wait(lambda: srv.server.store.get_run("back-ev") is not None, 60, "the recreated ingest topic read")
        # The record can be read before the consumer notices its topics went away; the revocation follows.
        wait(lambda: f"partitions revoked: {both}" in logged(), 30, "the lost partitions revoked")

        # ... and the assignment without the logs topic says so.
        def warnings() -> list[str]:
            return [m for m in logged(logging.WARNING) if m.startswith(f"topic {kafka.logs_topic}:")]

        wait(lambda: warnings(), 10, "a warning naming the logs topic")
        warning = warnings()[0]
        assert f"partitions [0, 1, 2, 3] not assigned with {kafka.ingest_topic}[0,1,2,3]" in warning

        # The logs topic comes back later, as a shipper's first line recreates it: its lines are read.
        for step in range(3):
            producer.send(kafka.logs_topic, key=b"back-lines", value=f"epoch {step} loss=0.5".encode())
        producer.flush()
        took = wait(lambda: len(srv.server.store.log_lines("back-lines")) >= 3, 45, "the recreated logs topic read")
        assert [x.text for x in srv.server.store.log_lines("back-lines")] == [f"epoch {i} loss=0.5" for i in range(3)]
        assert any(m.startswith(f"topic(s) {kafka.logs_topic} exist again (4 partitions)") for m in logged())
        assert any(m.startswith(f"assigned partitions [0, 1, 2, 3]: {both} ") for m in logged()[-5:]), logged()[-5:]
        producer.close()

        # librdkafka's lines name the group and the instance (hostname-pid), not just "runwatch-detector".
        rdkafka = {r.getMessage().split("] ", 1)[0] for r in caplog.records if r.name == "runwatch.kafka.librdkafka"}
        instance = f"[runwatch-detector.{kafka.group}.{socket.gethostname()}-{os.getpid()}#consumer-"
        assert rdkafka and all(instance in m for m in rdkafka), rdkafka
        print(f"\nbroker restarted empty: logs topic recreated and read {took:.1f} s after its first lines")
    finally:
        srv.stop()
