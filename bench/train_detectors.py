"""Fit the learned detectors on the training split and write the artifact that ships with runwatch.

    python -m bench.train_detectors                         # corpus train split + half the real healthy logs
    python -m bench.train_detectors --out /tmp/art --no-real-logs
    python -m bench.train_detectors --keep-forecaster --calibrate-on bench/corpus/novel-21 bench/corpus/novel-22
    python -m bench.train_detectors --forecast-floors-only  # the shipped forecaster's floors, from the train split
    python -m bench.train_detectors --extra-corpus bench/corpus/controls --out /tmp/art_controls  # + healthy controls

Training data (``bench/splits.py``): the seed-0 corpus's runs outside the
held-out datasets and architecture families, and the ``train`` half of the
healthy real-log sources (modded-nanogpt, Lightning CSVs, TensorBoard files,
HF trainer states, and the runs of the hand-labelled `hf-trainer-more` labelled healthy), plus the train
split of each ``--extra-corpus`` (the shipped forecaster: the long-warm-up controls, bench/README.md). Nothing
from a test split is read.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus.store import RunRecord
from bench.evaluate import DEBUGGER_PREFIX, DEFAULT_CORPUS, REAL_LOGS, load_corpus
from bench.splits import corpus_split, real_split
from runwatch.models.learned.artifacts import DEFAULT_ARTIFACT, load_artifact
from runwatch.models.learned.training import TrainingConfig, TrainingRun, fit_artifact, raise_levels, set_forecast_floors

HEALTHY_REAL_SOURCES = ("modded-nanogpt", "github lightning", "github tensorboard", "hf-trainer")
LABELLED_REAL_SOURCES = ("hf-trainer-more",)  # hand-labelled (bench/real_labels): only runs labelled healthy are used


def whole_block(rec: RunRecord):
    return next(iter(rec.blocks(max_events=len(rec) + 1, flush_gap_s=math.inf)))[0]


def corpus_runs(path: Path) -> list[TrainingRun]:
    """The labelled runs of ``path``'s train split (held-out datasets and architectures left out)."""
    out = []
    for rec in load_corpus(path):
        if corpus_split(rec.meta) != "train":
            continue
        spec, lab = rec.meta["spec"], rec.meta["labels"]
        rec = rec.without([DEBUGGER_PREFIX])
        out.append(TrainingRun(rec.run_id, whole_block(rec), spec["fault"], int(spec["onset"]),
                               lab["manifest_step"], spec["cause"], "corpus"))
    return out


def other_domain_runs(path: Path) -> list[TrainingRun]:
    """Every healthy run of a corpus of other domains (calibration only: ``raise_levels``)."""
    out = []
    for rec in load_corpus(path):
        if rec.meta["spec"]["fault"] == "healthy":
            rec = rec.without([DEBUGGER_PREFIX])
            out.append(TrainingRun(rec.run_id, whole_block(rec), source=path.name))
    return out


def real_runs(root: Path) -> list[TrainingRun]:
    from bench import real_logs

    out = []
    for src, runs in real_logs.load_all(root).items():
        if src not in HEALTHY_REAL_SOURCES + LABELLED_REAL_SOURCES:
            continue
        for rec in runs:
            if src in LABELLED_REAL_SOURCES and real_logs.truth(rec).faulty:
                continue
            if real_split(rec.run_id) == "train" and len(rec) >= 4:
                out.append(TrainingRun(rec.run_id, whole_block(rec), source=src))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--extra-corpus", type=Path, nargs="*", default=[], metavar="CORPUS",
                    help="more labelled corpora to fit on (their train split), e.g. bench/corpus/controls")
    ap.add_argument("--real-logs", type=Path, default=REAL_LOGS)
    ap.add_argument("--no-real-logs", action="store_true")
    ap.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT)
    ap.add_argument("--config", type=Path, default=None, help="TrainingConfig JSON")
    ap.add_argument("--keep-forecaster", type=Path, nargs="?", const=DEFAULT_ARTIFACT, default=None, metavar="ARTIFACT",
                    help="keep this artifact's divergence forecaster and forecast levels (default: the shipped one) "
                         "and refit only the autoencoder and the run-outlier detector")
    ap.add_argument("--calibrate-on", type=Path, nargs="*", default=[], metavar="CORPUS",
                    help="corpora of other domains (e.g. bench/corpus/novel-21): their healthy runs raise any alert "
                         "level they would reach more often than the target rate (calibration only, nothing is fitted)")
    ap.add_argument("--forecast-floors-only", type=Path, nargs="?", const=DEFAULT_ARTIFACT, default=None,
                    metavar="ARTIFACT", help="fit nothing: set this artifact's forecaster feature floors (default: the "
                    "shipped one) from the corpus's train split, the labelled runs it was fitted on, and write --out")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    runs = corpus_runs(args.corpus)
    if args.forecast_floors_only:
        art = set_forecast_floors(load_artifact(args.forecast_floors_only), runs, provenance={
            "command": "python -m bench.train_detectors " + " ".join(argv if argv is not None else sys.argv[1:]),
            "corpus": str(args.corpus.name)}, log=lambda m: print(m, file=sys.stderr, flush=True))
        art.save(args.out)
        print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0
    for extra in args.extra_corpus:
        runs += corpus_runs(extra)
    n_corpus = len(runs)
    if not args.no_real_logs and args.real_logs.exists():
        runs += real_runs(args.real_logs)
    print(f"{n_corpus} corpus runs (train split), {len(runs) - n_corpus} real healthy runs, {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    cfg = TrainingConfig.model_validate_json(args.config.read_text()) if args.config else TrainingConfig()
    base = load_artifact(args.keep_forecaster) if args.keep_forecaster else None
    art = fit_artifact(runs, cfg, provenance={
        "command": "python -m bench.train_detectors " + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpus": str(args.corpus.name),
        "corpus_runs": n_corpus,
        "real_runs": len(runs) - n_corpus,
        "split": "bench/splits.py: held-out datasets parity, wine; held-out architecture lstm; real logs by run-id hash",
    }, log=lambda m: print(m, file=sys.stderr, flush=True), base=base, keep_base_forecaster=base is not None)
    if args.calibrate_on:
        others = [r for path in args.calibrate_on for r in other_domain_runs(path)]
        art = raise_levels(art, others, cfg, provenance={"corpora": [p.name for p in args.calibrate_on]},
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    art.save(args.out)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
