"""Speed of the learned detectors' models alone, single BLAS thread, batched as the service batches.

    OMP_NUM_THREADS=1 python bench/learned_speed.py

Prints windows/s of the sequence autoencoder (numpy serving path), what that is in events/s given the
scoring stride (one window per ``sequence_every_steps`` steps of dense logging), rows/s of the forecaster
and prefixes/s of the run-outlier forest. Best of ``--reps``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from runwatch.models.learned.artifacts import load_artifact
from runwatch.models.learned.features import N_FEATURES


def best_of(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=500, help="rows per block (the service's batch)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    art = load_artifact()
    rng = np.random.default_rng(0)
    w = art.config.sequence_ae.window
    windows = rng.normal(size=(args.batch, w, N_FEATURES))
    pairs = rng.normal(size=(args.batch, 2, N_FEATURES))
    prefixes = rng.normal(size=(1, art.run_outlier.reference.shape[1]))
    stride = art.config.sequence_every_steps
    with threadpool_limits(1, user_api="blas"):
        ae = best_of(lambda: art.sequence_ae.score_with_errors(windows), args.reps)
        fc = best_of(lambda: art.forecaster.predict_proba(pairs), args.reps)
        ro = best_of(lambda: [art.run_outlier.score_samples(prefixes) for _ in range(100)], args.reps) / 100
    print(f"| model | batch | per second (1 core) |\n|---|---:|---:|")
    print(f"| sequence autoencoder | {args.batch} windows | {args.batch / ae:,.0f} windows/s = {stride * args.batch / ae:,.0f} "
          f"events/s at one window per {stride} steps |")
    print(f"| divergence forecaster | {args.batch} rows | {args.batch / fc:,.0f} rows/s |")
    print(f"| run outlier ({art.run_outlier.config.method}, flat forest) | 1 prefix | {1 / ro:,.0f} prefixes/s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
