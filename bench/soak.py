"""Soak: many concurrent runs for minutes; memory must stay flat, nothing lost, no anomaly published twice.

``--via grpc``: one ``runwatch serve`` process; ``--runs`` runs logged through
the SDK (``--clients`` RunwatchClients, each multiplexing its share of the runs
on one stream, as a host running several jobs does), one step per run every
``--step-every-s`` seconds with the metrics a training loop logs. A few runs
spike (loss spikes), a few go NaN, and ``--pause-fraction`` of them stop
logging once for longer than ``--idle-evict-s`` (they are evicted to the store
and restored when they resume). A WatchAnomalies stream counts every anomaly
revision it receives. At the end every run finishes; events lost = steps
logged minus events the server stored (``ListRuns``), anomalies duplicated =
revisions received more than once. The server is then stopped with SIGTERM
(its exit code and time are reported).

``--via kafka``: a Tansu broker (tests/kafka_broker.py) and two ``runwatch
serve`` instances in one consumer group; every run's steps are produced to the
ingest topic (one record per run every ``--flush-interval`` seconds). The
broker is frozen once (SIGSTOP for ``--pause-broker-s``, at a third of the
duration) and the second instance is SIGKILLed at two thirds. Events lost =
steps produced that are in neither instance's store once the survivor caught
up; anomalies duplicated = (id, revision) pairs found more than once on the
anomaly topic.

Both modes sample the servers' RSS every ``--sample-s`` seconds and print a table.

    python -m bench.soak --runs 1000 --minutes 10 --via grpc
    python -m bench.soak --runs 1000 --minutes 10 --via kafka
    python -m bench.soak --runs 1000 --minutes 3 --via grpc     # on 2 shared cores (see bench/README.md)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

PROJECT = "soak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SimRun:
    """One simulated training run: what it logs at each step, and when it goes quiet."""

    run_id: str
    seed: int
    spike_every: int = 0  # a loss spike every this many steps (0: none)
    nan_at: int = -1  # the loss is NaN from this step on (-1: never)
    pause: tuple[float, float] | None = None  # seconds since the start during which it logs nothing
    step: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def next_metrics(self) -> dict[str, float]:
        s = self.step
        loss = 2.3 * (1.0 + s / 50.0) ** -0.5 * (1.0 + self.rng.gauss(0, 0.03))
        if self.spike_every and s % self.spike_every == self.spike_every - 1:
            loss *= 8.0
        if 0 <= self.nan_at <= s:
            loss = math.nan
        self.step += 1
        return {
            "loss": loss,
            "lr": 1e-3,
            "grad_norm": 1.0 + 0.2 * self.rng.random(),
            "step_time": 0.1 + 0.01 * self.rng.random(),
            "data_time": 0.01 + 0.002 * self.rng.random(),
        }

    def quiet(self, t: float) -> bool:
        return self.pause is not None and self.pause[0] <= t < self.pause[1]


def make_runs(n: int, duration: float, pause_fraction: float, pause_s: float, seed: int = 0) -> list[SimRun]:
    rng = random.Random(seed)
    runs = []
    for i in range(n):
        r = SimRun(f"soak-{i:05d}", seed=i)
        u = rng.random()
        if u < 0.05:
            r.spike_every = 150 + rng.randrange(50)
        elif u < 0.07:
            r.nan_at = rng.randrange(60, 200)
        if rng.random() < pause_fraction and duration > pause_s + 30:
            start = rng.uniform(10, max(duration - pause_s - 20, 11))
            r.pause = (start, start + pause_s)
        runs.append(r)
    return runs


def rss_mib(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def scrape(port: int) -> dict[str, float]:
    """The server's Prometheus metrics (unlabelled ones, and labelled ones summed), or {} if it does not answer."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+|NaN)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.time() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"runwatch serve exited with {proc.returncode}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError("runwatch serve did not start")


class Sampler(threading.Thread):
    """Calls ``sample(t)`` every ``every`` seconds (and once at the start) until stopped."""

    def __init__(self, every: float, sample) -> None:
        super().__init__(daemon=True)
        self.every, self.sample = every, sample
        self.rows: list[dict] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            self.rows.append(self.sample(time.monotonic() - self.t0))
            if self.stop_event.wait(self.every):
                break

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
        self.rows.append(self.sample(time.monotonic() - self.t0))


def print_table(columns: list[tuple[str, str]], rows: list[dict]) -> None:
    print("| " + " | ".join(title for _, title in columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(r.get(key)) for key, _ in columns) + " |")


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def flatness(values: list[float]) -> str:
    """Growth of RSS from the first sample after warm-up to the last."""
    vals = [v for v in values if not math.isnan(v)]
    if len(vals) < 3:
        return "n/a"
    base = vals[1]  # the first sample is before the runs opened
    half = vals[len(vals) // 2 :]
    return (
        f"{vals[-1] - base:+.1f} MiB ({100 * (vals[-1] - base) / base:+.1f} %) from {base:.1f} MiB after warm-up; "
        f"second half of the soak {half[-1] - half[0]:+.1f} MiB (range {max(half) - min(half):.1f} MiB)"
    )


# -- gRPC -----------------------------------------------------------------------------------------


def soak_grpc(args) -> int:
    import grpc

    from runwatch.client import RunwatchClient
    from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

    duration = args.minutes * 60
    data = Path(tempfile.mkdtemp(prefix="rw-soak-"))
    port, mport = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "runwatch.service.cli", "serve", "--port", str(port), "--data-dir", str(data),
        "--metrics-port", str(mport), "--idle-evict-s", str(args.idle_evict_s), "--log-level", "WARNING",
    ]  # fmt: skip
    with open(data / "serve.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_serving(port, server)
    target = f"127.0.0.1:{port}"
    runs = make_runs(args.runs, duration, args.pause_fraction, args.idle_evict_s + 30)

    seen: Counter = Counter()
    channel = grpc.insecure_channel(target)
    watch = service_pb2_grpc.WatchServiceStub(channel).WatchAnomalies(service_pb2.WatchRequest(project=PROJECT))

    def read_anomalies() -> None:
        try:
            for a in watch:
                seen[(a.id, a.revision)] += 1
        except grpc.RpcError:
            pass

    threading.Thread(target=read_anomalies, daemon=True).start()
    clients = [
        RunwatchClient(
            target, flush_interval=args.flush_interval, max_queue=200_000, anomaly_grace=0.0, flush_on_exit=False
        )
        for _ in range(args.clients)
    ]
    handles = [clients[i % len(clients)].start_run(run_id=r.run_id, project=PROJECT) for i, r in enumerate(runs)]

    def sample(t: float) -> dict:
        m = scrape(mport)
        acked = sum(c.stats().acked for c in clients)
        return {
            "t": round(t), "rss": rss_mib(server.pid), "active": int(m.get("runwatch_active_runs", -1)),
            "evicted": int(m.get("runwatch_evicted_runs_total", 0)), "restored": int(m.get("runwatch_restored_runs_total", 0)),
            "acked": acked, "anomalies": sum(seen.values()),
        }  # fmt: skip

    sampler = Sampler(args.sample_s, sample)
    sampler.start()
    t0 = time.monotonic()
    next_tick = t0
    while (t := time.monotonic() - t0) < duration:
        for r, h in zip(runs, handles):
            if not r.quiet(t):
                h.log(r.next_metrics(), step=r.step)
        next_tick += args.step_every_s
        time.sleep(max(next_tick - time.monotonic(), 0))
    for h in handles:
        h.finish(timeout=0)
    flushed = all(c.flush(timeout=120) for c in clients)
    time.sleep(2.0)  # the last anomalies reach the watcher
    sampler.stop()
    stats = [c.stats() for c in clients]
    stub = service_pb2_grpc.RunServiceStub(channel)
    listed = stub.ListRuns(service_pb2.ListRunsRequest(project=PROJECT, limit=args.runs + 10), timeout=60).runs
    stored = {r.run_id: r.event_count for r in listed}
    logged = {r.run_id: r.step for r in runs}
    lost = sum(max(n - stored.get(run_id, 0), 0) for run_id, n in logged.items())
    finished = sum(r.status == runs_pb2.RUN_STATUS_FINISHED for r in listed)
    duplicated = sum(n - 1 for n in seen.values())
    watch.cancel()
    for c in clients:
        c.close(timeout=10)
    channel.close()
    t_term = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(60)
    took = time.monotonic() - t_term

    print(f"\nsoak via gRPC: {args.runs} runs, {args.minutes:g} min, {args.clients} SDK clients (one stream each), "
          f"a step per run every {args.step_every_s:g} s, idle_evict_s {args.idle_evict_s:g}")  # fmt: skip
    print_table(
        [("t", "t (s)"), ("rss", "server RSS (MiB)"), ("active", "runs in memory"), ("evicted", "evicted (total)"),
         ("restored", "restored (total)"), ("acked", "items acked"), ("anomalies", "anomaly revisions watched")],
        sampler.rows,
    )  # fmt: skip
    print(f"\nRSS: {flatness([r['rss'] for r in sampler.rows])}")
    print(f"events logged {sum(logged.values()):,}, stored {sum(stored.values()):,}: lost {lost}")
    print(f"runs finished {finished} of {args.runs}; client flush complete: {flushed}; "
          f"dropped {sum(s.dropped for s in stats)}, rejected {sum(s.rejected for s in stats)}")  # fmt: skip
    print(f"anomaly revisions {sum(seen.values())} ({len(seen)} distinct): duplicated {duplicated}")
    print(f"SIGTERM: exit {code} after {took:.1f} s")
    return 0 if lost == 0 and duplicated == 0 and code == 0 else 1


# -- Kafka ----------------------------------------------------------------------------------------


def stored_steps(db: Path) -> dict[str, set[int]]:
    """Every (run, step) in one instance's store (read beside the running server: WAL)."""
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    out: dict[str, set[int]] = {}
    if not db.exists():
        return out
    store = RunStore(db)
    try:
        for run_id, blob in store._read("SELECT run_id, events FROM event_chunks"):
            out.setdefault(run_id, set()).update(ev.step for ev in runs_pb2.EventBatch.FromString(blob).events)
    finally:
        store.close()
    return out


def soak_kafka(args) -> int:
    from kafka import KafkaProducer
    from kafka_broker import TansuBroker, TopicReader, kafka_settings, serve_process

    from runwatch.service.kafka import codecs
    from runwatch.v1 import runs_pb2

    duration = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="rw-soak-kafka-"))
    broker = TansuBroker(work / "broker.log").start()
    k = kafka_settings(broker.bootstrap)
    mports = [free_port(), free_port()]
    env = {"RUNWATCH_IDLE_EVICT_S": str(args.idle_evict_s)}
    procs = []
    for i, name in enumerate("ab"):
        procs.append(serve_process(k, work / name, work / f"{name}.log", RUNWATCH_METRICS_PORT=str(mports[i]), **env))
        deadline = time.monotonic() + 90
        while "assigned partitions" not in (work / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise RuntimeError(f"instance {name} did not start; see {work / f'{name}.log'}")
            time.sleep(0.2)
    # Both take part in the group before the load starts.
    time.sleep(8)
    runs = make_runs(args.runs, duration, args.pause_fraction, args.idle_evict_s + 30)
    producer = KafkaProducer(bootstrap_servers=k.bootstrap, linger_ms=20, acks="all", retries=10**6,
                             max_in_flight_requests_per_connection=1, delivery_timeout_ms=300_000)  # fmt: skip
    failed: list[str] = []
    produced = Counter()
    pending: dict[str, list] = {r.run_id: [] for r in runs}
    started: set[str] = set()
    events = {"n": 0}

    def flush_run(r: SimRun) -> None:
        steps = pending[r.run_id]
        if not steps and r.run_id in started:
            return
        b = runs_pb2.EventBatch()
        if r.run_id not in started:
            b.starts.add(run_id=r.run_id, project=PROJECT, start_time=time.time())
            started.add(r.run_id)
        for step, wall, metrics in steps:
            b.events.add(run_id=r.run_id, step=step, wall_time=wall).metrics.update(metrics)
        value, headers = codecs.encode_batch(b)
        fut = producer.send(k.ingest_topic, key=r.run_id.encode(), value=value, headers=headers)
        fut.add_errback(lambda exc, rid=r.run_id: failed.append(f"{rid}: {exc}"))
        produced[r.run_id] += len(steps)
        events["n"] += len(steps)
        steps.clear()

    def sample(t: float) -> dict:
        m = [scrape(p) for p in mports]
        return {
            "t": round(t), "rss_a": rss_mib(procs[0].pid), "rss_b": rss_mib(procs[1].pid) if procs[1].poll() is None else float("nan"),
            "produced": events["n"], "consumed": int(sum(x.get("runwatch_kafka_events_total", 0) for x in m)),
            "active": int(sum(x.get("runwatch_active_runs", 0) for x in m)),
            "evicted": int(sum(x.get("runwatch_evicted_runs_total", 0) for x in m)),
            "note": note["text"],
        }  # fmt: skip

    note = {"text": ""}
    sampler = Sampler(args.sample_s, sample)
    sampler.start()
    t0 = time.monotonic()
    next_tick, next_flush = t0, t0 + args.flush_interval
    paused_at = killed_at = None
    while (t := time.monotonic() - t0) < duration:
        for r in runs:
            if not r.quiet(t):
                pending[r.run_id].append((r.step, time.time(), r.next_metrics()))
        if time.monotonic() >= next_flush:
            for r in runs:
                flush_run(r)
            next_flush += args.flush_interval
        if paused_at is None and t >= duration / 3:
            broker.pause()
            paused_at = t
            note["text"] = "broker paused"
        if (
            paused_at is not None
            and broker.proc is not None
            and t >= paused_at + args.pause_broker_s
            and note["text"] == "broker paused"
        ):
            broker.resume()
            note["text"] = "broker resumed"
        if killed_at is None and t >= 2 * duration / 3:
            procs[1].send_signal(signal.SIGKILL)
            procs[1].wait(10)
            killed_at = t
            note["text"] = "b SIGKILLed"
        next_tick += args.step_every_s
        time.sleep(max(next_tick - time.monotonic(), 0))
    if note["text"] == "broker paused":
        broker.resume()
    for r in runs:
        flush_run(r)
    producer.flush(timeout=300)
    producer.close()
    total = sum(produced.values())
    # Wait for the survivor to catch up: every produced step in one of the two stores.
    deadline = time.monotonic() + 300
    while True:
        union: dict[str, set[int]] = {}
        for name in "ab":
            for run_id, steps in stored_steps(work / name / "runwatch.db").items():
                union.setdefault(run_id, set()).update(steps)
        lost = sum(len(set(range(produced[r.run_id])) - union.get(r.run_id, set())) for r in runs)
        if lost == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    time.sleep(3)  # the anomaly topic takes the survivor's last cycle
    sampler.stop()
    reader = TopicReader(k.bootstrap, k.anomaly_topic)
    records = reader.read_until(lambda r: False, timeout=10)
    reader.close()
    got = Counter()
    for rec in records:
        a = codecs.decode_anomaly(rec.value, rec.headers)
        got[(a.id, a.revision)] += 1
    duplicated = sum(n - 1 for n in got.values())
    t_term = time.monotonic()
    procs[0].send_signal(signal.SIGTERM)
    code = procs[0].wait(60)
    took = time.monotonic() - t_term
    broker.stop()

    print(f"\nsoak via Kafka: {args.runs} runs, {args.minutes:g} min, 2 instances, a step per run every "
          f"{args.step_every_s:g} s, a record per run every {args.flush_interval:g} s; broker paused "
          f"{args.pause_broker_s:g} s at {paused_at:.0f} s, instance b SIGKILLed at {killed_at:.0f} s")  # fmt: skip
    print_table(
        [("t", "t (s)"), ("rss_a", "RSS a (MiB)"), ("rss_b", "RSS b (MiB)"), ("produced", "events produced"),
         ("consumed", "events consumed (live instances)"), ("active", "runs in memory"), ("evicted", "evicted (total)"),
         ("note", "")],
        sampler.rows,
    )  # fmt: skip
    print(f"\nRSS a: {flatness([r['rss_a'] for r in sampler.rows])}")
    print(f"events produced {total:,}: lost {lost} (in neither store); producer failures {len(failed)}")
    print(f"anomaly records {sum(got.values())} ({len(got)} distinct id+revision): duplicated {duplicated}")
    print(f"SIGTERM of the survivor: exit {code} after {took:.1f} s; logs in {work}")
    return 0 if lost == 0 and code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--via", choices=("grpc", "kafka"), default="grpc")
    p.add_argument("--clients", type=int, default=50, help="gRPC: SDK clients (streams) sharing the runs")
    p.add_argument("--step-every-s", type=float, default=1.0, help="each run logs one step this often")
    p.add_argument("--flush-interval", type=float, default=1.0, help="SDK batching period / Kafka record period (s)")
    p.add_argument("--idle-evict-s", type=float, default=60.0, help="server setting; runs that pause outlast it")
    p.add_argument("--pause-fraction", type=float, default=0.1, help="runs that go quiet once for idle_evict_s + 30 s")
    p.add_argument("--pause-broker-s", type=float, default=15.0, help="kafka: how long the broker is frozen")
    p.add_argument("--sample-s", type=float, default=30.0, help="RSS sampling period")
    args = p.parse_args(argv)
    os.environ.setdefault("RUNWATCH_LOG_LEVEL", "WARNING")
    return soak_grpc(args) if args.via == "grpc" else soak_kafka(args)


if __name__ == "__main__":
    raise SystemExit(main())
