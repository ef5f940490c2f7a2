"""Export the benchmark corpus as an advisor history file (``runwatch serve --advisor-history FILE``).

Every corpus run whose architecture the advisor can edit (MLPs, the CNN)
becomes a :class:`~runwatch.nas.history.RunObservation`: its genome, logged
hyperparameters, metric series, runwatch's own findings (default diagnostics)
and final validation metrics. A fresh server then starts its surrogate from
these real runs instead of from nothing.

    python -m bench.export_history --out corpus-history.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.nas_retrain import load_runs, observation_of
from runwatch.nas.history_file import write_history

DEFAULT_CORPUS = Path(__file__).resolve().parent / "corpus" / "data"


def thin(series: dict, max_points: int) -> dict:
    """Every metric cut to at most ``max_points`` evenly spaced points (the last one kept)."""
    import numpy as np

    if max_points <= 0:
        return series
    out = {}
    for name, (steps, values) in series.items():
        if len(steps) > max_points:
            keep = np.unique(np.linspace(0, len(steps) - 1, max_points).round().astype(int))
            steps, values = steps[keep], values[keep]
        out[name] = (steps, values)
    return out


def export(corpus: Path, out: Path, max_points: int) -> tuple[int, int]:
    """Write the history file; returns (runs written, runs skipped for lack of an editable genome)."""
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    suite = DiagnosticSuite(SuiteConfig())
    runs, skipped = [], 0
    for rec in load_runs(corpus):
        obs = observation_of(rec, suite)
        if obs.genome is None:
            skipped += 1
            continue
        obs.series = thin(obs.series, max_points)  # the surrogate reads summary features of the curves
        runs.append(obs)
    write_history(out, runs, source=f"bench corpus {corpus}")
    return len(runs), skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-points", type=int, default=100, help="points kept per metric series (0 = all)")
    args = parser.parse_args(argv)
    if not (args.corpus / "labels.csv").exists():
        parser.error(f"--corpus: no corpus at {args.corpus} (python -m bench.corpus.generate)")
    written, skipped = export(args.corpus, args.out, args.max_points)
    print(f"{written} runs written to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), {skipped} without an editable genome")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
