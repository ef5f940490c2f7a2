"""Label the GitHub Lightning and TensorBoard runs of ``github_run_logs`` by the HF runs' written criteria.

The rules are :func:`bench.real_labels.label_hf.label_run`, unchanged (``bench/real_labels/README.md``,
"GitHub Lightning and TensorBoard runs"): the same training loss / eval loss / gradient norm series,
the same thresholds, no overrides and no review. Until these labels existed every run of these two
sources counted as healthy, including runs whose loss never moved.

    python -m bench.real_labels.label_github          # write the CSV, print counts

The files are read with runwatch's importers (file reading and key renaming only: ``train_loss`` /
``train_loss_step`` -> ``loss``, ``val_loss`` -> ``val/loss``), the same way the harness streams them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

from bench.real_labels.label_hf import HERE, Series, label_run, series_from_rows

DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "training-logs" / "github_run_logs"
DEFAULT_OUT = HERE / "github_run_logs.csv"
FORMATS = ("lightning", "tensorboard")
COLUMNS = ("path", "format", "label", "manifest_step", "n_loss_points", "n_eval_points", "reason", "note")
_SERIES = {"loss": "loss", "val/loss": "eval_loss", "grad_norm": "grad_norm"}


def series_of(steps, metrics) -> Series:
    """The criteria's series of one imported run (:func:`~bench.real_labels.label_hf.series_from_rows`).

    >>> s = series_of([0, 0, 5], [{"loss": 2.0}, {"loss": 1.5, "val/loss": 1.9}, {"loss": 1.0}])
    >>> s.loss, s.eval_loss
    ([(0, 1.5), (5, 1.0)], [(0, 1.9)])
    """
    return series_from_rows([(int(st), m) for st, m in zip(steps, metrics, strict=True)], _SERIES)


def label_all(data: Path) -> list[dict[str, object]]:
    from runwatch.client import importers

    out = []
    for r in importers.load(data):
        if r.format not in FORMATS:
            continue
        s = series_of(r.steps, r.metrics)
        f, notes = label_run(s)
        out.append({
            "path": Path(r.source).relative_to(data).as_posix(), "format": r.format, "label": f.label,
            "manifest_step": "" if f.step is None else f.step, "n_loss_points": len(s.loss),
            "n_eval_points": len(s.eval_loss), "reason": f.reason, "note": " | ".join(notes),
        })  # fmt: skip
    out.sort(key=lambda row: (row["path"], row["format"]))
    return out


def read_labels(path: Path = DEFAULT_OUT) -> dict[str, tuple[str, int | None]]:
    """``source path (relative) -> (label, manifest_step)``; empty when the CSV is absent."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {
            row["path"]: (row["label"], int(row["manifest_step"]) if row["manifest_step"] else None)
            for row in csv.DictReader(fh)
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data} not found", file=sys.stderr)
        return 1
    rows = label_all(args.data)
    dupes = [p for p, n in Counter(r["path"] for r in rows).items() if n > 1]
    if dupes:
        raise SystemExit(f"several runs read from one file: {dupes[:3]}")
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for fmt in FORMATS:
        counts = Counter(r["label"] for r in rows if r["format"] == fmt).most_common()
        print(f"{fmt}: {sum(n for _, n in counts)} runs; " + ", ".join(f"{k} {v}" for k, v in counts))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
