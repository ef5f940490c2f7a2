"""Divergence risk: how likely a run with this architecture and these hyperparameters ends non-finite.

Learned from the history like the surrogate, but as a classifier: a run
counts as diverged when its final training loss or target metric is NaN/Inf,
runwatch raised a ``nonfinite`` finding for it, or its training loss blew up
without turning non-finite (:func:`loss_blowup`: it ended at least
``BLOWUP_FACTOR`` times its best and above where it started, e.g. a loss of
1e23 that a loop stopped before it overflowed). Features are the
architecture and hyperparameters only (``arch/``, ``hp/``), so candidate
edits of one run are compared on equal terms. The model is a logistic
regression on standardized features with median imputation, regularised
toward the base rate; with fewer than ``min_each`` diverged or healthy runs
in the history it answers the smoothed base rate ``(k + 1) / (n + 2)`` for
every genome and says so (``mode == "base_rate"``).

A run that diverged is evidence about itself: the advisor refits the model
with the run added when the history lacks it (:meth:`DivergenceRisk.with_run`),
so the base rate of a diverged run counts it ("4 of 57 runs diverged, this run
among them") and its own configuration is never predicted safe by a model that
has not seen it fail. :meth:`DivergenceRisk.predict_variants` scores
hyperparameter changes (a lower learning rate) as well as architectures;
:meth:`DivergenceRisk.judges` says whether the model has seen a hyperparameter
at all (it cannot judge warm-up when no history run logs one).
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

__all__ = ["BLOWUP_FACTOR", "Blowup", "DivergenceRisk", "diverged", "loss_blowup"]

BLOWUP_FACTOR = 3.0
"""A training loss that ends this many times its best (and above its start) blew up: the real-log labels'
``divergence`` rule (bench/real_labels) and the corpus's (``K_DIVERGE``) use the same factor."""
BLOWUP_PEAK = 100.0
"""A training loss that peaked this many times its best and ended above its start blew up too, however far it came
back down (a net whose units died in the blow-up settles at a finite loss worse than chance)."""


@dataclass(frozen=True)
class Blowup:
    """Where a training loss that never recovered was at its best and where it ended."""

    best: float
    best_step: int
    last: float
    last_step: int


def _trailing_median_of_three(values: np.ndarray) -> np.ndarray:
    """Median of each value and the (up to) two before it, vectorised (a run's loss curve may hold thousands).

    >>> _trailing_median_of_three(np.array([3.0, 1.0, 2.0, 9.0, 0.0])).tolist()
    [3.0, 2.0, 2.0, 2.0, 2.0]
    """
    out = values.astype(float).copy()
    if len(values) > 1:
        out[1] = (values[0] + values[1]) / 2
    if len(values) > 2:
        a, b, c = values[:-2], values[1:-1], values[2:]
        out[2:] = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    return out


def loss_blowup(run: RunObservation) -> Blowup | None:
    """The blow-up of ``run``'s training loss: its final level is above its start and ``BLOWUP_FACTOR`` times its
    best, or it peaked at ``BLOWUP_PEAK`` times its best (medians of three, so one noisy point decides nothing);
    None otherwise or with fewer than 5 points.

    Examples
    --------
    >>> s = np.arange(8)
    >>> run = RunObservation("r", None, series={"loss": (s, np.array([2.3, 1.0, 0.6, 0.5, 0.9, 40.0, 9e6, 2e9]))})
    >>> loss_blowup(run)
    Blowup(best=0.6, best_step=3, last=9000000.0, last_step=7)
    >>> dead = RunObservation("d", None, series={"loss": (s, np.array([2.3, 11.0, 2e4, 5e6, 8e8, 24.0, 6.1, 6.7]))})
    >>> loss_blowup(dead).last
    6.7
    >>> fine = RunObservation("f", None, series={"loss": (s, np.array([2.3, 1.0, 0.6, 0.5, 0.45, 0.5, 0.4, 0.42]))})
    >>> loss_blowup(fine) is None
    True
    """
    name = train_loss_name(run.series)
    if not name:
        return None
    steps, values = (np.asarray(a) for a in run.series[name])
    finite = np.isfinite(values.astype(float))
    steps, values = steps[finite], values[finite].astype(float)
    if len(values) < 5:
        return None
    smooth = _trailing_median_of_three(values)
    best = int(np.argmin(smooth))
    last = float(smooth[-1])
    high = last >= BLOWUP_FACTOR * smooth[best] or smooth.max() >= BLOWUP_PEAK * smooth[best]
    if high and last > smooth[0] and smooth[best] > 0:
        return Blowup(float(smooth[best]), int(steps[best]), last, int(steps[-1]))
    return None


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
    if any(d.kind == "nonfinite" for d in run.diagnoses) or loss_blowup(run) is not None:
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
    includes: str = ""  # the id of the run being advised when it was added to the fit (it diverged)
    _history: list = field(default_factory=list, repr=False)

    def with_run(self, run: RunObservation) -> DivergenceRisk:
        """This model, refitted with ``run`` added when ``run`` diverged and the history lacks it; else itself.

        Examples
        --------
        >>> from runwatch.nas.architecture import Block, Genome
        >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
        >>> ok = [RunObservation(f"r{i}", g, outcome={"val/loss": 0.3}) for i in range(14)]
        >>> bad = RunObservation("x", g, outcome={"val/loss": float("inf")})
        >>> DivergenceRisk().fit(ok).with_run(bad).describe()
        'divergence risk (base rate (k + 1) / (n + 2), 1 of 15 runs diverged, this run among them)'
        """
        if diverged(run) is not True or run.genome is None or any(r.run_id == run.run_id for r in self._history):
            return self
        refit = DivergenceRisk(self.min_each, self.regularization).fit([*self._history, run])
        refit.includes = run.run_id
        return refit

    def fit(self, history: Sequence[RunObservation]) -> Self:
        self._history = list(history)
        self.includes = ""
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
        return self.predict_variants([(g, hyperparameters) for g in genomes])

    def predict_variants(self, variants: Sequence[tuple[Genome, dict]]) -> np.ndarray:
        """Probability of divergence of each (genome, hyperparameters) pair."""
        if self._model is None:
            return np.full(len(variants), self.base_rate)
        x = self.encoder.transform([_features(g, hp) for g, hp in variants])
        return self._model.predict_proba(x)[:, 1]

    def judges(self, hyperparameters: dict) -> bool:
        """Whether every feature of ``hyperparameters`` is one the fitted model uses (a logistic model only).

        >>> from runwatch.nas.architecture import Block, Genome
        >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
        >>> runs = [RunObservation(f"r{i}", g, hyperparameters={"lr": 10.0 ** -(i % 4)},
        ...                        outcome={"val/loss": float("nan") if i % 4 == 0 else 0.3}) for i in range(16)]
        >>> risk = DivergenceRisk().fit(runs)
        >>> risk.mode, risk.judges({"lr": 0.01}), risk.judges({"warmup_steps": 100})
        ('logistic', True, False)
        """
        if self._model is None:
            return False
        return set(hyperparameter_features(hyperparameters)) <= set(self.encoder.columns)

    def describe(self) -> str:
        """What the risk model is, for evidence lines."""
        # The base rate is smoothed, (k + 1) / (n + 2): say so, or "1 of 15 ... 12 %" reads as a miscount.
        kind = "logistic" if self.mode == "logistic" else "base rate (k + 1) / (n + 2)"
        among = ", this run among them" if self.includes else ""
        return f"divergence risk ({kind}, {self.n_diverged} of {self.n_runs} runs diverged{among})"
