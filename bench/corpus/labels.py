"""Labels of a recorded run: onset, manifestation step, severity, and the draw's acceptance check.

The definitions are stated precisely in ``bench/README.md``; this module is
their only implementation. Everything is computed from the recorded
telemetry, so labels can be recomputed from the stored runs.

Notation: ``loss_t`` is the logged training loss at step ``t``; ``ema_t``
its exponential moving average with weight ``EMA_ALPHA`` (a non-finite loss
makes it non-finite); ``val_v`` the validation loss at validation step ``v``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.corpus.store import RunRecord

EMA_ALPHA = 0.1
K_DIVERGE = 3.0  # divergence: ema above K x its running minimum
X_OVERFIT = 0.2  # overfitting: val loss 20 % above its best so far
X_CORRUPT_VAL = 0.1  # data corruption: val loss 10 % above its best before onset
K_CORRUPT_TRAIN = 1.5  # data corruption: ema 1.5 x its value just before onset
K_BAD_BATCH = 2.0  # bad batch: loss at onset >= 2 x median of the 20 steps before
HEALTHY_PROGRESS = 0.5  # healthy: final loss <= 0.5 x initial
STUCK = 0.7  # vanishing / slow: final loss > 0.7 x initial
DEAD = 0.5  # dying ReLU: some layer's zero fraction >= 0.5


def ema(x: np.ndarray, alpha: float = EMA_ALPHA) -> np.ndarray:
    out = np.empty(len(x))
    acc = math.nan
    for i, v in enumerate(x.tolist()):
        acc = v if i == 0 else (1 - alpha) * acc + alpha * v
        out[i] = acc
    return out


def first_nonfinite_step(rec: RunRecord, from_step: int = 0) -> int | None:
    """First step >= ``from_step`` at which any SDK metric (not ``dbg/``) is NaN or +-Inf."""
    best = None
    for name, (rows, values) in rec.columns.items():
        if name.startswith("dbg/"):
            continue
        bad = rows[~np.isfinite(values)]
        if len(bad):
            steps = rec.steps[bad]
            steps = steps[steps >= from_step]
            if len(steps) and (best is None or steps[0] < best):
                best = int(steps[0])
    return best


def blowup_step(steps: np.ndarray, loss: np.ndarray, onset: int, k: float = K_DIVERGE) -> int | None:
    """First step >= onset where ``loss`` is non-finite or ``ema_t > k * min_{s<t} ema_s``."""
    e = ema(loss)
    run_min = np.minimum.accumulate(np.where(np.isfinite(e), e, np.inf))
    prev_min = np.concatenate(([np.inf], run_min[:-1]))
    hit = (steps >= onset) & (~np.isfinite(loss) | ~np.isfinite(e) | (e > k * prev_min))
    idx = np.flatnonzero(hit)
    return int(steps[idx[0]]) if len(idx) else None


def val_rise_step(vsteps: np.ndarray, val: np.ndarray, onset: int, x: float = X_OVERFIT) -> int | None:
    """First validation step >= onset with ``val_v >= (1 + x) * min_{u<v} val_u``."""
    best = np.inf
    for s, v in zip(vsteps.tolist(), val.tolist()):
        if s >= onset and best < np.inf and not v < (1 + x) * best:
            return int(s)
        if math.isfinite(v):
            best = min(best, v)
    return None


def _head_tail(loss: np.ndarray) -> tuple[float, float]:
    fin = loss[np.isfinite(loss)]
    if len(fin) == 0:
        return math.nan, math.nan
    k = max(1, min(20, len(fin) // 10))
    return float(fin[:k].mean()), float(fin[-k:].mean())


def _grade(value: float, moderate: float, severe: float) -> str:
    return "severe" if value >= severe else "moderate" if value >= moderate else "mild"


def label_run(rec: RunRecord) -> dict[str, Any]:
    """Manifestation step, severity, magnitude and the acceptance check of one run."""
    spec = rec.meta["spec"]
    fault, onset = spec["fault"], int(spec["onset"])
    steps, loss = rec.series("loss")
    vsteps, val = rec.series("val/loss")
    first, final = _head_tail(loss)
    nonfinite = first_nonfinite_step(rec, onset)
    out: dict[str, Any] = {"manifest_step": None, "severity": "", "magnitude": math.nan, "accepted": True, "check": ""}

    if fault == "healthy":
        vfin = val[np.isfinite(val)]
        ok_val = len(vfin) == 0 or vfin[-1] <= (1 + X_OVERFIT) * vfin.min()
        converged = final <= HEALTHY_PROGRESS * first
        out["accepted"] = nonfinite is None and bool(converged) and bool(ok_val)
        out["check"] = f"finite={nonfinite is None} final/first={final / first:.3g} val_ok={ok_val}"
        out["magnitude"] = final / first
        return out

    if fault == "divergence":
        m = blowup_step(steps, loss, onset)
        if nonfinite is not None and (m is None or nonfinite < m):
            m = nonfinite
        out["manifest_step"] = m
        e = ema(loss)
        pre = e[steps < max(onset, 1)]
        ref = float(np.nanmin(pre)) if len(pre) and np.isfinite(pre).any() else float(e[0])
        post = e[steps >= onset]
        peak = float(np.nanmax(np.where(np.isfinite(post), post, np.inf))) if len(post) else math.nan
        out["magnitude"] = peak / ref if ref > 0 else math.inf
        out["severity"] = "severe" if nonfinite is not None else _grade(out["magnitude"], 10.0, math.inf)
        out["accepted"] = m is not None
    elif fault == "nan":
        out["manifest_step"] = nonfinite
        out["magnitude"] = float(nonfinite - onset) if nonfinite is not None else math.nan
        out["severity"] = "severe"
        out["accepted"] = nonfinite is not None
    elif fault in ("vanishing_gradient", "slow_convergence"):
        out["manifest_step"] = onset
        out["magnitude"] = final / first
        out["severity"] = _grade(out["magnitude"], 0.85, 0.95)
        out["accepted"] = nonfinite is None and final > STUCK * first
    elif fault == "dying_relu":
        zf = [(n, rec.series(n)) for n in rec.columns if n.startswith("act/zero_frac/")]
        worst, m = 0.0, None
        for _, (zs, zv) in zf:
            after = zs >= onset
            zs, zv = zs[after], zv[after]
            if len(zv):
                tail = zv[-max(1, len(zv) // 5) :]
                worst = max(worst, float(np.nanmean(tail)))
                hit = np.flatnonzero(zv >= DEAD)
                if len(hit) and (m is None or zs[hit[0]] < m):
                    m = int(zs[hit[0]])
        out["manifest_step"] = m
        out["magnitude"] = worst
        out["severity"] = _grade(worst, 0.7, 0.9)
        out["accepted"] = nonfinite is None and worst >= DEAD and m is not None
    elif fault == "oscillation":
        half = loss[len(loss) // 2 :]
        fin = np.isfinite(loss).all()
        cv = float(half.std() / half.mean()) if fin and half.mean() > 0 else math.nan
        unsettled = fin and float(np.median(half)) >= 0.2 * first
        out["manifest_step"] = onset
        out["magnitude"] = cv
        out["severity"] = _grade(cv, 0.5, 1.0) if fin else ""
        out["accepted"] = bool(nonfinite is None and unsettled and cv >= 0.3)
    elif fault == "overfitting":
        m = val_rise_step(vsteps, val, onset)
        out["manifest_step"] = m
        vfin = val[np.isfinite(val)]
        best_i = int(np.argmin(vfin)) if len(vfin) else 0
        rise = float(vfin[best_i:].max() / vfin[best_i] - 1) if len(vfin) else math.nan
        out["magnitude"] = rise
        out["severity"] = _grade(rise, 0.5, 1.0)
        out["accepted"] = m is not None and nonfinite is None
    elif fault == "data_corruption":
        e = ema(loss)
        before = np.flatnonzero(steps < onset)
        cand = []
        if len(before):
            ref = e[before[-1]]
            hit = np.flatnonzero((steps >= onset) & (e >= K_CORRUPT_TRAIN * ref))
            if len(hit):
                cand.append(int(steps[hit[0]]))
        vb = val[vsteps < onset]
        rise = math.nan
        if len(vb) and np.isfinite(vb).any():
            best = float(np.nanmin(vb))
            va = val[vsteps >= onset]
            hit = np.flatnonzero(va >= (1 + X_CORRUPT_VAL) * best)
            if len(hit):
                cand.append(int(vsteps[vsteps >= onset][hit[0]]))
            rise = float(np.nanmax(va) / best) if len(va) else math.nan
        out["manifest_step"] = min(cand) if cand else None
        out["magnitude"] = rise
        out["severity"] = _grade(rise, 1.3, 2.0)
        out["accepted"] = bool(cand) and nonfinite is None
    elif fault == "bad_batch":
        i = np.flatnonzero(steps == onset)
        prior = loss[(steps < onset) & (steps >= onset - 20)]
        ratio = math.nan
        if len(i) and len(prior):
            v = loss[i[0]]
            ratio = math.inf if not math.isfinite(v) else float(v / np.median(prior))
        out["magnitude"] = ratio
        out["manifest_step"] = onset if ratio >= K_BAD_BATCH else None
        out["severity"] = _grade(ratio, 10.0, 100.0)
        out["accepted"] = out["manifest_step"] is not None
    elif fault == "stall":
        gap = spec["params"].get("gap_s", math.inf)
        out["manifest_step"] = onset
        out["magnitude"] = gap
        out["severity"] = _grade(gap, 1800.0, math.inf)
    else:
        raise ValueError(f"unknown fault {fault!r}")
    return out
