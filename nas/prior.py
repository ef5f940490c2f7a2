"""When the surrogate cannot judge an edit, and what to expect from it instead.

The surrogate learns what edits do from the history. An edit that gives the
architecture a feature value no run of its family ever had (LayerNorm in a
history of plain MLPs: ``arch/norm/layernorm`` 1.0 where every run had 0) is
outside the history's support: trees predict a constant there, so the
surrogate's "no effect" means "never seen", not "does not help".
:class:`ArchSupport` says which edits those are, per model family.

For such an edit read off a strong finding (a vanishing gradient in a run that
did not train, :mod:`runwatch.nas.seeding`), the advisor ranks it by a prior
instead (:class:`OutcomePrior`): if the fix makes the net train, the run
should end about where the runs of its task end. Prior value = the median
target of the history runs of the same task (the run's ``dataset``/``task``
hyperparameter, :func:`~runwatch.nas.evidence.task_of`; without one, the runs
with the same input and output sizes), uncertainty = their spread (the
interquartile range / 1.349, on a log scale for positive losses, like the
surrogate). The prior is not a measurement of the edit, and the suggestion's
evidence says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.evidence import task_of
from runwatch.nas.features import POS_PREFIX, architecture_features
from runwatch.nas.history import RunObservation
from runwatch.nas.surrogate import is_loss_like

__all__ = ["ArchSupport", "OutcomePrior", "PriorEstimate", "io_key"]

_MIN_RUNS = 3
_IQR_TO_STD = 1.349  # interquartile range of a normal distribution, in standard deviations

# feature -> how it reads in a sentence
_FEATURE_LABELS = {
    "arch/norm/layernorm": "share of blocks with LayerNorm",
    "arch/norm/batchnorm": "share of blocks with BatchNorm",
    "arch/residual_frac": "share of blocks with a residual connection",
    "arch/depth": "depth",
    "arch/dropout_max": "largest dropout",
    "arch/dropout_mean": "mean dropout",
}


def _label(feature: str) -> str:
    if feature in _FEATURE_LABELS:
        return _FEATURE_LABELS[feature]
    if feature.startswith("arch/act/"):
        return f"share of blocks with {feature.removeprefix('arch/act/')}"
    return feature.removeprefix("arch/")


def io_key(genome: Genome | None) -> str:
    """``"io=<inputs>-><outputs>"``: the task proxy for runs that log no task.

    >>> from runwatch.nas.architecture import Block
    >>> io_key(Genome(64, 10, (Block("fc1", "linear", 8),)))
    'io=64->10'
    """
    return "" if genome is None else f"io={genome.input_size}->{genome.output_size}"


@dataclass
class ArchSupport:
    """Range of every architecture feature among the history runs of each model family.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> plain = [Genome(8, 2, (Block("a", "linear", w, "relu"),)) for w in (16, 32, 64)]
    >>> support = ArchSupport.from_history([RunObservation(f"r{i}", g) for i, g in enumerate(plain)])
    >>> support.unsupported(plain[0], plain[0].replace_block(0, width=32))
    []
    >>> support.unsupported(plain[0], plain[0].replace_block(0, normalization="layernorm"))
    ['share of blocks with LayerNorm 1 (the 3 mlp runs of the history: 0 to 0)']
    """

    ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_history(cls, history: Sequence[RunObservation]) -> ArchSupport:
        ranges: dict[str, dict[str, tuple[float, float]]] = {}
        runs: dict[str, int] = {}
        for obs in history:
            if obs.genome is None:
                continue
            family = obs.genome.family
            runs[family] = runs.get(family, 0) + 1
            seen = ranges.setdefault(family, {})
            for k, v in architecture_features(obs.genome).items():
                if math.isfinite(v) and not k.startswith(POS_PREFIX):
                    lo, hi = seen.get(k, (v, v))
                    seen[k] = (min(lo, v), max(hi, v))
        return cls(ranges, runs)

    def unsupported(self, base: Genome, genome: Genome) -> list[str]:
        """The features ``genome`` changes to values no history run of its family had, as sentences."""
        family = genome.family
        seen = self.ranges.get(family, {})
        n = self.runs.get(family, 0)
        before = architecture_features(base)
        out = []
        for k, v in architecture_features(genome).items():
            if k.startswith(POS_PREFIX) or math.isclose(v, before.get(k, math.nan), rel_tol=1e-9, abs_tol=1e-12):
                continue  # per-block features repeat the aggregate ones: the support is judged on those
            lo, hi = seen.get(k, (math.nan, math.nan))
            if not lo - 1e-9 <= v <= hi + 1e-9:
                where = (
                    f"the {n} {family} runs of the history: {lo:g} to {hi:g}"
                    if n
                    else f"no {family} run in the history"
                )
                out.append(f"{_label(k)} {v:g} ({where})")
        return out


@dataclass(frozen=True)
class PriorEstimate:
    """The prior value of the target for a run whose fix works, with its spread and where it came from."""

    mean: float
    std: float
    n: int
    scope: str
    values: tuple[float, ...] = ()  # the task's outcomes the estimate is read from

    def describe(self, metric: str) -> str:
        """One sentence for the evidence."""
        return (
            f"prior = median {metric} of the {self.n} history runs of {self.scope} ({self.mean:.3g} ± {self.std:.3g}): "
            "where runs of this task end when they train"
        )


@dataclass
class OutcomePrior:
    """The target values of the history runs, per task (or input/output sizes).

    Examples
    --------
    >>> hist = [RunObservation(f"r{i}", None, hyperparameters={"dataset": "wine"}, outcome={"val/loss": v})
    ...         for i, v in enumerate([0.1, 0.2, 0.4, 0.8])]
    >>> p = OutcomePrior.from_history(hist, "val/loss")
    >>> est = p.estimate(RunObservation("x", None, hyperparameters={"dataset": "wine"}))
    >>> round(est.mean, 3), est.n, est.scope
    (0.283, 4, 'dataset=wine')
    >>> p.estimate(RunObservation("y", None, hyperparameters={"dataset": "iris"})) is None
    True
    """

    target: str = "val/loss"
    by_scope: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_history(cls, history: Sequence[RunObservation], target: str) -> OutcomePrior:
        by_scope: dict[str, list[float]] = {}
        for obs in history:
            v = obs.outcome.get(target)
            if v is None or not math.isfinite(v):
                continue
            for scope in {task_of(obs), io_key(obs.genome)} - {""}:
                by_scope.setdefault(scope, []).append(float(v))
        return cls(target, by_scope)

    def estimate(self, run: RunObservation) -> PriorEstimate | None:
        """The prior for ``run``: its task's runs, else those with its input/output sizes; None with < 3 runs."""
        scope = task_of(run) or io_key(run.genome)
        values = np.asarray(self.by_scope.get(scope, []), dtype=float)
        if values.size < _MIN_RUNS:
            return None
        log = is_loss_like(self.target) and bool(np.all(values > 0))
        z = np.log(values) if log else values
        q1, med, q3 = np.quantile(z, [0.25, 0.5, 0.75])
        spread = float(q3 - q1) / _IQR_TO_STD
        kept = tuple(float(v) for v in values)
        if log:
            mean = float(math.exp(med))
            return PriorEstimate(mean, mean * spread, int(values.size), scope, kept)
        return PriorEstimate(float(med), spread, int(values.size), scope, kept)
