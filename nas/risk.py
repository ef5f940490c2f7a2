"""Divergence risk: how likely a run with this architecture and these hyperparameters ends non-finite.

Learned from the history like the surrogate, but as a classifier: a run
counts as diverged when its final training loss or target metric is NaN/Inf
or runwatch raised a ``nonfinite`` finding for it. Features are the
architecture and hyperparameters only (``arch/``, ``hp/``), so candidate
edits of one run are compared on equal terms. The model is a logistic
regression on standardized features with median imputation, regularised
toward the base rate; with fewer than ``min_each`` diverged or healthy runs
in the history it answers the smoothed base rate ``(k + 1) / (n + 2)`` for
every genome and says so (``mode == "base_rate"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.features import FeatureEncoder, architecture_features, hyperparameter_features, train_loss_name
from runwatch.nas.history import RunObservation

__all__ = ["DivergenceRisk", "diverged"]


def diverged(run: RunObservation) -> bool | None:
    """Whether a finished run diverged; ``None`` when it tells nothing (no outcome, no loss, no finding).

    Examples
    --------
    >>> from runwatch.nas.history import Diagnosis
    >>> diverged(RunObservation("a", None, outcome={"val/loss": float("nan")}))
    True
    >>> diverged(RunObservation("b", None, outcome={"val/loss": 0.3})), diverged(RunObservation("c", None))
    (False, None)
    >>> diverged(RunObservation("d", None, diagnoses=[Diagnosis("nonfinite", metric="loss")]))
    True
    """
    if any(d.kind == "nonfinite" for d in run.diagnoses):
        return True
    values = list(run.outcome.values())
    loss = train_loss_name(run.series)
    if loss and len(run.series[loss][1]):
        values.append(float(run.series[loss][1][-1]))
    if not values:
        return None
    return not all(math.isfinite(v) for v in values)


def _features(genome: Genome, hyperparameters: dict) -> dict[str, float]:
    return {**architecture_features(genome), **hyperparameter_features(hyperparameters)}


@dataclass
class DivergenceRisk:
    """P(diverge) for genomes trained with a run's hyperparameters.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
    >>> runs = [RunObservation(f"r{i}", g, hyperparameters={"lr": lr}, outcome={"val/loss": v})
    ...         for i, (lr, v) in enumerate([(1e-3, 0.3), (1e-3, 0.2), (2.0, float("nan"))])]
    >>> risk = DivergenceRisk().fit(runs)
    >>> risk.mode, round(float(risk.predict({"lr": 1e-3}, [g])[0]), 2)
    ('base_rate', 0.4)
    """

    min_each: int = 3
    regularization: float = 0.5
    mode: str = "unfitted"
    n_runs: int = 0
    n_diverged: int = 0
    encoder: FeatureEncoder = field(default_factory=FeatureEncoder)
    _model: object = None

    def fit(self, history: Sequence[RunObservation]) -> Self:
        rows, labels = [], []
        for run in history:
            label = diverged(run)
            if run.genome is None or label is None:
                continue
            rows.append(_features(run.genome, run.hyperparameters))
            labels.append(label)
        self.n_runs, self.n_diverged = len(labels), int(sum(labels))
        if self.n_diverged < self.min_each or self.n_runs - self.n_diverged < self.min_each:
            self.mode, self._model = "base_rate", None
            return self
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = self.encoder.fit_transform(rows)
        keep = ~np.all(np.isnan(x), axis=0)  # a column no run has cannot be imputed
        self.encoder.columns = [c for c, k in zip(self.encoder.columns, keep, strict=True) if k]
        self._model = make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=self.regularization, max_iter=1000)
        ).fit(x[:, keep], np.asarray(labels, dtype=int))
        self.mode = "logistic"
        return self

    @property
    def base_rate(self) -> float:
        return (self.n_diverged + 1) / (self.n_runs + 2)

    def predict(self, hyperparameters: dict, genomes: Sequence[Genome]) -> np.ndarray:
        """Probability of divergence of each genome, trained with ``hyperparameters``."""
        if self._model is None:
            return np.full(len(genomes), self.base_rate)
        x = self.encoder.transform([_features(g, hyperparameters) for g in genomes])
        return self._model.predict_proba(x)[:, 1]

    def describe(self) -> str:
        """What the risk model is, for evidence lines."""
        kind = "logistic" if self.mode == "logistic" else "base rate"
        return f"divergence risk ({kind}, {self.n_diverged} of {self.n_runs} runs diverged)"
