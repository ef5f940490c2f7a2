"""Generate the benchmark corpus: real CPU training runs, healthy and with injected faults.

    python -m bench.corpus.generate                       # 660 runs, seed 0, into bench/corpus/data
    python -m bench.corpus.generate --runs 40 --out /tmp/c --workers 1
    python -m bench.corpus.generate --domain novel --seed 21 --runs 240 --out bench/corpus/novel-21   # unseen domain
    python -m bench.corpus.generate --slice tests/fixtures/corpus --slice-runs 40   # fixture from a corpus
    python -m bench.corpus.generate --controls long_warmup --runs 80 --seed 77 --out bench/corpus/controls   # healthy twins

Each run is drawn from the seed (:func:`bench.corpus.specs.draw_spec`),
trained (:func:`bench.corpus.train.train_run`), labelled
(:func:`bench.corpus.labels.label_run`) and written to ``runs/<run_id>.npz``;
``labels.csv`` lists every run and ``corpus.json`` the generation settings
and wall time. A draw that fails its check (a healthy run that did not
converge or overfit, a fault that left no trace by its definition) is redrawn
with the next attempt number, at most ``--attempts`` times; the last draw is
kept and marked ``accepted=False`` otherwise (the harness skips it).

Metric values are bit-reproducible from the seed (single-threaded CPU
torch); timing metrics (``step_time``, ``data_time``, wall times) are
measured and vary between machines.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "data"

LABEL_COLUMNS = [
    "run_id", "fault", "cause", "onset_step", "manifest_step", "severity", "magnitude", "accepted",
    "dataset", "arch", "depth", "width", "activation", "optimizer", "lr", "schedule", "batch_size",
    "steps", "n_events", "ended", "status", "watch_every", "val_every", "attempt", "check",
]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def generate_one(
    seed: int, index: int, fault: str, out_dir: str, attempts: int, domain: str = "default"
) -> dict[str, Any]:
    """Draw, train, label and store run ``index``; returns its labels row."""
    from bench.corpus import store
    from bench.corpus.specs import draw_spec

    for attempt in range(attempts):
        rec, n_events = _trained(draw_spec(seed, index, fault, attempt, domain))
        if rec.meta["labels"]["accepted"]:
            break
    store.save(rec, Path(out_dir) / "runs" / f"{rec.run_id}.npz")
    return row(rec.meta, n_events)


def _trained(spec) -> tuple[Any, int]:
    """Train ``spec`` and label it: the run's record (its meta holds the spec, the trainer's facts and the labels)
    and its event count."""
    from bench.corpus import store
    from bench.corpus.labels import label_run
    from bench.corpus.train import train_run

    events, facts = train_run(spec)
    meta = {"run_id": spec.run_id, "spec": spec.to_dict(), **facts}
    rec = store.RunRecord.from_events(events, meta)
    meta["labels"] = label_run(rec)
    return rec, len(events)


def generate_control(seed: int, index: int, out_dir: str, split: str, attempts: int = 60) -> dict[str, Any] | None:
    """Control run ``index`` (:func:`bench.corpus.specs.long_warmup_control`) of the ``split`` of bench/splits.py:
    draws of the other split are skipped untrained, draws that fail their check redrawn; None when none passed."""
    from bench.corpus import store
    from bench.corpus.specs import long_warmup_control
    from bench.splits import corpus_split

    for attempt in range(attempts):
        spec = long_warmup_control(seed, index, attempt)
        if corpus_split({"spec": spec.to_dict()}) != split:
            continue
        rec, n_events = _trained(spec)
        if rec.meta["labels"]["accepted"]:
            store.save(rec, Path(out_dir) / "runs" / f"{spec.run_id}.npz")
            return row(rec.meta, n_events)
    return None


def row(meta: dict[str, Any], n_events: int) -> dict[str, Any]:
    spec, lab = meta["spec"], meta["labels"]
    return {
        "run_id": spec["run_id"],
        "fault": spec["fault"],
        "cause": spec["cause"],
        "onset_step": spec["onset"] if spec["fault"] != "healthy" else "",
        "manifest_step": "" if lab["manifest_step"] is None else lab["manifest_step"],
        "severity": lab["severity"],
        "magnitude": "" if lab["magnitude"] is None or (isinstance(lab["magnitude"], float) and math.isnan(lab["magnitude"])) else f"{lab['magnitude']:.4g}",
        "accepted": int(bool(lab["accepted"])),
        "dataset": spec["dataset"],
        "arch": spec["arch"],
        "depth": spec["depth"],
        "width": spec["width"],
        "activation": spec["activation"],
        "optimizer": spec["optimizer"],
        "lr": f"{spec['lr']:.4g}",
        "schedule": spec["schedule"],
        "batch_size": spec["batch_size"],
        "steps": spec["steps"],
        "n_events": n_events,
        "ended": int(bool(meta["ended"])),
        "status": meta["status"],
        "watch_every": spec["watch_every"],
        "val_every": spec["val_every"],
        "attempt": spec["params"].get("attempt", 0),
        "check": lab.get("check", ""),
    }


def write_labels(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["run_id"]):
            w.writerow(r)


def read_labels(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def generate(
    n_runs: int, seed: int, out: Path, workers: int, faulty_fraction: float, attempts: int, domain: str = "default"
) -> dict[str, Any]:
    from bench.corpus.specs import fault_plan

    (out / "runs").mkdir(parents=True, exist_ok=True)
    plan = fault_plan(n_runs, seed, faulty_fraction)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    args = [(seed, i, f, str(out), attempts, domain) for i, f in enumerate(plan)]
    # the slow kinds first so the pool drains evenly
    if workers <= 1:
        _init_worker()
        for a in args:
            rows.append(generate_one(*a))
            _progress(len(rows), n_runs, started)
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            futures = [pool.submit(generate_one, *a) for a in args]
            for fut in futures:
                rows.append(fut.result())
                _progress(len(rows), n_runs, started)
    elapsed = time.perf_counter() - started
    write_labels(rows, out / "labels.csv")
    info = {
        "runs": n_runs,
        "seed": seed,
        "domain": domain,
        "faulty_fraction": faulty_fraction,
        "attempts": attempts,
        "workers": workers,
        "wall_seconds": round(elapsed, 1),
        "accepted": sum(int(r["accepted"]) for r in rows),
        "redrawn": sum(1 for r in rows if int(r["attempt"]) > 0),
        "faults": dict(Counter(r["fault"] for r in rows)),
        "command": " ".join(["python -m bench.corpus.generate", *sys.argv[1:]]),
    }
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def generate_controls(n_runs: int, seed: int, out: Path, workers: int, split: str) -> dict[str, Any]:
    """``n_runs`` long-warm-up controls into ``out`` (labels.csv and corpus.json as for a corpus)."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, workers), initializer=_init_worker) as pool:
        rows = [r for r in pool.map(generate_control, [seed] * n_runs, range(n_runs), [str(out)] * n_runs,
                                    [split] * n_runs) if r is not None]
    write_labels(rows, out / "labels.csv")
    info = {"runs": n_runs, "seed": seed, "controls": "long_warmup", "split": split, "workers": workers,
            "wall_seconds": round(time.perf_counter() - started, 1), "accepted": len(rows),
            "command": " ".join(["python -m bench.corpus.generate", *sys.argv[1:]])}
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _progress(done: int, total: int, started: float) -> None:
    if done % 20 == 0 or done == total:
        el = time.perf_counter() - started
        print(f"  {done}/{total} runs, {el:.0f} s elapsed, ~{el / done * (total - done):.0f} s left", file=sys.stderr, flush=True)


def make_slice(src: Path, dst: Path, n: int) -> list[str]:
    """Copy a small, balanced slice of a corpus (its smallest accepted runs per fault type) to ``dst``."""
    rows = [r for r in read_labels(src / "labels.csv") if r["accepted"] == "1"]
    by_fault: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        r["_size"] = (src / "runs" / f"{r['run_id']}.npz").stat().st_size
        by_fault.setdefault(r["fault"], []).append(r)
    faults = sorted(f for f in by_fault if f != "healthy")
    per_fault = max(1, (n // 2) // max(1, len(faults)))
    picked: list[dict[str, str]] = []
    for f in faults:
        picked += sorted(by_fault[f], key=lambda r: r["_size"])[:per_fault]
    healthy = sorted(by_fault.get("healthy", []), key=lambda r: r["_size"])
    # healthy runs: smallest per (dataset, arch) first, for diversity
    seen, rest = set(), []
    for r in healthy:
        key = (r["dataset"], r["arch"], r["schedule"])
        (rest if key in seen else picked).append(r)
        seen.add(key)
        if len(picked) >= n:
            break
    picked += rest[: max(0, n - len(picked))]
    picked = picked[:n]
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "runs").mkdir(parents=True)
    for r in picked:
        shutil.copy(src / "runs" / f"{r['run_id']}.npz", dst / "runs" / f"{r['run_id']}.npz")
    for r in picked:
        r.pop("_size", None)
    write_labels(picked, dst / "labels.csv")
    info = json.loads((src / "corpus.json").read_text())
    info["slice_of"] = {"runs": info["runs"], "seed": info["seed"]}
    info["runs"] = len(picked)
    (dst / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    return [r["run_id"] for r in picked]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=660)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--faulty-fraction", type=float, default=0.4)
    ap.add_argument("--attempts", type=int, default=8)
    ap.add_argument("--domain", choices=("default", "novel"), default="default",
                    help="novel: datasets and architecture families the default corpus never uses (a test corpus)")
    ap.add_argument("--controls", choices=("long_warmup",), default=None,
                    help="healthy matched controls instead of a corpus (bench.corpus.specs.long_warmup_control)")
    ap.add_argument("--split", choices=("train", "test"), default="train",
                    help="with --controls: the datasets and architectures of this split of bench/splits.py")
    ap.add_argument("--slice", type=Path, default=None, help="copy a fixture slice of --out to this folder and exit")
    ap.add_argument("--slice-runs", type=int, default=40)
    args = ap.parse_args(argv)
    if args.slice is not None:
        ids = make_slice(args.out, args.slice, args.slice_runs)
        print(f"sliced {len(ids)} runs into {args.slice}")
        return
    if args.controls:
        info = generate_controls(args.runs, args.seed, args.out, args.workers, args.split)
    else:
        info = generate(args.runs, args.seed, args.out, args.workers, args.faulty_fraction, args.attempts, args.domain)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
