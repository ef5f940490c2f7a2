"""Score runwatch's diagnostics and the published baselines on the labelled corpus and on real logs.

    python -m bench.evaluate                 # corpus in bench/corpus/data + real logs -> bench/RESULTS.md
    python -m bench.evaluate --corpus tests/fixtures/corpus --out /tmp/RESULTS.md --no-real-logs

Every run is streamed through the code path the service uses: its events,
cut into batches as the SDK sends them (at most ``--block`` events, cut at
pauses), become :class:`~runwatch.models.block.MetricBlock` s that a
:class:`~runwatch.models.monitor.RunMonitor` feeds to its diagnostics and
alert policy, exactly as ``DetectionPipeline._apply_events`` does; between
batches and after a run that never ended, the monitor's ``idle`` check runs
every ``--tick`` seconds of the run's clock, as the server's stall ticker
does. Baselines are diagnostics of the same shape run by the same monitor and
policy, so alerts are counted the same way for everyone. Metrics:
:mod:`bench.metrics`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python bench/evaluate.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import metrics as M
from bench.corpus.store import RunRecord, load
from bench.sections import with_kept_sections
from runwatch.models.learned.training import kept_when_thinned
from runwatch.models.monitor import RunMonitor

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS = ROOT / "corpus" / "data"
FIXTURE = ROOT.parent / "tests" / "fixtures" / "corpus"
REAL_LOGS = ROOT.parent.parent / "shared" / "data" / "training-logs"
DEBUGGER_PREFIX = "dbg/"


# -- systems ------------------------------------------------------------------------------------


@dataclass
class System:
    """A detector set: builds a fresh monitor per run; ``debugger`` systems also see ``dbg/`` tensors."""

    name: str
    label: str
    build: Callable[[dict], RunMonitor]
    debugger: bool = False
    reference: str = ""


def make_systems(names: Sequence[str] | None = None, curvefitting_stride: int = 1) -> list[System]:
    """The systems compared: runwatch's default suite and the baselines."""
    from bench.baselines import lightning, nni_assessors, sagemaker, zscore
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    from runwatch.models.fusion import FusionConfig
    from runwatch.models.registry import DIAGNOSTICS

    suite = DiagnosticSuite(SuiteConfig(enabled=list(DIAGNOSTICS)))
    rules = DiagnosticSuite(SuiteConfig(enabled=[n for n in DIAGNOSTICS if n != "learned"], fusion=FusionConfig(enabled=False)))
    median = nni_assessors.Studies(lambda mode: nni_assessors._assessors()[0](optimize_mode=mode, start_step=0))
    curve = nni_assessors.Studies(lambda: nni_assessors._assessors()[1](epoch_num=20, start_step=6, threshold=0.95, gap=1))
    all_systems = [
        System("runwatch", "runwatch with learned detectors (rules + learned + fusion)", lambda m: suite.monitor(m["run_id"]),
               reference="runwatch.models.registry.SuiteConfig() defaults"),
        System("runwatch_rules", "runwatch rules only (before the learned detectors)", lambda m: rules.monitor(m["run_id"]),
               reference="SuiteConfig(enabled=every rule diagnostic, fusion off)"),
        System("sagemaker", "SageMaker Debugger rules (defaults)", lambda m: RunMonitor(m["run_id"], sagemaker.rules()),
               debugger=True, reference=sagemaker.DOC),
        System("nni_medianstop", "NNI Medianstop", lambda m: RunMonitor(m["run_id"], [nni_assessors.Medianstop(median, m)]),
               reference=nni_assessors.Medianstop.reference),
        System("nni_curvefitting", "NNI Curvefitting",
               lambda m: RunMonitor(m["run_id"], [nni_assessors.Curvefitting(curve, m, stride=curvefitting_stride)]),
               reference=nni_assessors.Curvefitting.reference),
        System("zscore", "grad-norm EMA z-score (ZClip, z=2.5)", lambda m: RunMonitor(m["run_id"], [zscore.GradNormZScore()]),
               reference=zscore.GradNormZScore.reference),
        System("lightning", "Lightning EarlyStopping check_finite + divergence_threshold",
               lambda m: RunMonitor(m["run_id"], [lightning.LightningEarlyStopping(m.get("monitor", "val/loss"), m.get("monitor_mode", "min"))]),
               reference=lightning.LightningEarlyStopping.reference),
        System("lightning_patience", "Lightning EarlyStopping patience=3 (ordinary early stop)",
               lambda m: RunMonitor(m["run_id"], [lightning.LightningEarlyStopping(m.get("monitor", "val/loss"), m.get("monitor_mode", "min"), with_patience=True)]),
               reference="pytorch_lightning EarlyStopping(monitor='val/loss', patience=3)"),
    ]
    if names is None:
        return all_systems
    unknown = set(names) - {s.name for s in all_systems}
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}")
    return [s for s in all_systems if s.name in names]


# -- streaming ----------------------------------------------------------------------------------


def stream(
    rec: RunRecord,
    monitor: RunMonitor,
    *,
    block_events: int = 50,
    tick_s: float = 5.0,
    horizon_s: float = 7200.0,
) -> list[M.AlertRecord]:
    """Stream one run through ``monitor`` as the service would; return its alerts."""
    out: list[M.AlertRecord] = []
    run_id = rec.run_id

    def keep(alerts, eval_step=None):
        for a in alerts:
            f = a.finding
            step = f.step if eval_step is None else eval_step
            out.append(M.AlertRecord(run_id, f.detector, f.kind.name, int(f.severity), float(f.score), int(step),
                                     a.incident_id, a.revision))

    last_recv: float | None = None
    clock = rec.meta.get("clock", True)  # False: wall times made up from steps (bench/real_logs.py), no idle time
    for block, _lo, _hi in rec.blocks(block_events):
        first_wall = float(block.wall_times[0])
        if clock and last_recv is not None and first_wall - last_recv > tick_s:
            t = last_recv + tick_s
            while t < first_wall:
                keep(monitor.idle(t, last_recv), eval_step=monitor.last_step + 1)
                t += tick_s
        keep(monitor.observe_block(block))
        last_recv = float(block.wall_times[-1])
    if clock and last_recv is not None and not rec.meta.get("ended", True):
        t = last_recv + tick_s
        while t <= last_recv + horizon_s:
            keep(monitor.idle(t, last_recv), eval_step=monitor.last_step + 1)
            t += tick_s
    if last_recv is not None and rec.meta.get("ended", True):
        keep(monitor.end(last_recv))  # the client's RunEnd(FINISHED)
    for diag in monitor.diagnostics:
        end = getattr(diag, "end_run", None)
        if end is not None:
            end(rec.meta)
    return out


# -- the corpus ---------------------------------------------------------------------------------


def truth_of(rec: RunRecord) -> M.Truth:
    spec = rec.meta["spec"]
    faulty = spec["fault"] != "healthy"
    onset = int(spec["onset"]) if faulty else 0
    healthy_steps = int((rec.steps < onset).sum()) if faulty else len(rec.steps)
    return M.Truth(rec.run_id, faulty, spec["fault"], onset, rec.meta["labels"]["manifest_step"], healthy_steps)


def load_corpus(path: Path, accepted_only: bool = True) -> list[RunRecord]:
    runs = [load(p) for p in sorted((path / "runs").glob("*.npz"))]
    if accepted_only:
        runs = [r for r in runs if r.meta["labels"]["accepted"]]
    return runs


def thin_record(rec: RunRecord, k: int, *, thin_validation: bool = False) -> RunRecord:
    """The run as if its training metrics were logged only every ``k``-th step (steps that are multiples of ``k``).

    Validation metrics (``val/...``) keep their own steps unless ``thin_validation``: a training loop that
    logs every ``k`` steps still logs each evaluation when it runs (the HF Trainer's ``logging_steps`` and
    ``eval_steps``, Lightning's ``log_every_n_steps`` and its validation loop are separate cadences). Thinning
    them too would drop every evaluation whose step is not a multiple of ``k``: in the corpus, validation
    runs at steps ``val_every - 1, 2 * val_every - 1, ...`` (never a multiple of 25 for ``val_every`` 20).
    """
    if k <= 1:
        return rec
    masks = {}  # per metric, which of its values the thinned log has
    kept_rows = np.zeros(len(rec.steps), bool)
    for name, (rows, _values) in rec.columns.items():
        steps = rec.steps[rows]
        masks[name] = steps % k == 0 if thin_validation else kept_when_thinned(name, steps, k)
        kept_rows[rows[masks[name]]] = True
    keep = np.flatnonzero(kept_rows)
    remap = np.full(len(rec.steps), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    cols = {}
    for name, (rows, values) in rec.columns.items():
        m = masks[name]
        if m.any():
            cols[name] = (remap[rows[m]].astype(np.int32), values[m])
    meta = rec.meta
    spec = meta.get("spec", {})  # real logs have none
    if spec.get("fault") == "stall":
        # A stall starts after the last step that arrived; thinned, that is the last kept step before it, and
        # the service dates a stall at that step + 1.
        before = rec.steps[keep][rec.steps[keep] < int(spec["onset"])]
        if len(before):
            meta = {**meta, "spec": {**spec, "onset": int(before[-1]) + 1}}
    return RunRecord(rec.steps[keep], rec.wall[keep], cols, meta)


@dataclass
class Evaluation:
    """Alerts of every system on a set of runs, with the runs' truths."""

    truths: list[M.Truth]
    alerts: dict[str, dict[str, list[M.AlertRecord]]]  # system -> run -> alerts
    seconds: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def evaluate_runs(
    runs: Sequence[RunRecord],
    systems: Sequence[System],
    truths: Sequence[M.Truth],
    *,
    block_events: int = 50,
    progress: bool = False,
) -> Evaluation:
    ev = Evaluation(list(truths), {}, {}, {s.name: s.label for s in systems})
    sdk_view = [r.without([DEBUGGER_PREFIX]) for r in runs]
    for system in systems:
        t0 = time.perf_counter()
        per_run: dict[str, list[M.AlertRecord]] = {}
        for rec, plain in zip(runs, sdk_view):
            view = rec if system.debugger else plain
            per_run[rec.run_id] = stream(view, system.build(rec.meta), block_events=block_events)
        ev.alerts[system.name] = per_run
        ev.seconds[system.name] = time.perf_counter() - t0
        if progress:
            print(f"  {system.name}: {len(runs)} runs in {ev.seconds[system.name]:.1f} s", file=sys.stderr, flush=True)
    return ev


# -- real logs ----------------------------------------------------------------------------------


def real_log_sources(root: Path) -> dict[str, list[RunRecord]]:
    """Real runs by source (see :mod:`bench.real_logs`)."""
    from bench import real_logs

    return real_logs.load_all(root)


# -- report -------------------------------------------------------------------------------------


def _f(x: float, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "–"


def corpus_tables(ev: Evaluation, runs: Sequence[RunRecord]) -> list[str]:
    lines: list[str] = []
    truths = ev.truths
    faulty = [t for t in truths if t.faulty]
    lines += [
        "## Corpus",
        "",
        (
            f"{len(truths)} runs ({len(faulty)} faulty, {100 * len(faulty) / max(1, len(truths)):.0f}%), "
            f"{sum(len(r) for r in runs):,} logged steps, {sum(t.healthy_steps for t in truths):,} of them in healthy regions."
        ),
        "",
    ]
    by = lambda key: Counter(key(r) for r in runs)
    faults = by(lambda r: r.meta["spec"]["fault"])
    lines += ["| fault | runs | causes | severity (mild/moderate/severe) |", "|---|---:|---|---|"]
    for f in sorted(faults, key=lambda f: (f == "healthy", f)):
        rs = [r for r in runs if r.meta["spec"]["fault"] == f]
        causes = Counter(r.meta["spec"]["cause"] for r in rs)
        sev = Counter(r.meta["labels"]["severity"] for r in rs)
        grades = "" if f == "healthy" else "/".join(str(sev.get(g, 0)) for g in ("mild", "moderate", "severe"))
        cause_list = ", ".join(f"{c} {n}" for c, n in causes.most_common() if c)
        lines.append(f"| {f} | {len(rs)} | {cause_list} | {grades} |")
    lines.append("")
    for title, key in (("dataset", lambda r: r.meta["spec"]["dataset"]), ("architecture", lambda r: r.meta["spec"]["arch"]),
                       ("optimizer", lambda r: r.meta["spec"]["optimizer"]), ("schedule", lambda r: r.meta["spec"]["schedule"])):
        c = by(key)
        lines.append(f"- by {title}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    lines.append("")

    systems = list(ev.alerts)
    lines += [
        "## Q1. Which detector tells faulty runs from healthy ones? (run level)",
        "",
        (
            "Precision, recall and F1 over runs (faulty = positive; an alert before a fault's onset does not detect it); "
            "AUROC of the run score; healthy runs with any alert; false alarms per 10,000 healthy steps."
        ),
        "",
        "| system | precision | recall | F1 | AUROC | healthy runs flagged | false alarms / 10k healthy steps | eval s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        c = M.confusion(truths, ev.alerts[s])
        fa = M.false_alarms(truths, ev.alerts[s])
        lines.append(
            f"| {ev.labels[s]} | {_f(c['precision'])} | {_f(c['recall'])} | {_f(c['f1'])} | {_f(c['auroc'])} | "
            f"{_pct(c['fp'], c['fp'] + c['tn'])} | {_f(fa['per_10k'], 1)} | {ev.seconds.get(s, 0):.0f} |"
        )
    lines.append("")

    fault_types = sorted({t.fault for t in faulty})
    lines += [
        "## Q2. Which faults does each detector catch? (recall per fault type)",
        "",
        "| fault (runs) | " + " | ".join(ev.labels[s].split(" (")[0] for s in systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    per = {s: M.recall_by_fault(truths, ev.alerts[s]) for s in systems}
    for f in fault_types:
        n = per[systems[0]].get(f, (0, 0))[1]
        cells = [f"{per[s].get(f, (0, n))[0] / n:.2f}" if n else "–" for s in systems]
        lines.append(f"| {f} ({n}) | " + " | ".join(cells) + " |")
    lines.append("")

    lines += [
        "## Q3. How early? Lead time on divergence and NaN faults",
        "",
        (
            "Lead time = manifestation step − first alert step (at or after onset), in steps; positive = before the "
            "fault manifested. Median and 10th percentile over alerted runs; last column: share of all such runs alerted "
            "strictly before manifestation."
        ),
        "",
        "| system | fault | runs | alerted | median lead | p10 lead | alerted before manifestation |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        for f in ("divergence", "nan"):
            lt = M.lead_times(truths, ev.alerts[s], faults=(f,))
            lines.append(f"| {ev.labels[s].split(' (')[0]} | {f} | {lt['runs']} | {lt['alerted']} | {_f(lt['median'], 1)} | "
                         f"{_f(lt['p10'], 1)} | {_f(lt['frac_before'])} |")
    lines.append("")

    for q, s in (("a", "runwatch"), ("b", "runwatch_rules"), ("c", "sagemaker")):
        if s not in ev.alerts:
            continue
        dets = sorted({a.detector for al in ev.alerts[s].values() for a in al})
        lines += [
            f"## Q4{q}. Which {'rule' if s == 'sagemaker' else 'diagnostic'} fires? ({ev.labels[s]})",
            "",
            (
                "Each row is that detector alone: healthy runs it flags, its false alarms per 10k healthy steps, the faulty "
                "runs it detects, and the fault types where it detects the most runs."
            ),
            "",
            "| detector | healthy runs flagged | false alarms / 10k | faulty runs detected | top fault types detected (share of type) |",
            "|---|---:|---:|---:|---|",
        ]
        for d in dets:
            al = M.only(ev.alerts[s], d)
            c = M.confusion(truths, al)
            fa = M.false_alarms(truths, al)
            rb = M.recall_by_fault(truths, al)
            top = sorted(((k, v[0] / v[1]) for k, v in rb.items() if v[0]), key=lambda kv: -kv[1])[:4]
            lines.append(f"| {d} | {_pct(c['fp'], c['fp'] + c['tn'])} | {_f(fa['per_10k'], 1)} | {_pct(c['tp'], c['tp'] + c['fn'])} | "
                         + ", ".join(f"{k} {v:.2f}" for k, v in top) + " |")
        lines.append("")
    return lines


def _run_statistics(rec: RunRecord) -> dict[str, float]:
    """Whole-run summary statistics a single fixed threshold could be put on (hindsight, not streaming)."""
    from bench.corpus.labels import ema

    _, loss = rec.series("loss")
    _, g = rec.series("grad_norm")
    _, val = rec.series("val/loss")
    e = ema(loss)
    fin = e[np.isfinite(e)]
    out = {}
    bad = not np.isfinite(loss).all()
    out["max / min smoothed loss"] = math.inf if bad else float(fin.max() / max(fin.min(), 1e-12)) if len(fin) else math.nan
    k = max(1, min(20, len(loss) // 10))
    lf = loss[np.isfinite(loss)]
    out["final / initial loss"] = math.inf if bad else float(lf[-k:].mean() / max(lf[:k].mean(), 1e-12)) if len(lf) else math.nan
    gf = g[np.isfinite(g)]
    out["max / median grad norm"] = math.inf if len(gf) < len(g) else float(gf.max() / max(np.median(gf), 1e-30)) if len(gf) else math.nan
    vf = val[np.isfinite(val)]
    if len(vf) < len(val):
        out["max val loss after its best / best"] = math.inf
    elif len(vf):
        b = int(np.argmin(vf))
        out["max val loss after its best / best"] = float(vf[b:].max() / max(vf[b], 1e-12))
    else:
        out["max val loss after its best / best"] = math.nan
    gaps = np.diff(rec.wall)
    out["longest telemetry gap (s)"] = float(gaps.max()) if len(gaps) else 0.0
    return out


def threshold_table(runs: Sequence[RunRecord], truths: Sequence[M.Truth]) -> list[str]:
    stats = [_run_statistics(r) for r in runs]
    labels = np.array([t.faulty for t in truths])
    lines = [
        "## Q5. Could one fixed threshold do it? (hindsight statistics of whole runs)",
        "",
        (
            "For a statistic computed over a whole finished run, the AUROC of faulty vs healthy runs and the best "
            "accuracy any single threshold on it reaches (majority class: "
            f"{max(labels.mean(), 1 - labels.mean()):.2f}). Both directions are tried; NaN-free runs only."
        ),
        "",
        "| statistic | AUROC (higher = faulty) | best accuracy of one threshold | its threshold |",
        "|---|---:|---:|---:|",
    ]
    for name in stats[0]:
        x = np.array([s[name] for s in stats], dtype=float)
        ok = ~np.isnan(x)
        xs, ys = np.where(np.isinf(x[ok]), 1e300, x[ok]), labels[ok]
        au = M.auroc(ys, xs)
        best, thr = 0.0, math.nan
        for t in np.unique(xs):
            for direction in (1, -1):
                pred = xs >= t if direction == 1 else xs < t
                acc = float((pred == ys).mean())
                if acc > best:
                    best, thr = acc, t if direction == 1 else -t
        lines.append(f"| {name} | {_f(au)} | {_f(best)} | {'≥' if thr >= 0 else '<'} {abs(thr):.3g} |")
    lines.append("")
    return lines


def real_log_tables(results: dict[str, Evaluation], runs: dict[str, list[RunRecord]]) -> list[str]:
    lines = [
        "## Q6. Real logs",
        "",
        (
            "Real runs from `../shared/data/training-logs` (licenses in bench/README.md), streamed the same way. "
            "They carry no injected faults: for the healthy sources every alert is counted as a false alarm (these runs "
            "were published as ordinary runs; a few may really have problems). MLPerf runs are labelled by their result "
            "status (positive = status other than `success`)."
        ),
        "",
        "| source | runs | steps | system | runs flagged | false alarms / 10k steps | alerts by kind |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for src, ev in results.items():
        if src == "mlperf":
            continue
        n_steps = sum(len(r) for r in runs[src])
        for s in ev.alerts:
            c = M.confusion(ev.truths, ev.alerts[s])
            fa = M.false_alarms(ev.truths, ev.alerts[s])
            kinds = Counter(a.detector for al in ev.alerts[s].values() for a in al if a.revision == 1)
            lines.append(f"| {src} | {len(runs[src])} | {n_steps:,} | {ev.labels[s].split(' (')[0]} | {_pct(c['fp'], c['fp'] + c['tn'])} | "
                         f"{_f(fa['per_10k'], 1)} | " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(4)) + " |")
    labelled = {src: ev for src, ev in results.items() if src != "mlperf" and any(t.faulty for t in ev.truths)}
    for src, ev in labelled.items():
        faults = Counter(t.fault for t in ev.truths if t.faulty)
        lines += [
            "",
            f"{src}: labelled by the written criteria of bench/real_labels/README.md: {len(ev.truths)} runs, "
            + ", ".join(f"{n} {f}" for f, n in faults.most_common()) + ", the rest healthy.",
            "",
            "| system | problem runs caught | " + " | ".join(faults) + " | healthy runs flagged |",
            "|---|---:|" + "---:|" * len(faults) + "---:|",
        ]
        for s in ev.alerts:
            c = M.confusion(ev.truths, ev.alerts[s])
            caught = {f: sum(1 for t in ev.truths if t.fault == f and M.counted(t, ev.alerts[s].get(t.run_id, ()))) for f in faults}
            lines.append(f"| {ev.labels[s].split(' (')[0]} | {_pct(c['tp'], c['tp'] + c['fn'])} | "
                         + " | ".join(f"{caught[f]}/{n}" for f, n in faults.items()) + f" | {_pct(c['fp'], c['fp'] + c['tn'])} |")
    if "mlperf" in results:
        ev = results["mlperf"]
        pos = sum(t.faulty for t in ev.truths)
        lines += [
            "",
            f"MLPerf: {len(ev.truths)} runs, {pos} not successful.",
            "",
            "| system | precision | recall | F1 | AUROC | successful runs flagged | alerts by kind |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for s in ev.alerts:
            c = M.confusion(ev.truths, ev.alerts[s])
            kinds = Counter(a.detector for al in ev.alerts[s].values() for a in al if a.revision == 1)
            lines.append(f"| {ev.labels[s].split(' (')[0]} | {_f(c['precision'])} | {_f(c['recall'])} | {_f(c['f1'])} | "
                         f"{_f(c['auroc'])} | {_pct(c['fp'], c['fp'] + c['tn'])} | "
                         + ", ".join(f"{k} {v}" for k, v in kinds.most_common(3)) + " |")
    lines.append("")
    return lines


def summary_table(ev: Evaluation) -> list[str]:
    """The short table for README: one row per system."""
    lines = ["| system | precision | recall | F1 | AUROC | false alarms / 10k healthy steps | divergence alerted before manifestation |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in ev.alerts:
        c = M.confusion(ev.truths, ev.alerts[s])
        fa = M.false_alarms(ev.truths, ev.alerts[s])
        lt = M.lead_times(ev.truths, ev.alerts[s], faults=("divergence",))
        lines.append(f"| {ev.labels[s].split(' (')[0]} | {_f(c['precision'])} | {_f(c['recall'])} | {_f(c['f1'])} | "
                     f"{_f(c['auroc'])} | {_f(fa['per_10k'], 1)} | {_f(lt['frac_before'])} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help=f"default {DEFAULT_CORPUS} if present, else the test fixture")
    ap.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    ap.add_argument("--systems", nargs="*", default=None)
    ap.add_argument("--block", type=int, default=50, help="events per batch (the SDK's batching)")
    ap.add_argument("--curvefitting-stride", type=int, default=0,
                    help="judge every n-th run of a study with NNI Curvefitting (0: 1 for <= 100 runs, else 4)")
    ap.add_argument("--real-logs", type=Path, default=REAL_LOGS)
    ap.add_argument("--no-real-logs", action="store_true")
    ap.add_argument("--split", choices=("all", "train", "test"), default="all",
                    help="corpus runs of this split only (bench/splits.py); real logs: the test half when not 'all'")
    ap.add_argument("--thin", type=int, default=1,
                    help="log training metrics only every k-th step of every run (validation keeps its own steps)")
    ap.add_argument("--thin-validation", action="store_true",
                    help="with --thin, thin validation metrics to the same steps too (drops most evaluations)")
    args = ap.parse_args(argv)

    corpus = args.corpus or (DEFAULT_CORPUS if (DEFAULT_CORPUS / "labels.csv").exists() else FIXTURE)
    started = time.perf_counter()
    runs = load_corpus(corpus)
    if args.split != "all":
        from bench.splits import corpus_split

        novel = any(r.meta["spec"].get("domain", "default") != "default" for r in runs)
        runs = [r for r in runs if novel or corpus_split(r.meta) == args.split]
    runs = [thin_record(r, args.thin, thin_validation=args.thin_validation) for r in runs]
    stride = args.curvefitting_stride or (1 if len(runs) <= 100 else 4)
    systems = make_systems(args.systems, curvefitting_stride=stride)
    print(f"corpus {corpus}: {len(runs)} runs", file=sys.stderr)
    ev = evaluate_runs(runs, systems, [truth_of(r) for r in runs], block_events=args.block, progress=True)

    kept = "every step kept"
    if args.thin > 1:
        evaluations = "thinned alike" if args.thin_validation else "at their own steps"
        kept = f"training metrics of every {args.thin}th step kept, evaluations {evaluations}"
    lines = [
        "# Detection quality: results",
        "",
        (
            "Generated by `python -m bench.evaluate` (definitions: bench/README.md and bench/metrics.py). "
            f"Corpus: `{corpus.relative_to(ROOT.parent) if corpus.is_relative_to(ROOT.parent) else corpus}`; "
            f"split `{args.split}`; {kept}; "
            f"batches of {args.block} events; NNI Curvefitting judged every {stride} run(s) of each study. "
            "Every system runs with its documented defaults; runwatch's learned detectors were fitted on the train "
            "split only (bench/splits.py, bench/train_detectors.py)."
        ),
        "",
        "## Summary",
        "",
        *summary_table(ev),
        "",
        *corpus_tables(ev, runs),
        *threshold_table(runs, ev.truths),
    ]
    if not args.no_real_logs and args.real_logs.exists():
        from bench import real_logs

        print("real logs ...", file=sys.stderr)
        sources = real_logs.load_all(args.real_logs)
        if args.split != "all":
            from bench.splits import real_split

            sources = {k: [r for r in v if real_split(r.run_id) == args.split] for k, v in sources.items()}
        sources = {k: [thin_record(r, args.thin, thin_validation=args.thin_validation) for r in v]
                   for k, v in sources.items()}
        results = {}
        for src, rs in sources.items():
            real_systems = make_systems([s.name for s in systems if s.name not in ("nni_curvefitting",)])
            results[src] = evaluate_runs(rs, real_systems, [real_logs.truth(r) for r in rs], block_events=args.block, progress=True)
        lines += real_log_tables(results, sources)
        lines += real_logs.notes(sources)
    elif not args.no_real_logs:
        lines += ["## Q6. Real logs", "", f"Not run: {args.real_logs} not found.", ""]
    lines += [f"_Total evaluation time {time.perf_counter() - started:.0f} s._", ""]
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(with_kept_sections("\n".join(lines), previous))  # keep the advisor's and the benches' tables
    print(f"wrote {args.out}", file=sys.stderr)
    print("\n".join(summary_table(ev)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
