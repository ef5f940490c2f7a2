"""Per-event cost of the default diagnostic suite on a real recorded training run.

Records one real training run (tests/unit/training.py: an MLP on digits, batch
16, 1,000 steps, Adam) with the metrics a training loop logs -- loss,
grad_norm and three per-layer norms, update ratios, activation zero fractions,
lr, step_time, data_time, cpu_mem -- plus gpu_mem, samples_per_s and a
val/loss every 10th step: 16-17 metrics per event. The run is then replayed
through :class:`~runwatch.models.monitor.RunMonitor` (the service's code path)
in blocks of 1, 20 and 500 events, and each diagnostic alone is timed on
500-event blocks. Prints a table of microseconds per event (best of
``--reps``; each rep replays the run into ``--runs`` fresh monitors): the
whole default suite, the nonfinite diagnostic alone and the monitor with no
diagnostic at all (block bookkeeping, evidence), then each diagnostic's
``observe_block`` alone (which, alone, also pays for looking up the block's
set of metric names, a cost the suite shares across its diagnostics).

    python bench/diagnostics_cost.py                  # records the run (~10 s), then times
    python bench/diagnostics_cost.py --save run.pkl   # keep the recording
    python bench/diagnostics_cost.py --load run.pkl   # replay the same recording

Compiled kernels are warmed up (and compiled or loaded from numba's cache)
before timing; ``RUNWATCH_JIT=0`` times the plain-Python fallback.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import time
from pathlib import Path

Event = tuple[int, float, dict[str, float]]


def record(steps: int) -> list[Event]:
    """Train the digits MLP and return its telemetry, with gpu_mem, samples_per_s and val/loss added."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
    from training import RunConfig, train

    raw = train(RunConfig(batch_size=16, steps=steps)).events
    events = []
    for step, wall, metrics in raw:
        m = {k: v for k, v in metrics.items() if k != "val/loss"}
        m["gpu_mem"] = 2048.0 + (step % 7) * 0.5
        m["samples_per_s"] = 16 / m["step_time"]
        if "val/loss" in metrics:
            m["val/loss"] = metrics["val/loss"]
        events.append((step, wall, m))
    return events


def blocks_of(events: list[Event], size: int):
    from runwatch.models.block import MetricBlock

    return [MetricBlock.from_rows(*zip(*events[i : i + size])) for i in range(0, len(events), size)]


def time_monitor(events: list[Event], size: int, enabled: list[str], runs: int, reps: int) -> float:
    """Best µs per event of RunMonitor.observe (size 1) or observe_block (blocks built beforehand)."""
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    suite = DiagnosticSuite(SuiteConfig(enabled=enabled))
    blocks = None if size == 1 else blocks_of(events, size)
    best = float("inf")
    for _ in range(reps):
        monitors = [suite.monitor(f"bench-{i}") for i in range(runs)]
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        for mon in monitors:
            if blocks is None:
                for step, wall, metrics in events:
                    mon.observe(step, wall, metrics)
            else:
                for b in blocks:
                    mon.observe_block(b)
        elapsed = time.perf_counter() - t0
        gc.enable()
        best = min(best, elapsed / (runs * len(events)))
    return best * 1e6


def time_diagnostic(events: list[Event], size: int, name: str, runs: int, reps: int) -> float:
    """Best µs per event of one diagnostic's observe_block alone (no monitor, no alert policy)."""
    from runwatch.models.registry import diagnostic_class

    cls = diagnostic_class(name)
    blocks = blocks_of(events, size)
    best = float("inf")
    for _ in range(reps):
        diags = [cls() for _ in range(runs)]
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        for d in diags:
            for b in blocks:
                d.observe_block(b)
        elapsed = time.perf_counter() - t0
        gc.enable()
        best = min(best, elapsed / (runs * len(events)))
    return best * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000, help="training steps to record")
    p.add_argument("--runs", type=int, default=5, help="fresh monitors per rep")
    p.add_argument("--reps", type=int, default=5, help="repetitions; the best is reported")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 20, 500], help="block sizes (events)")
    p.add_argument("--save", type=Path, help="pickle the recorded run here")
    p.add_argument("--load", type=Path, help="replay this pickled recording instead of training")
    args = p.parse_args()

    from runwatch.models.registry import DIAGNOSTICS

    try:
        from runwatch.models import kernels
    except ImportError:  # before compiled kernels existed
        kernels = None

    if args.load:
        events = pickle.loads(args.load.read_bytes())
    else:
        events = record(args.steps)
        if args.save:
            args.save.write_bytes(pickle.dumps(events))
    counts = sorted({len(m) for _, _, m in events})
    mode = "plain Python"
    if kernels is not None:
        t0 = time.perf_counter()
        kernels.warm_up()
        mode = f"{'compiled' if kernels.JIT else 'plain Python'} kernels (warm-up {time.perf_counter() - t0:.2f} s)"
    print(f"{len(events)} events of {counts} metrics, {args.runs} runs x best of {args.reps}; {mode}")

    everything = list(DIAGNOSTICS)
    print()
    print(f"{'RunMonitor, µs/event':<34} {'whole suite':>11} {'nonfinite':>10} {'monitor':>8}")
    for size in args.sizes:
        how = "observe, event by event" if size == 1 else f"observe_block, blocks of {size}"
        suite, nonfinite, bare = (time_monitor(events, size, enabled, args.runs, args.reps)
                                  for enabled in (everything, ["nonfinite"], []))
        print(f"  {how:<32} {suite:11.2f} {nonfinite:10.2f} {bare:8.2f}")
    print()
    size = max(args.sizes)
    print(f"{'per diagnostic, observe_block':<34} {'µs/event':>9}  (blocks of {size})")
    total = 0.0
    for name in everything:
        us = time_diagnostic(events, size, name, args.runs, args.reps)
        total += us
        print(f"  {name:<32} {us:9.3f}")
    print(f"  {'sum':<32} {total:9.3f}")


if __name__ == "__main__":
    main()
