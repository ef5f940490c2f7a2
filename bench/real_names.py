"""The labelled real logs streamed under the metric names their files use, as a user's own code sends them.

The harness (``bench.evaluate``) imports real logs the way ``runwatch replay`` does, renaming
``train_loss`` -> ``loss``, ``val_loss`` -> ``val/loss``, ``lr-Adam`` -> ``lr``. A training script
that calls ``run.log({"train_loss": ...})``, a gRPC client in another language or a Kafka producer
sends its own names. This streams the same runs under the names in their files (``--names as-logged``)
and prints, per source, problems caught and healthy runs flagged (WARNING and up, shipped defaults),
beside the renamed import (``--names renamed``). ``--unmapped`` switches off the detectors' own name
mapping (:class:`runwatch.models.metric_names.DetectorNames`), which is what runwatch did before it.
Both halves of every source: nothing is tuned here.

    python -m bench.real_names --names renamed
    python -m bench.real_names --names as-logged
    python -m bench.real_names --names as-logged --unmapped
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from bench.evaluate import evaluate_runs, make_systems

SOURCES = ("github lightning", "github tensorboard", "hf-trainer-more")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", choices=("as-logged", "renamed"), default="as-logged")
    ap.add_argument("--unmapped", action="store_true", help="detectors see the names as sent (runwatch before 2026-12-04)")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/training-logs")
    args = ap.parse_args(argv)

    from runwatch.client import importers
    from runwatch.models import metric_names

    if args.names == "as-logged":
        load, read = importers.load, importers.read
        importers.load = lambda path, fmt="auto", canonical=True, problems=importers.STRICT: load(path, fmt, False, problems)
        importers.read = lambda fmt, path, canonical=True, **kw: read(fmt, path, canonical=False, **kw)
    if args.unmapped:
        metric_names.DetectorNames.rename = lambda self, block: block
    from bench import real_logs

    sources = real_logs.load_all(args.root)
    print(f"names {args.names}{', detectors unmapped' if args.unmapped else ''}")
    print("| source | problems caught | healthy runs flagged | most common metric names |")
    print("|---|---:|---:|---|")
    for name in SOURCES:
        runs = sources.get(name, [])
        if not runs:
            continue
        truths = [real_logs.truth(r) for r in runs]
        ev = evaluate_runs(runs, make_systems(["runwatch"]), truths)
        flagged = {k for k, alerts in ev.alerts["runwatch"].items() if any(a.severity >= 2 for a in alerts)}
        problems = [t for t in truths if t.faulty]
        healthy = [t for t in truths if not t.faulty]
        counts = collections.Counter(n for r in runs for n in {n for _, _, m in r.events() for n in m})
        print(f"| {name} | {sum(t.run_id in flagged for t in problems)}/{len(problems)} | "
              f"{sum(t.run_id in flagged for t in healthy)}/{len(healthy)} | "
              f"{', '.join(n for n, _ in counts.most_common(6))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
