"""Real training logs from ``../shared/data/training-logs`` as runs the harness can stream.

Sources (licenses: ``shared/data/README.md``; cited in ``bench/README.md``):

- ``modded-nanogpt``: 1,5xx GPT-2 speedrun logs (KellerJordan/modded-nanogpt, MIT),
  long format, read with runwatch's importer (``train_loss`` -> ``loss``,
  ``val_loss`` -> ``val/loss``). Healthy.
- ``lightning`` / ``tensorboard``: Lightning ``metrics.csv`` and TensorBoard
  event files committed to public GitHub repositories, read with runwatch's
  importers. Published as ordinary runs: treated as healthy.
- ``github text``: the plain-text training logs committed to GitHub (0Xero7/slm_training's
  85 logs), read with runwatch's text importer and turned into metric events by the
  server's own text pipeline (:class:`runwatch.models.text.monitor.TextMonitor`'s
  extraction: ``Train Loss`` -> ``loss``, ``Valid Loss`` -> ``val/loss``, ``LR`` ->
  ``lr``, one step per epoch), so every system sees the same extracted series. Logs
  that end before their first epoch have no series and are left out. Unlabelled:
  treated as healthy.
- ``hf-trainer``: Hugging Face ``trainer_state.json`` files. Healthy.
- ``hf-trainer-more``: 131 Hugging Face ``trainer_state.json`` runs of
  ``hf_trainer_state_more/``, read with the same importer, labelled by
  ``bench/real_labels/hf_trainer_state_more.csv`` (criteria written before
  labelling: ``bench/real_labels/README.md``): ``fault`` = the label
  (``nan``, ``divergence``, ``collapse``, ``overfitting``, ``no_learning``;
  positive = not ``healthy``), ``manifest_step`` where the problem first shows;
  the onset is unknown (0). Skipped when the CSV or the folder is absent.
- ``mlperf``: MLPerf Training v0.7 / v2.0 results (Apache-2.0), one run per
  line, labelled by ``status`` (positive = not ``success``). Each run is its
  ``eval_accuracy`` series, one event per evaluation (``val/acc``; RNN-T's
  word error rate as ``val/wer``; for Mask R-CNN the BBOX mAP); ``train_loss``
  (logged by 1,305 v2.0 runs, 4 of them unsuccessful) is left out because its
  steps cannot be aligned with the evaluations' epochs.

Events without wall times get a synthetic clock (one second per step, to keep their order) and
``meta["clock"] = False``: the harness then sends them no idle ticks, so the stall check, which needs real
time, has nothing to judge (at one second per step, a Trainer log written every 6,000 steps looked like
100-minute silences).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from itertools import pairwise
from pathlib import Path

import numpy as np

from bench import metrics as M
from bench.corpus.store import RunRecord

_ID = re.compile(r"[^A-Za-z0-9._:/@+-]")
HF_MORE_LABELS = Path(__file__).resolve().parent / "real_labels" / "hf_trainer_state_more.csv"


def _record(source: str, i: int, name: str, steps, walls, metrics, *, faulty: bool = False, study: str = "", extra=None) -> RunRecord | None:
    rows = []
    last_step = -1
    for s, w, m in zip(steps, walls, metrics):
        m = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not m or s < last_step:
            continue
        rows.append((int(s), float(w), m))
        last_step = s
    if len(rows) < 2:
        return None
    clock = not (any(not (w > 0) for _, w, _ in rows) or any(b[1] < a[1] for a, b in pairwise(rows)))
    if not clock:
        rows = [(s, 1.7e9 + s, m) for s, _, m in rows]
    meta = {
        "run_id": _ID.sub("_", f"{source}:{i}")[:128],
        "name": name,
        "source": source,
        "study": study or source,
        "ended": True,
        "status": "completed",
        "label_faulty": faulty,
        "clock": clock,
        **(extra or {}),
    }
    return RunRecord.from_events(rows, meta)


def _imported(source: str, runs, labels: dict[str, tuple[str, int | None]] | None = None, root: Path | None = None) -> list[RunRecord]:
    """Imported runs as records; ``labels`` (by source path relative to ``root``) mark the labelled ones."""
    out = []
    for i, r in enumerate(runs):
        walls = r.wall_times if len(r.wall_times) == len(r.steps) else [0.0] * len(r.steps)
        extra, faulty = None, False
        if labels is not None and root is not None:
            label, manifest = labels.get(Path(r.source).relative_to(root).as_posix(), ("healthy", None))
            extra, faulty = {"fault": label, "manifest_step": manifest}, label != "healthy"
        rec = _record(source, i, r.name, r.steps, walls, r.metrics, faulty=faulty, extra=extra)
        if rec is not None:
            out.append(rec)
    return out


def text_metrics(run):
    """``run`` (a text log read by the importer) with the metric events the server's text pipeline reads out of
    its lines as its steps and metrics (no wall clock: text lines without time stamps carry none)."""
    from runwatch.models.text.monitor import TextMonitor

    monitor = TextMonitor(run.name)
    events, _ = monitor.observe_lines([line.text for line in run.lines])
    events += monitor.flush()[0]
    by_step: dict[int, dict[str, float]] = {}
    for step, values in events:
        by_step.setdefault(int(step), {}).update(values)
    run.steps = sorted(by_step)
    run.metrics = [by_step[s] for s in run.steps]
    run.wall_times = [0.0] * len(run.steps)
    return run


def load_mlperf(folder: Path) -> list[RunRecord]:
    out = []
    i = 0
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            for line in fh:
                r = json.loads(line)
                evals = r.get("eval_accuracy") or []
                bench = str(r.get("benchmark"))
                name = "val/wer" if bench == "rnnt" else "val/acc"
                steps, walls, metrics = [], [], []
                for k, e in enumerate(evals):
                    v = e.get("value")
                    if isinstance(v, dict):
                        v = next((x for x in v.values() if isinstance(x, (int, float))), None)
                    if not isinstance(v, (int, float)):
                        continue
                    steps.append(k)
                    walls.append((e.get("t_ms") or 0) / 1000.0)
                    metrics.append({name: v})
                rec = _record("mlperf", i, str(r.get("file")), steps, walls, metrics,
                              faulty=r.get("status") != "success", study=f"{r.get('mlperf_version')}/{bench}",
                              extra={"benchmark": bench, "mlperf_status": r.get("status"), "monitor": name,
                                     "monitor_mode": "min" if bench == "rnnt" else "max"})
                i += 1
                if rec is not None:
                    out.append(rec)
    return out


def load_hf_labelled(folder: Path, labels_csv: Path = HF_MORE_LABELS) -> list[RunRecord]:
    """The labelled ``trainer_state.json`` runs of ``folder`` (empty when the folder or the CSV is absent).

    Each file is read by runwatch's importer exactly as the ``hf-trainer`` source reads its files
    (metric names ``loss``, ``val/loss``, ``lr``, ``grad_norm``); the CSV row adds the labels.
    A CSV row whose file is missing is skipped.
    """
    from runwatch.client import importers

    if not folder.is_dir() or not labels_csv.is_file():
        return []
    with open(labels_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for i, row in enumerate(rows):
        path = folder / row["folder"] / row["path"]
        if not path.is_file():
            continue
        label = row["label"]
        manifest = int(row["manifest_step"]) if row.get("manifest_step") else None
        for r in importers.read("hf", path, canonical=True, root=folder):
            walls = r.wall_times if len(r.wall_times) == len(r.steps) else [0.0] * len(r.steps)
            rec = _record("hf-more", i, f"{row['folder']}/{row['path']}", r.steps, walls, r.metrics,
                          faulty=label != "healthy", study="hf-trainer-more",
                          extra={"fault": label, "manifest_step": manifest})
            if rec is not None:
                out.append(rec)
    return out


def load_all(root: Path) -> dict[str, list[RunRecord]]:
    """Every readable source under ``root`` (a missing one is skipped)."""
    from runwatch.client import importers

    sources: dict[str, list[RunRecord]] = {}
    nano = root / "modded_nanogpt_curves.csv.gz"
    if nano.exists():
        sources["modded-nanogpt"] = _imported("nanogpt", importers.load(nano, fmt="csv"))
    gh = root / "github_run_logs"
    if gh.exists():
        from bench.real_labels.label_github import read_labels

        runs = importers.load(gh)
        labels = read_labels()  # bench/real_labels/README.md: the HF criteria, applied unchanged
        for fmt, label in (("lightning", "lightning"), ("tensorboard", "tensorboard")):
            sources[f"github {label}"] = _imported(label, [r for r in runs if r.format == fmt], labels, gh)
        sources["github text"] = _imported("text", [text_metrics(r) for r in runs if r.format == "text"])
    hf = root / "hf_trainer_state"
    if hf.exists():
        sources["hf-trainer"] = _imported("hf", importers.load(hf))
    sources["hf-trainer-more"] = load_hf_labelled(root / "hf_trainer_state_more")
    ml = root / "mlperf"
    if ml.exists():
        sources["mlperf"] = load_mlperf(ml)
    return {k: v for k, v in sources.items() if v}


def truth(rec: RunRecord) -> M.Truth:
    """A run's truth from its meta: ``label_faulty``, and where labelled ``fault`` and ``manifest_step``.

    The onset is unknown (0). Healthy steps: all of a healthy run's, none of an unlabelled faulty run's
    (MLPerf), and for a faulty run with a manifestation step the logged steps before it.
    """
    faulty = bool(rec.meta.get("label_faulty"))
    fault = rec.meta.get("fault") or ("unsuccessful" if faulty else "healthy")
    manifest = rec.meta.get("manifest_step")
    manifest = int(manifest) if manifest is not None and faulty else None
    if not faulty:
        healthy = len(rec.steps)
    elif manifest is not None:
        healthy = int(np.count_nonzero(rec.steps < manifest))
    else:
        healthy = 0
    return M.Truth(rec.run_id, faulty, fault, 0, manifest, healthy)


def notes(sources: dict[str, list[RunRecord]]) -> list[str]:
    lines = ["Sources read: " + ", ".join(f"{k} {len(v)} runs" for k, v in sources.items()) + ". "
             "NNI Curvefitting is not run on real logs (it needs each run's planned number of reports). "
             "github text: the plain-text logs of 0Xero7+slm_training, their metrics read by runwatch's text pipeline "
             "(logs that end before their first epoch have none and are left out).", ""]
    return lines


def _finite(x: float) -> bool:
    return math.isfinite(x)
