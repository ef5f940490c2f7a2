"""Fit and calibrate the learned detectors from labelled runs (needs torch and PyOD).

Input is a list of :class:`TrainingRun` (a whole run as one
:class:`~runwatch.models.block.MetricBlock` plus what is known of it: healthy,
or a fault with its onset and manifestation step). :func:`fit_artifact`:

1. computes feature rows of every run, dense and thinned to every k-th step
   (``TrainingConfig.thinning``), so the models see both dense and sparse logging;
2. splits runs into a fitting part and a calibration part (by run, seeded);
3. fits the sequence autoencoder on healthy windows (healthy runs and the
   healthy prefixes of faulty runs), the forecaster on every row with its
   divergence-within-H targets, and the run-outlier reference on healthy
   run-prefix summaries;
4. calibrates each alert level on the calibration part's healthy runs so that
   at most ``target_run_rate`` of them would be flagged (with the detector's
   patience), and each gate level at a row-level quantile.

Training lives apart from serving: the service only loads the artifact.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.learned.artifacts import LearnedArtifact, LearnedArtifactConfig, Thresholds
from runwatch.models.learned.features import FEATURES, N_FEATURES, RunFeatures
from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig
from runwatch.models.learned.run_outlier import RunOutlierConfig, RunOutlierDetector, prefix_summary, summary_names
from runwatch.models.learned.sequence_ae import SequenceAEConfig, SequenceAutoencoder, rows_to_score

DIVERGENT_FAULTS = ("divergence", "nan")


@dataclass
class TrainingRun:
    """One run for fitting: its events as one block and its label."""

    run_id: str
    block: MetricBlock
    fault: str = "healthy"  # "healthy" or a fault type
    onset: int = 0
    manifest: int | None = None
    cause: str = ""
    source: str = "corpus"


class TrainingConfig(DiagnosticConfig):
    """How :func:`fit_artifact` fits and calibrates."""

    thinning: tuple[int, ...] = (1, 5, 25)
    calibration_fraction: float = Field(0.25, gt=0, lt=1)
    target_run_rate: float = Field(0.005, gt=0, lt=1, description="healthy calibration runs an alert level may flag")
    gate_quantile: float = Field(0.98, gt=0, lt=1, description="healthy rows whose score is 'learned normal'")
    max_windows: int = 80_000
    max_rows: int = 400_000
    forecast_exclude_causes: tuple[str, ...] = ("nan_input",)  # a NaN record has no precursor to learn from
    seed: int = 0
    sequence_ae: SequenceAEConfig = Field(default_factory=lambda: SequenceAEConfig(n_features=N_FEATURES))
    forecaster: ForecasterConfig = Field(default_factory=lambda: ForecasterConfig(n_features=N_FEATURES))
    run_outlier: RunOutlierConfig = Field(default_factory=RunOutlierConfig)
    patience: int = 2
    min_rows: int = 4
    sequence_every_steps: int = Field(8, ge=1, description="autoencoder scoring stride in steps (serving and calibration)")


@dataclass
class _Rows:
    run: TrainingRun
    thin: int
    steps: np.ndarray
    x: np.ndarray
    healthy_upto: int = field(default=0)  # rows [0, healthy_upto) are healthy


def thin_block(block: MetricBlock, k: int) -> MetricBlock:
    """Keep the events whose step is a multiple of ``k`` (``k`` = 1 keeps all)."""
    if k <= 1:
        return block
    keep = block.steps % k == 0
    steps, walls = block.steps[keep], block.wall_times[keep]
    from runwatch.models.block import Column

    cols = {}
    for name, col in block.columns.items():
        m = col.steps % k == 0
        if m.any():
            cols[name] = Column(col.steps[m], col.values[m], col.wall_times[m])
    return MetricBlock(steps, walls, cols)


def _split(run_id: str, fraction: float, seed: int) -> bool:
    """Deterministic by-run assignment to the calibration part."""
    h = int(hashlib.sha1(f"{seed}|{run_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


def _rows(runs: Sequence[TrainingRun], thinning: Sequence[int]) -> list[_Rows]:
    out = []
    for run in runs:
        for k in thinning:
            steps, x = RunFeatures().update(thin_block(run.block, k))
            if len(steps) < 2:
                continue
            if run.fault == "healthy":
                upto = len(steps)
            else:
                upto = int(np.searchsorted(steps, run.onset, side="left"))
            out.append(_Rows(run, k, steps, x, upto))
    return out


def windows_of(x: np.ndarray, window: int) -> np.ndarray:
    """The window ending at every row, NaN-padded at the start: ``[len(x), window, F]``."""
    padded = np.concatenate([np.full((window - 1, x.shape[1]), np.nan), x])
    return np.lib.stride_tricks.sliding_window_view(padded, window, axis=0).transpose(0, 2, 1)


def pairs_of(x: np.ndarray, lag: int) -> np.ndarray:
    before = np.concatenate([np.full((lag, x.shape[1]), np.nan), x])[: len(x)]
    return np.stack([x, before], axis=1)


def forecast_targets(r: _Rows, horizons: Sequence[int], exclude: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows to use, targets) of one run for the forecaster."""
    n = len(r.steps)
    use = np.ones(n, bool)
    y = np.zeros((n, len(horizons)), np.float32)
    run = r.run
    if run.fault in DIVERGENT_FAULTS and run.manifest is not None:
        if run.cause in exclude:
            use &= r.steps < run.onset
        else:
            use &= r.steps < run.manifest
            ahead = run.manifest - r.steps
            for j, h in enumerate(horizons):
                y[:, j] = ((r.steps >= run.onset) & (ahead > 0) & (ahead <= h)).astype(np.float32)
    return use, y


def _streak_max(scores: np.ndarray, patience: int, min_rows: int) -> float:
    """The highest level that ``patience`` consecutive scores (after ``min_rows``) all reach."""
    if len(scores) < patience:
        return -np.inf
    s = np.lib.stride_tricks.sliding_window_view(scores, patience).min(axis=1)
    s = s[max(0, min_rows - patience):]
    return float(s.max()) if len(s) else -np.inf


def _level(values: list[float], rate: float) -> float:
    v = np.asarray([x for x in values if np.isfinite(x)])
    return float(np.quantile(v, 1.0 - rate)) if len(v) else 1.0


def fit_artifact(runs: Sequence[TrainingRun], config: TrainingConfig | None = None, provenance: dict | None = None,
                 log=print) -> LearnedArtifact:
    """Fit and calibrate all learned detectors; returns the artifact (see the module docstring)."""
    cfg = config or TrainingConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    rows = _rows(runs, cfg.thinning)
    calib = [r for r in rows if _split(r.run.run_id, cfg.calibration_fraction, cfg.seed)]
    fit = [r for r in rows if not _split(r.run.run_id, cfg.calibration_fraction, cfg.seed)]
    log(f"features: {len(rows)} run views ({len(fit)} fit, {len(calib)} calibration), {time.perf_counter() - t0:.0f} s")

    w = cfg.sequence_ae.window
    healthy_windows = [windows_of(r.x, w)[: r.healthy_upto] for r in fit if r.healthy_upto > 0]
    hw = np.concatenate(healthy_windows)
    if len(hw) > cfg.max_windows:
        hw = hw[rng.choice(len(hw), cfg.max_windows, replace=False)]
    ae = SequenceAutoencoder(cfg.sequence_ae).fit(hw)
    log(f"sequence autoencoder: {len(hw)} healthy windows, {time.perf_counter() - t0:.0f} s")

    hz = cfg.forecaster.horizons
    xs, ys = [], []
    for r in fit:
        use, y = forecast_targets(r, hz, cfg.forecast_exclude_causes)
        xs.append(pairs_of(r.x, cfg.forecaster.lag)[use])
        ys.append(y[use])
    px, py = np.concatenate(xs), np.concatenate(ys)
    pos = py[:, -1] > 0
    neg_idx = np.flatnonzero(~pos)
    budget = max(0, cfg.max_rows - int(pos.sum()))
    if len(neg_idx) > budget:
        neg_idx = rng.choice(neg_idx, budget, replace=False)
    sel = np.concatenate([np.flatnonzero(pos), neg_idx])
    fc = DivergenceForecaster(cfg.forecaster).fit(px[sel], py[sel])
    log(f"forecaster: {len(sel)} rows, {int(pos.sum())} positive, {time.perf_counter() - t0:.0f} s")

    art_cfg_marks = LearnedArtifactConfig.model_fields["prefix_checkpoints"].default
    ref = []
    for r in fit:
        if r.run.fault != "healthy":
            continue
        for m in art_cfg_marks:
            if m <= len(r.x):
                ref.append(prefix_summary(r.x[:m]))
    ro = RunOutlierDetector(cfg.run_outlier).fit(np.asarray(ref), summary_names(FEATURES))
    log(f"run outlier ({cfg.run_outlier.method}): {len(ref)} healthy prefixes, {time.perf_counter() - t0:.0f} s")

    # calibration on held-back healthy runs
    seq_max, fc_max, ro_max, seq_rows, fc_rows = [], [], [], [], []
    for r in calib:
        if r.run.fault != "healthy":
            continue
        fe = ae.score_samples(windows_of(r.x, w))
        p = fc.predict_proba(pairs_of(r.x, cfg.forecaster.lag))[:, -1]
        scored, _ = rows_to_score(r.steps, 0, cfg.sequence_every_steps)  # the rows the detector scores
        seq_max.append(_streak_max(fe[scored], cfg.patience, int(scored[: cfg.min_rows - 1].sum()) + 1))
        fc_max.append(_streak_max(p, cfg.patience, cfg.min_rows))
        seq_rows.append(fe)
        fc_rows.append(p)
        scores = [ro.score_samples(prefix_summary(r.x[:m])[None, :])[0] for m in art_cfg_marks if m <= len(r.x)]
        if scores:
            ro_max.append(max(scores))
    thresholds = Thresholds(
        sequence_alert=_level(seq_max, cfg.target_run_rate),
        sequence_gate=float(np.quantile(np.concatenate(seq_rows), cfg.gate_quantile)),
        forecast_alert=max(0.05, _level(fc_max, cfg.target_run_rate)),
        forecast_gate=0.0,
        run_outlier_alert=_level(ro_max, cfg.target_run_rate),
    )
    thresholds = thresholds.model_copy(update={"forecast_gate": thresholds.forecast_alert / 2})
    log(f"calibration on {len(seq_max)} healthy run views: {thresholds.model_dump()}")
    art_config = LearnedArtifactConfig(
        sequence_ae=cfg.sequence_ae,
        forecaster=cfg.forecaster,
        run_outlier=cfg.run_outlier,
        thresholds=thresholds,
        sequence_every_steps=cfg.sequence_every_steps,
        training={
            "config": cfg.to_dict(),
            "runs": len(runs),
            "run_views": {"fit": len(fit), "calibration": len(calib)},
            "healthy_windows": int(len(hw)),
            "forecaster_rows": int(len(sel)),
            "forecaster_positive_rows": int(pos.sum()),
            "reference_prefixes": len(ref),
            "seconds": round(time.perf_counter() - t0, 1),
            **(provenance or {}),
        },
    )
    return LearnedArtifact(art_config, ae, fc, ro)
