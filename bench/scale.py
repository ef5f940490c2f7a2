"""How runwatch's cost grows with active runs and with instances (issue 16, "scale on paper and in a simulation").

**Active runs.** ``N`` concurrent runs go through one
:class:`~runwatch.service.pipeline.DetectionPipeline` with the service's
default settings: every diagnostic and the learned detectors on, SQLite
store, ``max_active_runs`` 10,000 (beyond it the least recently active runs
are checkpointed to the store and restored on their next batch, exactly as
the service does). Each run opens and sends ``--warmup`` steps, then
``--rounds`` rounds in which every run, in turn, sends one batch of
``--batch`` events (SDK-like metrics of :func:`bench.memory_per_run.step_metrics`).
Measured over the rounds: process CPU time per event (every thread: the
store writer too), wall time per event, RSS of the process, runs in memory
and evicted/restored; and the store's size per million events stored.

**Instances.** The same kind of traffic (``--instance-runs`` runs) split by
run over 1, 2 and 4 processes, as Kafka partitions split runs between the
instances of one consumer group, each with its own pipeline and store,
started together: the aggregate events/s. The broker is left out (its cost
against a bare consumer is ``bench/kafka_throughput.py``'s), so this shows
how the detection and store work itself spreads over cores.

    python -m bench.scale                                   # 1k, 10k, 100k runs; 1, 2, 4 instances (~25 min)
    python -m bench.scale --runs 1000 10000 --instances 1 2 # quicker
    python -m bench.scale --write bench/RESULTS.md          # also rewrite its scale section
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.memory_per_run import step_metrics
from bench.sections import write_marked
from runwatch.v1 import runs_pb2


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_batch(index: int, first_step: int, n: int, open_run: bool) -> bytes:
    """One serialized batch of run ``index``: ``n`` steps from ``first_step`` (and its RunStart when ``open_run``)."""
    run_id = f"scale-{index:06d}"
    b = runs_pb2.EventBatch()
    if open_run:
        b.starts.add(run_id=run_id, project=f"team-{index % 16}", start_time=1.7e9)
    for step in range(first_step, first_step + n):
        ev = b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + 0.1 * step)
        ev.metrics.update(step_metrics(step, np.random.default_rng([index, step])))
    return b.SerializeToString()


def _pipeline(data_dir: Path):
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore

    settings = ServiceSettings(data_dir=data_dir)
    pipeline = DetectionPipeline(settings, RunStore(settings.db_path))
    # imports, compiled kernels, the learned detectors' artifact: before anything is measured
    pipeline.ingest_bytes(run_batch(999_999, 0, 40, True))
    pipeline.store.flush()
    pipeline.runs.clear()
    return pipeline


def store_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("runwatch.db*"))


def scale_runs(n_runs: int, warmup: int, rounds: int, batch: int, chunk: int = 2_000) -> dict:
    """Cost of ``n_runs`` concurrent runs (see the module docstring)."""
    data_dir = Path(tempfile.mkdtemp(prefix="rw-scale-"))
    try:
        pipeline = _pipeline(data_dir)
        rss0 = rss_mib()
        events = 0

        def feed(first_step: int, n: int, open_run: bool) -> tuple[float, float]:
            nonlocal events
            cpu = wall = 0.0
            for lo in range(0, n_runs, chunk):  # built outside the timed part, a chunk at a time
                raws = [run_batch(i, first_step, n, open_run) for i in range(lo, min(lo + chunk, n_runs))]
                c0, w0 = time.process_time(), time.perf_counter()
                for raw in raws:
                    events += pipeline.ingest_bytes(raw).ack.accepted
                pipeline.store.flush()
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
            return cpu, wall

        open_cpu, _ = feed(0, warmup, True)
        opened = events
        evictions0, restores0 = pipeline.evictions, pipeline.restores
        cpu = wall = 0.0
        for r in range(rounds):
            c, w = feed(warmup + r * batch, batch, False)
            cpu, wall = cpu + c, wall + w
        measured = events - opened
        out = {
            "runs": n_runs,
            "open_us_per_event": 1e6 * open_cpu / max(opened, 1),
            "cpu_us_per_event": 1e6 * cpu / max(measured, 1),
            "wall_us_per_event": 1e6 * wall / max(measured, 1),
            "events_per_s": measured / wall if wall else float("nan"),
            "rss_mib": rss_mib(),
            "rss_growth_mib": rss_mib() - rss0,
            "in_memory": len(pipeline.runs),
            "evicted": pipeline.evictions - evictions0,
            "restored": pipeline.restores - restores0,
            "events": events,
        }
        pipeline.store.close()
        out["store_mb_per_million"] = store_bytes(data_dir) / 1e6 / (events / 1e6)
        return out
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _instance(worker: int, n_workers: int, n_runs: int, steps: int, batch: int, start, out) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data_dir = Path(tempfile.mkdtemp(prefix=f"rw-inst{worker}-"))
    try:
        pipeline = _pipeline(data_dir)
        mine = [i for i in range(n_runs) if i % n_workers == worker]  # a partition's share of the runs
        rounds = [[run_batch(i, s, batch, s == 0) for i in mine] for s in range(0, steps, batch)]
        start.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        events = 0
        for raws in rounds:  # every run in turn, as their batches arrive interleaved
            for raw in raws:
                events += pipeline.ingest_bytes(raw).ack.accepted
        pipeline.store.flush()
        out.put((worker, events, t0, time.perf_counter(), time.process_time() - c0))
        pipeline.store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def scale_instances(n_workers: int, n_runs: int, steps: int, batch: int) -> dict:
    """Aggregate throughput of ``n_workers`` processes sharing ``n_runs`` runs by run id."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(n_workers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_instance, args=(w, n_workers, n_runs, steps, batch, start, out)) for w in range(n_workers)
    ]
    for p in procs:
        p.start()
    start.wait()
    results = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    events = sum(r[1] for r in results)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "instances": n_workers,
        "events": events,
        "events_per_s": events / wall,
        "cpu_us_per_event": 1e6 * sum(r[4] for r in results) / events,
    }


def report(runs: list[dict], instances: list[dict], command: str, load: tuple[float, float]) -> str:
    lines = [
        "### Scale: active runs and instances (`bench/scale.py`)",
        "",
        (
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} "
            f"cores, load average {load[0]:.1f} before and {load[1]:.1f} after (the machine is shared with other "
            "jobs: wall-clock rates move with them; CPU per event moves less)."
        ),
        "",
        (
            "| active runs | in memory | evicted / restored in the rounds | CPU µs/event (rounds) | wall µs/event | "
            "CPU µs/event opening + warm-up | RSS (MiB) | store MB per million events |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['runs']:,} | {r['in_memory']:,} | {r['evicted']:,} / {r['restored']:,} | "
            f"{r['cpu_us_per_event']:.1f} | {r['wall_us_per_event']:.1f} | {r['open_us_per_event']:.1f} | "
            f"{r['rss_mib']:,.0f} | {r['store_mb_per_million']:.0f} |"
        )
    if instances:
        base = instances[0]["events_per_s"]
        lines += [
            "",
            "| instances (processes sharing the runs) | events/s, all together | speed-up | CPU µs/event |",
            "|---:|---:|---:|---:|",
        ]
        for r in instances:
            lines.append(
                f"| {r['instances']} | {r['events_per_s']:,.0f} | {r['events_per_s'] / base:.2f}x | "
                f"{r['cpu_us_per_event']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--warmup", type=int, default=40, help="steps each run sends when it opens")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds: every run sends one batch per round")
    parser.add_argument("--batch", type=int, default=10, help="events per run per batch in the rounds")
    parser.add_argument("--instances", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--instance-runs", type=int, default=1_000)
    parser.add_argument("--instance-steps", type=int, default=100)
    parser.add_argument("--write", type=Path, default=None, help="rewrite the scale section of this results file")
    args = parser.parse_args(argv)
    command = "python -m bench.scale" + ("" if argv is None and not os.sys.argv[1:] else " " + " ".join(argv or os.sys.argv[1:]))
    load0 = os.getloadavg()[0]
    runs = []
    for n in args.runs:
        r = scale_runs(n, args.warmup, args.rounds, args.batch)
        runs.append(r)
        print(
            f"  {n:>7,} runs: {r['cpu_us_per_event']:.1f} µs CPU/event, {r['events_per_s']:,.0f} events/s, "
            f"RSS {r['rss_mib']:,.0f} MiB, {r['in_memory']:,} in memory, {r['evicted']:,} evicted",
            flush=True,
        )
    instances = []
    for k in args.instances:
        r = scale_instances(k, args.instance_runs, args.instance_steps, args.batch)
        instances.append(r)
        print(f"  {k} instance(s): {r['events_per_s']:,.0f} events/s", flush=True)
    text = report(runs, instances, command.replace(f" --write {args.write}", ""), (load0, os.getloadavg()[0]))
    print(text)
    if args.write is not None:
        write_marked(args.write, "scale", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
