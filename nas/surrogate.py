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

- ``n >= min_history`` (20): ``f`` and ``g`` are random forests of
  ``n_members`` trees; member ``i`` is tree ``i`` of ``f`` plus tree ``i`` of ``g``.
- ``3 <= n < min_history``: ``f`` only, as ``n_members`` ridge regressions
  each fitted on a bootstrap resample of the standardised, median-imputed
  features; the uncertainty is their spread plus their out-of-bag error (in
  quadrature: linear members agree on what none of them can fit), inflated by
  ``sqrt(min_history / n)`` because so few runs say little about how far the
  truth can be from all of them.
- ``n < 3``: a prior, the mean of the history (NaN with no history), with the
  history's spread (at least ``prior_std``) as uncertainty.

Losses (targets whose name says loss/error and whose values are all > 0) are
fitted on a natural-log scale; predictions are brought back to target units:
``mean = exp(mean of the members)`` and ``std = mean * std_log`` (delta
method), so the reported standard deviation is in the metric's own units.

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
from typing import Any

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.features import ARCH_PREFIX, FeatureEncoder, architecture_features, run_features

STATIC_PREFIXES = (ARCH_PREFIX, "hp/")
from runwatch.nas.history import RunObservation

__all__ = ["Surrogate", "SurrogateConfig", "is_loss_like"]

_LOSS_TOKENS = ("loss", "perplexity", "ppl", "mse", "rmse", "mae", "error", "nll")


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
    log_target: bool | None = None  # None: log scale for loss-like names with all values > 0
    neighbours: int = 5
    novelty_weight: float = 1.0
    prior_std: float = 0.5  # log scale (x/÷ 1.65) when the history is too small for a model
    early_fraction: float = 0.5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurrogateConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
        self.log_target = False
        self.encoder = FeatureEncoder()
        self._rows: list[dict[str, float]] = []
        self._y: np.ndarray = np.zeros(0)

    # -- fitting --------------------------------------------------------------------------------

    def fit(self, observations: Sequence[RunObservation], target: str = "val/loss") -> Surrogate:
        """Fit on the runs of ``observations`` that have a finite ``outcome[target]``.

        Runs without the target (in progress, or diverged to NaN/Inf) are
        left out of the regression.
        """
        rows, y = [], []
        for obs in observations:
            v = obs.outcome.get(target)
            if v is None or not math.isfinite(v):
                continue
            rows.append(run_features(obs, self.config.early_fraction))
            y.append(float(v))
        return self.fit_rows(rows, y, target)

    def fit_rows(self, rows: Sequence[Mapping[str, float]], y: Sequence[float], target: str) -> Surrogate:
        """Fit on feature dicts and their targets (what :meth:`fit` does after feature extraction)."""
        cfg = self.config
        self.target = target
        self._rows = [dict(r) for r in rows]
        self._y = np.asarray(y, dtype=float)
        n = self.n_train = len(self._rows)
        if cfg.log_target is None:
            self.log_target = bool(n and is_loss_like(target) and np.all(self._y > 0))
        else:
            self.log_target = bool(cfg.log_target)
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
        if n >= cfg.min_history:
            self.mode = "forest"
            self._fit_forest(x, z)
        elif n >= 3:
            self.mode = "ridge"
            self._fit_ridge(zx[:, self._static], z)
        else:
            self.mode = "prior"
            self._prior_mean = float(z.mean()) if n else math.nan
            self._rmse = max(float(z.std()) if n > 1 else 0.0, cfg.prior_std)
        self._d0 = self._typical_neighbour_distance(zx)
        return self

    def _to_model(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.log_target else y

    def _standardise_fit(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), self._center, x)
        scale = filled.std(axis=0) if len(filled) else np.ones(x.shape[1])
        self._scale = np.where(scale > 1e-12, scale, 1.0)
        return (filled - self._center) / self._scale

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.where(np.isnan(x), self._center, x) - self._center) / self._scale

    def _forest(self, seed: int) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        cfg = self.config
        return RandomForestRegressor(
            n_estimators=cfg.n_members,
            min_samples_leaf=cfg.min_samples_leaf,
            max_features=cfg.max_features,
            bootstrap=True,
            oob_score=True,
            random_state=seed,
            n_jobs=1,
        )

    def _fit_forest(self, x: np.ndarray, z: np.ndarray) -> None:
        seed = self.config.seed
        self._f = None
        self._z_mean = float(z.mean())
        resid = z - self._z_mean
        if self._static.any():
            self._f = self._forest(seed).fit(x[:, self._static], z)
            oob = self._f.oob_prediction_
            resid = np.where(np.isfinite(oob), z - oob, 0.0)
        self._g = None
        if (~self._static).any():
            self._g = self._forest(seed + 1).fit(x[:, ~self._static], resid)
            oob_g = self._g.oob_prediction_
            resid = np.where(np.isfinite(oob_g), resid - oob_g, resid)
        self._rmse = float(np.sqrt(np.mean(resid**2)))

    def _fit_ridge(self, zx: np.ndarray, z: np.ndarray) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        n, d = zx.shape
        weights, biases, errors = [], [], []
        for _ in range(cfg.n_members):
            idx = rng.integers(0, n, n)
            xb, yb = zx[idx], z[idx]
            mx, my = xb.mean(axis=0), yb.mean()
            xc = xb - mx
            w = np.linalg.solve(xc.T @ xc + cfg.ridge_alpha * np.eye(d), xc.T @ (yb - my))
            weights.append(w)
            biases.append(my - mx @ w)
            out = np.setdiff1d(np.arange(n), idx)
            if out.size:
                errors.append(zx[out] @ w + biases[-1] - z[out])
        self._w = np.array(weights)
        self._b = np.array(biases)
        err = np.concatenate(errors) if errors else np.zeros(0)
        self._rmse = float(np.sqrt(np.mean(err**2))) if err.size else max(float(z.std()), cfg.prior_std)

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
            if self._f is not None:
                m = _tree_predictions(self._f, x[:, self._static])
            if self._g is not None:
                m += _tree_predictions(self._g, x[:, ~self._static])
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

    def predict_rows(self, rows: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation, in target units, for feature dicts."""
        cfg = self.config
        m = self.members(rows)
        centre = m.mean(axis=0)
        spread = m.std(axis=0) if self.mode != "prior" else np.full(len(rows), self._rmse)
        if self.mode == "ridge":
            # Smooth linear members agree on what they cannot see: add their out-of-bag error (the runs' own
            # scatter around any fit), then widen for having so few runs.
            spread = np.sqrt(spread**2 + self._rmse**2) * math.sqrt(cfg.min_history / self.n_train)
        extra = cfg.novelty_weight * self._rmse * np.maximum(0.0, self.novelty(rows) - 1.0)
        std = np.sqrt(spread**2 + extra**2)
        if self.log_target:
            mean = np.exp(centre)
            return mean, mean * std
        return centre, std

    def predict(self, observations: Sequence[RunObservation]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted final target (mean, std in target units) for each run."""
        return self.predict_rows([run_features(o, self.config.early_fraction) for o in observations])

    def variant_rows(self, run: RunObservation, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        """Feature dicts of ``run`` with its architecture features swapped for each genome's."""
        base = {k: v for k, v in run_features(run, self.config.early_fraction).items() if not k.startswith(ARCH_PREFIX)}
        return [{**base, **architecture_features(g)} for g in genomes]

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
