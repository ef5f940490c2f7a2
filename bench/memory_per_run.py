"""Memory one active run holds in the service, by run length: it must not grow with the run.

Runs ``--runs`` concurrent runs (their batches interleaved, as the service sees
them) of a synthetic SDK-like training run through the service's
:class:`~runwatch.service.pipeline.DetectionPipeline`, with every diagnostic and
the learned detector on (the default suite), for each length in ``--steps``.
Each event carries what ``runwatch.client`` logs every step (loss, lr,
grad_norm, step_time, data_time, cpu_mem, gpu_mem, samples_per_s), the
per-layer statistics of ``ModelWatcher`` for three layers every 5th step
(grad_norm/, weight_norm/, update_ratio/, act/zero_frac|sat_frac|mean|std/)
and val/loss, val/acc every 20th step.

The retained size of a run is measured with tracemalloc: the traced memory
with the runs in memory, minus the traced memory once they are dropped, per
run (so pipeline-wide buffers, caches and the store's memory do not count).

    python -m bench.memory_per_run                                # 200 / 6,000 / 50,000 steps, 20 runs (~15 min on 2 cores)
    python -m bench.memory_per_run --steps 200 2000 --runs 5      # quicker
    python -m bench.memory_per_run --steps 200 2000 6000 --batch 1 8   # small batches (an SDK flushing every step)

Prints a table of KiB per run; the service's bound is 256 KiB per run.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from runwatch.v1 import runs_pb2

BOUND_KIB = 256
LAYERS = ("fc1", "fc2", "fc3")


def step_metrics(step: int, rng: np.random.Generator) -> dict[str, float]:
    """What the SDK logs at ``step`` of a healthy run: base metrics, per-layer stats every 5th step, val every 20th."""
    loss = 2.3 * (1.0 + step / 50.0) ** -0.5 * (1.0 + 0.03 * rng.standard_normal())
    m = {
        "loss": loss,
        "lr": 1e-3 * (0.5 + 0.5 * math.cos(math.pi * (step % 10_000) / 10_000)),
        "grad_norm": 1.0 + 0.2 * rng.random(),
        "step_time": 0.1 + 0.01 * rng.random(),
        "data_time": 0.01 + 0.002 * rng.random(),
        "cpu_mem": 2048.0 + rng.random(),
        "gpu_mem": 4096.0 + rng.random(),
        "samples_per_s": 320.0 + 10 * rng.random(),
    }
    if step % 5 == 0:
        for i, layer in enumerate(LAYERS):
            m[f"grad_norm/{layer}"] = (0.5 + 0.1 * rng.random()) / (i + 1)
            m[f"weight_norm/{layer}"] = 10.0 + 0.01 * step**0.5
            m[f"update_ratio/{layer}"] = 1e-3 * (1.0 + 0.1 * rng.random())
            m[f"act/zero_frac/{layer}"] = 0.3 + 0.05 * rng.random()
            m[f"act/sat_frac/{layer}"] = 0.01 * rng.random()
            m[f"act/mean/{layer}"] = 0.2 + 0.01 * rng.standard_normal()
            m[f"act/std/{layer}"] = 0.5 + 0.01 * rng.standard_normal()
    if step % 20 == 0:
        m["val/loss"] = loss * 1.05
        m["val/acc"] = 1.0 - loss / 3.0
    return m


def telemetry(run_id: str, steps: int, batch: int = 64, seed: int = 0, project: str = "memory"):
    """A healthy training run's ``EventBatch`` es of ``batch`` events (the first also opens the run)."""
    rng = np.random.default_rng(seed)
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project=project, start_time=1.7e9)
    for step in range(steps):
        ev = b.events.add(run_id=run_id, step=step, wall_time=1.7e9 + 0.1 * step)
        ev.metrics.update(step_metrics(step, rng))
        if len(b.events) >= batch:
            yield b
            b = runs_pb2.EventBatch()
    if len(b.events) or len(b.starts):
        yield b


def retained_per_run(steps: int, runs: int = 20, batch: int = 64, data_dir: Path | None = None) -> dict:
    """Bytes one run holds after ``steps`` steps (mean over ``runs`` runs), with timing.

    Examples
    --------
    >>> r = retained_per_run(100, runs=2)  # doctest: +SKIP
    >>> r["bytes_per_run"] < 256 * 1024  # doctest: +SKIP
    True
    """
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore

    data_dir = Path(tempfile.mkdtemp(prefix="rw-mem-")) if data_dir is None else data_dir
    settings = ServiceSettings(data_dir=data_dir)
    store = RunStore(settings.db_path)
    pipeline = DetectionPipeline(settings, store)
    # Imports, compiled kernels, the learned detector's model and per-name caches, before tracing.
    for b in telemetry("warm-up", 3 * batch, batch):
        pipeline.ingest(b)
    pipeline.runs.pop("warm-up")
    store.flush()
    gc.collect()

    ids = [f"mem-{i}" for i in range(runs)]
    tracemalloc.start()
    t0 = time.perf_counter()
    streams = [telemetry(run_id, steps, batch, seed=i) for i, run_id in enumerate(ids)]
    events = 0
    while streams:
        alive = []
        for it in streams:
            b = next(it, None)
            if b is not None:
                result = pipeline.ingest(b)
                events += result.ack.accepted
                alive.append(it)
        streams = alive
        if events and events % (batch * runs * 64) < batch * runs:
            store.flush()  # the writer's queue is not run state
    elapsed = time.perf_counter() - t0
    store.flush()
    gc.collect()
    with_runs = tracemalloc.get_traced_memory()[0]
    states = [pipeline.runs.pop(run_id) for run_id in ids]
    del states
    gc.collect()
    without = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    store.close()
    return {
        "steps": steps,
        "runs": runs,
        "bytes_per_run": (with_runs - without) / runs,
        "events": events,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 6_000, 50_000], help="run lengths")
    parser.add_argument("--runs", type=int, default=20, help="concurrent runs per length")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[64], help="events per run per batch (an SDK flushing every step: 1)"
    )
    args = parser.parse_args(argv)
    rows = []
    for batch in args.batch:
        for steps in args.steps:
            r = retained_per_run(steps, args.runs, batch)
            r["batch"] = batch
            rows.append(r)
            print(
                f"  {steps:>7,} steps, {batch}-event batches: {r['bytes_per_run'] / 1024:7.1f} KiB per run "
                f"({r['events']:,} events in {r['seconds']:.0f} s, traced)",
                flush=True,
            )
    print()
    print(f"| steps per run | events per batch | runs | KiB per run (tracemalloc) | within {BOUND_KIB} KiB |")
    print("|---:|---:|---:|---:|:---:|")
    for r in rows:
        kib = r["bytes_per_run"] / 1024
        ok = "yes" if kib <= BOUND_KIB else "NO"
        print(f"| {r['steps']:,} | {r['batch']} | {r['runs']} | {kib:.1f} | {ok} |")
    return 0 if all(r["bytes_per_run"] <= BOUND_KIB * 1024 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
