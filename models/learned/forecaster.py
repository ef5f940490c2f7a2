"""Divergence forecaster: probability that the run diverges (or turns NaN) within H steps, for several H.

A small multi-horizon MLP over the current feature row and its change over
the last ``lag`` rows (PyTorch for fitting, numpy for serving). Head ``k``
estimates P(the loss manifests divergence or becomes non-finite within
``horizons[k]`` steps); the heads are fitted jointly on the corpus's labels
(onset, manifestation). :meth:`DivergenceForecaster.expected_within` turns the
heads into "expected within ~N steps". Scores are probabilities: **higher =
more anomalous**.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(600, 2, 4)); y = (x[:, 0, :1] > 1.0).astype(float) * np.ones((1, 3))
>>> fc = DivergenceForecaster(ForecasterConfig(n_features=4, horizons=(10, 50, 100), epochs=40)).fit(x, y)
>>> p = fc.predict_proba(np.array([[[3.0, 0, 0, 0], [0, 0, 0, 0]], [[-3.0, 0, 0, 0], [0, 0, 0, 0]]]))
>>> bool(p[0, -1] > 0.5 > p[1, -1])
True
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator

from runwatch.models.base import DiagnosticConfig
from runwatch.models.learned.features import FEATURES, check_feature_names
from runwatch.models.learned.scaling import RobustScaling, fit_minibatches, pack, unpack


class ForecasterConfig(DiagnosticConfig):
    """Shape and fitting settings of :class:`DivergenceForecaster`."""

    n_features: int = Field(20, ge=1)
    horizons: tuple[int, ...] = (10, 25, 50, 100, 200)
    lag: int = Field(4, ge=1, description="rows back for the change features")
    hidden: int = Field(64, ge=4)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=8)
    learning_rate: float = Field(2e-3, gt=0)
    positive_weight: float = Field(4.0, gt=0, description="loss weight of positive rows (they are rare)")
    feature_floors: dict[str, float] = Field(
        default_factory=dict,
        description="feature name -> lowest value the current row's feature is read at (the change over lag rows "
        "is computed before). Below it the training data held too few divergent runs to say anything "
        "(training.support_floors), and an MLP extrapolates there as it likes")
    seed: int = 0

    @field_validator("feature_floors")
    @classmethod
    def _known_features(cls, floors: dict[str, float]) -> dict[str, float]:
        return check_feature_names(floors)


class DivergenceForecaster:
    """Multi-horizon divergence probability with ``fit`` / ``predict_proba``.

    Inputs are pairs of rows ``[N, 2, n_features]``: the current row and the
    row ``lag`` rows earlier (NaN where missing).
    """

    def __init__(self, config: ForecasterConfig | None = None) -> None:
        self.config = config or ForecasterConfig()
        self.weights: dict[str, np.ndarray] = {}
        self.scaling: RobustScaling | None = None
        self._floors = [(FEATURES.index(name), value) for name, value in sorted(self.config.feature_floors.items())]
        if any(j >= self.config.n_features for j, _ in self._floors):
            raise ValueError(f"feature_floors: needs the {len(FEATURES)} run features, n_features is {self.config.n_features}")

    def _apply_floors(self, raw: np.ndarray) -> None:
        """Raise the current row's floored features (columns of ``raw[:, :n_features]``) to their floors, in place;
        missing and non-finite values stay as they are."""
        for j, floor in self._floors:
            col = raw[:, j]  # a view: set in place
            if len(col) == 1:  # the streaming case, one row per call: no array temporaries
                if -math.inf < col[0] < floor:
                    col[0] = floor
            else:
                col[(col < floor) & (col > -math.inf)] = floor

    def _inputs(self, pairs: np.ndarray) -> np.ndarray:
        c = self.config
        pairs = np.asarray(pairs, dtype=np.float64)
        if pairs.ndim != 3 or pairs.shape[1:] != (2, c.n_features):
            raise ValueError(f"pairs: expected shape [N, 2, {c.n_features}], got {list(pairs.shape)}")
        now, before = pairs[:, 0], pairs[:, 1]
        raw = np.concatenate([now, now - before], axis=1)
        self._apply_floors(raw)
        if self.scaling is None:
            self.scaling = RobustScaling.fit(raw)
        z, mask = self.scaling.transform(raw)
        return np.concatenate([z, mask[:, : c.n_features]], axis=1).astype(np.float32)

    def _torch_module(self):
        from torch import nn

        c = self.config
        return nn.Sequential(
            nn.Linear(3 * c.n_features, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden // 2), nn.ReLU(),
            nn.Linear(c.hidden // 2, len(c.horizons)),
        )

    def fit(self, pairs: np.ndarray, targets: np.ndarray) -> DivergenceForecaster:
        """Fit on row pairs and 0/1 targets ``[N, len(horizons)]``."""
        import torch

        c = self.config
        targets = np.asarray(targets, dtype=np.float32)
        if targets.shape != (len(pairs), len(c.horizons)):
            raise ValueError(f"targets: expected shape [{len(pairs)}, {len(c.horizons)}], got {list(targets.shape)}")
        self.scaling = None
        x = torch.from_numpy(self._inputs(pairs))
        y = torch.from_numpy(targets)
        torch.manual_seed(c.seed)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.full((len(c.horizons),), c.positive_weight))
        self.weights = fit_minibatches(self._torch_module(), lambda model, idx: loss_fn(model(x[idx]), y[idx]), len(x),
                                       epochs=c.epochs, batch_size=c.batch_size, learning_rate=c.learning_rate,
                                       seed=c.seed, weight_decay=1e-5)
        return self

    def predict_proba(self, pairs: np.ndarray) -> np.ndarray:
        """P(divergence within each horizon) ``[N, len(horizons)]``, made monotone in the horizon."""
        if self.scaling is None or not self.weights:
            raise RuntimeError("DivergenceForecaster is not fitted")
        if not len(pairs):
            return np.zeros((0, len(self.config.horizons)))
        return self._forward(self._inputs(pairs).astype(np.float64))

    def predict_proba_rows(self, now: np.ndarray, before: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` of the pairs ``(now[i], before[i])``, float64 rows ``[N, n_features]`` each.

        The same inputs as :meth:`_inputs` builds (scaled values and changes rounded to float32, then the
        mask of present current features) without stacking the pairs first; the same forward pass.
        """
        if self.scaling is None or not self.weights:
            raise RuntimeError("DivergenceForecaster is not fitted")
        n, f = now.shape
        if not n:
            return np.zeros((0, len(self.config.horizons)))
        raw = np.empty((n, 2 * f))
        raw[:, :f] = now
        np.subtract(now, before, out=raw[:, f:])
        if self._floors:
            self._apply_floors(raw)
        z, mask = self.scaling.transform(raw)
        h = np.empty((n, 3 * f))
        h[:, :2 * f] = z
        h[:, 2 * f:] = mask[:, :f]
        return self._forward(h)

    def _forward(self, h: np.ndarray) -> np.ndarray:
        """The MLP on float64 inputs ``[N, 3 * n_features]`` (C-contiguous)."""
        w = self.weights
        h = np.maximum(h @ w["0.weight"].T + w["0.bias"], 0.0)
        h = np.maximum(h @ w["2.weight"].T + w["2.bias"], 0.0)
        logits = h @ w["4.weight"].T + w["4.bias"]
        p = 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(logits, -40.0), 40.0)))  # np.clip, without its Python wrapper
        return np.maximum.accumulate(p, axis=1)

    def expected_within(self, proba: np.ndarray) -> np.ndarray:
        """Per row, the shortest horizon whose probability reaches half the longest one's (steps)."""
        hz = np.asarray(self.config.horizons)
        reach = proba >= 0.5 * proba[:, -1:]
        return hz[np.argmax(reach, axis=1)]

    def tensors(self, prefix: str = "forecaster") -> dict[str, np.ndarray]:
        return pack(prefix, self.weights, self.scaling, "DivergenceForecaster")

    @classmethod
    def from_tensors(cls, config: ForecasterConfig, tensors: dict[str, np.ndarray], prefix: str = "forecaster") -> DivergenceForecaster:
        fc = cls(config)
        fc.weights, fc.scaling = unpack(tensors, prefix)
        return fc
