"""Ingest benchmark: the full pipeline against a bare decode-only gRPC service, in one run.

Streams N runs x M steps (16 metrics per event, batched) over loopback gRPC to
(a) a runwatch server (validation, detection with the default diagnostics,
SQLite persistence, anomaly emission, acks after commit) and to bare
grpc.aio services that only decode each EventBatch and acknowledge it:
"parse" stops at protobuf parsing (upb parses in C and creates no Python
values), "decode" also reads every event's run id, step, time and each
metric name and value (what any consumer of the data must do). Each server
runs in its own process; the client sends pre-serialized batches so the
client itself is not the bottleneck.

    python bench/ingest_throughput.py --runs 16 --steps 5000 --batch 500

Prints a table: events/s and metric values/s for each service, the
pipeline's ratio to each bare service, and p50/p99 latency from batch
arrival to anomaly emission (measured inside the pipeline process).

    python bench/ingest_throughput.py --only-full --http --repeats 3 --steps 25000

measures what serving the dashboard and /metrics costs ingest: the same server
with ``--http-port`` on while a run page streams its points and anomalies, the
anomaly feed streams, and Prometheus scrapes every second (kinds alternate).

    python bench/ingest_throughput.py --shapes --write bench/RESULTS.md

runs several batch shapes side by side in one invocation (one event per batch
over 16 streams, 10, 100 and 500 events per batch, and batches holding one
event each of 64 runs out of 1,000), each against the bare parse-only service,
prints one table (shape, pipeline events/s, parse-only events/s, ratio, p50/p99
batch arrival -> anomaly emitted) and with ``--write`` replaces the section
between ``<!-- ingest-shapes:begin -->`` and ``<!-- ingest-shapes:end -->`` of
that file (appended when absent), with the command that produced it. Each shape is then sent once
more with the client pacing its streams at ``--paced-load`` (default 0.5) times the throughput just
measured: at full speed the client outruns the server and a batch's latency is mostly queueing, so the
paced columns give the latency a run sees when the server keeps up.

    python bench/ingest_throughput.py --in-process --runs 16 --steps 2000

times the same batches in this one process, without gRPC: the pipeline's
apply path (``DetectionPipeline.ingest_bytes`` with a real SQLite store) against
the bare services' loops (parse only; parse + read every value) and against
runwatch's own compiled reader of every value (``event_scan.scan_batch``: the
fastest decode this repository has, for a fair reading of the ratios), each
repeat in turn, best of ``--repeats``. CPU time of this thread (the store's
writer thread runs beside it and is reported apart), so it is far less
sensitive to other load on the machine than the wall-clock table.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path

LAYERS = ("fc1", "fc2", "fc3")


def make_batches(
    runs: int, steps: int, batch: int, seed: int, runs_per_batch: int = 1
) -> tuple[list[list[bytes]], int, int]:
    """Per run, its serialized batches (the first one opens the run); plus event and value counts.

    With ``runs_per_batch`` > 1, each batch holds ``batch`` events of each of that many runs
    (runs in fixed groups), and the "per run" lists are per group of runs.
    """
    from runwatch.v1 import runs_pb2

    if runs_per_batch > 1:
        return _make_shared_batches(runs, steps, batch, seed, runs_per_batch)
    rng = random.Random(seed)
    per_run, n_events, n_values = [], 0, 0
    for r in range(runs):
        run_id = f"bench-{r}"
        fault = r % 4  # 0, 3: healthy; 1: NaN late; 2: a bad batch (loss spike) every 400 steps
        nan_at = int(steps * 0.8) if fault == 1 else -1
        batches: list[bytes] = []
        b = runs_pb2.EventBatch(sequence=0)
        b.starts.add(run_id=run_id, project="bench")
        for step in range(steps):
            # A power-law learning curve with mini-batch noise: still improving at the end, like real runs.
            loss = 2.3 * (1.0 + step / 50.0) ** -0.5 * (1.0 + rng.gauss(0, 0.03))
            value = loss * (8.0 if fault == 2 and step % 400 == 399 else 1.0)
            if nan_at >= 0 and step >= nan_at:
                value = math.nan
            m = {
                "loss": value,
                "lr": 1e-3,
                "grad_norm": 1.0 + rng.random() * 0.2,
                "step_time": 0.05 + rng.random() * 0.005,
                "data_time": 0.005 + rng.random() * 0.001,
                "cpu_mem": 1.2e9 + rng.random() * 1e6,
            }
            for layer in LAYERS:
                m[f"grad_norm/{layer}"] = 0.5 + rng.random() * 0.1
                m[f"act/zero_frac/{layer}"] = 0.4 + rng.random() * 0.05
                m[f"update_ratio/{layer}"] = 1e-3 * (1 + rng.random() * 0.1)
            if step % 50 == 49:
                m["val/loss"] = loss * 1.05
            ev = b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + step)
            ev.metrics.update(m)
            n_events += 1
            n_values += len(m)
            if len(b.events) >= batch:
                batches.append(b.SerializeToString())
                b = runs_pb2.EventBatch(sequence=len(batches))
        if len(b.events):
            batches.append(b.SerializeToString())
        per_run.append(batches)
    return per_run, n_events, n_values


def _make_shared_batches(
    runs: int, steps: int, batch: int, seed: int, runs_per_batch: int
) -> tuple[list[list[bytes]], int, int]:
    """Batches holding ``batch`` events of each of ``runs_per_batch`` runs (the same runs as make_batches)."""
    from runwatch.v1 import runs_pb2

    singles, n_events, n_values = make_batches(runs, steps, 1, seed)
    per_group = []
    for g0 in range(0, runs, runs_per_batch):
        members = [
            [runs_pb2.EventBatch.FromString(raw) for raw in singles[r]]
            for r in range(g0, min(runs, g0 + runs_per_batch))
        ]
        out = []
        for i in range(0, steps, batch):
            b = runs_pb2.EventBatch(sequence=len(out))
            for one in members:
                for piece in one[i : i + batch]:
                    b.starts.extend(piece.starts)
                    b.events.extend(piece.events)
            out.append(b.SerializeToString())
        per_group.append(out)
    return per_group, n_events, n_values


def _full_server(
    port_q: mp.Queue, stop: mp.Event, out_q: mp.Queue, data_dir: str, http: bool = False, groups: bool = True,
    store: str | None = None,
) -> None:
    from runwatch.service.server import RunwatchServer
    from runwatch.service.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings(port=0, data_dir=Path(data_dir), http_port=0 if http else None, store=store)
        server = RunwatchServer(settings)
        if not groups:  # each batch applied and committed on its own as it is read (before groups: --no-groups)
            server.enqueue = server.ingest_as
        port_q.put(await server.start())
        if http:
            port_q.put(server.http_port)
        cpu0 = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        p = server.pipeline
        # CPU time of the whole server process (all threads): far less sensitive to other load than wall clock.
        counters = {**p.counters, "cpu_seconds": time.process_time() - cpu0, **server.group_counts}
        out_q.put(((list(p.batch_latencies), list(p.emission_latencies)), counters))
        await server.stop()

    asyncio.run(main())


def read_every_value(b) -> int:
    """The "decode" baseline after parsing: read every event's run id, step, time, metric names and values."""
    n = 0
    for ev in b.events:
        _fields = (ev.run_id, ev.step, ev.wall_time)
        for _name, _value in ev.metrics.items():
            n += 1
    return n


async def start_bare_ingest(on_batch) -> tuple[object, int]:
    """A started grpc.aio server answering StreamEvents with ``on_batch(EventBatch)`` for each batch, and its port.

    Parses each batch and acknowledges all of it; nothing else (the bare baseline's server).
    """
    import grpc

    from runwatch.v1 import runs_pb2, service_pb2

    async def stream(requests, context):
        async for raw in requests:
            b = runs_pb2.EventBatch.FromString(raw)
            on_batch(b)
            yield service_pb2.IngestAck(sequence=b.sequence, accepted=len(b.starts) + len(b.events))

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "runwatch.v1.IngestService",
                {
                    "StreamEvents": grpc.stream_stream_rpc_method_handler(
                        stream, response_serializer=service_pb2.IngestAck.SerializeToString
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _bare_server(port_q: mp.Queue, stop: mp.Event, out_q: mp.Queue, data_dir: str, read_values: bool) -> None:
    decoded = {"events": 0, "values": 0}

    def count(b) -> None:
        decoded["events"] += len(b.events)
        if read_values:
            decoded["values"] += read_every_value(b)

    async def main() -> None:
        server, port = await start_bare_ingest(count)
        port_q.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        out_q.put(([], {"accepted": decoded["events"]}))
        await server.stop(1)

    asyncio.run(main())


async def _drive(port: int, per_run: list[list[bytes]], streams: int, rate: float = 0.0) -> tuple[float, int]:
    """Send every batch over ``streams`` concurrent streams; seconds taken and events accepted.

    ``rate`` = 0: as fast as flow control lets (the throughput measurement). ``rate`` > 0: batches
    per second over all streams, each stream sending at an even pace (the latency measurement: an
    offered load the server keeps up with, so latency is processing, not a queue growing without end).
    """
    import grpc

    from runwatch.v1 import service_pb2

    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)]
    ) as channel:
        method = channel.stream_stream(
            "/runwatch.v1.IngestService/StreamEvents",
            request_serializer=None,
            response_deserializer=service_pb2.IngestAck.FromString,
        )
        groups = [per_run[i::streams] for i in range(streams)]

        live = [g for g in groups if g]
        interval = len(live) / rate if rate > 0 else 0.0

        async def paced(order: list[bytes], offset: float):
            # Streams start staggered: in step, every stream's batch i would arrive at once, a burst per interval.
            loop = asyncio.get_running_loop()
            t0 = loop.time() + offset
            for i, raw in enumerate(order):
                delay = t0 + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                yield raw

        async def one_stream(group: list[list[bytes]], offset: float) -> int:
            # Interleave the runs of this stream batch by batch, as concurrent training jobs would.
            order = [g[i] for i in range(max(len(g) for g in group)) for g in group if i < len(g)]
            call = method(paced(order, offset) if interval else iter(order))
            accepted = 0
            async for ack in call:
                accepted += ack.accepted
            return accepted

        t0 = time.perf_counter()
        accepted = sum(await asyncio.gather(*(one_stream(g, j * interval / len(live)) for j, g in enumerate(live))))
        return time.perf_counter() - t0, accepted


class DashboardLoad:
    """What an open dashboard and a Prometheus server ask of the service while it ingests (``--http``).

    One run page (its page, its curves, then its event stream, fetching the curves
    again on each ``reload`` event as the page does), the anomaly feed's stream,
    and a /metrics scrape every ``scrape_every`` seconds; each in a thread.
    """

    def __init__(self, http_port: int, scrape_every: float, run_id: str = "bench-0") -> None:
        import threading

        self.base = f"http://127.0.0.1:{http_port}"
        self.run_id = run_id
        self.scrape_every = scrape_every
        self.stopped = threading.Event()
        self.scrapes = 0
        self.reloads = 0
        self.event_bytes = 0
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self._scrape, self._page, self._feed)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()

    def _get(self, path: str) -> bytes:
        from urllib.request import urlopen

        with urlopen(self.base + path, timeout=30) as r:
            return r.read()

    def _scrape(self) -> None:
        while not self.stopped.wait(self.scrape_every):
            self._get("/metrics")
            self.scrapes += 1

    def _stream(self, path: str, on_reload=None) -> None:
        from urllib.request import urlopen

        try:
            with urlopen(self.base + path, timeout=60) as r:
                while not self.stopped.is_set():
                    line = r.readline()
                    if not line:
                        break
                    self.event_bytes += len(line)
                    if on_reload is not None and line.startswith(b"event: reload"):
                        on_reload()
        except OSError:
            pass

    def _series(self) -> None:
        self._get(f"/api/series?run={self.run_id}&width=1000")
        self.reloads += 1

    def _page(self) -> None:
        while not self.stopped.is_set():  # the run exists once its first batch is in
            try:
                self._get(f"/runs/{self.run_id}")
                self._get(f"/api/run?run={self.run_id}")
                self._series()
                break
            except OSError:
                time.sleep(0.05)
        self._stream(f"/api/stream?run={self.run_id}&since=0", on_reload=self._series)

    def _feed(self) -> None:
        self._stream("/api/stream")


def measure(
    kind: str, per_run, streams: int, scrape_every: float = 1.0, store: str | None = None, rate: float = 0.0
) -> tuple[float, int, list[float], dict]:
    """One server of ``kind`` in its own process, driven with ``per_run``; ``store`` = a PostgreSQL URL or SQLite;
    ``rate`` > 0: the client sends that many batches per second (see :func:`_drive`)."""
    ctx = mp.get_context("spawn")
    port_q, out_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    with tempfile.TemporaryDirectory() as tmp:
        if kind in ("full", "full+http", "full-nogroups"):
            proc = ctx.Process(
                target=_full_server,
                args=(port_q, stop, out_q, tmp, kind == "full+http", kind != "full-nogroups", store),
                daemon=True,
            )
        else:
            proc = ctx.Process(target=_bare_server, args=(port_q, stop, out_q, tmp, kind == "decode"), daemon=True)
        proc.start()
        port = port_q.get(timeout=60)
        load = None
        if kind == "full+http":
            with DashboardLoad(port_q.get(timeout=60), scrape_every) as load:
                seconds, accepted = asyncio.run(_drive(port, per_run, streams, rate))
        else:
            seconds, accepted = asyncio.run(_drive(port, per_run, streams, rate))
        stop.set()
        latencies, counters = out_q.get(timeout=60)
        if load is not None:
            counters["dashboard"] = (load.scrapes, load.reloads, load.event_bytes)
        proc.join(timeout=30)
        if kind != "parse" and kind != "decode":
            counters["store_bytes"] = _store_bytes(store, Path(tmp))
    return seconds, accepted, latencies, counters


def _empty_store_bytes(store: str | None) -> int:
    """Bytes of a store with its schema and nothing in it (subtracted, so short runs give a fair per-event size)."""
    from runwatch.service.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        location = store or Path(tmp) / "runwatch.db"
        RunStore(location).close()
        return _store_bytes(store, Path(tmp))


def _store_bytes(store: str | None, data_dir: Path) -> int:
    """Bytes the store takes on disk: the SQLite file and its WAL, or the PostgreSQL database."""
    if store is None:
        return sum(f.stat().st_size for f in data_dir.glob("runwatch.db*"))
    import psycopg

    with psycopg.connect(store) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def in_process(per_run: list[list[bytes]], n_events: int, repeats: int, group: int = 0) -> dict[str, float]:
    """CPU microseconds per event in this process: the pipeline's apply path and the baselines.

    With ``group`` > 0 the pipeline applies the batches in groups of that many (one commit
    and one detection call per run each, as the server does under load).

    Batches go in the order the gRPC streams interleave them. Each repeat runs the
    baseline loops, then a fresh pipeline (new SQLite store) over every batch; the
    best of the repeats is kept for each. ``pipeline`` is this thread's CPU time
    (what limits a server's event loop), ``store_writer`` the extra CPU of the
    process (SQLite on the writer thread) over the same span.
    """
    import gc

    from runwatch.service.event_scan import JIT, scan_batch
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    order = [g[i] for i in range(max(len(g) for g in per_run)) for g in per_run if i < len(g)]

    def loop(read) -> float:
        t0 = time.thread_time()
        for raw in order:
            read(raw)
        return time.thread_time() - t0

    baselines = {
        "parse": runs_pb2.EventBatch.FromString,
        "decode": lambda raw: read_every_value(runs_pb2.EventBatch.FromString(raw)),
    }
    if JIT:  # without compiled kernels (RUNWATCH_JIT=0) the byte reader reads nothing
        baselines["compiled"] = scan_batch

    def pipeline() -> tuple[float, float, dict]:
        with tempfile.TemporaryDirectory() as tmp:
            settings = ServiceSettings(port=0, data_dir=Path(tmp))
            store = RunStore(settings.db_path)
            p = DetectionPipeline(settings, store)
            t0, c0 = time.thread_time(), time.process_time()
            if group > 0:
                durable = []
                for i in range(0, len(order), group):
                    p.begin_group()
                    results = [p.ingest_bytes(raw) for raw in order[i : i + group]]
                    p.end_group()
                    durable += [r.durable for r in results]
            else:
                durable = [p.ingest_bytes(raw).durable for raw in order]
            thread = time.thread_time() - t0
            for fut in durable:
                fut.result()
            process = time.process_time() - c0
            store.close()
        return thread, process - thread, dict(p.counters)

    from runwatch.models.kernels import warm_up

    warm_up()
    pipeline()  # loads compiled code and warms caches
    scan_batch(order[-1])
    best = dict.fromkeys([*baselines, "pipeline", "store_writer"], math.inf)
    for _ in range(repeats):
        for name, read in baselines.items():
            gc.collect()
            best[name] = min(best[name], loop(read))
        gc.collect()
        thread, writer, counters = pipeline()
        best["pipeline"] = min(best["pipeline"], thread)
        best["store_writer"] = min(best["store_writer"], writer)
    out = {k: v / n_events * 1e6 for k, v in best.items()}
    out["accepted"] = counters["accepted"]
    out["anomalies"] = counters["anomalies"]
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


#: (label, runs, steps, events per run per batch, runs per batch, streams) of ``--shapes``.
SHAPES = (
    ("1 event/batch, 16 streams", 16, 400, 1, 1, 16),
    ("10 events/batch", 16, 1500, 10, 1, 4),
    ("100 events/batch", 16, 4000, 100, 1, 4),
    ("500 events/batch", 16, 5000, 500, 1, 4),
    ("1,000 runs, 64 runs x 1 event/batch", 1000, 40, 1, 64, 16),
    ("1,000 runs, 64 runs x 10 events/batch", 1000, 60, 10, 64, 16),
)
def run_shapes(args: argparse.Namespace) -> None:
    """Every shape of SHAPES against the bare parse-only service, one table (``--shapes``)."""
    import shlex
    import sys

    load_before = os.getloadavg()
    rows = []
    for label, runs, steps, batch, runs_per_batch, streams in SHAPES:
        steps = max(1, int(steps * args.scale))
        per_run, n_events, _ = make_batches(runs, steps, batch, args.seed, runs_per_batch)
        best: dict[str, tuple] = {}
        for _ in range(args.repeats):
            for kind in ("parse", "full", *(["full-nogroups"] if args.no_groups else [])):
                seconds, _, latencies, counters = measure(kind, per_run, streams)
                if kind not in best or seconds < best[kind][0]:
                    best[kind] = (seconds, latencies, counters)
        full_s, (batch_lat, anomaly_lat), counters = best["full"]
        parse_eps, full_eps = n_events / best["parse"][0], n_events / full_s
        row = (
            label, f"{n_events:,}", f"{full_eps:,.0f}", f"{parse_eps:,.0f}", f"{full_eps / parse_eps:.2f}",
            f"{percentile(batch_lat, 0.5) * 1e3:.1f} / {percentile(batch_lat, 0.99) * 1e3:.1f}",
            f"{percentile(anomaly_lat, 0.5) * 1e3:.1f} / {percentile(anomaly_lat, 0.99) * 1e3:.1f}",
            f"{counters.get('accepted', '-')}", f"{counters.get('anomalies', '-')}",
            f"{counters['cpu_seconds'] / n_events * 1e6:.1f}",
        )  # fmt: skip
        if args.no_groups:
            row = (*row, f"{n_events / best['full-nogroups'][0]:,.0f}")
        if args.paced_load > 0:
            # The same batches offered at a fraction of the throughput just measured: the latency a run
            # sees when the server keeps up (at full speed the client outruns it and latency is queueing).
            n_batches = sum(len(g) for g in per_run)
            rate = args.paced_load * full_eps * n_batches / n_events
            paced_s, _, (paced_batch, paced_anomaly), _ = measure("full", per_run, streams, rate=rate)
            row = (
                *row, f"{n_events / paced_s:,.0f}",
                f"{percentile(paced_batch, 0.5) * 1e3:.1f} / {percentile(paced_batch, 0.99) * 1e3:.1f}",
                f"{percentile(paced_anomaly, 0.5) * 1e3:.1f} / {percentile(paced_anomaly, 0.99) * 1e3:.1f}",
            )  # fmt: skip
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
        if counters.get("groups"):
            print(
                f"    ({counters['batches'] / counters['groups']:.1f} batches per group, {counters['waited_ms'] / counters['groups']:.1f} ms waited per group)",
                flush=True,
            )
    header = (
        "shape", "events", "pipeline events/s", "bare gRPC parse-only events/s", "ratio",
        "batch -> detected p50 / p99 ms", "batch -> anomaly p50 / p99 ms", "accepted", "anomalies",
        "server CPU us/event", *(["pipeline events/s, batches one by one"] if args.no_groups else []),
        *(
            [f"offered {args.paced_load:g}x: events/s", f"offered {args.paced_load:g}x: batch -> detected p50 / p99 ms",
             f"offered {args.paced_load:g}x: batch -> anomaly p50 / p99 ms"]
            if args.paced_load > 0 else []
        ),
    )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    command = "python bench/ingest_throughput.py " + shlex.join(sys.argv[1:])
    note = (
        f"Best of {args.repeats} per shape and service; load average (1 min) {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs (client, servers and anything else on the "
        "machine share them: numbers are noisy). Latencies are measured inside the pipeline process, from a "
        "batch's arrival off its stream (it then waits for its group) to the end of its group's detection; "
        "server CPU is the whole pipeline process's (all threads) per event."
        + (
            f" The *offered {args.paced_load:g}x* columns send the same batches again, each stream at an even pace, "
            f"at {args.paced_load:g} times the pipeline's events/s of that row: the latency when the server keeps up "
            "(the columns before them are measured with the client sending as fast as it can, where a batch's "
            "latency is mostly the time it queues behind the others)."
            if args.paced_load > 0 else ""
        )
    )
    body = "\n".join(
        ["### Ingest throughput by batch shape (`bench/ingest_throughput.py --shapes`)", "", f"    {command}", "",
         note, "", *lines]
    )  # fmt: skip
    print()
    print(body)
    if args.write:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: import from the repository root
        from bench.sections import write_marked

        write_marked(args.write, "ingest-shapes", body)
        print(f"\nwrote the section into {args.write}")


#: (label, runs, steps, events per run per batch, streams) of ``--stores``.
STORE_SHAPES = (
    ("500 events/batch", 16, 5000, 500, 4),
    ("10 events/batch", 16, 1500, 10, 4),
    ("1 event/batch, 16 streams", 16, 400, 1, 16),
)


def run_stores(args: argparse.Namespace) -> None:
    """The full pipeline on SQLite and on PostgreSQL, same shapes, side by side (``--stores``)."""
    import shlex
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if isinstance(bin_dir, str):
        raise SystemExit(bin_dir)
    pg = PostgresServer(bin_dir).start(durable=True)
    load_before = os.getloadavg()
    rows = []
    try:
        for label, runs, steps, batch, streams in STORE_SHAPES:
            steps = max(1, int(steps * args.scale))
            per_run, n_events, _ = make_batches(runs, steps, batch, args.seed)
            for backend in ("sqlite", "postgresql"):
                best = None
                for _ in range(args.repeats):
                    store = pg.new_database() if backend == "postgresql" else None
                    empty = _empty_store_bytes(store)
                    seconds, _, (batch_lat, _), counters = measure("full", per_run, streams, store=store)
                    counters["store_bytes"] -= empty
                    if best is None or seconds < best[0]:
                        best = (seconds, batch_lat, counters)
                seconds, batch_lat, counters = best
                row = (
                    label, backend, f"{n_events:,}", f"{n_events / seconds:,.0f}",
                    f"{counters['cpu_seconds'] / n_events * 1e6:.1f}",
                    f"{percentile(batch_lat, 0.5) * 1e3:.1f} / {percentile(batch_lat, 0.99) * 1e3:.1f}",
                    f"{counters['store_bytes'] / n_events * 1e6 / 2**20:,.0f}", f"{counters.get('accepted', '-')}",
                )  # fmt: skip
                rows.append(row)
                print("  " + " | ".join(row), flush=True)
    finally:
        pg.stop()
    header = (
        "shape", "store", "events", "pipeline events/s", "server CPU us/event", "batch -> detected p50 / p99 ms",
        "store MiB per million events", "accepted",
    )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    command = "python bench/ingest_throughput.py " + shlex.join(sys.argv[1:])
    note = (
        f"Best of {args.repeats} per shape and store; load average (1 min) {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs shared by the client, the server and PostgreSQL. "
        "PostgreSQL 15 (Debian) in a throwaway cluster on loopback with fsync and full-page writes on, defaults "
        "otherwise, a fresh database per measurement; SQLite is the embedded default (WAL). Server CPU is the "
        "runwatch process's only (PostgreSQL's own processes are not in it). Store size: SQLite file + WAL, or "
        "`pg_database_size`, after the run, less the same store empty (schema only); every event is stored, 16 "
        "metrics each."
    )
    body = "\n".join(
        ["### Ingest by store backend (`bench/ingest_throughput.py --stores`)", "", f"    {command}", "", note, "",
         *lines]
    )  # fmt: skip
    print()
    print(body)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from bench.sections import write_marked

        write_marked(args.write, "ingest-stores", body)
        print(f"\nwrote the section into {args.write}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=500, help="events per EventBatch")
    p.add_argument("--streams", type=int, default=4, help="concurrent StreamEvents calls")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-process", action="store_true", help="time the apply path in this process (CPU), no gRPC")
    p.add_argument(
        "--http", action="store_true",
        help="also run the pipeline with the dashboard on (--http-port) under load: a run page's event stream, "
        "the anomaly feed and a /metrics scrape per --scrape-every seconds; kinds alternate, best of --repeats",
    )  # fmt: skip
    p.add_argument("--scrape-every", type=float, default=1.0, help="with --http: seconds between /metrics scrapes")
    p.add_argument(
        "--only-full", action="store_true", help="skip the bare gRPC services (with --http: the overhead only)"
    )
    p.add_argument("--group", type=int, default=0, help="with --in-process: apply the batches in groups of this many")
    p.add_argument("--runs-per-batch", type=int, default=1, help="runs whose events each batch holds")
    p.add_argument("--shapes", action="store_true", help="every shape of SHAPES side by side, one table")
    p.add_argument(
        "--no-groups", action="store_true",
        help="with --shapes: also the pipeline applying and committing each batch on its own (no groups)",
    )  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0, help="with --shapes: multiply each shape's steps")
    p.add_argument(
        "--paced-load", type=float, default=0.5,
        help="with --shapes: also measure latency with the batches offered at this fraction of the measured "
        "throughput (0 = off)",
    )  # fmt: skip
    p.add_argument("--write", default="", help="with --shapes / --stores: markdown file whose section to replace")
    p.add_argument(
        "--stores", action="store_true",
        help="the full pipeline on SQLite and on a throwaway PostgreSQL (initdb/pg_ctl), a few shapes side by side",
    )  # fmt: skip
    args = p.parse_args()
    if args.stores:
        run_stores(args)
        return
    if args.shapes:
        run_shapes(args)
        return
    load_before = os.getloadavg()

    per_run, n_events, n_values = make_batches(args.runs, args.steps, args.batch, args.seed, args.runs_per_batch)
    n_batches = sum(len(b) for b in per_run)
    print(
        f"workload: {args.runs} runs x {args.steps} steps = {n_events} events, {n_values / n_events:.1f} metrics/event, "
        f"{n_batches} batches of <= {args.batch} events, {args.streams} streams"
    )
    if args.in_process:
        r = in_process(per_run, n_events, args.repeats, args.group)
        grouped = f", in groups of {args.group} batches" if args.group else ""
        print(
            f"in one process, CPU time per event, best of {args.repeats}{grouped} "
            f"(accepted {r['accepted']}, anomalies {r['anomalies']}):"
        )
        labels = {
            "parse": "parse only",
            "decode": "parse + read every value",
            "compiled": "compiled read of every value (no parse)",
        }
        for name, label in labels.items():
            if name not in r:
                continue
            print(f"  {label:42} {r[name]:6.2f} us   ratio pipeline / this (events/s) {r[name] / r['pipeline']:.2f}")
        print(
            f"  {'pipeline apply path (event loop)':42} {r['pipeline']:6.2f} us   "
            f"(+{r['store_writer']:.2f} us on the store's writer thread)"
        )
        print(
            f"load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
        )
        return
    rows = {}
    cpu_runs: dict[str, list[dict]] = {"full": [], "full+http": []}
    kinds = ["full"] if args.only_full else ["parse", "decode", "full"]
    if args.http:
        kinds.append("full+http")
    # Repeats go round the kinds in turn, so slow drifts of the machine's load hit each kind alike.
    for _ in range(args.repeats):
        for kind in kinds:
            seconds, accepted, latencies, counters = measure(kind, per_run, args.streams, args.scrape_every)
            extra = ""
            if "dashboard" in counters:
                scrapes, fetches, streamed = counters["dashboard"]
                extra = f" (dashboard: {scrapes} scrapes, {fetches} curve fetches, {streamed:,} event-stream bytes)"
            print(f"  {kind}: {n_events / seconds:,.0f} events/s{extra}", flush=True)
            if kind in cpu_runs:
                cpu_runs[kind].append(counters)
            if kind not in rows or seconds < rows[kind][0]:
                rows[kind] = (seconds, accepted, latencies, counters)
    print()
    print(
        f"best of {args.repeats}; load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    print("| service | events/s | metric values/s | accepted events | anomalies |")
    print("|---|---:|---:|---:|---:|")
    labels = (
        ("parse", "bare gRPC: parse only"),
        ("decode", "bare gRPC: parse + read every value"),
        ("full", "runwatch pipeline"),
        ("full+http", f"runwatch pipeline + dashboard and /metrics (scraped every {args.scrape_every:g} s)"),
    )
    labels = tuple((kind, label) for kind, label in labels if kind in rows)
    for kind, label in labels:
        seconds, accepted, _, counters = rows[kind]
        print(
            f"| {label} | {n_events / seconds:,.0f} | {n_values / seconds:,.0f} | {counters.get('accepted', accepted)} "
            f"| {counters.get('anomalies', '-')} |"
        )
    print()
    for kind, label in labels:
        if kind in ("parse", "decode"):
            print(f"ratio pipeline / {label} (events/s): {rows[kind][0] / rows['full'][0]:.2f}")
    if "full+http" in rows:
        cost = 1 - rows["full"][0] / rows["full+http"][0]
        print(f"dashboard + /metrics cost on ingest throughput: {cost * 100:+.1f} % (best of {args.repeats} each)")
        cpu = {k: min(c["cpu_seconds"] for c in cpu_runs[k]) / n_events * 1e6 for k in ("full", "full+http")}
        print(
            f"server CPU per event (whole process, least of {args.repeats}): {cpu['full']:.2f} us without, "
            f"{cpu['full+http']:.2f} us with the dashboard: {(cpu['full+http'] / cpu['full'] - 1) * 100:+.1f} %"
        )
    batch_lat, anomaly_lat = rows["full"][2]
    print()
    print("| latency in the pipeline | samples | p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for label, lat in (
        ("batch arrival -> detection done", batch_lat),
        ("batch arrival -> anomaly emitted", anomaly_lat),
    ):
        if lat:
            print(
                f"| {label} | {len(lat)} | {percentile(lat, 0.5) * 1e3:.2f} ms | {percentile(lat, 0.99) * 1e3:.2f} ms "
                f"| {max(lat) * 1e3:.2f} ms |"
            )


if __name__ == "__main__":
    main()
