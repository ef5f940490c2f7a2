"""Run-level detection metrics of the benchmark (pure functions; split by run, never by step).

Definitions (also in ``bench/README.md``):

- An *alert* is a published incident revision with severity >= WARNING,
  placed at its *evaluation step*: the step of the value that triggered it,
  or, for a time-based alert raised while the run was silent, the step after
  the last one received (the step that did not arrive).
- For a faulty run only alerts at or after the fault's onset count as
  detections; alerts before the onset are false alarms on the run's healthy
  prefix. A healthy run counts all its alerts.
- A run is *flagged* when it has a counted alert. Precision, recall and F1
  are over runs (faulty = positive). No point-adjust: one flagged run is one
  true positive whatever the number of its alerts.
- The *run score* (for AUROC) is ``max over counted alerts of (severity +
  s / (1 + s))`` with ``s = max(score, 0)``; 0 for a run without alerts.
  Severities are 2..4 (WARNING..CRITICAL), so any alert outranks none and a
  more severe alert outranks a higher score.
- *False alarms per 10,000 healthy steps*: incidents whose first alert lies
  in a healthy region (a healthy run, or a faulty run before its onset),
  divided by the number of logged steps in healthy regions, x 10,000.
- *Lead time* (divergence and NaN faults with a manifestation step):
  ``manifest_step - first counted alert step``; reported as median and 10th
  percentile over alerted runs, with the fraction of all such runs alerted
  strictly before manifestation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WARNING = 2


@dataclass(frozen=True)
class Truth:
    """What a run really is."""

    run_id: str
    faulty: bool
    fault: str = "healthy"
    onset: int = 0
    manifest: int | None = None
    healthy_steps: int = 0  # logged steps in the healthy region


@dataclass(frozen=True)
class AlertRecord:
    """One published incident revision of one detector on one run."""

    run_id: str
    detector: str
    kind: str
    severity: int
    score: float
    step: int  # evaluation step (see module docstring)
    incident: str
    revision: int = 1


def counted(truth: Truth, alerts: Iterable[AlertRecord]) -> list[AlertRecord]:
    """The alerts that count as detections of this run's fault (all alerts of a healthy run)."""
    return [a for a in alerts if a.severity >= WARNING and (not truth.faulty or a.step >= truth.onset)]


def run_score(alerts: Sequence[AlertRecord]) -> float:
    """Run-level anomaly score from its counted alerts (0 when there are none).

    Examples
    --------
    >>> a = lambda sev, score: AlertRecord("r", "d", "K", sev, score, 5, "i")
    >>> run_score([]), run_score([a(2, 1.0)]), run_score([a(2, 1.0), a(4, 0.0)])
    (0.0, 2.5, 4.0)
    """
    best = 0.0
    for a in alerts:
        s = max(a.score, 0.0) if math.isfinite(a.score) else 1e12
        best = max(best, a.severity + s / (1.0 + s))
    return best


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN for one class.

    Examples
    --------
    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auroc([0, 1], [1.0, 1.0])
    0.5
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def confusion(truths: Sequence[Truth], alerts: Mapping[str, Sequence[AlertRecord]]) -> dict[str, float]:
    """Run-level TP/FP/FN/TN, precision, recall, F1 and AUROC.

    Examples
    --------
    >>> t = [Truth("a", True, "nan", onset=10), Truth("b", False), Truth("c", True, "stall", onset=0)]
    >>> al = {"a": [AlertRecord("a", "d", "K", 2, 1.0, 12, "x")], "b": [AlertRecord("b", "d", "K", 2, 1.0, 3, "y")]}
    >>> c = confusion(t, al)
    >>> c["tp"], c["fp"], c["fn"], c["tn"], round(c["precision"], 3), c["recall"]
    (1, 1, 1, 0, 0.5, 0.5)
    """
    tp = fp = fn = tn = 0
    labels, scores = [], []
    for t in truths:
        c = counted(t, alerts.get(t.run_id, ()))
        flagged = bool(c)
        labels.append(t.faulty)
        scores.append(run_score(c))
        if t.faulty:
            tp += flagged
            fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1,
        "auroc": auroc(labels, scores),
        "healthy_flagged": fp / (fp + tn) if fp + tn else math.nan,
    }


def false_alarms(truths: Sequence[Truth], alerts: Mapping[str, Sequence[AlertRecord]]) -> dict[str, float]:
    """Incidents opened in healthy regions per 10,000 healthy steps.

    Examples
    --------
    >>> t = [Truth("a", True, "nan", onset=10, healthy_steps=10), Truth("b", False, healthy_steps=90)]
    >>> al = {"a": [AlertRecord("a", "d", "K", 2, 1, 4, "i1"), AlertRecord("a", "d", "K", 3, 1, 12, "i2")],
    ...       "b": [AlertRecord("b", "d", "K", 2, 1, 50, "i3"), AlertRecord("b", "d", "K", 3, 2, 60, "i3", 2)]}
    >>> false_alarms(t, al)
    {'false_alarms': 2, 'healthy_steps': 100, 'per_10k': 200.0}
    """
    n_alarms = 0
    steps = 0
    for t in truths:
        steps += t.healthy_steps
        first: dict[str, int] = {}
        for a in alerts.get(t.run_id, ()):
            if a.severity >= WARNING and a.incident not in first:
                first[a.incident] = a.step
        for s in first.values():
            if not t.faulty or s < t.onset:
                n_alarms += 1
    return {"false_alarms": n_alarms, "healthy_steps": steps, "per_10k": 1e4 * n_alarms / steps if steps else math.nan}


def recall_by_fault(truths: Sequence[Truth], alerts: Mapping[str, Sequence[AlertRecord]]) -> dict[str, tuple[int, int]]:
    """Per fault type: (runs detected, runs)."""
    out: dict[str, list[int]] = {}
    for t in truths:
        if not t.faulty:
            continue
        hit = out.setdefault(t.fault, [0, 0])
        hit[0] += bool(counted(t, alerts.get(t.run_id, ())))
        hit[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def lead_times(
    truths: Sequence[Truth], alerts: Mapping[str, Sequence[AlertRecord]], faults: Iterable[str] = ("divergence", "nan")
) -> dict[str, float]:
    """Lead time = manifestation step - first counted alert step, over runs of ``faults`` with a manifestation.

    Examples
    --------
    >>> t = [Truth(r, True, "nan", onset=0, manifest=100) for r in "abc"]
    >>> al = {"a": [AlertRecord("a", "d", "K", 2, 1, 90, "i")], "b": [AlertRecord("b", "d", "K", 2, 1, 100, "j")]}
    >>> lt = lead_times(t, al)
    >>> lt["runs"], lt["alerted"], lt["median"], lt["frac_before"]
    (3, 2, 5.0, 0.3333333333333333)
    """
    faults = set(faults)
    leads = []
    n = 0
    for t in truths:
        if not t.faulty or t.fault not in faults or t.manifest is None:
            continue
        n += 1
        c = counted(t, alerts.get(t.run_id, ()))
        if c:
            leads.append(t.manifest - min(a.step for a in c))
    arr = np.asarray(leads, dtype=float)
    return {
        "runs": n,
        "alerted": len(leads),
        "median": float(np.median(arr)) if len(arr) else math.nan,
        "p10": float(np.percentile(arr, 10)) if len(arr) else math.nan,
        "frac_before": float((arr > 0).sum() / n) if n else math.nan,
    }


def only(alerts: Mapping[str, Sequence[AlertRecord]], detector: str) -> dict[str, list[AlertRecord]]:
    """The alerts of one detector (rule / diagnostic) of a system."""
    return {r: [a for a in al if a.detector == detector] for r, al in alerts.items()}
