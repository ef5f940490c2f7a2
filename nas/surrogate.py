"""Predict a run's final target metric from its features, with an uncertainty.

The surrogate is what the architecture search optimises: it maps
:func:`~runwatch.nas.features.run_features` of a run (architecture,
hyperparameters, early logs, findings) to the final value of the target
metric (``val/loss`` by default), learnt from the other runs of the history.

Two stages, so that an architecture edit moves the prediction:

1. ``f(arch, hp)``: the final target from the architecture and
   hyperparameter features alone (what this model, trained like this, tends
   to reach);
2. ``g(log, diag)``: what ``f`` got wrong, from the early-log and finding
   features, fitted to ``f``'s out-of-bag residuals.

The prediction is ``f + g``. Early logs are largely *consequences* of the
architecture (a wide net's training loss falls faster), so a single model
fed both learns to read the outcome off the logs and, with the logs of the
run held fixed, predicts almost no effect for any edit (measured on the test
fixture: deltas of ~1 % for halving every block). Keeping the architecture in
``f`` and the logs in ``g`` makes an edit's predicted delta the difference of
``f`` while ``g`` still places the run itself (held-out log error on the
fixture of 56 real digits runs: 0.42 for ``f + g``, 0.56 for ``f`` alone,
0.78 for a constant).

Model, by the number ``n`` of history runs with a finite target:

- ``n >= min_history`` (20): ``f`` and ``g`` are tree ensembles of
  ``n_members`` bootstrapped trees; member ``i`` is tree ``i`` of ``f`` plus
  tree ``i`` of ``g``. By default ``f`` is every family of
  ``SurrogateConfig.families`` (:data:`FAMILIES`: the configured random
  forest, fully grown random-forest trees on every feature, extremely
  randomised trees, a ridge regression with such trees on its residuals)
  together, ``n_members`` trees each, and its prediction their mean
  (``family_selection="average"``, since 2026-12-07: on LCBench's development
  tasks with 40-run histories it ranked better than any one family and than
  the choice below, which a 40-run cross-validation makes noisily). With
  ``family_selection="cv"`` one family is chosen per history by
  cross-validation *within the history*: the history's
  hyperparameter groups (runs that share every ``hp/`` value; single runs
  when there are fewer groups than folds) are split into ``calibration_folds`` folds, each
  family predicts the runs of groups it did not see, and the family whose top
  pick in each held-out group is best (:func:`_top_quality`: the best of its
  top 5 % against the group's best and median run) wins; ties keep the listed
  order. No benchmark data takes part in the choice.
- ``max(3, min_predict) <= n < min_history``: ``f`` only, as ``n_members`` ridge regressions
  each fitted on a bootstrap resample of the standardised, median-imputed
  features; the uncertainty is their spread plus their out-of-bag error (in
  quadrature: linear members agree on what none of them can fit), inflated by
  ``sqrt(min_history / n)`` because so few runs say little about how far the
  truth can be from all of them.
- fewer (``n < min_predict``, 8): no model (:attr:`Surrogate.can_predict`
  False); a prior, the mean of the history (NaN with no history), with the
  history's spread (at least ``prior_std``) as uncertainty.

Target scale (:class:`TargetTransform`): the model is fitted where the
metric's range cannot be left. Losses (targets whose name says loss/error and
whose values are all > 0) are fitted on a natural-log scale; accuracies and
other metrics in [0, 1] (or accuracy-like metrics in [0, 100], percentages)
on a logit scale; anything else as it is. Predictions are brought back to
target units: ``mean = inverse(mean of the members)`` (the median of the
predictive distribution) and ``std = |d inverse / dz| * std_z`` (delta
method), so a loss is never predicted negative and an accuracy never above 1.

Intervals (:meth:`Surrogate.interval_rows`): an 80 % interval is computed on
the model's scale and mapped back, ``inverse(centre -/+ q * s)``, so it is
asymmetric in target units and stays inside the metric's range. ``s`` is the
uncertainty described below; ``q`` is calibrated on the history itself, on
the same cross-validation folds: each history run is predicted by a model
that saw none of its hyperparameter group, its normalised error ``|z - m| /
s`` is recorded, and ``q`` is the conformal quantile of those errors (the
``ceil((n + 1) * level)``-th smallest). For a prediction anchored on a run's
observed value (the advisor's edit effect, :meth:`Surrogate.anchored`:
``m(edit) + a * (z_obs - m(run))``) the scores are those of pairs of runs of
one group, ``|r_j - a * r_i| / s_j`` with ``r = z - m`` each run's held-out
residual (:meth:`Surrogate.calibration` with ``anchored=True``). ``a``, the
anchor weight, is the least-squares slope of ``r_j`` on ``r_i`` over those
pairs, clipped to [0, 1]: the part of a run's miss that its setting's other
runs share (a setting the model reads too high or too low), not the part that
is the run's own noise. On FCNet (a history of 400 runs from other training
settings, 30 poor starts per dataset, the advisor's top 3 edits) it is
0.17-0.38, and the anchored prediction's median absolute error on the log
scale fell from 0.53 to 0.38 (parkinsons) and from 1.98 to 1.18 (naval)
against full anchoring (``a = 1``, before 2026-12-05).

The model's predicted difference between an edit and the run, ``m(edit) -
m(run)``, is shrunk by ``b`` (:attr:`Surrogate.edit_slope`,
``SurrogateConfig.edit_slope``): the least-squares slope, through the origin,
of the actual difference between two runs of one held-out group on the
predicted one (the anchored share of the first run's miss taken out), in
[0.05, 1]; the pair scores are ``|r_j - a * r_i + (1 - b) * d|`` with ``d``
that predicted difference. Why: the advisor reports the best few of ~1,300
predicted edits, and the largest predicted improvements are the most
overstated (a winner's curse; on FCNet the top 3 by prediction missed by
+0.37 / +1.88 log units on average while the mean over all 1,296
architectures was ~0). ``b`` multiplies every edit's predicted difference
alike, so the order of the edits does not change. On the same FCNet starts
(2026-12-06): mean log error of the top 3 against a seed's outcome +0.29 ->
-0.02 (parkinsons) and +1.67 -> +0.37 (naval), root mean square 0.89 -> 0.71
and 3.28 -> 1.85; their 80 % intervals held 71.1 % (was 65.6 %) and 83.3 %
(was 77.8 %) of the outcomes; the top-3 picks of 20 starts per dataset were
identical.
Out-of-bag errors stand in when the history is too small to cross-validate.
No evaluation data is involved. With fewer than ``min_predict`` runs (8) the
surrogate does not predict at all: :attr:`Surrogate.can_predict` is False and
the advisor says "not enough history to predict (n=...)".

Uncertainty = spread across members, widened away from the data: with ``d``
the mean distance of a query to its ``neighbours`` nearest history runs
(standardised features) and ``d0`` the median of that distance among the
history runs themselves, ``std_log = sqrt(spread^2 + (novelty_weight * rmse *
max(0, d / d0 - 1))^2)``, ``rmse`` the out-of-bag error of the members. Trees
predict a constant outside the data, so their spread alone does not grow
there; the distance term does.

Persistence: no pickles. :meth:`Surrogate.to_dict` keeps the config, the
feature columns and the training rows; :meth:`Surrogate.from_dict` refits
(deterministic for a fixed ``seed``, so the reloaded model predicts the same).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.density_ratio import DensityRatio
from runwatch.nas.features import (
    ARCH_PREFIX,
    FeatureEncoder,
    architecture_features,
    hyperparameter_features,
    run_features,
)

STATIC_PREFIXES = (ARCH_PREFIX, "hp/")
from runwatch.nas.history import RunObservation
from runwatch.nas.risk import loss_blowup

__all__ = ["Surrogate", "SurrogateConfig", "TargetTransform", "is_fraction_like", "is_loss_like"]

_LOSS_TOKENS = ("loss", "perplexity", "ppl", "mse", "rmse", "mae", "error", "nll")


_FRACTION_TOKENS = ("acc", "auc", "f1", "precision", "recall", "iou", "dice", "map", "top1", "top5")
Z80 = 1.2815515655446004  # the standard normal's 90 % quantile: +- Z80 holds 80 %


def is_fraction_like(metric: str) -> bool:
    """Whether a metric name reads as a share (accuracy, AUC, F1, ...): fitted on a logit scale.

    >>> is_fraction_like("val/acc"), is_fraction_like("val/top1_accuracy"), is_fraction_like("val/loss")
    (True, True, False)
    """
    low = metric.lower()
    return not is_loss_like(metric) and any(t in low for t in _FRACTION_TOKENS)


@dataclass(frozen=True)
class TargetTransform:
    """The scale the surrogate is fitted on: ``"log"``, ``"logit"`` (on ``[lo, hi]``) or ``"identity"``.

    The logit clips values to ``[lo + eps, hi - eps]`` with ``eps = 1e-4 * (hi - lo)``
    (an accuracy of exactly 1.0 is 0.9999 there).

    Examples
    --------
    >>> t = TargetTransform.choose("val/acc", [0.5, 0.9, 0.97])
    >>> t.kind, round(float(t.inverse(t.forward(0.9))), 6), float(t.inverse(50.0)) <= 1.0
    ('logit', 0.9, True)
    >>> TargetTransform.choose("val/acc", [55.0, 91.2]).hi, TargetTransform.choose("val/loss", [0.2, 1.3]).kind
    (100.0, 'log')
    >>> TargetTransform.choose("reward", [-3.0, 12.0]).kind
    'identity'
    """

    kind: str = "identity"
    lo: float = 0.0
    hi: float = 1.0

    @classmethod
    def choose(cls, metric: str, values: Sequence[float], override: str = "") -> TargetTransform:
        """The transform for ``metric`` given its history values; ``override`` forces a kind ("" = choose).

        log: a loss-like name with every value > 0. logit on [0, 1]: a
        non-loss name with every value in [0, 1]; on [0, 100]: an
        accuracy-like name with every value in [0, 100] and some above 1
        (percentages). identity: anything else.
        """
        y = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
        if override:
            if override == "logit":
                hi = 100.0 if y.size and y.max() > 1.0 else 1.0
                return cls("logit", 0.0, hi)
            return cls(override)
        if not y.size:
            return cls("log" if is_loss_like(metric) else "identity")
        if is_loss_like(metric) and np.all(y > 0):
            return cls("log")
        if not is_loss_like(metric) and np.all((y >= 0) & (y <= 1)):
            return cls("logit", 0.0, 1.0)
        if is_fraction_like(metric) and np.all((y >= 0) & (y <= 100)):
            return cls("logit", 0.0, 100.0)
        return cls("identity")

    @property
    def eps(self) -> float:
        return 1e-4 * (self.hi - self.lo)

    def forward(self, y: Any) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.kind == "log":
            return np.log(y)
        if self.kind == "logit":
            p = (np.clip(y, self.lo + self.eps, self.hi - self.eps) - self.lo) / (self.hi - self.lo)
            return np.log(p) - np.log1p(-p)
        return y

    def inverse(self, z: Any) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        if self.kind == "log":
            return np.exp(z)
        if self.kind == "logit":
            with np.errstate(over="ignore"):
                return self.lo + (self.hi - self.lo) / (1.0 + np.exp(-z))
        return z

    def slope(self, z: Any) -> np.ndarray:
        """``d inverse / dz`` at ``z`` (for the delta method)."""
        z = np.asarray(z, dtype=float)
        if self.kind == "log":
            return np.exp(z)
        if self.kind == "logit":
            p = 1.0 / (1.0 + np.exp(-z))
            return (self.hi - self.lo) * p * (1.0 - p)
        return np.ones_like(z)

    def to_model(self, mean: float, std: float) -> tuple[float, float]:
        """Target-unit ``(mean, std)`` back on this scale: ``(forward(mean), std / slope)`` (the inverse delta method).

        >>> z, s = TargetTransform("log").to_model(0.5, 0.05)
        >>> round(float(z), 4), round(float(s), 4)
        (-0.6931, 0.1)
        """
        z = float(self.forward(mean))
        slope = float(self.slope(z))
        return z, (std / slope if slope > 0 else math.inf)

    def describe(self) -> str:
        if self.kind == "logit":
            return "logit scale" if (self.lo, self.hi) == (0.0, 1.0) else f"logit scale on [{self.lo:g}, {self.hi:g}]"
        return {"log": "log scale", "identity": "the metric's own scale"}[self.kind]


def is_loss_like(metric: str) -> bool:
    """Whether a metric name reads as a loss (fitted on a log scale when positive).

    >>> is_loss_like("val/loss"), is_loss_like("val/acc")
    (True, False)
    """
    low = metric.lower()
    return any(t in low for t in _LOSS_TOKENS)


@dataclass
class SurrogateConfig:
    """Settings of :class:`Surrogate` (JSON round trip through ``to_dict``/``from_dict``).

    Examples
    --------
    >>> SurrogateConfig.from_dict(SurrogateConfig(n_members=8).to_dict()).n_members
    8
    """

    n_members: int = 64
    min_history: int = 20
    min_samples_leaf: int = 2
    max_features: float = 0.5
    ridge_alpha: float = 3.0
    log_target: bool | None = None  # legacy switch: True = "log", False = "identity" (``transform`` wins when set)
    transform: str = ""  # "" = TargetTransform.choose; "log", "logit" or "identity" to force one
    interval: float = 0.8  # level of the intervals the advisor reports
    calibration_folds: int = 5  # folds of hyperparameter groups for the interval calibration (0 = out-of-bag only)
    families: str = "forest,deep_forest,extra_trees,linear_forest"  # tree ensembles (FAMILIES)
    family_selection: str = "average"  # "average": every family's trees together; "cv": the best cross-validated
    min_predict: int = 8  # fewer finite targets: no prediction ("not enough history to predict")
    neighbours: int = 5
    novelty_weight: float = 1.0
    prior_std: float = 0.5  # log scale (x/÷ 1.65) when the history is too small for a model
    early_fraction: float = 0.5
    density_weights: str = "0,0.25,0.5,1,2"  # weights of the density-ratio term to choose from by cross-validation
    density_gamma: float = 0.1  # share of the history the density ratio counts as the best runs
    density_min_good: int = 20  # fewer best runs than this (under 200 runs at gamma 0.1): no density term
    edit_slope: bool = True  # shrink an anchored edit's predicted effect by its held-out slope (module docstring)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurrogateConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Tree ensembles the surrogate chooses from by cross-validation within the history (SurrogateConfig.families):
# the configured forest (min_samples_leaf, max_features of the config), fully grown trees on every feature
# (scikit-learn's defaults), extremely randomised trees (random split points: smoother in the features), and
# a ridge regression with fully grown trees on its residuals (additive effects such as "a 3x3 convolution on
# this edge helps" are one weight each, which trees need many splits to express).
#: ``Surrogate.family`` when every family's trees predict together (``SurrogateConfig.family_selection``).
AVERAGE = "tree_ensembles"
FAMILIES: dict[str, dict[str, Any]] = {
    "forest": {"trees": "random"},
    "deep_forest": {"trees": "random", "min_samples_leaf": 1, "max_features": 1.0},
    "extra_trees": {"trees": "extra", "min_samples_leaf": 1, "max_features": 1.0},
    "linear_forest": {"trees": "random", "min_samples_leaf": 1, "max_features": 1.0, "linear": True},
}


def _family_list(cfg: SurrogateConfig) -> list[str]:
    """``cfg.families`` as a list (``["forest"]`` when empty)."""
    return [f for f in (x.strip() for x in cfg.families.split(",")) if f] or ["forest"]


class _CrossValidation(NamedTuple):
    """What :meth:`Surrogate._cv_scores` measures on held-out hyperparameter groups."""

    scores: np.ndarray  # sorted |z - m| / s
    pair_scores: np.ndarray  # sorted |r_j - a * r_i| / s_j over pairs of runs of one group
    quality: float  # mean top-of-the-ranking quality (_top_quality)
    density_weight: float
    anchor_weight: float  # a (_anchor_weight)
    edit_slope: float  # b (_edit_slope); 1 with SurrogateConfig.edit_slope off


def _anchor_weight(ri: np.ndarray, rj: np.ndarray) -> float:
    """How much of one run's held-out residual its group's other runs share: ``sum(ri * rj) / sum(ri^2)`` in [0, 1].

    The least-squares slope of ``r_j`` on ``r_i`` over pairs of runs of one
    group. 1 when a setting's runs all miss the model by the same amount (an
    offset the observed value carries over to an edit), 0 when the misses are
    each run's own noise (anchoring on it would only add it).

    >>> r = np.array([0.5, -0.5, 0.3])
    >>> _anchor_weight(r, r), _anchor_weight(r, -r), _anchor_weight(r, 0.5 * r)
    (1.0, 0.0, 0.5)
    """
    den = float(np.sum(ri * ri))
    return float(np.clip(np.sum(ri * rj) / den, 0.0, 1.0)) if den > 0 else 1.0


def _edit_slope(predicted: np.ndarray, actual: np.ndarray) -> float:
    """How much of an edit's predicted effect comes true: ``sum(actual * predicted) / sum(predicted^2)`` in [0.05, 1].

    The least-squares slope, through the origin, of the actual difference between two runs of one
    group on the model's predicted difference, with the anchored share of the first run's miss
    already taken out (``actual = d + r_j - a * r_i``). Under 1 when the model's differences are
    too large (what the advisor's pick of the best predicted of ~1,300 edits then overstates); at
    least 0.05, so that edits keep the model's order.

    >>> d = np.array([-1.0, -2.0, 0.5])
    >>> _edit_slope(d, 0.5 * d), _edit_slope(d, 2 * d), _edit_slope(d, -d)
    (0.5, 1.0, 0.05)
    """
    den = float(np.sum(predicted * predicted))
    return float(np.clip(np.sum(actual * predicted) / den, 0.05, 1.0)) if den > 0 else 1.0


def _top_quality(pred: np.ndarray, true: np.ndarray, sign: float = 1.0, mean: bool = False) -> float:
    """How good the best of the runs a model ranks first is: ``1 - (best picked - best) / (median - best)``.

    The model picks the top ``max(1, 5 %)`` of the runs by prediction (lowest
    ``sign * pred``); 1 = it picked the best run, 0 = no better than the
    median run, negative = worse. NaN when the best run is the median. This
    is what the advisor asks of its surrogate: to put a good architecture
    first, not to order the poor ones (normalised by the median, not the
    worst run, so that a few disastrous runs do not make every model look
    perfect).

    >>> _top_quality(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0, 3.0, 4.0]))
    1.0
    >>> round(_top_quality(np.array([0.4, 0.3, 0.2, 0.1]), np.array([1.0, 2.0, 3.0, 4.0])), 3)
    -1.0
    """
    t = sign * true
    best = float(t.min())
    span = float(np.median(t)) - best
    if not span > 0:
        return math.nan
    k = max(1, round(0.05 * t.size))
    picked = np.argsort(sign * pred, kind="stable")[:k]
    found = float(t[picked].mean()) if mean else float(t[picked].min())
    return 1.0 - (found - best) / span


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (``len(a) x len(b)``)."""
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _tree_predictions(forest: Any, x: np.ndarray) -> np.ndarray:
    """Every tree's prediction, ``(trees, rows)``.

    Calls each fitted tree's low-level ``tree_.predict`` on float32 input,
    which is what ``DecisionTreeRegressor.predict`` does after validating its
    input; the validation costs ~40x the prediction for the one-row calls the
    tuners make.
    """
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    return np.stack([t.tree_.predict(x32)[:, 0] for t in forest.estimators_]).astype(float)


class Surrogate:
    """An ensemble that predicts a run's final target metric with an uncertainty.

    Parameters
    ----------
    config
        Model settings; defaults to :class:`SurrogateConfig`.

    Attributes
    ----------
    target
        The metric it predicts.
    mode
        ``"forest"``, ``"ridge"`` or ``"prior"`` (see the module docstring).
    n_train
        History runs with a finite target it was fitted on.

    Examples
    --------
    >>> import numpy as np
    >>> rows = [{"hp/x": float(i)} for i in range(30)]
    >>> s = Surrogate(SurrogateConfig(n_members=16)).fit_rows(rows, [1.0 + 0.1 * i for i in range(30)], "val/loss")
    >>> s.mode, s.log_target
    ('forest', True)
    >>> mean, std = s.predict_rows([{"hp/x": 10.0}, {"hp/x": 300.0}])
    >>> bool(abs(mean[0] - 2.0) < 0.3), bool(std[1] > std[0])
    (True, True)
    """

    def __init__(self, config: SurrogateConfig | None = None) -> None:
        self.config = config or SurrogateConfig()
        self.target = ""
        self.mode = "prior"
        self.n_train = 0
        self.transform = TargetTransform()
        self.encoder = FeatureEncoder()
        self._rows: list[dict[str, float]] = []
        self._y: np.ndarray = np.zeros(0)
        self._scores: np.ndarray = np.zeros(0)
        self._pair_scores: np.ndarray = np.zeros(0)
        self.anchor_weight = 1.0
        self.edit_slope = 1.0
        self.family = "forest"
        self.family_scores: dict[str, float] = {}
        self._fs: list[tuple[Any, tuple[np.ndarray, float] | None]] = []  # (trees, additive part) per family
        self._dr: DensityRatio | None = None
        self._dr_scale = 0.0
        self.density_weight = 0.0

    @property
    def log_target(self) -> bool:
        """Whether the model is fitted on a log scale (a loss)."""
        return self.transform.kind == "log"

    @property
    def can_predict(self) -> bool:
        """Whether the history is large enough to predict (``n_train >= min_predict``)."""
        return self.n_train >= max(1, self.config.min_predict) and self.mode != "prior"

    # -- fitting --------------------------------------------------------------------------------

    def fit(self, observations: Sequence[RunObservation], target: str = "val/loss") -> Surrogate:
        """Fit on the runs of ``observations`` that have a finite ``outcome[target]`` and did not blow up.

        Runs without the target (in progress, or diverged to NaN/Inf) are
        left out of the regression, and so are runs whose training loss blew
        up without turning non-finite (:func:`~runwatch.nas.risk.loss_blowup`):
        their final value (a val loss of 1e20) says how the run diverged, not
        what its architecture reaches, and on the log scale a few of them pull
        whole regions of the model up by orders of magnitude. The divergence
        risk model learns from them instead.
        """
        rows, y = [], []
        for obs in observations:
            v = obs.outcome.get(target)
            if v is None or not math.isfinite(v) or loss_blowup(obs) is not None:
                continue
            rows.append(run_features(obs, self.config.early_fraction))
            y.append(float(v))
        return self.fit_rows(rows, y, target)

    def fit_rows(
        self,
        rows: Sequence[Mapping[str, float]],
        y: Sequence[float],
        target: str,
        *,
        transform: TargetTransform | None = None,
        calibrate: bool = True,
    ) -> Surrogate:
        """Fit on feature dicts and their targets (what :meth:`fit` does after feature extraction).

        ``transform`` forces the target scale (default: :meth:`TargetTransform.choose`);
        ``calibrate=False`` skips the interval calibration (the cross-validation fits use it).
        """
        cfg = self.config
        self.target = target
        self._rows = [dict(r) for r in rows]
        self._y = np.asarray(y, dtype=float)
        n = self.n_train = len(self._rows)
        legacy = "" if cfg.log_target is None else ("log" if cfg.log_target else "identity")
        override = cfg.transform or legacy
        self.transform = transform or TargetTransform.choose(target, self._y, override)
        self._sign = -1.0 if self.transform.kind == "logit" or is_fraction_like(target) else 1.0
        z = self._to_model(self._y)
        self.encoder = FeatureEncoder().fit(self._rows)
        x = self.encoder.transform(self._rows)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: imputed with 0 below
            center = np.nanmedian(x, axis=0) if n else np.zeros(x.shape[1])
        self._center = np.where(np.isfinite(center), center, 0.0)
        zx = self._standardise_fit(x)
        self._train_z = zx
        self._static = np.array([c.startswith(STATIC_PREFIXES) for c in self.encoder.columns], dtype=bool)
        self._d0 = self._typical_neighbour_distance(zx)
        oob = None
        cv = None
        if n >= cfg.min_history:
            self.mode = "forest"
            families = _family_list(cfg)
            unknown = set(families) - set(FAMILIES)
            if unknown:
                raise ValueError(f"families: unknown {sorted(unknown)}; choose from {sorted(FAMILIES)}")
            if cfg.family_selection not in ("average", "cv"):
                raise ValueError(f"family_selection: {cfg.family_selection!r} is not 'average' or 'cv'")
            averaged = cfg.family_selection == "average" and len(families) > 1
            self.family = AVERAGE if averaged else families[0]
            self.family_scores = {}
            self.density_weight = 0.0
            if calibrate and averaged:
                cv = self._cv_scores(x, z, ",".join(families))
                if cv is not None:
                    self.family_scores = {AVERAGE: cv.quality}
                    self.density_weight = cv.density_weight
            elif calibrate:
                results = {f: self._cv_scores(x, z, f) for f in families}
                results = {f: r for f, r in results.items() if r is not None}
                if results:
                    self.family_scores = {f: r.quality for f, r in results.items()}
                    # the best top-of-the-ranking quality on held-out groups; ties keep the listed order
                    self.family = max(results, key=lambda f: (round(results[f].quality, 6), -families.index(f)))
                    cv = results[self.family]
                    self.density_weight = cv.density_weight
            oob = self._fit_forest(x, z)
            self._fit_density(x, z)
        elif n >= max(3, cfg.min_predict):
            self.mode = "ridge"
            oob = self._fit_ridge(zx[:, self._static], z)
        else:
            self.mode = "prior"
            self._prior_mean = float(z.mean()) if n else math.nan
            self._rmse = max(float(z.std()) if n > 1 else 0.0, cfg.prior_std)
        self._scores = self._conformity(z, zx, oob) if oob is not None and calibrate else np.zeros(0)
        self._pair_scores = np.zeros(0)
        self.anchor_weight = 1.0
        self.edit_slope = 1.0
        if calibrate and oob is not None and cv is None and self.mode == "ridge":
            cv = self._cv_scores(x, z, "")
        if cv is not None:
            self._scores, self._pair_scores, self.anchor_weight = cv.scores, cv.pair_scores, cv.anchor_weight
            self.edit_slope = cv.edit_slope
        return self

    def _groups(self, x: np.ndarray) -> np.ndarray:
        """A group id per row: runs that share every hyperparameter (``hp/`` feature) form one group."""
        hp = [i for i, c in enumerate(self.encoder.columns) if c.startswith("hp/")]
        keys: dict[tuple, int] = {}
        out = np.zeros(len(x), dtype=int)
        for r in range(len(x)):
            key = tuple("nan" if not math.isfinite(v) else f"{v:.6g}" for v in x[r, hp])
            out[r] = keys.setdefault(key, len(keys))
        return out

    def _cv_scores(
        self, x: np.ndarray, z: np.ndarray, family: str
    ) -> _CrossValidation | None:
        """Cross-validation on hyperparameter groups the model did not see: calibration scores and a rank criterion.

        The history's groups (:meth:`_groups`; runs, when there are fewer
        groups than folds) are split into ``calibration_folds`` folds; a model of
        ``family`` ("" = this surrogate's mode) fitted on the other folds
        predicts each fold. Returns the sorted absolute scores ``|z - m| /
        s``, the sorted anchored scores ``|r_j - a * r_i| / s_j`` of pairs of
        runs of one group, ``r = z - m`` a run's held-out residual (what an
        edit's prediction, anchored on the run's observed value, gets wrong;
        pairs across groups when fewer than 30 such pairs exist), the mean
        :func:`_top_quality` within
        held-out groups of at least 4 runs (within a fold when there are
        none): how good the architecture the model ranks first in a setting
        it has not seen is, which is what the advisor asks of it, and the
        weight of the density-ratio term (:mod:`runwatch.nas.density_ratio`,
        fitted on each fold's training part) among ``density_weights`` that
        gives the best such quality (ties: the smaller weight; the scores are
        then those of the prediction with that term), and ``a``, the anchor
        weight (:attr:`Surrogate.anchor_weight`). None when a fold's model
        would have fewer than ``min_predict`` runs.
        """
        cfg = self.config
        n = len(z)
        groups = self._groups(x)
        n_groups = int(groups.max()) + 1 if n else 0
        # Too few groups to hold whole ones out (every run shares its hyperparameters, say): hold out runs.
        split = groups if n_groups >= cfg.calibration_folds else np.arange(n)
        n_split = int(split.max()) + 1 if n else 0
        k = min(cfg.calibration_folds, n_split)
        if k < 2 or n - n // k < max(3, cfg.min_predict) + 1:
            return None
        rng = np.random.default_rng([cfg.seed, 7])
        fold = (rng.permutation(n_split) % k)[split]
        sub = SurrogateConfig.from_dict(
            {**cfg.to_dict(), "calibration_folds": 0, **({"families": family} if family else {})}
        )
        weights = self._density_weights() if family else (0.0,)
        folds = []  # (test rows, centre, spread, density term on the centre's scale)
        for f in range(k):
            test = np.flatnonzero(fold == f)
            train = np.flatnonzero(fold != f)
            if not test.size or train.size < max(3, cfg.min_predict):
                continue
            model = Surrogate(sub).fit_rows(
                [self._rows[i] for i in train], self._y[train], self.target, transform=self.transform, calibrate=False
            )
            if model.mode == "prior":
                continue
            m, s = model.model_stats([self._rows[i] for i in test])
            s = np.maximum(s, max(1e-6, 0.05 * model._rmse))
            term = np.zeros(test.size)
            if len(weights) > 1:
                dr = self._density(x[train], z[train])
                term = -self._sign * self._density_scale(dr, x[train], z[train]) * dr.score(x[test])
            folds.append((test, m, s, term))
        if not folds:
            return None

        def top_quality(w: float, mean: bool = False) -> float:
            ranks = []
            for test, m, _, term in folds:
                g, zt, c = groups[test], z[test], m + w * term
                within = [np.flatnonzero(g == u) for u in np.unique(g)]
                within = [v for v in within if v.size >= 4] or ([np.arange(test.size)] if test.size >= 4 else [])
                ranks += [_top_quality(c[v], zt[v], self._sign, mean) for v in within]
            finite = [r for r in ranks if math.isfinite(r)]
            return float(np.mean(finite)) if finite else -math.inf

        # The density term's weight: the best held-out quality of the whole top 5 % (the mean, not only its best
        # run: finer-grained, so weights that order the top differently are told apart); ties take the smaller.
        by_mean = {w: top_quality(w, mean=True) for w in weights}
        weight = max(weights, key=lambda w: (round(by_mean[w], 6), -w))
        quality = {weight: top_quality(weight)}
        absolute, pairs = [], []
        for test, m, s, term in folds:
            g, zt, c = groups[test], z[test], m + weight * term
            absolute.append(np.abs(zt - c) / s)
            ii, jj = np.nonzero((g[:, None] == g[None, :]) & ~np.eye(test.size, dtype=bool))
            if ii.size < 30:
                ii, jj = np.nonzero(~np.eye(test.size, dtype=bool))
            if ii.size > 4000:
                pick = rng.choice(ii.size, size=4000, replace=False)
                ii, jj = ii[pick], jj[pick]
            r = zt - c
            pairs.append((r[ii], r[jj], s[jj], c[jj] - c[ii]))
        ri, rj, sj, dc = (np.concatenate(p) for p in zip(*pairs))  # folds, hence pairs, is not empty here
        anchor = _anchor_weight(ri, rj)
        slope = _edit_slope(dc, dc + rj - anchor * ri) if cfg.edit_slope else 1.0
        return _CrossValidation(
            np.sort(np.concatenate(absolute)), np.sort(np.abs(rj - anchor * ri + (1 - slope) * dc) / sj),
            quality[weight], weight, anchor, slope,
        )

    def _density_weights(self) -> tuple[float, ...]:
        try:
            weights = sorted({float(w) for w in self.config.density_weights.split(",") if w.strip()} | {0.0})
        except ValueError:
            raise ValueError(f"density_weights: {self.config.density_weights!r} is not a comma-separated list of numbers") from None
        if weights[0] < 0:
            raise ValueError(f"density_weights: {weights[0]} < 0")
        return tuple(weights)

    def _density(self, x: np.ndarray, z: np.ndarray) -> DensityRatio:
        return DensityRatio(self.config.density_gamma, min_good=self.config.density_min_good).fit(x, z, self._sign)

    @staticmethod
    def _density_scale(dr: DensityRatio, x: np.ndarray, z: np.ndarray) -> float:
        """Model-scale units per unit of density ratio: a weight of 1 moves a run by one std of z per std of the ratio."""
        spread = float(np.std(dr.score(x)))
        return float(np.std(z)) / spread if spread > 1e-12 else 0.0

    def _fit_density(self, x: np.ndarray, z: np.ndarray) -> None:
        """The density-ratio term of the prediction, with the weight cross-validation chose (none at weight 0)."""
        self._dr, self._dr_scale = None, 0.0
        if self.density_weight > 0:
            dr = self._density(x, z)
            self._dr_scale = self.density_weight * self._density_scale(dr, x, z)
            self._dr = dr if self._dr_scale > 0 else None

    def _to_model(self, y: np.ndarray) -> np.ndarray:
        return self.transform.forward(y)

    def _standardise_fit(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), self._center, x)
        scale = filled.std(axis=0) if len(filled) else np.ones(x.shape[1])
        self._scale = np.where(scale > 1e-12, scale, 1.0)
        return (filled - self._center) / self._scale

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.where(np.isnan(x), self._center, x) - self._center) / self._scale

    def _member_families(self) -> list[str]:
        """The families whose trees make ``f``: every configured one when averaged, else the chosen one."""
        return _family_list(self.config) if self.family == AVERAGE else [self.family]

    def _forest(self, seed: int, family: str = "forest") -> Any:
        """A tree ensemble of ``family`` (:data:`FAMILIES`) with ``n_members`` bootstrapped trees."""
        from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

        cfg = self.config
        spec = FAMILIES.get(family, FAMILIES["forest"])
        cls = ExtraTreesRegressor if spec["trees"] == "extra" else RandomForestRegressor
        return cls(
            n_estimators=cfg.n_members,
            min_samples_leaf=spec.get("min_samples_leaf", cfg.min_samples_leaf),
            max_features=spec.get("max_features", cfg.max_features),
            bootstrap=True,
            oob_score=True,
            random_state=seed,
            n_jobs=1,
        )

    @property
    def kind(self) -> str:
        """What predicts: ``"tree ensembles"`` (the families averaged), ``"forest"``, ``"deep forest"``, ``"extra
        trees"``, ``"linear forest"``, ``"ridge"`` or ``"prior"``."""
        return self.family.replace("_", " ") if self.mode == "forest" else self.mode

    @staticmethod
    def _oob_members(forest: Any, x: np.ndarray) -> np.ndarray:
        """Each tree's prediction of each training row, NaN where the row was in the tree's bootstrap sample."""
        m = _tree_predictions(forest, x)
        for i, idx in enumerate(forest.estimators_samples_):
            m[i, idx] = np.nan
        return m

    def _fit_forest(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit ``f`` (one ensemble per family of :meth:`_member_families`) and ``g``; return every training row's
        out-of-bag mean and member spread (model scale)."""
        seed = self.config.seed
        n = len(z)
        self._fs = []  # (trees, additive part) per family
        self._z_mean = float(z.mean())
        resid = z - self._z_mean
        oob_mean, oob_var = np.full(n, self._z_mean), np.zeros(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "some inputs do not have OOB scores", all-NaN slices
            if self._static.any():
                xs = x[:, self._static]
                members = []
                for family in self._member_families():
                    lin = None
                    if FAMILIES.get(family, {}).get("linear"):
                        # an additive part first (ridge on the standardised architecture and hyperparameter
                        # features); the trees then model what it leaves (interactions, thresholds)
                        lin = self._ridge_fit(self._standardise(x)[:, self._static], z)
                    base = self._linear(x, lin)
                    forest = self._forest(seed, family).fit(xs, z - base)
                    self._fs.append((forest, lin))
                    members.append(base[None, :] + self._oob_members(forest, xs))
                m = np.concatenate(members)
                oob_mean, oob_var = np.nanmean(m, axis=0), np.nanvar(m, axis=0)
                resid = np.where(np.isfinite(oob_mean), z - oob_mean, 0.0)
            self._g = None
            if (~self._static).any():
                self._g = self._forest(seed + 1, "forest" if self.family == AVERAGE else self.family)
                self._g.fit(x[:, ~self._static], resid)
                oob_g = self._g.oob_prediction_
                resid = np.where(np.isfinite(oob_g), resid - oob_g, resid)
                m = self._oob_members(self._g, x[:, ~self._static])
                oob_mean, oob_var = oob_mean + np.nanmean(m, axis=0), oob_var + np.nanvar(m, axis=0)
        self._rmse = float(np.sqrt(np.mean(resid**2)))
        return oob_mean, np.sqrt(oob_var)

    def _ridge_fit(self, zx: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float]:
        """One ridge regression (``ridge_alpha``) on standardised features: weights and intercept."""
        mx, my = zx.mean(axis=0), float(z.mean())
        xc = zx - mx
        w = np.linalg.solve(xc.T @ xc + self.config.ridge_alpha * np.eye(zx.shape[1]), xc.T @ (z - my))
        return w, my - float(mx @ w)

    def _linear(self, x: np.ndarray, lin: tuple[np.ndarray, float] | None) -> np.ndarray:
        """The additive part ``lin`` of a ``linear_forest`` for raw feature rows (0 without one)."""
        if lin is None:
            return np.zeros(len(x))
        w, b = lin
        return self._standardise(x)[:, self._static] @ w + b

    def _fit_ridge(self, zx: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        n, d = zx.shape
        weights, biases, errors = [], [], []
        oob = np.full((cfg.n_members, n), np.nan)
        for i in range(cfg.n_members):
            idx = rng.integers(0, n, n)
            xb, yb = zx[idx], z[idx]
            mx, my = xb.mean(axis=0), yb.mean()
            xc = xb - mx
            w = np.linalg.solve(xc.T @ xc + cfg.ridge_alpha * np.eye(d), xc.T @ (yb - my))
            weights.append(w)
            biases.append(my - mx @ w)
            out = np.setdiff1d(np.arange(n), idx)
            if out.size:
                oob[i, out] = zx[out] @ w + biases[-1]
                errors.append(oob[i, out] - z[out])
        self._w = np.array(weights)
        self._b = np.array(biases)
        err = np.concatenate(errors) if errors else np.zeros(0)
        self._rmse = float(np.sqrt(np.mean(err**2))) if err.size else max(float(z.std()), cfg.prior_std)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, spread = np.nanmean(oob, axis=0), np.nanstd(oob, axis=0)
        spread = np.sqrt(spread**2 + self._rmse**2) * math.sqrt(cfg.min_history / n)
        return mean, spread

    def _conformity(self, z: np.ndarray, zx: np.ndarray, oob: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Normalised out-of-bag errors ``|z - oob mean| / s`` of the training rows, sorted (the calibration set)."""
        mean, spread = oob
        novelty = self._self_novelty(zx)
        extra = self.config.novelty_weight * self._rmse * np.maximum(0.0, novelty - 1.0)
        s = np.sqrt(spread**2 + extra**2)
        ok = np.isfinite(mean) & np.isfinite(s)
        floor = max(1e-6, 0.05 * self._rmse)  # a row every member agrees on must not give an infinite score
        r = np.abs(z[ok] - mean[ok]) / np.maximum(s[ok], floor)
        return np.sort(r)

    def _self_novelty(self, zx: np.ndarray) -> np.ndarray:
        """Each training row's :meth:`novelty` against the other rows (leave-one-out)."""
        n = len(zx)
        if n < 2:
            return np.ones(n)
        d = _distances(zx, zx)
        np.fill_diagonal(d, np.inf)
        k = min(self.config.neighbours, n - 1)
        return np.sort(d, axis=1)[:, :k].mean(axis=1) / self._d0

    def _typical_neighbour_distance(self, zx: np.ndarray) -> float:
        n = len(zx)
        if n < 2:
            return 1.0
        d = _distances(zx, zx)
        np.fill_diagonal(d, np.inf)
        k = min(self.config.neighbours, n - 1)
        nearest = np.sort(d, axis=1)[:, :k].mean(axis=1)
        return max(float(np.median(nearest)), 1e-9)

    # -- prediction -----------------------------------------------------------------------------

    def members(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Each member's prediction, shape ``(members, len(rows))``, on the model scale (log for losses)."""
        x = self.encoder.transform(rows)
        if self.mode == "forest":
            m = np.full((self.config.n_members, len(rows)), self._z_mean)
            if self._fs:
                xs = x[:, self._static]
                m = np.concatenate([_tree_predictions(f, xs) + self._linear(x, lin)[None, :] for f, lin in self._fs])
            if self._g is not None:
                g = _tree_predictions(self._g, x[:, ~self._static])
                m = m + (np.tile(g, (len(m) // len(g), 1)) if len(m) != len(g) else g)
            if self._dr is not None:
                m -= self._sign * self._dr_scale * self._dr.score(x)[None, :]
            return m
        if self.mode == "ridge":
            return self._w @ self._standardise(x)[:, self._static].T + self._b[:, None]
        return np.full((1, len(rows)), self._prior_mean)

    def novelty(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``d / d0`` per row: distance to the nearest history runs relative to their own spacing."""
        if self.n_train < 2:
            return np.ones(len(rows))
        q = self._standardise(self.encoder.transform(rows))
        d = _distances(q, self._train_z)
        k = min(self.config.neighbours, self.n_train)
        return np.sort(d, axis=1)[:, :k].mean(axis=1) / self._d0

    def calibration(self, level: float | None = None, anchored: bool = False) -> float:
        """``q``: the half-width of the ``level`` interval in units of :meth:`model_stats`'s ``s``.

        The conformal quantile of the history's normalised errors on
        hyperparameter groups the model did not see (module docstring);
        ``anchored`` for a prediction anchored on a run's observed value (an
        edit's effect), from pairs of runs of one group. Out-of-bag errors
        stand in when the history is too small to cross-validate; the normal
        quantile when there are fewer than 5 scores (the prior).

        Examples
        --------
        >>> rows = [{"hp/x": float(i % 7), "arch/w": float(i % 5)} for i in range(60)]
        >>> y = [0.2 + 0.05 * (i % 7) + 0.01 * ((i * 13) % 5) for i in range(60)]
        >>> s = Surrogate(SurrogateConfig(n_members=16)).fit_rows(rows, y, "val/loss")
        >>> bool(0 < s.calibration(0.5) < s.calibration(0.8) < s.calibration(0.95))
        True
        """
        level = self.config.interval if level is None else level
        r = self._pair_scores if anchored and self._pair_scores.size >= 5 else self._scores
        if r.size < 5:
            from statistics import NormalDist

            return NormalDist().inv_cdf(0.5 + level / 2)
        k = min(r.size, math.ceil((r.size + 1) * level))
        return float(r[k - 1])

    def anchored(self, z_edit: float, z_current: float, z_observed: float) -> float:
        """An edit's prediction on the model's scale, anchored on what the run reached:
        ``z_current + b * (z_edit - z_current) + a * (z_observed - z_current)``.

        ``a`` is :attr:`anchor_weight`, the share of a run's miss that its
        group's other runs showed on held-out folds (1 without
        cross-validation: the observed value carries over in full); ``b`` is
        :attr:`edit_slope`, the share of a predicted difference between two
        runs of one group that came true there (1 without cross-validation).

        >>> s = Surrogate()
        >>> s.anchor_weight = 0.5
        >>> s.anchored(z_edit=1.0, z_current=2.0, z_observed=3.0)
        1.5
        >>> s.edit_slope = 0.5
        >>> s.anchored(z_edit=1.0, z_current=2.0, z_observed=3.0)
        2.0
        """
        return z_edit + self.anchor_weight * (z_observed - z_current) - (1.0 - self.edit_slope) * (z_edit - z_current)

    def unanchored(self, z_anchored: float, z_current: float, z_observed: float) -> float:
        """The edit prediction whose :meth:`anchored` value is ``z_anchored`` (to rank a prior beside the model's edits).

        >>> s = Surrogate()
        >>> s.anchor_weight, s.edit_slope = 0.5, 0.8
        >>> z = s.anchored(z_edit=1.0, z_current=2.0, z_observed=3.0)
        >>> round(s.unanchored(z, z_current=2.0, z_observed=3.0), 12)
        1.0
        """
        return z_current + (z_anchored - z_current - self.anchor_weight * (z_observed - z_current)) / self.edit_slope

    def model_stats(self, rows: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Centre and uncertainty ``s`` on the model's scale (log / logit / as is), before calibration."""
        cfg = self.config
        m = self.members(rows)
        centre = m.mean(axis=0)
        spread = m.std(axis=0) if self.mode != "prior" else np.full(len(rows), self._rmse)
        if self.mode == "ridge":
            # Smooth linear members agree on what they cannot see: add their out-of-bag error (the runs' own
            # scatter around any fit), then widen for having so few runs.
            spread = np.sqrt(spread**2 + self._rmse**2) * math.sqrt(cfg.min_history / self.n_train)
        extra = cfg.novelty_weight * self._rmse * np.maximum(0.0, self.novelty(rows) - 1.0)
        return centre, np.sqrt(spread**2 + extra**2)

    def predict_rows(self, rows: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation, in target units, for feature dicts.

        ``mean`` is the inverse transform of the model-scale centre (the
        median: never outside the metric's range); ``std`` the model's own
        uncertainty ``s`` (member spread widened by novelty, uncalibrated:
        what the search's risk aversion weighs) brought to target units by
        the delta method. Calibrated intervals come from :meth:`interval_rows`.
        """
        centre, s = self.model_stats(rows)
        return self.transform.inverse(centre), self.transform.slope(centre) * s

    def interval_rows(
        self, rows: Sequence[Mapping[str, float]], level: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median prediction and the ``level`` (default ``config.interval``) interval, in target units.

        Examples
        --------
        >>> rows = [{"hp/x": float(i % 10)} for i in range(60)]
        >>> acc = [0.5 + 0.045 * (i % 10) + 0.01 * ((i * 7) % 3 - 1) for i in range(60)]
        >>> s = Surrogate(SurrogateConfig(n_members=16)).fit_rows(rows, acc, "val/acc")
        >>> mid, lo, hi = s.interval_rows([{"hp/x": 9.0}, {"hp/x": 40.0}])
        >>> s.transform.kind, bool(lo[0] < mid[0] < hi[0] <= 1.0), bool(hi[1] <= 1.0)
        ('logit', True, True)
        """
        centre, s = self.model_stats(rows)
        half = self.calibration(level) * s
        inv = self.transform.inverse
        return inv(centre), inv(centre - half), inv(centre + half)

    def predict(self, observations: Sequence[RunObservation]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted final target (mean, std in target units) for each run."""
        return self.predict_rows([run_features(o, self.config.early_fraction) for o in observations])

    def variant_rows(self, run: RunObservation, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        """Feature dicts of ``run`` with its architecture features swapped for each genome's."""
        base = {k: v for k, v in run_features(run, self.config.early_fraction).items() if not k.startswith(ARCH_PREFIX)}
        return [{**base, **architecture_features(g)} for g in genomes]

    def variant_rows_hp(
        self, run: RunObservation, variants: Sequence[tuple[Genome, Mapping[str, Any]]]
    ) -> list[dict[str, float]]:
        """Feature dicts of ``run`` with its architecture and hyperparameter features swapped for each pair's."""
        keep = {
            k: v for k, v in run_features(run, self.config.early_fraction).items() if not k.startswith(STATIC_PREFIXES)
        }
        return [{**keep, **architecture_features(g), **hyperparameter_features(dict(hp))} for g, hp in variants]

    def score(self, run: RunObservation, genomes: Sequence[Genome]) -> tuple[np.ndarray, np.ndarray]:
        """Predict ``run``'s target had it used each of ``genomes`` instead of its own architecture.

        The run's hyperparameters, early-log and finding features are kept and
        only the ``arch/`` features change, so ``score(run, [run.genome])`` and
        the scores of edits are directly comparable: a candidate's predicted
        delta is ``score(run, [candidate]) - score(run, [run.genome])``.
        """
        return self.predict_rows(self.variant_rows(run, genomes))

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Config, target and training rows (NaN as null); :meth:`from_dict` refits from them."""
        return {
            "config": self.config.to_dict(),
            "target": self.target,
            "rows": [{k: (v if math.isfinite(v) else None) for k, v in r.items()} for r in self._rows],
            "y": self._y.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Surrogate:
        rows = [{k: (math.nan if v is None else float(v)) for k, v in r.items()} for r in d["rows"]]
        return cls(SurrogateConfig.from_dict(d["config"])).fit_rows(rows, d["y"], d["target"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        return cls.from_dict(json.loads(Path(path).read_text()))
