"""Score a folder of freshly collected real logs once, with the shipped defaults: the clean checks of the
``bench/real_runs_fresh_*`` and ``bench/real_text_logs_set*`` records.

Each file goes through runwatch's importer (``load(fmt=...)``), ``bench.real_logs._record`` and
``bench.evaluate.evaluate_runs`` like the real logs of ``bench/evaluate.py``; a run is flagged when any alert is
WARNING or above. Labels come from the written criteria of ``bench/real_labels/`` (``label_hf.py``: Hugging Face
``trainer_state.json`` files and, on their hand truth, plain-text logs; ``label_github.py``'s series for
Lightning's ``metrics.csv``). A plain-text log ``NAME`` may have a hand truth ``NAME.truth.json``: a list of
``[line, "train" | "val", value]``; a truth value counts as read when the same value (to 1e-9, relative) was
extracted from the file for its split.

    python -m bench.fresh_check hf FOLDER
    python -m bench.fresh_check lightning FOLDER
    python -m bench.fresh_check text FOLDER

Files are the folder's entries whose names start with a digit (``01__owner__repo__...``), in name order.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("hf", "lightning", "text")


@dataclass
class Scored:
    """One file's result: its label, what was read and the WARNING+ alerts ``(kind, detector, step)``."""

    name: str
    label: str
    read: bool
    note: str = ""
    alerts: list[tuple[str, str, int]] = field(default_factory=list)
    truth_read: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (read, of)


def _alerts(records) -> list[tuple[str, str, int]]:
    from bench.evaluate import evaluate_runs, make_systems
    from bench.metrics import WARNING

    if not records:
        return []
    ev = evaluate_runs(records, make_systems(["runwatch"]), [])
    return sorted(
        {(a.kind, a.detector, a.step) for per in ev.alerts["runwatch"].values() for a in per if a.severity >= WARNING}
    )


def _records(runs, source: str) -> list:
    from bench.real_logs import _record

    return [r for r in (_record(source, i, x.name, x.steps, x.wall_times, x.metrics) for i, x in enumerate(runs)) if r]


def _load(path: Path, fmt: str):
    from runwatch.client.importers import load
    from runwatch.client.importers.base import Problems

    return load(path, fmt=fmt, problems=Problems(strict=False))


def score_hf(path: Path) -> Scored:
    from bench.real_labels.label_hf import label_run, read_series

    try:
        label = label_run(read_series(path))[0].label
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # a file the labels cannot read is scored all the same
        label = f"unlabelled ({str(exc)[:40]})"
    runs = _load(path, "hf")
    records = _records(runs, "hf")
    note = f"{len(runs[0].steps)} steps" if runs else ""
    return Scored(path.name, label, bool(records), note, _alerts(records))


def score_lightning(path: Path) -> Scored:
    from bench.real_labels.label_github import series_of
    from bench.real_labels.label_hf import label_run

    runs = _load(path, "lightning")
    run = runs[0]
    try:
        label = label_run(series_of(run.steps, run.metrics))[0].label
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        label = f"unlabelled ({str(exc)[:40]})"
    records = _records(runs, "lightning")
    return Scored(path.name, label, bool(records), f"{len(run.steps)} steps", _alerts(records))


def _same(value: float, got: list[float]) -> bool:
    return any(abs(value - g) <= 1e-9 * max(1.0, abs(value)) for g in got if math.isfinite(g))


def score_text(path: Path) -> Scored:
    from bench.real_labels.label_hf import label_run, series_from_rows
    from bench.real_logs import text_metrics

    truth_file = path.with_name(path.name + ".truth.json")
    truth = json.loads(truth_file.read_text()) if truth_file.exists() else []
    rows = [(line, {"loss" if split == "train" else "eval_loss": v}) for line, split, v in truth]
    label = (
        label_run(series_from_rows(rows, {"loss": "loss", "eval_loss": "eval_loss"}))[0].label if rows else "unlabelled"
    )
    runs = [text_metrics(r) if r.format == "text" and r.lines else r for r in _load(path, "text")]
    got = {"train": [], "val": []}
    alerts = []
    for r in runs:
        got["train"] += [m["loss"] for m in r.metrics if "loss" in m]
        got["val"] += [m.get("val/loss", m.get("test/loss")) for m in r.metrics if "val/loss" in m or "test/loss" in m]
        alerts += _alerts(_records([r], "text"))
    truth_read = {}
    for split in ("train", "val"):
        values = [v for _, s, v in truth if (s == "train") == (split == "train")]
        truth_read[split] = (sum(_same(v, got[split]) for v in values), len(values))
    return Scored(path.name, label, any(r.metrics for r in runs), f"{len(runs)} run(s)", alerts, truth_read)


SCORERS = {"hf": score_hf, "lightning": score_lightning, "text": score_text}


def files(folder: Path) -> list[Path]:
    """The collected files of a folder: names starting with a digit, truth files and tables of notes left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name[:1].isdigit() and not p.name.endswith((".truth.json", ".tsv"))
    )


def summary(results: list[Scored]) -> str:
    healthy = [r for r in results if r.label == "healthy"]
    problems = [r for r in results if r.label != "healthy" and not r.label.startswith("unlabelled")]
    line = (
        f"read {sum(r.read for r in results)}/{len(results)}; healthy flagged {sum(bool(r.alerts) for r in healthy)}/"
        f"{len(healthy)}; problems caught {sum(bool(r.alerts) for r in problems)}/{len(problems)}"
    )
    if any(r.truth_read for r in results):
        for split in ("train", "val"):
            got = sum(r.truth_read.get(split, (0, 0))[0] for r in results)
            of = sum(r.truth_read.get(split, (0, 0))[1] for r in results)
            line += f"; {split} values read {got}/{of}"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("format", choices=FORMATS)
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    results = []
    for path in files(args.folder):
        try:
            results.append(SCORERS[args.format](path))
        except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:  # reported; the rest still scored
            results.append(Scored(path.name, "?", False, f"error: {str(exc)[:80]}"))
    for r in results:
        truth = " ".join(f"{s} {a}/{b}" for s, (a, b) in r.truth_read.items() if b)
        flags = ", ".join(f"{k} {d} ({s})" for k, d, s in r.alerts[:3]) or "-"
        print(f"{r.name[:60]:60s} {r.label[:14]:14s} {r.note[:24]:24s} {truth:24s} {flags}")
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
