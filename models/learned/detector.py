"""The learned detectors as one streaming diagnostic on the ``MetricBlock`` path.

:class:`LearnedDiagnostic` keeps one run's feature state
(:class:`~runwatch.models.learned.features.RunFeatures`) and scores each new
feature row with the artifact's models, which are loaded once per process and
shared by every run:

- ``SEQUENCE_OUTLIER``: the sequence autoencoder's error on the window ending
  at the row stays at or above its calibrated alert level for ``patience``
  rows; the explanation names the features (and layer) with the largest error
  share;
- ``DIVERGENCE_PREDICTED``: the forecaster's probability of divergence within
  its longest horizon stays at or above its alert level for ``patience``
  rows; the explanation says "expected within ~N steps";
- ``RUN_OUTLIER``: at prefix checkpoints (16, 32, 64, ... rows) the run so far
  is scored against the reference runs, by its project's refitted model when
  the service has one (:mod:`.project_refit`), else the shipped one; the
  explanation says which, and names the summary features furthest from them.
  The summary at each checkpoint is kept: when the run ends healthy, its
  project's model learns from them.

It also answers :meth:`LearnedDiagnostic.learned_normal` for the fusion layer
(:mod:`runwatch.models.fusion`): whether the run looked normal to the learned
models around a step. Scores are ratios to the alert level (higher = more
anomalous; 1 = at the level).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, RunContext
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.learned.artifacts import LearnedArtifact, load_artifact
from runwatch.models.learned.features import FEATURE_METRIC, FEATURES, N_FEATURES, RunFeatures
from runwatch.models.learned.project_refit import ProjectRefitConfig
from runwatch.models.learned.run_outlier import PrefixSummary, RunOutlierDetector
from runwatch.models.learned.sequence_ae import rows_to_score
from runwatch.models.streaks import streak_counts

_NO_BLOCK = (np.zeros(0, dtype=np.int64), np.zeros((0, N_FEATURES)), 0, np.zeros(0))
_NONFINITE = FEATURES.index("nonfinite")
_LOSS_VS_START = FEATURES.index("loss_vs_start")
_SIGN_FEATURES = tuple((FEATURES.index(name), fmt) for name, fmt in (
    ("loss_vs_best", "loss {:.2g}x its best"), ("lr_vs_at_best", "lr {:.2g}x its value at the best loss"),
    ("grad_vs_best", "grad norm {:.2g}x its low"), ("loss_trend", "loss trend x{:.2g}")))
_UPDATE_RATIO = FEATURES.index("update_ratio")
_CALM_FEATURES = [FEATURES.index(n) for n in ("loss_vs_best", "loss_trend", "loss_jump", "nonfinite", "loss_noise")]
_CALM_VS_BEST, _CALM_TREND, _CALM_JUMP = math.log(1.1), 0.05, 3.0


def _calm(row: np.ndarray, within_noise: bool = False) -> bool:
    """A feature row's training loss shows nothing: finite, within 10 % of its best, not rising, no jump.

    ``within_noise``: within 10 % of its best plus the run's own noise (``loss_noise``, in log units). A
    minibatch loss that swings 2x from batch to batch has a fast-smoothed level well above its lowest
    dip while nothing changes.
    """
    vs_best, trend, jump, nonfinite, noise = row[_CALM_FEATURES]
    allowed = _CALM_VS_BEST + (noise if within_noise and noise == noise else 0.0)
    return bool(nonfinite == 0 and vs_best <= allowed and trend <= _CALM_TREND and jump <= _CALM_JUMP)


class LearnedConfig(DiagnosticConfig):
    """Settings of :class:`LearnedDiagnostic`.

    Parameters
    ----------
    artifact
        Folder of a learned artifact; empty = the default shipped with runwatch.
    sequence_outlier, divergence_forecast, run_outlier
        Which learned findings to raise (the fusion gate uses the models either way).
    patience
        Consecutive rows at or above an alert level before a finding. Default 2.
    calm_forecast_patience
        Consecutive rows at or above the forecast's alert level before a divergence forecast at a row whose
        training loss is calm (:meth:`LearnedDiagnostic.loss_calm`: within 10 % of its best, not rising,
        no jump). Default 4. Such a forecast rests on the learning rate and update sizes alone, and a
        warm-up passes through large updates for a few rows in healthy runs too: on the three novel
        corpora used for tuning (seeds 21, 22, 27) healthy runs of an unseen residual MLP got forecasts
        of 2-3 such rows during their warm-up (3 of the 19 healthy runs flagged there), while in the
        corpus's training split every faulty run's first forecast stayed at its step with 4 (one healthy
        run's forecast went). A loss that shows something keeps ``patience``. Calm here allows the run's own
        noise above its best (``loss_noise``, log units): a small-batch run whose minibatch loss swings 30 % from
        batch to batch sits 12 % above its best while nothing changes (novel corpora 22, 30, 31: 4 + 1 + 2
        healthy runs got forecasts there; docs/benchmarks.md, "A forecast within the loss's own noise").
    min_rows
        Rows (logged training losses) before the first finding. Default 4.
    gate_rows
        The fusion gate looks this many rows back from a rule finding's step. Default 8.
    forecast_converged_below
        No divergence forecast at a row whose smoothed training loss is at most
        this fraction of its starting level (its first 3 values): the forecast
        probability counts as 0 there, for the alert and for the fusion gate.
        Default 1e-5: a loss a hundred thousand times below its start (a
        fine-tune's loss logged as 0.0 after 0.0001) carries nothing the
        forecaster can read, and its log-ratio features go far outside what
        it was trained on (a real Hugging Face classifier logging 0.0 for
        500 steps got an ERROR-level forecast). In the corpus's training split
        forecasts before a divergence or NaN came at levels down to 1.4e-4 of
        the start, and none lower; a bar at 5 % of the start (the plateau
        rule's ``rel_floor``) lost three of them.
        0 turns this off.
    project_refit
        When the service refits the run-outlier detector on a project's own healthy runs
        (:class:`~runwatch.models.learned.project_refit.ProjectRefitConfig`; ``enabled=false``: never).
    """

    artifact: str = ""
    sequence_outlier: bool = True
    divergence_forecast: bool = True
    run_outlier: bool = True
    patience: int = Field(2, ge=1)
    min_rows: int = Field(4, ge=1)
    gate_rows: int = Field(8, ge=1)
    forecast_converged_below: float = Field(1e-5, ge=0.0, lt=1.0)
    calm_forecast_patience: int = Field(4, ge=1)
    project_refit: ProjectRefitConfig = Field(default_factory=ProjectRefitConfig)


class LearnedDiagnostic(Diagnostic):
    """Sequence autoencoder, divergence forecaster and run-outlier detector over one run's feature rows.

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = LearnedDiagnostic()
    >>> rows = [{"loss": 2.3 * 0.995 ** s, "lr": 1e-3, "grad_norm": 1.0} for s in range(100)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(100)), [0.0] * 100, rows))
    []
    >>> d.learned_normal(99)
    True
    """

    name = "learned"
    version = "2"
    config_class = LearnedConfig
    reference = (
        "Isolation forest (Liu et al. 2008, PyOD); reconstruction-error autoencoders for time-series anomalies "
        "(Malhotra et al. 2016); divergence forecasting from training dynamics (cf. AutoTrainer, Zhang et al. 2021)"
    )

    state_attributes = (
        "features", "summary", "tail", "ae_streak", "fc_streak", "next_checkpoint", "next_score_step", "gate",
        "checkpoint_summaries", "project_outliers",
    )
    transient_attributes = ("_block",)
    state_neutral_settings = ("project_refit", "calm_forecast_patience")  # alert policy and refits: not run state

    @classmethod
    def prepare(cls, config: LearnedConfig) -> None:
        probe = cls(config)  # loads the artifact into the shared cache
        steps = range(64)
        probe.observe_block(MetricBlock.from_rows(steps, [0.0] * 64, [{"loss": 2.0 - i / 64} for i in steps]))

    def __init__(self, config: LearnedConfig | None = None) -> None:
        super().__init__(config)
        self.model: LearnedArtifact = load_artifact(self.config.artifact or None)
        cfg = self.model.config
        self.window = cfg.sequence_ae.window
        self.lag = cfg.forecaster.lag
        self.features = RunFeatures()
        self.summary = PrefixSummary(N_FEATURES)
        self.tail = np.zeros((0, N_FEATURES))  # last rows, for windows and lags that span blocks
        self.ae_streak = 0
        self.fc_streak = 0
        self.next_checkpoint = 0
        self.next_score_step = 0  # the autoencoder's next scoring step (rows_to_score)
        # The last block's steps, padded rows, first window's start and scores: not state.
        self._block: tuple[np.ndarray, np.ndarray, int, np.ndarray] = _NO_BLOCK
        self.gate: deque[tuple[int, bool]] = deque(maxlen=256)  # (step, abnormal) per recent row
        # The prefix summary at each checkpoint passed: the run's rows for its project's refit.
        self.checkpoint_summaries = np.zeros((0, 3 * N_FEATURES))
        self.project_outliers = 0  # checkpoints its project's own model flagged: the run does not teach it
        self.context = RunContext()

    def watches(self, metric: str) -> bool:
        return True

    def bind(self, context: RunContext) -> None:
        self.context = context

    def run_outlier_model(self) -> tuple[RunOutlierDetector, float, str]:
        """The detector, alert level and name scoring this run's prefixes now: its project's, else the shipped one.

        >>> d = LearnedDiagnostic()
        >>> d.run_outlier_model()[2]
        'shipped model'
        """
        models = self.context.project_models
        if models is not None and self.config.project_refit.enabled:
            own = models.get(self.context.project)
            if own is not None:
                return own.detector, own.alert, own.label
        return self.model.run_outlier, self.model.config.thresholds.run_outlier_alert, "shipped model"

    # -- streaming ----------------------------------------------------------------------------------

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        self._block = _NO_BLOCK
        steps, x = self.features.update(block)
        n = len(steps)
        if not n:
            return []
        cfg, th = self.config, self.model.config.thresholds
        history = np.concatenate([self.tail, x])
        first_new = len(self.tail)
        keep = max(self.window, self.lag + 1)
        self.tail = history[-keep:].copy()  # a view would keep the whole block alive
        seen_before = self.features.seen - n

        padded, start = self._padded(history, first_new)
        scored, self.next_score_step = rows_to_score(steps, self.next_score_step, self.model.config.sequence_every_steps)
        ae_score, fe = np.full(n, np.nan), np.zeros((n, N_FEATURES))
        rows = scored.nonzero()[0]
        if len(rows):
            ae_score[scored], fe[scored] = self._score_windows(self._windows(padded, start, rows))
        # Rule findings of this block may ask about rows the stride skipped (learned_normal scores them then).
        self._block = (steps, padded, start, ae_score)

        if n == 1:  # one row: the row ``lag`` rows back without the index arithmetic
            b = len(history) - 1 - self.lag
            before = history[b:b + 1] if b >= 0 else np.full((1, N_FEATURES), np.nan)
        else:
            back = np.arange(first_new, len(history)) - self.lag
            before = np.where(back[:, None] >= 0, history[np.maximum(back, 0)], np.nan)
        proba = self.model.forecaster.predict_proba_rows(x, before)
        proba = proba.round(6)  # np.round's method, without its wrapper
        p_long = proba[:, -1]
        if cfg.forecast_converged_below > 0:
            p_long = np.where(x[:, _LOSS_VS_START] <= math.log(cfg.forecast_converged_below), 0.0, p_long)

        abnormal = (scored & (ae_score >= th.sequence_gate)) | (p_long >= th.forecast_gate) | (x[:, _NONFINITE] > 0)
        step_list = steps.tolist()
        self.gate.extend(zip(step_list, abnormal.tolist()))

        findings: list[tuple[int, int, Finding]] = []  # (row, order at that row, finding)
        eligible_from = max(0, cfg.min_rows - 1 - seen_before)  # first row of the run's ``min_rows``-th onward
        ae_streaks = streak_counts(ae_score[rows] >= th.sequence_alert, self.ae_streak)
        if len(rows):
            self.ae_streak = int(ae_streaks[-1])
        if cfg.sequence_outlier:
            for j in np.flatnonzero((ae_streaks >= cfg.patience) & (rows >= eligible_from)).tolist():
                i, streak = int(rows[j]), int(ae_streaks[j])
                since = int(steps[rows[j - streak + 1]]) if j - streak + 1 >= 0 else int(steps[0])
                findings.append((i, 0, self._sequence_finding(step_list[i], ae_score[i] / th.sequence_alert, fe[i], since)))
        fc_streaks = streak_counts(p_long >= th.forecast_alert, self.fc_streak)
        self.fc_streak = int(fc_streaks[-1])
        if cfg.divergence_forecast:
            calm_patience = max(cfg.patience, cfg.calm_forecast_patience)
            for i in np.flatnonzero(fc_streaks[eligible_from:] >= cfg.patience).tolist():
                i += eligible_from
                streak = int(fc_streaks[i])
                if streak >= calm_patience or not _calm(x[i], within_noise=True):
                    since = int(steps[max(0, i - streak + 1)])
                    findings.append((i, 1, self._forecast_finding(step_list[i], proba[i], x[i], before[i], since)))
        findings.sort(key=lambda f: f[:2])
        out = [f for _, _, f in findings]
        out.extend(self._checkpoints(seen_before, x, steps))
        return out

    def _score_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, errors = self.model.sequence_ae.score_with_errors(windows)
        return np.round(score, 6), errors  # last-bit BLAS noise must not change decisions

    def _padded(self, history: np.ndarray, first_new: int) -> tuple[np.ndarray, int]:
        """The rows left-padded with NaN rows at the start of a run, and where the first new row's window starts."""
        w = self.window
        lead = max(0, w - 1 - first_new)
        padded = np.concatenate([np.full((lead, N_FEATURES), np.nan), history]) if lead else history
        return padded, first_new + lead - (w - 1)

    def _windows(self, padded: np.ndarray, start: int, rows: np.ndarray) -> np.ndarray:
        """The windows ``[len(rows), window, F]`` ending at the block's rows ``rows`` (a new C-contiguous array).

        The same values as the rows of a sliding-window view, copied: a few rows are cheaper as slices.
        """
        w = self.window
        if len(rows) <= 4:
            return np.stack([padded[start + i:start + i + w] for i in rows.tolist()])
        view = np.lib.stride_tricks.sliding_window_view(padded, w, axis=0)  # [M, F, w]
        return view[start:].transpose(0, 2, 1)[rows]

    def _sequence_finding(self, step: int, ratio: float, errors: np.ndarray, since: int) -> Finding:
        share = errors / max(errors.sum(), 1e-12)
        top = np.argsort(-share)[:3]
        lead = FEATURES[top[0]]
        metric, layer = self._metric_of(lead)
        parts = ", ".join(f"{FEATURES[j]} {100 * share[j]:.0f}%" for j in top if share[j] >= 0.05)
        related = tuple(dict.fromkeys(self._metric_of(FEATURES[j])[0] for j in top[1:] if share[j] >= 0.05))
        return Finding(
            AnomalyKind.SEQUENCE_OUTLIER,
            Severity.WARNING,
            round(float(ratio), 6),
            step,
            metric,
            f"the last {self.window} points are unlike healthy runs: reconstruction error {ratio:.1f}x the alert "
            f"level; largest shares {parts}" + (f" (layer {layer})" if layer else ""),
            layer=layer,
            related=tuple(r for r in related if r != metric),
            key="sequence",
            since=since,
        )

    def _forecast_finding(self, step: int, p: np.ndarray, now: np.ndarray, before: np.ndarray, since: int) -> Finding:
        th = self.model.config.thresholds
        horizons = self.model.config.forecaster.horizons
        within = int(self.model.forecaster.expected_within(p[None, :])[0])
        signs = []
        for j, fmt in _SIGN_FEATURES:
            v = now[j]
            if math.isfinite(v) and v > 0.2:
                signs.append(fmt.format(math.exp(v)))
        upd = now[_UPDATE_RATIO]
        if math.isfinite(upd) and upd > 1.0:
            signs.append(f"update ratio {10 ** (upd - 3):.2g}")
        p_long = float(p[-1])
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.ERROR if p_long >= max(0.8, th.forecast_alert) else Severity.WARNING,
            p_long / th.forecast_alert,
            step,
            "loss",
            f"divergence expected within ~{within} steps (p={p_long:.2f} within {horizons[-1]} steps"
            + (f"; {', '.join(signs[:3])}" if signs else "")
            + ")",
            related=("lr", "grad_norm"),
            key="forecast",
            since=since,
        )

    def _checkpoints(self, seen_before: int, x: np.ndarray, steps: np.ndarray) -> list[Finding]:
        """Fold the rows into the prefix summary, scoring it at each checkpoint the rows pass."""
        marks = self.model.config.prefix_checkpoints
        out = []
        done = 0
        n = len(x)
        while self.next_checkpoint < len(marks) and marks[self.next_checkpoint] <= seen_before + n:
            mark = marks[self.next_checkpoint]
            self.next_checkpoint += 1
            if mark <= seen_before:
                continue
            upto = mark - seen_before
            self.summary.update(x[done:upto])
            done = upto
            vec = self.summary.vector()
            if self.config.project_refit.enabled:
                self.checkpoint_summaries = np.concatenate([self.checkpoint_summaries, vec[None, :]])
            if not self.config.run_outlier:
                continue
            step = int(steps[upto - 1])
            det, alert, source = self.run_outlier_model()
            score = round(float(det.score_samples(vec[None, :])[0]), 6)
            if score < alert:
                continue
            if det is not self.model.run_outlier:
                self.project_outliers += 1
            top = det.explain(vec)
            feat = top[0][0].split(":", 1)[1]
            metric, layer = self._metric_of(feat)
            out.append(Finding(
                AnomalyKind.RUN_OUTLIER,
                Severity.WARNING,
                score / alert if alert > 0 else score,
                step,
                metric,
                f"the run's first {mark} points are unlike the reference runs ({source}: {det.config.method} score "
                f"{score:.3f} >= {alert:.3f}); furthest: " + ", ".join(f"{name} z={z:+.1f}" for name, z in top),
                layer=layer,
                key="run",
            ))
        if self.next_checkpoint < len(marks):  # past the last mark the summary is never read again
            self.summary.update(x[done:])
        return out

    def _metric_of(self, feature: str) -> tuple[str, str]:
        metric = FEATURE_METRIC.get(feature, "loss")
        if metric.endswith("/"):
            layer = self.features.extreme_layer(feature)
            return (metric + layer if layer else metric.rstrip("/")), layer
        return metric, ""

    # -- fusion ---------------------------------------------------------------------------------------

    def learned_normal(self, step: int) -> bool:
        """Whether the learned models saw nothing unusual in the ``gate_rows`` rows up to ``step``."""
        recent = [abn for s, abn in self.gate if s <= step][-self.config.gate_rows:]
        if any(recent):
            return False
        steps, padded, start, ae_score = self._block
        i = int(np.searchsorted(steps, step, side="right")) - 1
        if i < 0:
            return True
        if math.isnan(ae_score[i]):  # a row the stride skipped: its window decides
            ae_score[i] = self._score_windows(padded[start + i:start + i + self.window][None])[0][0]
        return bool(ae_score[i] < self.model.config.thresholds.sequence_gate)

    def loss_calm(self, step: int) -> bool:
        """Whether the training loss, at its last row up to ``step``, shows no response to anything.

        Calm: finite, within 10 % of its best (smoothed), not rising and no jump beyond 3x its own
        noise. ``False`` when the block has no loss row up to ``step`` (unknown is not calm).
        """
        steps, padded, start, _ = self._block
        i = int(np.searchsorted(steps, step, side="right")) - 1
        if i < 0:
            return False
        return _calm(padded[start + i + self.window - 1])

    def loss_fell(self, step: int, below: float) -> bool:
        """Whether the training loss, at its last row up to ``step``, is (smoothed) at most ``below`` x its start.

        ``False`` when the block has no loss row up to ``step`` or the loss is not finite there.
        """
        if below <= 0:
            return False
        steps, padded, start, _ = self._block
        if len(padded):
            i = int(np.searchsorted(steps, step, side="right")) - 1
            # The latest row up to ``step`` that has a loss: rows come from loss steps, so a finding between two
            # (a gradient logged at step 151, the loss at 150 and 155) reads the row before, in this block or the last.
            levels = padded[: max(start + i + self.window, 0), _LOSS_VS_START]
        else:  # a block with no loss gave no rows: the rows before it
            levels = self.tail[:, _LOSS_VS_START]
        known = np.flatnonzero(np.isfinite(levels))
        return bool(len(known) and levels[known[-1]] <= math.log(below))

    # -- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        from runwatch.models.snapshot import encode

        state = {
            "features": self.features.state_dict(),
            "summary": self.summary.state_dict(),
            "tail": self.tail,
            "ae_streak": self.ae_streak,
            "fc_streak": self.fc_streak,
            "next_checkpoint": self.next_checkpoint,
            "next_score_step": self.next_score_step,
            "gate": [list(g) for g in self.gate],
            "checkpoint_summaries": self.checkpoint_summaries,
            "project_outliers": self.project_outliers,
        }
        return {"name": self.name, "version": self.version, "config": self.config.to_dict(), "state": encode(state)}

    def load_state_dict(self, snapshot: dict) -> bool:
        from runwatch.models.snapshot import decode

        if (snapshot.get("name"), snapshot.get("version")) != (self.name, self.version):
            return False
        if not self.config_fits(snapshot.get("config")):
            return False
        try:
            state = decode(snapshot["state"], "learned")
            self.features.load_state_dict(state["features"])
            self.summary.load_state_dict(state["summary"])
            self.tail = state["tail"]
            self.ae_streak, self.fc_streak = int(state["ae_streak"]), int(state["fc_streak"])
            self.next_checkpoint = int(state["next_checkpoint"])
            self.next_score_step = int(state["next_score_step"])
            self.gate = deque(((int(s), bool(a)) for s, a in state["gate"]), maxlen=256)
            # absent in checkpoints from before project refits
            self.project_outliers = int(state.get("project_outliers", 0))
            rows = state.get("checkpoint_summaries")
            self.checkpoint_summaries = np.zeros((0, 3 * N_FEATURES)) if rows is None else np.asarray(rows, np.float64)
            if self.checkpoint_summaries.ndim != 2 or self.checkpoint_summaries.shape[1] != 3 * N_FEATURES:
                raise ValueError("checkpoint_summaries: bad shape")
        except (KeyError, TypeError, ValueError):
            return False
        return True
