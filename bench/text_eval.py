"""Text-log detection benchmark: HDFS sessions, BGL lines, issue fragments, metric extraction, throughput.

    python -m bench.text_eval                       # everything -> bench/RESULTS_text.md (~4 min on 2 cores)
    python -m bench.text_eval --only fragments      # one section (hdfs, bgl, fragments, extraction, throughput)

Sections (the data's licences and citations are in ../shared/data/README.md):

- ``hdfs``: logpai/deep-loglizer's HDFS_100k block sessions. Their files are a seeded
  shuffle (``np.random.seed(42)``; ``np.random.shuffle`` of the session indices, in
  deep-loglizer's ``preprocess_hdfs.py``), so the chronological order is recovered
  by redoing that shuffle (checked against the timestamps of the blocks that also
  appear in loghub's HDFS_2k). Split by block creation order: the first 70 % train
  (normal sessions only, so no anomaly is seen in training), the next 10 % validate
  (the only place thresholds are chosen), the last 20 % test. deep-loglizer's own
  random split is reported beside it for comparison with published numbers.
- ``bgl``: loghub BGL_2k per-line alert labels, lines in time order; the first half
  is the project's past (warm-up), the second half is scored line by line.
- ``fragments``: the 64 labelled issue-thread excerpts, each streamed line by line
  through a TextMonitor and the service's default RunMonitor suite, as the service
  does. This is the development set the signatures were written against: its
  numbers are not a test result. ``--fragments PATH`` scores another set in the
  same format the same way (the threads of the sets collected on 2026-12-06, to
  check the signatures on threads they were not written against, are listed in
  ``bench/text_fragments_2026-12-06.md``).
- ``extraction``: (step, metric, value) triples against the hand-checked truth in
  ``bench/text_truth/``.
- ``throughput``: template matching + metric extraction (and the whole TextMonitor)
  on real log lines, one core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HDFS = DATA / "text-logs" / "hdfs_sessions"
LOGHUB = DATA / "text-logs" / "loghub"
FRAGMENTS = DATA / "text-logs" / "issue_fragments_dev.jsonl"
SLM = DATA / "training-logs" / "github_run_logs" / "0Xero7+slm_training" / "logs"
TRUTH = Path(__file__).resolve().parent / "text_truth"
OUT = Path(__file__).resolve().parent / "RESULTS_text.md"

PUBLISHED = [("loglizer IsolationForest", 0.802), ("loglizer Invariants Mining", 0.915), ("DeepLog (paper)", 0.96)]


def prf(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    pred, y = np.asarray(pred, bool), np.asarray(y, bool)
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def table(header: list[str], rows: list[list]) -> str:
    def cell(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# -- HDFS ---------------------------------------------------------------------------------------------


def hdfs_chronological() -> tuple[list[dict], dict]:
    """All 7,940 sessions in block-creation order, and the check of that order."""
    d = HDFS / "hdfs_1.0_tar"
    rows = jsonl(d / "session_train.jsonl") + jsonl(d / "session_test.jsonl")
    # deep-loglizer wrote session_idx[:train] then session_idx[-test:] after shuffling range(n) with seed 42.
    state = np.random.RandomState(42)
    idx = list(range(len(rows)))
    state.shuffle(idx)
    order = np.argsort(idx)
    chrono = [rows[i] for i in order]
    position = {r["block_id"]: i for i, r in enumerate(chrono)}
    # Check: blocks whose creation lines (allocate/receive) are in loghub's timestamped HDFS_2k sample.
    seen = {}
    for line in (LOGHUB / "HDFS" / "HDFS_2k.log").read_text().splitlines():
        if re.search(r"allocateBlock|Receiving block|Received block|PacketResponder", line):
            stamp = tuple(line.split()[:2])
            for b in set(re.findall(r"blk_-?\d+", line)):
                seen.setdefault(b, stamp)
    pairs = sorted((position[b], t) for b, t in seen.items() if b in position)
    monotone = all(pairs[i][1] <= pairs[i + 1][1] for i in range(len(pairs) - 1))
    return chrono, {"checked_blocks": len(pairs), "in_time_order": monotone}


def _hdfs_models(train: list[list[str]], epochs: int):
    from runwatch.models.text.sequence import (
        CountScorerConfig,
        NextTemplateConfig,
        NextTemplateModel,
        TemplateCountScorer,
    )

    deeplog = NextTemplateModel(NextTemplateConfig(epochs=epochs, seed=0)).fit(train)
    counts = TemplateCountScorer(CountScorerConfig(seed=0)).fit(train)
    return deeplog, counts


def _best_threshold(scores: np.ndarray, y: np.ndarray, candidates: np.ndarray) -> float:
    best, best_f1 = candidates[0], -1.0
    for t in candidates:
        f1 = prf(scores >= t, y)[2]
        if f1 > best_f1:
            best, best_f1 = t, f1
    return float(best)


def run_hdfs(epochs: int = 10) -> dict:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    chrono, check = hdfs_chronological()
    n = len(chrono)
    a, b = int(0.7 * n), int(0.8 * n)
    splits = {
        "chronological": ([r for r in chrono[:a] if r["label"] == 0], chrono[a:b], chrono[b:]),
    }
    # deep-loglizer's random split: train on its normal-only train file, validate on the last 10 % of it + its
    # anomalies (from the 1.0 file), test on its test file.
    d0, d1 = HDFS / "hdfs_0.0_tar", HDFS / "hdfs_1.0_tar"
    tr0 = jsonl(d0 / "session_train.jsonl")
    tr1 = jsonl(d1 / "session_train.jsonl")
    te = jsonl(d0 / "session_test.jsonl")
    cut = int(0.9 * len(tr1))
    val_ids = {r["block_id"] for r in tr1[cut:]}
    splits["deep-loglizer random"] = ([r for r in tr0 if r["block_id"] not in val_ids], tr1[cut:], te)

    normal_seqs = {tuple(r["templates"]) for r in chrono if r["label"] == 0}
    out = {"check": check, "splits": {}}
    for name, (train, val, test) in splits.items():
        t0 = time.perf_counter()
        deeplog, counts = _hdfs_models([r["templates"] for r in train], epochs)
        fit_s = time.perf_counter() - t0
        yv = np.array([r["label"] == 1 for r in val])
        yt = np.array([r["label"] == 1 for r in test])
        res = {"train": len(train), "val": (len(val), int(yv.sum())), "test": (len(test), int(yt.sum())), "fit_s": fit_s}
        seqs_v, seqs_t = [r["templates"] for r in val], [r["templates"] for r in test]
        # DeepLog: the rank cut-off k chosen on validation (DeepLog's g); k=9 as published beside it.
        dv, dt = deeplog.score_samples(seqs_v), deeplog.score_samples(seqs_t)
        k = int(_best_threshold(dv, yv, np.arange(1, 16)))
        res["deeplog_k"] = k
        res["DeepLog (k on validation)"] = prf(dt >= k, yt)
        res["DeepLog (k=9)"] = prf(dt >= 9, yt)
        cv, ct = counts.score_samples(seqs_v), counts.score_samples(seqs_t)
        tc = _best_threshold(cv, yv, np.quantile(cv, np.linspace(0.5, 0.999, 200)))
        res["Template counts + PyOD IForest (threshold on validation)"] = prf(ct >= tc, yt)
        vocab = set(counts.vocab.keys)
        novel_t = np.array([any(x not in vocab for x in s) for s in seqs_t])
        res["Unseen template in session"] = prf(novel_t, yt)
        res["DeepLog or counts"] = prf((dt >= k) | (ct >= tc), yt)
        # No detector over template sequences can separate an anomalous session whose sequence is exactly
        # that of a normal session (HDFS_100k cuts sessions at line 100,000; their labels come from the full log).
        same = np.array([tuple(r["templates"]) in normal_seqs for r in test]) & yt
        res["indistinguishable"] = int(same.sum())
        tp = int(yt.sum() - same.sum())
        res["ceiling_f1"] = 2 * tp / (2 * tp + int(same.sum())) if tp else 0.0
        separable = ~same
        res["DeepLog on separable anomalies"] = prf((dt >= k)[separable], yt[separable])
        out["splits"][name] = res
    return out


def format_hdfs(r: dict) -> str:
    lines = [
        "## HDFS sessions (deep-loglizer HDFS_100k)",
        "",
        ("Command: `python -m bench.text_eval --only hdfs` (DeepLog: 2-layer LSTM 64, window 10, 10 epochs, seed 0; "
        "PyOD IForest 200 trees, seed 0)."),
        "",
        (f"Chronological order recovered from deep-loglizer's seeded shuffle; check against loghub HDFS_2k "
        f"timestamps: {r['check']['checked_blocks']} blocks, in time order: {r['check']['in_time_order']}."),
        "",
    ]
    for name, s in r["splits"].items():
        lines += [
            f"### {name} split",
            "",
            (f"train {s['train']} normal sessions; validation {s['val'][0]} ({s['val'][1]} anomalous); "
            f"test {s['test'][0]} ({s['test'][1]} anomalous); fit {s['fit_s']:.0f} s. Thresholds chosen on validation "
            f"only (DeepLog k = {s['deeplog_k']})."),
            "",
        ]
        rows = []
        for key in ("DeepLog (k on validation)", "DeepLog (k=9)", "Template counts + PyOD IForest (threshold on validation)",
                    "Unseen template in session", "DeepLog or counts"):
            p, rc, f = s[key]
            rows.append([key, p, rc, f])
        for label, f in PUBLISHED:
            rows.append([f"published: {label} (full HDFS, other splits)", "", "", f])
        lines.append(table(["detector", "precision", "recall", "F1"], rows))
        p, rc, f = s["DeepLog on separable anomalies"]
        lines += [
            "",
            (f"{s['indistinguishable']} of the {s['test'][1]} test anomalies have exactly the template sequence of a "
            f"normal session, so no sequence detector can flag them without flagging normal sessions: the F1 "
            f"ceiling on this test set is **{s['ceiling_f1']:.3f}**. On the separable anomalies DeepLog reaches "
            f"precision {p:.3f}, recall {rc:.3f}, F1 {f:.3f}."),
            "",
        ]
    return "\n".join(lines)


# -- BGL ----------------------------------------------------------------------------------------------


def run_bgl() -> dict:
    from runwatch.models.text.monitor import TextMonitor, TextMonitorConfig
    from runwatch.models.text.sequence import NoveltyConfig

    rows = []
    for line in (LOGHUB / "BGL" / "BGL_2k.log").read_text(encoding="utf-8", errors="replace").splitlines():
        label, rest = line.split(" ", 1)
        rows.append((int(rest.split(" ", 1)[0]), label != "-", rest))
    rows.sort(key=lambda r: r[0])  # time order (stable)
    half = len(rows) // 2
    out = {"lines": len(rows), "eval_lines": len(rows) - half, "eval_alerts": sum(r[1] for r in rows[half:])}
    variants = {
        "signatures (incl. ERROR/FATAL level lines)": TextMonitorConfig(novelty=NoveltyConfig(max_per_run=0)),
        "signatures + new templates": TextMonitorConfig(novelty=NoveltyConfig(warmup_lines=half, max_per_run=10**6)),
        "new templates only": None,
    }
    for name, cfg in variants.items():
        if cfg is None:
            cfg = TextMonitorConfig(novelty=NoveltyConfig(warmup_lines=half, max_per_run=10**6))
            cfg = cfg.model_copy(update={"signatures": cfg.signatures.model_copy(update={"error_lines": False})})
            only_new = True
        else:
            only_new = False
        tm = TextMonitor("bgl", cfg)
        flagged = np.zeros(len(rows), bool)
        for text in (r[2] for r in rows):
            _, findings = tm.observe_lines([text])
            for f, first in zip(findings, tm.finding_lines):
                if only_new and not f.key.startswith("new_template:"):
                    continue
                flagged[first : first + len(f.lines)] = True
        y = np.array([r[1] for r in rows])
        out[name] = prf(flagged[half:], y[half:])
    return out


def format_bgl(r: dict) -> str:
    rows = [[k, *v] for k, v in r.items() if isinstance(v, tuple)]
    return "\n".join([
        "## BGL_2k line labels (loghub)",
        "",
        ("Command: `python -m bench.text_eval --only bgl`. Lines sorted by time; the first "
        f"{r['lines'] - r['eval_lines']} are the project's past (templates and warm-up), the last {r['eval_lines']} "
        f"({r['eval_alerts']} alert lines) are scored. A line counts as flagged when a finding names it as evidence."),
        "",
        table(["detector", "precision", "recall", "F1"], rows),
        "",
        ("No BGL-specific signature exists: BGL is a supercomputer's RAS log, not a training log. The level rule "
        "flags FATAL lines, of which BGL has many that are not labelled alerts."),
        "",
    ])


# -- fragments ----------------------------------------------------------------------------------------

EXPECTED = {
    "fp16_loss_scale_underflow": {"fp16_overflow"},
    "fp16_overflow_skipped_steps": {"fp16_overflow"},
    "fp16_overflow_abort": {"fp16_overflow"},
    "nan_loss_onset": {"NONFINITE", "nonfinite_message"},
    "nan_grad_norm": {"NONFINITE", "nonfinite_message"},
    "nan_val_loss": {"NONFINITE", "nonfinite_message"},
    "divergence_inf_loss": {"NONFINITE", "nonfinite_message"},
    "loss_divergence": {"LOSS_SPIKE", "DIVERGENCE_PREDICTED", "EXPLODING_GRADIENT", "SEQUENCE_OUTLIER"},
    "cuda_oom": {"cuda_oom"},
    "server_oom": {"cuda_oom", "oom_killer", "cpu_oom"},  # a server's GPU memory, or the host's (OOM killer)
    "nccl_timeout": {"nccl_timeout"},
    "process_killed_sigkill": {"oom_killer"},
    "dataloader_worker_killed": {"dataloader_worker_killed"},
    "disk_full": {"disk_full"},
    "checkpoint_save_failure": {"checkpoint_save_failure", "disk_full"},
    "training_hang": {"STALLED", "watchdog_timeout"},
    "http_500_error": {"http_5xx"},
    "model_load_failure": {"model_load_failure"},
    "worker_died": {"engine_dead", "crash_signal"},
    "replica_died": {"engine_dead"},
    "replica_startup_stall": {"startup_stall"},
    "engine_hang": {"STALLED", "LATENCY", "queue_stalled", "decode_stall", "watchdog_timeout"},
    "latency_degradation": {"LATENCY", "decode_stall"},
    "service_unavailable": {"http_5xx"},
    "cuda_illegal_memory_access": {"cuda_error"},
    "bus_error_crash": {"crash_signal"},
    # labels the later sets (bench/text_fragments/) added where the dev vocabulary had none that fit
    "nccl_connection_error": {"nccl_timeout"},
    "process_crashed_sigsegv": {"crash_signal"},
    "collective_stall": {"nccl_timeout", "STALLED"},
    "kv_cache_exhaustion": {"kv_cache_exhausted", "kv_cache_saturated"},
    "assertion_abort_crash": {"crash_signal"},
    "process_crashed_sigabrt": {"crash_signal"},
    "segfault_crash": {"crash_signal"},
    "abort_crash": {"crash_signal"},
    "nccl_error": {"nccl_timeout"},
    "worker_timeout": {"engine_dead"},
    "host_oom": {"cpu_oom"},
    "zero_loss_collapse": {"PLATEAU", "NONFINITE", "LOSS_SPIKE", "DIVERGENCE_PREDICTED", "nonfinite_message"},
    "server_startup_hang": {"startup_stall", "STALLED"},
    "tpu_oom": {"cuda_oom"},
    "cuda_error": {"cuda_error"},
    "crashloop_backoff": {"engine_dead"},
    # labels of sets S-V (bench/text_fragments_2026-12-07.md): what each problem is raised as
    "loss_collapse": {"PLATEAU", "NONFINITE", "nonfinite_message"},
    "accuracy_stuck_at_chance": {"PLATEAU"},
    "loss_stuck": {"PLATEAU"},
    "zero_val_metrics": {"PLATEAU"},
    "loss_spike": {"LOSS_SPIKE", "DIVERGENCE_PREDICTED"},
    "val_loss_divergence": {"OVERFITTING", "LOSS_SPIKE", "DIVERGENCE_PREDICTED"},
    "overfitting": {"OVERFITTING"},
    "grad_norm_explosion": {"EXPLODING_GRADIENT", "NONFINITE", "nonfinite_message"},
    "nan_metric": {"NONFINITE", "nonfinite_message"},
    "lr_misconfigured": {"DIVERGENCE_PREDICTED", "PLATEAU"},
    "cpu_oom": {"cpu_oom", "oom_killer"},
    "request_timeout": {"LATENCY", "http_5xx", "request_timeout"},
    "model_not_ready": {"model_load_failure", "startup_stall"},
    "server_process_crash": {"crash_signal", "engine_dead"},
    "engine_crash": {"engine_dead", "crash_signal"},
    "worker_segfault": {"crash_signal"},
    "assertion_crash": {"crash_signal"},
    "kv_cache_exhausted": {"kv_cache_exhausted", "kv_cache_saturated"},
    "ray_actor_died": {"engine_dead"},
    "engine_dead": {"engine_dead", "crash_signal"},
    "health_check_failing": {"engine_dead", "startup_stall", "http_5xx"},
}


def _kind_of(a) -> str:
    from runwatch.models.findings import AnomalyKind

    f = a.finding
    if f.kind == AnomalyKind.LOG_PATTERN:
        return f.key.split(":", 1)[0]
    return f.kind.name


def run_fragments(path: Path = FRAGMENTS) -> dict:
    from runwatch.models.block import MetricBlock
    from runwatch.models.findings import Severity
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig
    from runwatch.models.text.monitor import TextMonitor

    suite = DiagnosticSuite(SuiteConfig())  # the service's default: rules, learned detectors, fusion
    records = []
    for r in jsonl(path):
        lines = r["fragment"].split("\n")
        onset = lines.index(r["onset_hint"]) if r["onset_hint"] in lines else None
        tm = TextMonitor(r["url"])
        monitor = suite.monitor(r["url"])
        alerts = []  # (line index raised at, alert)
        for i, line in enumerate(lines + [None]):
            events, findings = tm.observe_lines([line]) if line is not None else tm.flush()
            got = []
            if events:
                block = MetricBlock.from_values(
                    [s for s, _ in events], [float(i)] * len(events), [tuple(m) for _, m in events],
                    [list(m.values()) for _, m in events],
                )
                got += monitor.observe_block(block)
            got += monitor.report(findings, float(i))
            alerts += [(min(i, len(lines) - 1), a) for a in got]
        warn = [(i, a) for i, a in alerts if a.finding.severity >= Severity.WARNING]
        kinds_any = {_kind_of(a) for _, a in alerts}
        records.append({
            "url": r["url"], "label": r["label"], "kind": r["kind"], "onset": onset, "n_lines": len(lines),
            "any": bool(alerts), "warn": bool(warn), "kinds": sorted(kinds_any),
            "first_any": min((i for i, _ in alerts), default=None), "first_warn": min((i for i, _ in warn), default=None),
            "kind_ok": bool(kinds_any & EXPECTED.get(r["label"], set())),
        })
    return {"records": records, "path": path}


FRAGMENT_COLUMNS = ["kind", "anomalous", "detected (any)", "detected (WARNING+)", "kind ok", "at/before onset",
                    "healthy", "false alarms (any)", "false alarms (WARNING+)"]
_DEV_NOTES = [
    ("Command: `python -m bench.text_eval --only fragments`. Each fragment is streamed line by line (one line per "
     "batch) through a TextMonitor and the service's default RunMonitor suite (rules, learned detectors, fusion), "
     "as the service does for a run that sends `log_text`. *Detected* = any anomaly (INFO and up) / an alert "
     "(WARNING and up); *kind ok* = an anomaly of the kind the label calls for (mapping in `EXPECTED`); *lead* = "
     "the line the first anomaly was raised at vs the fragment's `onset_hint` line (fragments with an onset)."),
    "",
    ("**These fragments were read while the signatures were written: this is development data, not a test.** "
     "The held-out set is not used here."),
    "",
    ("The three vLLM stats-line fragments (vllm 15018, llm-scaler 391, vllm 2731) were the examples the "
     "inference-server stats checks (`models/text/engine_stats.py`, 2026-12-02) were built from: before them the "
     "deployment row read 18 / 18 / 17 detected (any / WARNING+ / kind ok), 18/18 at or before onset; the healthy "
     "vLLM excerpts (kserve 4470, vllm 12314) were checked to stay quiet. The kind mapping counts `decode_stall` "
     "and `queue_stalled` for a hang or a latency degradation; `kv_cache_saturated` (INFO, a precursor) is not "
     "counted as the right kind."),
]


def format_fragments(r: dict) -> str:
    """The fragments section: the dev set with its notes, or another set (``--fragments PATH``) scored the same way."""
    recs = r["records"]
    sick = [x for x in recs if x["label"] != "healthy_excerpt"]
    healthy = [x for x in recs if x["label"] == "healthy_excerpt"]
    rows = []
    for kind in ("training", "deployment"):
        s = [x for x in sick if x["kind"] == kind]
        h = [x for x in healthy if x["kind"] == kind]
        timed = [x for x in s if x["onset"] is not None and x["first_any"] is not None]
        rows.append([
            kind, len(s), sum(x["any"] for x in s), sum(x["warn"] for x in s), sum(x["kind_ok"] for x in s),
            f"{sum(x['first_any'] <= x['onset'] for x in timed)}/{len(timed)}", len(h),
            sum(x["any"] for x in h), sum(x["warn"] for x in h),
        ])
    per = [[x["label"], x["kind"][:5], "yes" if x["any"] else "no", "yes" if x["warn"] else "no",
            "yes" if x["kind_ok"] else "no", ", ".join(x["kinds"]) or "-",
            "-" if x["onset"] is None or x["first_any"] is None else f"{x['first_any']} vs {x['onset']}",
            x["url"].replace("https://github.com/", "")] for x in recs]
    path = Path(r.get("path", FRAGMENTS))
    if path == FRAGMENTS:
        head = ["## Issue fragments (dev set: 64 real excerpts)", "", *_DEV_NOTES]
    else:
        head = [
            f"## Issue fragments: {path.name} ({len(recs)} excerpts)",
            "",
            (f"Command: `python -m bench.text_eval --only fragments --fragments {path}`. Scored exactly as the dev "
             "set (each fragment streamed line by line through a TextMonitor and the default RunMonitor suite; "
             "columns as in the dev-set section)."),
        ]
    return "\n".join([
        *head,
        "",
        table(FRAGMENT_COLUMNS, rows),
        "",
        "<details><summary>per fragment</summary>",
        "",
        table(["label", "kind", "any", "WARNING+", "kind ok", "found", "first / onset line", "source"], per),
        "",
        "</details>",
        "",
    ])


# -- extraction ---------------------------------------------------------------------------------------


def _read_log(spec: dict) -> list[str]:
    if "fragment" in spec:
        for r in jsonl(FRAGMENTS):
            if r["url"] == spec["fragment"]:
                return r["fragment"].split("\n")
        raise KeyError(spec["fragment"])
    return (DATA / spec["path"]).read_text(encoding="utf-8", errors="replace").splitlines()


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def run_extraction() -> dict:
    from runwatch.models.text.extract import MetricExtractor

    per = []
    for path in sorted(TRUTH.glob("*.json")):
        spec = json.loads(path.read_text())
        x = MetricExtractor()
        got = x.extract_many(_read_log(spec)) + x.flush()
        triples = [(s, k, float(v)) for s, m in got for k, v in m.items()]
        truth = [(int(s), k, float(v)) for s, k, v in spec["events"]]
        pool = Counter((s, k) for s, k, _ in truth)
        values = {}
        for s, k, v in truth:
            values.setdefault((s, k), []).append(v)
        matched = 0
        wrong = []
        for s, k, v in triples:
            cands = values.get((s, k), [])
            hit = next((i for i, t in enumerate(cands) if _same(t, v)), None)
            if hit is not None and pool[(s, k)] > 0:
                cands.pop(hit)
                pool[(s, k)] -= 1
                matched += 1
            else:
                wrong.append((s, k, v))
        per.append({"name": path.stem, "source": spec.get("path") or spec.get("fragment"), "extracted": len(triples),
                    "truth": len(truth), "matched": matched, "wrong": wrong[:5]})
    tot = {k: sum(p[k] for p in per) for k in ("extracted", "truth", "matched")}
    return {"per": per, **tot}


def format_extraction(r: dict) -> str:
    p = r["matched"] / r["extracted"] if r["extracted"] else 0.0
    rc = r["matched"] / r["truth"] if r["truth"] else 0.0
    rows = [[x["name"], x["extracted"], x["truth"], x["matched"],
             "; ".join(f"{s}:{k}={v:g}" for s, k, v in x["wrong"]) or "-"] for x in r["per"]]
    return "\n".join([
        "## Metric extraction",
        "",
        (f"Command: `python -m bench.text_eval --only extraction`. {len(r['per'])} real text logs "
        "(`bench/text_truth/*.json`: the source, and every (step, metric, value) a reader should take from it). "
        "A triple matches when step and name are equal and the value is equal (NaN = NaN)."),
        "",
        (f"**precision {p:.4f}** ({r['matched']} of {r['extracted']} extracted triples are in the truth), "
        f"**recall {rc:.4f}** ({r['matched']} of {r['truth']} truth triples extracted)."),
        "",
        "<details><summary>per log</summary>",
        "",
        table(["log", "extracted", "truth", "matched", "not in truth (first 5)"], rows),
        "",
        "</details>",
        "",
    ])


# -- throughput -----------------------------------------------------------------------------------------


def run_throughput(repeat: int = 3) -> dict:
    from runwatch.models.text.extract import MetricExtractor
    from runwatch.models.text.monitor import TextMonitor
    from runwatch.models.text.templates import TemplateMiner

    lines: list[str] = []
    for p in sorted(SLM.glob("*.log")):
        lines += p.read_text(errors="replace").splitlines()
    for r in jsonl(FRAGMENTS):
        lines += r["fragment"].split("\n")
    for system in ("HDFS", "BGL", "Spark", "OpenStack", "Hadoop", "Thunderbird"):
        f = next((LOGHUB / system).glob("*_2k.log"))
        lines += f.read_text(errors="replace").splitlines()
    lines = [x for x in lines if x.strip()]
    out = {"lines": len(lines), "mean_chars": float(np.mean([len(x) for x in lines])), "rates": {}}

    def measure(name, make, feed):
        # CPU seconds of this process (one thread): the machine's other load does not count against it.
        best_cpu = best_wall = math.inf
        for _ in range(repeat):
            state = make()
            c, w = time.process_time(), time.perf_counter()
            feed(state)
            best_cpu = min(best_cpu, time.process_time() - c)
            best_wall = min(best_wall, time.perf_counter() - w)
        out["rates"][name] = (len(lines) / best_cpu, len(lines) / best_wall)

    warm = TemplateMiner()
    for x in lines:  # a running project: its templates exist
        warm.add(x)

    def templates_and_extraction(miner):
        ex = MetricExtractor()
        for x in lines:
            miner.add(x)
            ex.extract(x)

    measure("template matching + metric extraction", lambda: warm, templates_and_extraction)
    measure("the same, fresh project (every template mined)", TemplateMiner, templates_and_extraction)

    def monitor(tm):
        for i in range(0, len(lines), 256):
            tm.observe_lines(lines[i : i + 256])

    measure("whole TextMonitor (+ signatures, novelty), batches of 256", lambda: TextMonitor("bench", miner=warm), monitor)
    return out


def format_throughput(r: dict) -> str:
    rows = [[k, f"{cpu:,.0f}", f"{wall:,.0f}"] for k, (cpu, wall) in r["rates"].items()]
    return "\n".join([
        "## Throughput (one core)",
        "",
        (f"Command: `python -m bench.text_eval --only throughput`. {r['lines']:,} real lines (slm_training logs, the "
        f"fragments, six loghub systems; mean {r['mean_chars']:.0f} characters), best of 3 passes, one thread. "
        "*Per CPU-second* divides by the process's CPU time (one core's worth of work); *wall* by elapsed time on "
        "this shared 2-core machine, where other jobs were running."),
        "",
        table(["path", "lines per CPU-second", "lines per wall second"], rows),
        "",
    ])


NOTES = """\
- **Splits.** HDFS: chronological (block creation order) 70 % train (normal sessions only) / 10 % validation /
  20 % test; every threshold (DeepLog's k, the IForest cut) is chosen on validation, never on test. BGL: the
  first half in time is the project's past, the second half is scored. The issue fragments are the development
  set the signatures were written against (no split: they are not a test); the held-out set was not used.
- **Why HDFS misses the target.** HDFS_100k is the first 100,000 lines of the HDFS log, while its labels come
  from the whole log: many anomalous blocks are cut off before their anomaly shows, and 37 of the 91 test
  anomalies have exactly the event sequence of normal sessions. No detector over template sequences can reach
  more than F1 0.745 on that test set; DeepLog comes close (0.72–0.74; the HDFS section below has this
  run's numbers, also on the anomalies that are separable at all). The published numbers (0.802 / 0.915 / 0.96) are on the full HDFS log with other
  splits and are not comparable; on deep-loglizer's own random split of HDFS_100k the ceiling is 0.705.
- **Truth for extraction** (`bench/text_truth/`). 14 fragments: every (step, metric, value) transcribed by hand
  from the lines, with the naming and step conventions documented in `models/text/extract.py` (values printed with
  a %/K/G suffix left out; a step of "epoch e, batch b of n" is e*n+b with the frameworks' epoch base). 20
  slm_training logs (0Xero7/slm_training, 5 of them ending before epoch 1, so their truth is empty and any
  extracted header value is a false positive): transcribed with a throwaway reader of exactly that format's four
  line shapes (`Epoch: N/M`, `Time Taken`, `Train Loss`, `Valid Loss`), then read against each log. A few judgement
  calls are stated in each file's `note`.
- **Throughput** is measured in CPU time of one thread: the 2 cores of this machine are shared with other jobs,
  so wall-clock rates swing by 2x between runs.
"""


def _hdfs_target(r: dict) -> tuple[str, str]:
    s = r["splits"]["chronological"]
    f = s["DeepLog (k on validation)"][2]
    return (f"DeepLog {f:.3f} (its LSTM's training is not bit-reproducible: reruns differ in the second decimal); "
            f"ceiling for any template-sequence detector on this test set {s['ceiling_f1']:.3f}; "
            f"{s['DeepLog on separable anomalies'][2]:.3f} on the separable anomalies",
            "yes" if f >= 0.97 else "**no** (see below)")


def _extraction_target(r: dict) -> tuple[str, str]:
    p = r["matched"] / r["extracted"] if r["extracted"] else 0.0
    rc = r["matched"] / r["truth"] if r["truth"] else 0.0
    return f"{p:.3f} (recall {rc:.3f}) on {len(r['per'])} logs", "yes" if p >= 0.99 and len(r["per"]) >= 20 else "**no**"


def _throughput_target(r: dict) -> tuple[str, str]:
    cpu = r["rates"]["template matching + metric extraction"][0]
    return (f"{cpu:,.0f} lines per CPU-second (this run; it varies with the machine and its load)",
            "yes" if cpu >= 50_000 else "**no**")


def _healthy_fragments_target(r: dict) -> tuple[str, str]:
    healthy = [x for x in r["records"] if x["label"] == "healthy_excerpt"]
    alarms = sum(1 for x in healthy if x["first_warn"] is not None)
    data = "dev data" if r.get("path", FRAGMENTS) == FRAGMENTS else Path(r["path"]).name
    return f"{alarms} of {len(healthy)}", ("yes" if alarms == 0 else "**no**") + f" ({data})"


# (issue 13's target, the section that measures it, its row from that section's result)
TARGETS = (
    ("HDFS F1 >= 0.97 (chronological split, anomalies unseen in training)", "hdfs", _hdfs_target),
    ("metric extraction precision >= 0.99 on >= 20 real logs", "extraction", _extraction_target),
    ("template matching + extraction >= 50,000 lines/s per core", "throughput", _throughput_target),
    ("healthy fragments: no false alarms (WARNING+)", "fragments", _healthy_fragments_target),
)


def summary(results: dict) -> str:
    """The issue-13 targets against this run's numbers (a section that did not run: "not run")."""
    rows = [[target, *(row(results[section]) if section in results else ("not run", ""))]
            for target, section, row in TARGETS]
    return "\n".join(["## Summary and how to read it", "", table(["target (issue 13)", "result", "met?"], rows), ""])


SECTIONS = {
    "hdfs": (run_hdfs, format_hdfs),
    "bgl": (run_bgl, format_bgl),
    "fragments": (run_fragments, format_fragments),
    "extraction": (run_extraction, format_extraction),
    "throughput": (run_throughput, format_throughput),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), help="sections to run (default: all)")
    ap.add_argument("--out", type=Path, default=None, help=f"markdown report (default {OUT.name} when all run)")
    ap.add_argument("--fragments", type=Path, default=FRAGMENTS,
                    help="the fragments section scores this JSONL set (the dev set's format) instead of the dev set")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    names = args.only or list(SECTIONS)
    results, sections = {}, []
    for name in names:
        run, fmt = SECTIONS[name]
        t = time.perf_counter()
        results[name] = run(args.fragments) if name == "fragments" else run()
        text = fmt(results[name])
        print(text)
        print(f"({name}: {time.perf_counter() - t:.0f} s)\n", flush=True)
        sections.append(text)
    parts = ["# Text-log detection results", "", "Generated by `python -m bench.text_eval` (bench/text_eval.py).", "",
             summary(results), NOTES, *sections]
    out = args.out or (OUT if not args.only else None)
    if out is not None:
        out.write_text("\n".join(parts))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
