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

:func:`raise_levels` then raises alert levels where healthy runs of *other*
domains (datasets and architectures the models never saw) would reach them
more often than that: held-back runs of the training domains give optimistic
levels for new ones.

The forecaster reads some features only down to a floor
(:func:`support_floors`, ``TrainingConfig.forecast_floor_features``): below
the value where fewer than ``forecast_floor_runs`` divergent runs of the
training data lie, what the MLP says was fitted to one or two runs.
:func:`set_forecast_floors` adds such floors to a forecaster already fitted
(the weights stay; only what it is shown changes).

With ``base`` (an artifact already fitted, e.g. the shipped default) and fewer
than ``TrainingConfig.min_divergent_runs`` divergent runs, the forecaster and
its calibrated forecast levels are kept from ``base``: a user's own runs are
mostly healthy, and a forecaster cannot learn what precedes a divergence from
runs that never diverge. The autoencoder and the run-outlier reference are
still fitted and calibrated on the given runs. ``keep_base_forecaster`` keeps it
whatever the runs: a refit of the unsupervised parts that leaves a forecaster
already validated on other domains as it is.

Too little data raises :class:`TrainingDataError`, naming what is missing.

Training lives apart from serving: the service only loads the artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, field_validator

from runwatch.models.base import DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.learned.artifacts import LearnedArtifact, LearnedArtifactConfig, Thresholds
from runwatch.models.learned.features import FEATURES, N_FEATURES, RunFeatures, check_feature_names
from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig
from runwatch.models.learned.run_outlier import RunOutlierConfig, RunOutlierDetector, prefix_summary, summary_names
from runwatch.models.learned.sequence_ae import SequenceAEConfig, SequenceAutoencoder, rows_to_score

DIVERGENT_FAULTS = ("divergence", "nan")
MIN_HEALTHY_RUNS = 8
MIN_LOSSES = 16  # the first run-outlier checkpoint and the autoencoder's default window
MIN_CALIBRATION_RUNS = 2
VALIDATION_PREFIX = "val/"  # validation metrics keep their own steps when a run is thinned (thin_block)


class TrainingDataError(ValueError):
    """The runs given cannot fit an artifact; the message names what is missing."""


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
    calibrate_each_thinning: bool = Field(
        True, description="each alert level holds target_run_rate on the held-back views of every thinning, not "
        "only on all of them pooled (the sparse views must not lower the level dense runs are judged by)")
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
    forecast_floor_features: tuple[str, ...] = Field(
        ("grad_vs_start",), description="features the forecaster reads only down to their support floor "
        "(support_floors): a gradient norm far below its first logged value (a large start, common in transformers) "
        "preceded a divergence in only two training runs, which the MLP had learnt as a rule")
    forecast_floor_runs: int = Field(3, ge=1, description="a floor is the lowest value that this many divergent runs "
                                     "reach in their rows before divergence (their k-th lowest minimum)")
    min_divergent_runs: int = Field(
        5, ge=1, description="divergent runs (divergence/nan with a manifestation step) needed to fit the forecaster; "
        "with fewer, fit_artifact keeps the base artifact's forecaster")

    @field_validator("forecast_floor_features")
    @classmethod
    def _known_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return check_feature_names(names)


@dataclass
class _Rows:
    run: TrainingRun
    thin: int
    steps: np.ndarray
    x: np.ndarray
    healthy_upto: int = field(default=0)  # rows [0, healthy_upto) are healthy


def kept_when_thinned(metric: str, steps: np.ndarray, k: int) -> np.ndarray:
    """Which of a metric's logged ``steps`` a log thinned to every ``k``-th step still has.

    A training metric keeps the steps that are multiples of ``k``; an evaluation (``val/...``) keeps them
    all. Sparse logging thins the training metrics, not the evaluations: a loop that logs every ``k`` steps
    still logs each evaluation when it runs (the HF Trainer's ``logging_steps`` and ``eval_steps``, and
    Lightning's ``log_every_n_steps`` and validation loop, are separate cadences).

    >>> kept_when_thinned("loss", np.array([0, 19, 25]), 25).tolist(), kept_when_thinned("val/loss", np.array([19]), 25).tolist()
    ([True, False, True], [True])
    """
    if metric.startswith(VALIDATION_PREFIX):
        return np.ones(len(steps), bool)
    return steps % k == 0


def thin_block(block: MetricBlock, k: int) -> MetricBlock:
    """The block as a log thinned to every ``k``-th step (:func:`kept_when_thinned`; ``k`` = 1 keeps all).

    Thinning evaluations too would teach the models sparse windows without validation, unlike any real
    sparse log.
    """
    if k <= 1:
        return block
    from runwatch.models.block import Column

    keep = np.zeros(len(block.steps), bool)
    cols = {}
    for name, col in block.columns.items():
        m = kept_when_thinned(name, col.steps, k)
        if m.any():
            cols[name] = Column(col.steps[m], col.values[m], col.wall_times[m])
            keep |= np.isin(block.steps, col.steps[m])
    return MetricBlock(block.steps[keep], block.wall_times[keep], cols)


def _split(run_id: str, fraction: float, seed: int) -> bool:
    """Deterministic by-run assignment to the calibration part."""
    h = int(hashlib.sha1(f"{seed}|{run_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


def _calibration_ids(runs: Sequence[TrainingRun], eligible: set[str], fraction: float, seed: int) -> set[str]:
    """Run ids of the calibration part: the hash split, unless it leaves a part short of healthy runs.

    On a few dozen runs the hash split can put (almost) every healthy run on one
    side; then the ``fraction`` of ``eligible`` healthy runs with the lowest
    hashes goes to calibration instead (at least MIN_CALIBRATION_RUNS on each side).
    """
    ids = {r.run_id for r in runs if _split(r.run_id, fraction, seed)}
    n_cal = len(eligible & ids)
    if n_cal >= MIN_CALIBRATION_RUNS and len(eligible) - n_cal >= MIN_CALIBRATION_RUNS:
        return ids
    ranked = sorted(eligible, key=lambda rid: hashlib.sha1(f"{seed}|{rid}".encode()).hexdigest())
    k = min(max(MIN_CALIBRATION_RUNS, math.ceil(fraction * len(ranked))), len(ranked) - MIN_CALIBRATION_RUNS)
    return (ids - eligible) | set(ranked[:k])


def _divergent(run: TrainingRun, exclude: Sequence[str]) -> bool:
    return run.fault in DIVERGENT_FAULTS and run.manifest is not None and run.cause not in exclude


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


def support_floors(rows: Sequence[_Rows], features: Sequence[str], horizons: Sequence[int], exclude: Sequence[str],
                   min_runs: int) -> dict[str, float]:
    """Per feature, the lowest value that ``min_runs`` divergent runs reach in their positive rows (the rows
    within the longest horizon before manifestation): the ``min_runs``-th lowest of the runs' minima. A feature
    fewer runs show at all gets no floor.

    Examples
    --------
    >>> x = np.zeros((3, N_FEATURES)); x[:, FEATURES.index("grad_vs_start")] = [-1.0, -2.0, -3.0]
    >>> runs = [TrainingRun(f"r{i}", None, "divergence", onset=0, manifest=10) for i in range(3)]
    >>> rows = [_Rows(run, 1, np.array([7, 8, 9]), x + 0.5 * i) for i, run in enumerate(runs)]
    >>> support_floors(rows, ["grad_vs_start"], (10,), (), min_runs=2)
    {'grad_vs_start': -2.5}
    """
    lowest: dict[str, dict[str, float]] = {name: {} for name in features}
    for r in rows:
        use, y = forecast_targets(r, horizons, exclude)
        positive = use & (y[:, -1] > 0)
        if not positive.any():
            continue
        for name in features:
            values = r.x[positive, FEATURES.index(name)]
            values = values[np.isfinite(values)]
            if len(values):
                per_run = lowest[name]
                per_run[r.run.run_id] = min(per_run.get(r.run.run_id, math.inf), float(values.min()))
    return {name: sorted(per_run.values())[min_runs - 1] for name, per_run in lowest.items() if len(per_run) >= min_runs}


def set_forecast_floors(art: LearnedArtifact, runs: Sequence[TrainingRun], config: TrainingConfig | None = None,
                        provenance: dict | None = None, log=print) -> LearnedArtifact:
    """The artifact with its forecaster's feature floors (:func:`support_floors`) computed from ``runs``, the
    labelled runs it was fitted on; weights, scalings and levels stay as they are.

    Examples
    --------
    >>> from runwatch.models.learned.artifacts import load_artifact
    >>> shipped = load_artifact()
    >>> set_forecast_floors(shipped, [], log=lambda m: None) is shipped   # no divergent runs: nothing to floor
    True
    """
    cfg = config or TrainingConfig.model_validate(art.config.training.get("config", {}))
    fc_cfg = art.forecaster.config
    floors = support_floors(_rows(runs, cfg.thinning), cfg.forecast_floor_features, fc_cfg.horizons,
                            cfg.forecast_exclude_causes, cfg.forecast_floor_runs)
    if not floors:
        return art
    log("forecaster floors: " + ", ".join(f"{k} {v:.4g}" for k, v in floors.items()))
    fc_cfg = fc_cfg.model_copy(update={"feature_floors": floors})
    forecaster = DivergenceForecaster.from_tensors(fc_cfg, art.forecaster.tensors())
    training = {**art.config.training, "forecast_floors": {"floors": floors, "runs": len(runs), **(provenance or {})}}
    config_out = art.config.model_copy(update={"forecaster": fc_cfg, "training": training})
    return LearnedArtifact(config_out, art.sequence_ae, forecaster, art.run_outlier)


def _streak_max(scores: np.ndarray, patience: int, min_rows: int) -> float:
    """The highest level that ``patience`` consecutive scores (after ``min_rows``) all reach."""
    if len(scores) < patience:
        return -np.inf
    s = np.lib.stride_tricks.sliding_window_view(scores, patience).min(axis=1)
    s = s[max(0, min_rows - patience):]
    return float(s.max()) if len(s) else -np.inf


def _level(values: Sequence[float], rate: float, log_scale: bool = False, in_sample: Sequence[float] = ()) -> float:
    """The level that at most ``rate`` of healthy runs reach, from one value per held-back run.

    With too few runs to read that quantile (fewer than ``1 / rate``), the empirical
    one is just their maximum, which about ``1 / (n + 1)`` of further healthy runs
    exceed. Then the level is raised to a normal prediction bound for one more
    run (on log values when ``log_scale``), and to the same bound over the
    held-back and the ``in_sample`` values (the fitting part's runs): a few dozen
    runs show a heavy tail only together, and in-sample scores, if anything too
    low, cannot lower the level below the held-back one.

    Examples
    --------
    >>> _level(list(np.linspace(0, 1, 1001)), 0.01)
    0.99
    >>> held_back = [1.0, 1.1, 0.9, 1.0]
    >>> round(_level(held_back, 0.005), 2), round(_level(held_back, 0.005, in_sample=[3.0, 1.0]), 2)
    (1.53, 4.9)
    """
    v = np.asarray([x for x in values if np.isfinite(x)])
    if not len(v):
        return 1.0
    level = float(np.quantile(v, 1.0 - rate))
    if len(v) * rate >= 1 or len(v) < 2:
        return level
    from scipy.stats import t

    def bound(x: np.ndarray) -> float:
        x = np.log(np.maximum(x, 1e-12)) if log_scale else x
        b = x.mean() + t.ppf(1.0 - rate, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x))
        return float(np.exp(b)) if log_scale else float(b)

    extra = np.asarray([x for x in in_sample if np.isfinite(x)])
    return max(level, bound(v), *([bound(np.concatenate([v, extra]))] if len(extra) else []))


def _level_each_group(values: Sequence[tuple[int, float]], rate: float, log_scale: bool = False,
                      in_sample: Sequence[tuple[int, float]] = (), by_group: bool = True) -> float:
    """:func:`_level` of ``(group, value)`` pairs: the highest of the groups' levels when ``by_group``.

    Each group (a thinning) then gets at most ``rate`` of its own held-back runs flagged; pooled, the many
    low scores of one logging density can pull the level under another density's tail.

    >>> dense = [(1, v) for v in np.linspace(0, 2, 300)]; sparse = [(25, v) for v in np.linspace(0, 1, 300)]
    >>> round(_level_each_group(dense + sparse, 0.01, by_group=False), 2), round(_level_each_group(dense + sparse, 0.01), 2)
    (1.96, 1.98)
    """
    groups = sorted({g for g, _ in values}) if by_group else [None]
    return max((_level([v for g, v in values if key is None or g == key], rate, log_scale=log_scale,
                       in_sample=[v for g, v in in_sample if key is None or g == key]) for key in groups),
               default=_level([], rate))


def _forecaster_origin(base: LearnedArtifact) -> dict:
    """Where ``base``'s forecaster was fitted: its own training, or the one it kept its forecaster from."""
    training = base.config.training
    if training.get("forecaster_source") == "base" and "base_training" in training:
        return dict(training["base_training"])
    return {k: training[k] for k in ("command", "runs", "corpus_runs", "real_runs") if k in training}


def _view_maxima(views: Sequence[_Rows], ae: SequenceAutoencoder, fc: DivergenceForecaster | None,
                 ro: RunOutlierDetector, cfg: TrainingConfig) -> tuple[list, list, list, list[np.ndarray]]:
    """Per healthy view, ``(its thinning, the highest score it holds for patience rows)`` of the autoencoder,
    the forecaster (none when ``fc`` is None) and the run-outlier detector; then every row's autoencoder
    score (for the sequence gate level)."""
    w = cfg.sequence_ae.window
    marks = LearnedArtifactConfig.model_fields["prefix_checkpoints"].default
    seq_m, fc_m, ro_m, seq_rows = [], [], [], []
    for r in views:
        fe = ae.score_samples(windows_of(r.x, w))
        scored, _ = rows_to_score(r.steps, 0, cfg.sequence_every_steps)  # the rows the detector scores
        seq_m.append((r.thin, _streak_max(fe[scored], cfg.patience, int(scored[: cfg.min_rows - 1].sum()) + 1)))
        seq_rows.append(fe)
        if fc is not None:
            p = fc.predict_proba(pairs_of(r.x, cfg.forecaster.lag))[:, -1]
            fc_m.append((r.thin, _streak_max(p, cfg.patience, cfg.min_rows)))
        scores = [ro.score_samples(prefix_summary(r.x[:m])[None, :])[0] for m in marks if m <= len(r.x)]
        if scores:
            ro_m.append((r.thin, max(scores)))
    return seq_m, fc_m, ro_m, seq_rows


def raise_levels(art: LearnedArtifact, runs: Sequence[TrainingRun], config: TrainingConfig | None = None,
                 provenance: dict | None = None, log=print) -> LearnedArtifact:
    """The artifact with each alert level raised, where needed, so that at most ``target_run_rate`` of the
    healthy ``runs`` (each dense and thinned, as in fitting) reach it; no level is lowered, no gate moved.

    Levels read from held-back runs of the training domains are optimistic for other domains: the
    ``runs`` here are healthy runs of datasets and architectures the models never saw, used for
    calibration only (nothing is fitted on them). ``config`` gives the thinnings, patience and
    target rate (default: the artifact's own training config).

    Examples
    --------
    >>> from runwatch.models.learned.artifacts import load_artifact
    >>> shipped = load_artifact()
    >>> raise_levels(shipped, [], log=lambda m: None) is shipped      # no runs: nothing to raise
    True
    """
    healthy = [r for r in runs if r.fault == "healthy"]
    if not healthy:
        return art
    cfg = config or TrainingConfig.model_validate(art.config.training.get("config", {}))
    views = _rows(healthy, cfg.thinning)
    seq_m, fc_m, ro_m, _ = _view_maxima(views, art.sequence_ae, art.forecaster, art.run_outlier, cfg)
    th = art.config.thresholds

    def level(values: list, old: float, log_scale: bool = False) -> float:
        return max(old, _level_each_group(values, cfg.target_run_rate, log_scale=log_scale,
                                          by_group=cfg.calibrate_each_thinning))

    before = {"sequence_alert": th.sequence_alert, "forecast_alert": th.forecast_alert,
              "run_outlier_alert": th.run_outlier_alert}
    raised = th.model_copy(update={
        "sequence_alert": level(seq_m, th.sequence_alert, log_scale=True),
        "forecast_alert": level(fc_m, th.forecast_alert),
        "run_outlier_alert": level(ro_m, th.run_outlier_alert),
    })
    log(f"levels on {len(views)} views of {len(healthy)} healthy runs of other domains: "
        + ", ".join(f"{k} {v:.4g} -> {getattr(raised, k):.4g}" for k, v in before.items()))
    training = {**art.config.training, "other_domain_calibration": {
        "runs": len(healthy), "views": len(views), "levels_before": before, **(provenance or {})}}
    config_out = art.config.model_copy(update={"thresholds": raised, "training": training})
    return LearnedArtifact(config_out, art.sequence_ae, art.forecaster, art.run_outlier)


@contextlib.contextmanager
def _missing_features_expected():
    """Quiet numpy's RuntimeWarnings about a feature no training row has (runs that log only loss, grad_norm and
    lr have no validation or per-layer features): the models' scaling gives such a feature centre 0 and spread 1,
    as intended (models/learned/scaling.py), and the warnings only alarmed users. Nothing else is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"All-NaN slice encountered", RuntimeWarning)
        warnings.filterwarnings("ignore", r"Degrees of freedom <= 0", RuntimeWarning)
        yield


def fit_artifact(runs: Sequence[TrainingRun], config: TrainingConfig | None = None, provenance: dict | None = None,
                 log=print, base: LearnedArtifact | None = None, keep_base_forecaster: bool = False) -> LearnedArtifact:
    """Fit and calibrate all learned detectors; returns the artifact (see the module docstring).

    ``base``: an artifact whose forecaster (and calibrated forecast levels) is
    kept when ``runs`` hold fewer than ``config.min_divergent_runs`` divergent
    runs, or always with ``keep_base_forecaster``; without it, too few
    divergent runs raise :class:`TrainingDataError`.

    Examples
    --------
    >>> from runwatch.models.learned.artifacts import load_artifact
    >>> runs = [TrainingRun(f"r{i}", block) for i, block in enumerate(healthy_blocks)]  # doctest: +SKIP
    >>> art = fit_artifact(runs, TrainingConfig(thinning=(1,)), base=load_artifact())   # doctest: +SKIP
    >>> art.save("my-detectors")                                                         # doctest: +SKIP
    """
    cfg = config or TrainingConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    rows = _rows(runs, cfg.thinning)
    longest: dict[str, int] = {}
    for r in rows:
        if r.run.fault == "healthy":
            longest[r.run.run_id] = max(longest.get(r.run.run_id, 0), len(r.steps))
    eligible = {rid for rid, n in longest.items() if n >= MIN_LOSSES}
    n_healthy = len({r.run_id for r in runs if r.fault == "healthy"})
    if len(eligible) < MIN_HEALTHY_RUNS:
        raise TrainingDataError(
            f"need at least {MIN_HEALTHY_RUNS} healthy runs with >= {MIN_LOSSES} logged losses; got {len(eligible)} "
            f"({n_healthy} healthy run(s) given, {len(runs)} run(s) in all)")
    divergent = {r.run_id for r in runs if _divergent(r, cfg.forecast_exclude_causes)}
    keep_forecaster = keep_base_forecaster or len(divergent) < cfg.min_divergent_runs
    if keep_base_forecaster and base is None:
        raise ValueError("keep_base_forecaster: needs a base artifact whose forecaster to keep")
    if keep_forecaster and base is None:
        raise TrainingDataError(
            f"need at least {cfg.min_divergent_runs} divergent runs (fault {' or '.join(DIVERGENT_FAULTS)} with a "
            f"manifestation step) to fit the forecaster; got {len(divergent)}. "
            "Pass a base artifact to keep its forecaster")
    cal_ids = _calibration_ids(runs, eligible, cfg.calibration_fraction, cfg.seed)
    calib = [r for r in rows if r.run.run_id in cal_ids]
    fit = [r for r in rows if r.run.run_id not in cal_ids]
    log(f"features: {len(rows)} run views ({len(fit)} fit, {len(calib)} calibration), {time.perf_counter() - t0:.0f} s")

    w = cfg.sequence_ae.window
    healthy_windows = [windows_of(r.x, w)[: r.healthy_upto] for r in fit if r.healthy_upto > 0]
    hw = np.concatenate(healthy_windows)
    if len(hw) > cfg.max_windows:
        hw = hw[rng.choice(len(hw), cfg.max_windows, replace=False)]
    with _missing_features_expected():
        ae = SequenceAutoencoder(cfg.sequence_ae).fit(hw)
    log(f"sequence autoencoder: {len(hw)} healthy windows, {time.perf_counter() - t0:.0f} s")

    if keep_forecaster:
        fc, sel, pos = base.forecaster, np.zeros(0, np.intp), np.zeros(0, bool)
        log("forecaster: kept from the base artifact (" + ("asked to" if keep_base_forecaster else
            f"{len(divergent)} divergent run(s) < {cfg.min_divergent_runs}") + ")")
    else:
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
        floors = support_floors(fit, cfg.forecast_floor_features, hz, cfg.forecast_exclude_causes,
                                cfg.forecast_floor_runs)
        fc = DivergenceForecaster(cfg.forecaster.model_copy(update={"feature_floors": floors}))
        with _missing_features_expected():
            fc = fc.fit(px[sel], py[sel])
        log(f"forecaster: {len(sel)} rows, {int(pos.sum())} positive, {time.perf_counter() - t0:.0f} s")

    art_cfg_marks = LearnedArtifactConfig.model_fields["prefix_checkpoints"].default
    ref = []
    for r in fit:
        if r.run.fault != "healthy":
            continue
        for m in art_cfg_marks:
            if m <= len(r.x):
                ref.append(prefix_summary(r.x[:m]))
    if len(ref) < 8:
        raise TrainingDataError(
            f"the run-outlier reference needs at least 8 healthy run prefixes of >= {art_cfg_marks[0]} logged losses "
            f"in the fitting part; got {len(ref)}: give more or longer healthy runs")
    ro = RunOutlierDetector(cfg.run_outlier).fit(np.asarray(ref), summary_names(FEATURES))
    log(f"run outlier ({cfg.run_outlier.method}): {len(ref)} healthy prefixes, {time.perf_counter() - t0:.0f} s")

    # Calibration: each healthy run's highest streak on the held-back part. When those runs are too
    # few to read the target rate, the fitting part's runs may raise the levels too (see _level).
    cal_healthy = [r for r in calib if r.run.fault == "healthy"]
    groups = sorted({r.thin for r in cal_healthy}) if cfg.calibrate_each_thinning else [None]
    smallest = min(sum(1 for r in cal_healthy if g is None or r.thin == g) for g in groups) if cal_healthy else 0
    few = smallest * cfg.target_run_rate < 1
    # per view: (its thinning, highest streak) for the autoencoder, the forecaster and the run-outlier detector
    maxima: dict[str, tuple[list, list, list]] = {}
    seq_rows: list[np.ndarray] = []
    for part, views in (("cal", cal_healthy), ("fit", [r for r in fit if r.run.fault == "healthy"] if few else [])):
        seq_m, fc_m, ro_m, rows = _view_maxima(views, ae, None if keep_forecaster else fc, ro, cfg)
        maxima[part] = (seq_m, fc_m, ro_m)
        if part == "cal":
            seq_rows = rows

    def level(kind: int, log_scale: bool = False) -> float:
        return _level_each_group(maxima["cal"][kind], cfg.target_run_rate, log_scale=log_scale,
                                 in_sample=maxima["fit"][kind], by_group=cfg.calibrate_each_thinning)

    thresholds = Thresholds(
        sequence_alert=level(0, log_scale=True),
        sequence_gate=float(np.quantile(np.concatenate(seq_rows), cfg.gate_quantile)),
        forecast_alert=max(0.05, level(1)),
        forecast_gate=0.0,
        run_outlier_alert=level(2),
    )
    thresholds = thresholds.model_copy(update={"forecast_gate": thresholds.forecast_alert / 2})
    if keep_forecaster:
        kept = base.config.thresholds
        thresholds = thresholds.model_copy(
            update={"forecast_alert": kept.forecast_alert, "forecast_gate": kept.forecast_gate})
    log(f"calibration on {len(maxima['cal'][0])} held-back healthy run views"
        + (f" in {len(groups)} thinnings, each held to the rate" if groups != [None] else "")
        + (f" (+ {len(maxima['fit'][0])} fitted ones: too few for the target rate)" if few else "")
        + f": {thresholds.model_dump()}")
    art_config = LearnedArtifactConfig(
        sequence_ae=cfg.sequence_ae,
        forecaster=fc.config,
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
            "divergent_runs": len(divergent),
            "forecaster_source": "base" if keep_forecaster else "fitted",
            **({"base_training": _forecaster_origin(base)} if keep_forecaster else {}),
            "reference_prefixes": len(ref),
            "seconds": round(time.perf_counter() - t0, 1),
            **(provenance or {}),
        },
    )
    return LearnedArtifact(art_config, ae, fc, ro)
