"""Label the Hugging Face Trainer runs of ``hf_trainer_state_more`` by the written criteria.

The criteria are in ``bench/real_labels/README.md`` (written before any run was looked at); this
script applies them mechanically, then applies the reviewed ``OVERRIDES`` below, and writes
``bench/real_labels/hf_trainer_state_more.csv``.

    python -m bench.real_labels.label_hf                  # write the CSV, print counts
    python -m bench.real_labels.label_hf --show FOLDER    # print a run's series (review)

It reads ``trainer_state.json`` itself (plain ``json``), not through runwatch: the labels must not
depend on runwatch's code.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "training-logs" / "hf_trainer_state_more"
DEFAULT_OUT = HERE / "hf_trainer_state_more.csv"

LABELS = ("healthy", "nan", "divergence", "collapse", "overfitting", "no_learning")
COLUMNS = ("folder", "path", "label", "manifest_step", "n_loss_points", "n_eval_points", "reason", "reviewed", "note")
MIN_LOSS_POINTS = 5

# (folder, path) -> (label, manifest_step or None, one-line reason quoting the numbers).
# Filled in after reviewing the printed series of every non-healthy run (see README "Review").
OVERRIDES: dict[tuple[str, str], tuple[str, int | None, str]] = {
    ("BaarTeek123+llms_finetuning", "results/checkpoint-25000/trainer_state.json"): (
        "healthy", None,
        "not divergence: the 'running min' 0.0675 (step 20520) is a noise dip of a loss logged every 10 steps "
        "(range 0.03-0.63 throughout); 50-point means fall 0.677 -> 0.254 and stay 0.25-0.28 from step 16,000 on"),
    ("Merlinmy+Whisper_small_hi", "trainer_state.json"): (
        "overfitting", 3000,
        "not collapse: 'constant 0.0003' is a converged loss at the log's 4-decimal resolution "
        "(neighbours 0.0001-0.0008); the next rule holds: eval_loss 0.307 (step 1000) -> 0.421, 0.452, 0.468 "
        "while train loss falls 0.10 -> 0.0003"),
    ("alicelouis47+VisLungTransformer", "model/trainer_state.json"): (
        "healthy", None,
        "not overfitting: eval_loss oscillates 0.63-1.40 mid-run (steps 411-1096) but then reaches new bests, "
        "0.340 (step 1370) and 0.276 (step 1644, last), 56% below the earlier best 0.633: no lasting rise"),
}

# Runs whose series were printed and read besides the non-healthy ones: every 8th run in CSV order,
# every run with a note, every run whose eval loss ends >= 5% above its best, and every run whose
# smoothed loss rose above 2x its running minimum at some point.
REVIEWED: set[tuple[str, str]] = {
    ("29aitch+AIchatbot", "output/checkpoint-3000/trainer_state.json"),
    ("DigitalIntelligenceCenter-of-ICMM+Baize-Traditional-Chinese-Medicine-Large-Language-Model", "trainer_state.json"),
    ("RTiberiu+CM4107-Advanced-Artificial-Intelligence-CW", "results/checkpoint-3000/trainer_state.json"),
    ("ashish1932+Chatbot", "trainer_state.json"),
    ("jubaerkhan49+bangla_stt", "model/trainer_state.json"),
    ("laminair+mess-plus", "data_logs/distillbert/checkpoint-1000/trainer_state.json"),
    ("rg321+assignment", "checkpoint-1000/trainer_state.json"),
    ("selvxhini-10+Finetuned-Sentiment-Analysis", "results/checkpoint-7500/trainer_state.json"),
    ("Francis-xsc+BERT_Weibo_Rumor", "trainer_state.json"),
    ("GulbeycanCagri+IS-584-Term-Project", "results/checkpoint-12000/trainer_state.json"),
    ("GulbeycanCagri+IS-584-Term-Project", "results/checkpoint-12500/trainer_state.json"),
    ("GulbeycanCagri+IS-584-Term-Project", "results/checkpoint-13500/trainer_state.json"),
    ("JaboJean+EduAdvisor-Chatbot", "trainer_state.json"),
    ("LeoWang0086+qxs", "trainer_state.json"),
    ("MattthiasSchedel+DAT55-Project4", "results/trainer_state.json"),
    ("MemaSp+FT-Llama2-HRChatbot", "outputs/trainer_state.json"),
    ("One-eyed-warrior+lora-finetuning", "trainer_state.json"),
    ("Priyanshisharma22+fake-news", "results/checkpoint-8000/trainer_state.json"),
    ("Rusheel86+Chaos-Economy", "trainer_state.json"),
    ("SaiSwarna+ML-NLP-Project", "results/checkpoint-4000/trainer_state.json"),
    ("ShivamGoyal03+MediMind", "results/checkpoint-2300/trainer_state.json"),
    ("ShreeniG99+BioChat-AI", "trainer_state.json"),
    ("Ysn-Ir+medBot-finetuning-part", "trainer_state.json"),
    ("adhikarinarayan+EM_phase_transition", "results/checkpoint-2115/trainer_state.json"),
    ("al-Reza89+thesis-web", "outputs/trainer_state.json"),
    ("anthonyrathe+fixed-whisperv2-flemish", "trainer_state.json"),
    ("armenkarakashian+TrOcr-Number-Line-Fraction-Recognition", "trainer_state.json"),
    ("arshiv-web+Financial-News-Sentiment-Analysis", "results/checkpoint-10350/trainer_state.json"),
    ("aryan1112003+hate_speech_detection", "trainer_state.json"),
    ("btttttong+youarebot-quickstart", "results/checkpoint-2139/trainer_state.json"),
    ("douglasbogle+CyberpunkGen", "classified/checkpoint-820/trainer_state.json"),
    ("ihuseynov+SR_Project", "model/trainer_state.json"),
    ("james113001+homeworkmachine", "resources/results/checkpoint-2500/trainer_state.json"),
    ("ki-system-sicherheit+prompt-mitigation-llm", "results/checkpoint-1200/trainer_state.json"),
    ("ki-system-sicherheit+prompt-mitigation-llm", "results/checkpoint-3600/trainer_state.json"),
    ("ki-system-sicherheit+prompt-mitigation-llm", "results/checkpoint-3660/trainer_state.json"),
    ("nawta+Task5", "model/trainer_state.json"),
    ("niloya77+prompt-mitigation-llm", "results/checkpoint-3600/trainer_state.json"),
    ("niloya77+prompt-mitigation-llm", "results_flan_t5_large/checkpoint-600/trainer_state.json"),
    ("siasio+StressDetection", "results/trainer_state.json"),
    ("vacantfury+CS6140-MUGC-project", "results/checkpoint-4000/trainer_state.json"),
    ("vacantfury+CS6140-MUGC-project", "results/checkpoint-8832/trainer_state.json"),
    ("yc1999+stanford_alpaca", "output/trainer_state.json"),
    ("yongshuaiy+LLMs-final", "output/checkpoint-669/trainer_state.json"),
}

# Review remarks that do not change the label: (folder, path) -> note.
REVIEW_NOTES: dict[tuple[str, str], str] = {
    ("anra8571+WikipediaLLM", "results/checkpoint-16425/trainer_state.json"):
        "review: eval_loss NaN at every evaluation while training loss stays finite (5.92 -> 5.28): broken evaluation",
    ("anra8571+WikipediaLLM", "results/checkpoint-43800/trainer_state.json"):
        "review: eval_loss NaN at every evaluation while training loss stays finite (5.94 -> 5.18): broken evaluation",
    ("anra8571+WikipediaLLM", "results/checkpoint-8214/trainer_state.json"):
        "review: eval_loss NaN at every evaluation while training loss stays finite (5.92 -> 5.41): broken evaluation",
    ("JustinBStrong+qlora", "output/trainer_state.json"):
        "review: loss 0.997 (step 10) rises every interval to 29.56 (step 100, last); raw loss is 4.3x at step 20",
    ("GGuan123+Qwen2.5-Lora-K8sEnv", "model/trainer_state.json"):
        "review: borderline (ratio 0.951): 1.57 at step 10, then a plateau 1.34-1.51 for 300 steps",
    ("arbordreams+tokalign-baseline", "model/trainer_state.json"):
        "review: borderline (ratio 0.953): a slow steady decline, 125-point means 2.228 -> 2.110",
    ("Artaccann+OSOL_backend", "outputs/trainer_state.json"):
        "review: 60 per-step losses, noisy 0.46-1.32 with no trend",
    ("aloshdenny+kevin-token-compressor", "trainer_state.json"):
        "review: flat, 50-step means 2.03-2.24 over 1000 steps",
    ("MemaSp+FT-Llama2-HRChatbot", "Dataset_3_Setup [Custom]/outputs/trainer_state.json"):
        "review: loss rises, 5-point means 0.87 -> 1.18 (1.35x, below the 3x of divergence)",
    ("vacantfury+CS6140-MUGC-project", "results/checkpoint-71792/trainer_state.json"):
        "review: binary classifier at chance: loss 0.69 -> 0.67 (ln 2 = 0.693), eval_loss 0.668-0.691",
    ("ShivamGoyal03+MediMind", "results/checkpoint-2300/trainer_state.json"):
        "review: borderline, kept healthy by the 20% rule: eval_loss 9.71 (step 200) -> 10.4-10.7 (+10%) "
        "while train falls 9.76 -> 7.40",
    ("al-Reza89+thesis-web", "outputs/trainer_state.json"):
        "review: mild eval_loss rise below the 20% rule: 0.411 -> 0.480 (+17%) while train falls 0.33 -> 0.24",
    ("arshiv-web+Financial-News-Sentiment-Analysis", "results/checkpoint-10350/trainer_state.json"):
        "review: mild eval_loss rise below the 20% rule: best 1.326 (step 3105) -> 1.509 (+14%) while train falls",
    ("yongshuaiy+LLMs-final", "output/checkpoint-669/trainer_state.json"):
        "review: mild eval_loss rise below the 20% rule: 1.052 (step 200) -> 1.179 (+12%) after the epoch boundary",
    ("siasio+StressDetection", "results/trainer_state.json"):
        "review: transient instability: train loss ~890 -> ~1760 and eval 603 -> 1038 around steps 2250-2500, "
        "then both recover",
    ("btttttong+youarebot-quickstart", "results/checkpoint-2139/trainer_state.json"):
        "review: learns little (ratio 0.91; eval 0.633 -> 0.623), above the no_learning threshold",
    ("vacantfury+CS6140-MUGC-project", "results/checkpoint-8832/trainer_state.json"):
        "review: loss 0.0000 from step 4000 with grad_norm ~1e-4 and eval_loss 1.1e-5: "
        "a genuinely fitted (easy) task, not a broken loss",
}


@dataclass
class Series:
    """The series of one ``trainer_state.json`` that the criteria use."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    grad_norm: list[tuple[int, float]] = field(default_factory=list)
    rl: bool = False


def read_series(path: Path) -> Series:
    with open(path) as fh:
        state = json.load(fh)
    rl = pref = False
    rows = []
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict) or "step" not in entry or "train_runtime" in entry:
            continue
        if any(k.startswith(("predict_", "test_")) for k in entry):
            continue
        rl |= "reward" in entry or "kl" in entry
        pref |= "rewards/chosen" in entry
        rows.append((int(float(entry["step"])), entry))
    return series_from_rows(rows, {"loss": "loss", "eval_loss": "eval_loss", "grad_norm": "grad_norm"}, rl and not pref)


def series_from_rows(rows, keys: dict[str, str], rl: bool = False) -> Series:
    """The criteria's series from ``(step, {key: value})`` rows, ``keys`` naming each series' key.

    Per step the later value of a key wins; steps come out sorted.

    >>> rows = [(5, {"loss": 1.0}), (0, {"loss": 2.0}), (0, {"loss": 1.5, "ev": 1.9})]
    >>> s = series_from_rows(rows, {"loss": "loss", "ev": "eval_loss"})
    >>> s.loss, s.eval_loss
    ([(0, 1.5), (5, 1.0)], [(0, 1.9)])
    """
    by_step: dict[int, dict[str, float]] = {}
    for step, entry in rows:
        slot = by_step.setdefault(step, {})
        for key, series in keys.items():
            v = entry.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                slot[series] = float(v)
    s = Series(rl=rl)
    for step in sorted(by_step):
        for series, v in by_step[step].items():
            getattr(s, series).append((step, v))
    return s


def smoothed(values: list[float]) -> list[float]:
    """``s_i``: median of the last up-to-3 values."""
    return [statistics.median(values[max(0, i - 2) : i + 1]) for i in range(len(values))]


def _g(x: float) -> str:
    return f"{x:.4g}"


@dataclass
class Finding:
    label: str
    step: int | None
    reason: str


def rule_nan(s: Series) -> tuple[Finding | None, list[str]]:
    notes = []
    first: tuple[int, str, float] | None = None
    losses_finite = all(math.isfinite(v) for _, v in s.loss) and all(math.isfinite(v) for _, v in s.eval_loss)
    for name, ser in (("loss", s.loss), ("eval_loss", s.eval_loss)):
        for step, v in ser:
            if not math.isfinite(v):
                if first is None or step < first[0]:
                    first = (step, name, v)
                break
    g = s.grad_norm
    for i, (step, v) in enumerate(g):
        if math.isfinite(v):
            continue
        isolated = (
            losses_finite
            and (i == 0 or math.isfinite(g[i - 1][1]))
            and i + 1 < len(g)
            and math.isfinite(g[i + 1][1])
        )
        if isolated:
            notes.append(f"isolated non-finite grad_norm {v} at step {step} (next finite)")
            continue
        if first is None or step < first[0]:
            first = (step, "grad_norm", v)
        break
    if first is None:
        return None, notes
    n_bad = sum(not math.isfinite(v) for _, v in s.loss + s.eval_loss + s.grad_norm)
    reason = f"{first[1]}={first[2]} at step {first[0]}; {n_bad} non-finite points in loss/eval_loss/grad_norm"
    return Finding("nan", first[0], reason), notes


def rule_divergence(s: Series) -> Finding | None:
    steps = [st for st, _ in s.loss]
    vals = [v for _, v in s.loss]
    # only the finite prefix: a non-finite value ends the smoothed curve (rule 1 takes over there)
    end = next((i for i, v in enumerate(vals) if not math.isfinite(v)), len(vals))
    vals = vals[:end]
    if len(vals) < MIN_LOSS_POINTS:
        return None
    sm = smoothed(vals)
    s0 = sm[0]
    run_min = math.inf
    for t in range(len(sm)):
        if t > 0:
            run_min = min(run_min, sm[t - 1])
            m = run_min
            if sm[t] >= 3 * m and sm[t] - m >= 0.1 * s0 and all(x >= 1.5 * m for x in sm[t:]):
                tail_max = max(sm[t:])
                return Finding("divergence", steps[t],
                               f"smoothed loss {_g(sm[t])} at step {steps[t]} >= 3 x running min {_g(m)} "
                               f"(initial {_g(s0)}); stays >= 1.5 x min to the end (min after {_g(min(sm[t:]))}, "
                               f"peak {_g(tail_max)}, last {_g(sm[-1])})")
    return None


def rule_collapse(s: Series) -> tuple[Finding | None, list[str]]:
    notes: list[str] = []
    vals = [v for _, v in s.loss]
    steps = [st for st, _ in s.loss]
    if len(vals) < MIN_LOSS_POINTS:
        return None, notes
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[i]:
            j += 1
        length = j - i + 1
        if length >= 5 and math.isfinite(vals[i]):
            value = vals[i]
            if value == 0.0:
                before = vals[i - 1] if i > 0 else None
                abrupt = before is None or before >= 0.01
                kind = "exactly 0" + (" from the start" if before is None else f" after {_g(before)}")
            else:
                abrupt = True
                kind = f"constant {value}"
            lo, hi = steps[i], steps[j]
            g_in = [v for st, v in s.grad_norm if lo <= st <= hi]
            v_in = [v for st, v in s.eval_loss if lo <= st <= hi]
            g_ok = not g_in or all(x == 0 for x in g_in) or len(set(g_in)) == 1
            v_ok = len(v_in) < 2 or not (v_in[-1] < 0.95 * v_in[0])
            desc = f"loss {kind} for {length} points, steps {lo}-{hi}"
            if abrupt and g_ok and v_ok:
                grads = f"; grad_norm {sorted(set(g_in))[:3]}" if g_in else ""
                return Finding("collapse", steps[i + 4], desc + grads), notes
            why = []
            if not abrupt:
                why.append("reached gradually (converged, rounds to 0)")
            if not g_ok:
                why.append(f"grad_norm varies {_g(min(g_in))}..{_g(max(g_in))}")
            if not v_ok:
                why.append(f"eval_loss falls {_g(v_in[0])}->{_g(v_in[-1])}")
            notes.append(f"{desc}: not collapse ({'; '.join(why)})")
        i = j + 1
    return None, notes


def _level_at(s: Series, sm: list[float], step: int) -> float | None:
    """``s`` at the last training-loss point at or before ``step``."""
    idx = None
    for i, (st, _) in enumerate(s.loss):
        if st <= step:
            idx = i
        else:
            break
    return None if idx is None else sm[idx]


def rule_overfitting(s: Series) -> Finding | None:
    ev = [(st, v) for st, v in s.eval_loss if math.isfinite(v)]
    if len(ev) < 3:
        return None
    vals = [v for _, v in s.loss]
    sm = smoothed(vals) if vals and all(math.isfinite(v) for v in vals) else None
    for v in range(1, len(ev) - 1):
        best_i = min(range(v), key=lambda u: ev[u][1])
        best = ev[best_i][1]
        if ev[v][1] >= 1.2 * best and ev[v + 1][1] >= 1.2 * best:
            if sm is None:
                continue
            a = _level_at(s, sm, ev[best_i][0])
            b = _level_at(s, sm, ev[v + 1][0])
            if a is None or b is None or not b < a:
                continue
            return Finding("overfitting", ev[v][0],
                           f"eval_loss {_g(ev[v][1])} (step {ev[v][0]}), {_g(ev[v + 1][1])} (step {ev[v + 1][0]}) "
                           f">= 1.2 x best {_g(best)} (step {ev[best_i][0]}); train loss {_g(a)} -> {_g(b)}; "
                           f"last eval {_g(ev[-1][1])}")
    return None


def starts_mid_run(s: Series) -> bool:
    steps = [st for st, _ in s.loss]
    if len(steps) < 2:
        return False
    gap = min(b - a for a, b in zip(steps, steps[1:]))
    return gap > 0 and steps[0] > 2 * gap


def rule_no_learning(s: Series) -> Finding | None:
    vals = [v for _, v in s.loss]
    steps = [st for st, _ in s.loss]
    n = len(vals)
    if n < MIN_LOSS_POINTS or starts_mid_run(s) or not all(math.isfinite(v) for v in vals):
        return None
    k = min(20, max(1, round(0.1 * n)))
    first = sum(vals[:k]) / k
    last = sum(vals[-k:]) / k
    if not last >= 0.95 * first:
        return None
    trailing = [sum(vals[t - k + 1 : t + 1]) / k for t in range(n)]  # valid for t >= k - 1
    t0 = n - 1
    for t in range(n - 1, 2 * k - 2, -1):
        if trailing[t] >= 0.95 * first:
            t0 = t
        else:
            break
    return Finding("no_learning", steps[t0],
                   f"mean of last {k} losses {_g(last)} >= 0.95 x mean of first {k} {_g(first)} "
                   f"(ratio {last / first:.3f}); "
                   f"holds from step {steps[t0]}")


def grad_spike_notes(s: Series) -> list[str]:
    out = []
    g = [(st, v) for st, v in s.grad_norm if math.isfinite(v)]
    for i in range(5, len(g)):
        med = statistics.median(v for _, v in g[:i])
        if med > 0 and g[i][1] >= 10 * med:
            out.append(f"{g[i][1]:.3g}@{g[i][0]} ({g[i][1] / med:.0f}x)")
    if not out:
        return []
    more = f" (+{len(out) - 3} more)" if len(out) > 3 else ""
    return [f"grad_norm spikes >= 10x earlier median: {', '.join(out[:3])}{more}"]


def label_run(s: Series) -> tuple[Finding, list[str]]:
    """The label of one run by the README's rules, and notes."""
    notes: list[str] = []
    n = len(s.loss)
    nan, nan_notes = rule_nan(s)
    notes += nan_notes
    notes += grad_spike_notes(s)
    if s.rl:
        notes.append("RL run (reward/kl logged): only the nan rule applies")
        return (nan or Finding("healthy", None, "")), notes
    div = rule_divergence(s)
    if nan is not None and div is not None and div.step is not None and nan.step is not None:
        if div.step <= nan.step:
            return Finding("divergence", div.step, div.reason + f"; then {nan.reason}"), notes
        return nan, notes
    if nan is not None:
        return nan, notes
    if div is not None:
        return div, notes
    col, col_notes = rule_collapse(s)
    notes += col_notes
    if col is not None:
        return col, notes
    of = rule_overfitting(s)
    if of is not None:
        return of, notes
    nl = rule_no_learning(s)
    if nl is not None:
        return nl, notes
    if n < MIN_LOSS_POINTS:
        notes.append("too short to judge")
    if starts_mid_run(s):
        notes.append("log starts mid-run: no_learning not tested")
    return Finding("healthy", None, ""), notes


def index_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "INDEX.csv", newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: (r["folder"], r["path"]))


def label_all(data: Path) -> list[dict[str, object]]:
    index = index_rows(data)
    known = {(r["folder"], r["path"]) for r in index}
    unknown = (set(OVERRIDES) | REVIEWED | set(REVIEW_NOTES)) - known
    if unknown:
        raise SystemExit(f"review tables name runs not in INDEX.csv: {sorted(unknown)}")
    for label, _, _ in OVERRIDES.values():
        assert label in LABELS, label
    out = []
    for r in index:
        key = (r["folder"], r["path"])
        s = read_series(data / r["folder"] / r["path"])
        f, notes = label_run(s)
        label, step, reason = f.label, f.step, f.reason
        reviewed = key in REVIEWED or label != "healthy" or key in OVERRIDES
        if key in OVERRIDES:
            o_label, o_step, o_reason = OVERRIDES[key]
            notes.insert(0, f"OVERRIDE {label}->{o_label} (the rule's reason: {reason})")
            label, step, reason = o_label, o_step, o_reason
        if key in REVIEW_NOTES:
            notes.insert(0, REVIEW_NOTES[key])
        out.append({
            "folder": r["folder"], "path": r["path"], "label": label,
            "manifest_step": "" if step is None else step,
            "n_loss_points": len(s.loss), "n_eval_points": len(s.eval_loss),
            "reason": reason, "reviewed": int(reviewed), "note": " | ".join(notes),
        })
    return out


def show(data: Path, folder: str, width: int = 0) -> None:
    """Print one folder's runs: every loss / eval_loss / grad_norm point and the mechanical finding."""
    for r in index_rows(data):
        if r["folder"] != folder:
            continue
        s = read_series(data / r["folder"] / r["path"])
        f, notes = label_run(s)
        print(f"== {r['folder']} / {r['path']}  [{r['model_hint']}]")
        print(f"   -> {f.label} @ {f.step}: {f.reason}")
        for n in notes:
            print(f"   note: {n}")
        ev = dict(s.eval_loss)
        gn = dict(s.grad_norm)
        ls = dict(s.loss)
        steps = sorted(set(ls) | set(ev))
        if width and len(steps) > width:  # keep the head, the tail and an even sample in between
            third = width // 3
            keep = set(steps[:third]) | set(steps[-third:]) | set(steps[:: max(1, len(steps) // third)]) | set(ev)
            steps = [x for x in steps if x in keep]
        for st in steps:
            print(f"   {st:>7}  loss {ls.get(st, ''):<10}  eval {ev.get(st, ''):<10}  gn {gn.get(st, '')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--show", metavar="FOLDER", help="print one folder's series instead of writing the CSV")
    ap.add_argument("--width", type=int, default=0, help="with --show: print at most about this many steps")
    args = ap.parse_args(argv)
    if not (args.data / "INDEX.csv").exists():
        print(f"{args.data}/INDEX.csv not found", file=sys.stderr)
        return 1
    if args.show:
        show(args.data, args.show, args.width)
        return 0
    rows = label_all(args.data)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    counts = Counter(r["label"] for r in rows).most_common()
    print(f"wrote {args.out}: {len(rows)} runs; " + ", ".join(f"{k} {v}" for k, v in counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
