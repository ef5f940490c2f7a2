"""Ranked architecture suggestions for one run, learnt from the other runs.

:class:`Advisor` fits a :class:`~runwatch.nas.surrogate.Surrogate` on the
history, seeds the search with edits read off the run's findings
(:mod:`runwatch.nas.seeding`), searches the space around the run's
architecture (:mod:`runwatch.nas.search`) and returns the best edits as
:class:`Suggestion` s: a diff against the run's architecture, the predicted
effect on the target metric with its uncertainty, the evidence from the logs
and the change in cost.

Predicted effect: the surrogate scores the run with the candidate
architecture and with its own (:meth:`Surrogate.model_stats`: the run's
hyperparameters and early logs on both sides) on its own scale (log for
losses, logit for accuracies and other metrics in [0, 1]:
:class:`~runwatch.nas.surrogate.TargetTransform`). For a finished run the
prediction is anchored to what the run actually reached, on that scale:
``z = z(candidate) + a * (T(observed) - z(current))`` (``a`` the share of a
run's miss that its setting's other runs share, cross-validated on the history:
:meth:`~runwatch.nas.surrogate.Surrogate.anchored`), and ``predicted =
T^-1(z)``; the 80 % interval is ``T^-1(z -/+ q * s)``, ``s`` the candidate's
uncertainty and ``q`` its calibration on the history's own cross-validated
errors (pairs of runs of one hyperparameter group, what an anchored edit
effect gets wrong: :meth:`Surrogate.calibration`), so a loss interval never
goes below zero and
an accuracy interval never above 1. ``delta = predicted - observed``.
``PredictedEffect.stddev`` is the smaller half-width of the interval / 1.2816
(``predicted ± 1.28 * stddev`` lies inside the interval, hence inside the
metric's range); ``lower`` / ``upper`` carry the interval itself, and an
evidence line states it. Without an observed outcome the prediction is the
surrogate's own: for a run still in progress ``delta`` is taken against the
surrogate's prediction for its current architecture; for a run that ended
with a non-finite target (diverged) there is no baseline value, ``delta`` is
NaN and the evidence says so. With fewer than ``SurrogateConfig.min_predict``
(8) runs with the target the advisor predicts nothing: every effect is NaN
and the evidence says "not enough history to predict (n=...)"; the edits are
then ranked by the run's findings and their size only.

Edits the surrogate cannot judge: a seed read off a strong finding (a
vanishing gradient in a run that did not train, :mod:`runwatch.nas.seeding`)
whose edit takes the architecture outside the history's support (LayerNorm or
residual connections in a history of plain MLPs, :class:`~runwatch.nas.prior.ArchSupport`)
is ranked by a prior instead of the surrogate: the median target of the
history runs of the same task, with their spread as the uncertainty
(:class:`~runwatch.nas.prior.OutcomePrior`). Its suggestion reports that
prior as the predicted value, and its evidence says that the surrogate has
not seen the edit and what the prior is. ``AdvisorConfig.prior_for_unsupported``
turns this off. Any other edit outside the history's support keeps the
surrogate's prediction, with its standard deviation widened by the task's
spread (``sqrt(std^2 + spread^2)``): with no run like it, the outcome could be
anywhere the task's outcomes are, and the risk-adjusted ranking should say so.

Runs the surrogate cannot explain: when a run did not train and the
surrogate's calibrated interval for the run as it is misses its outcome, or
its uncertainty there exceeds the task's spread, the strong finding's
whole-stack fixes lead whatever their score, in the finding's own order
(residual paths, normalization, activation, half the depth): the surrogate's
edit effects for such a run are extrapolations (it never sees a tiny
initialisation), and on a small history they swing with any change of the
history (``AdvisorConfig.findings_lead_when_unexplained``).

Transfer: the history's best architectures with the same input and output
sizes, rewritten as edits of the run's (:mod:`runwatch.nas.transfer`), are
candidates too (``AdvisorConfig.peer_candidates`` of them), scored by the
surrogate like every other candidate.

Divergence first: :meth:`Advisor.fit` also fits a
:class:`~runwatch.nas.risk.DivergenceRisk` on the same history (refitted with
the run added when the run diverged and the history lacks it, so the base
rate counts it). A run that diverged (non-finite loss or target, a
``nonfinite`` finding), that runwatch predicts will (``divergence_predicted``,
``exploding_gradient``), or whose predicted risk is at least 50 % gets the
stability fixes of :mod:`runwatch.nas.stability` first (learning rate,
warm-up, normalization, residual paths, initialisation, clipping), ranked by
the risk model's probability of divergence with the fix applied; other edits
follow. Each suggestion's evidence ends with the risk line
(``"divergence risk (logistic, 41 of 659 runs diverged): 12% -> 4%"``) when the
risk model is fitted; a history with too few diverged or healthy runs gives
only a base rate, the same for every run and edit, shown only for a run that
itself diverged (how many others did).

Learning first: a run whose training loss never left its start (final loss
at least 95 % of the initial one) and that shows no finding with a whole-stack
architecture fix gets the learning-rate fixes of :mod:`runwatch.nas.learning`
first (10x higher, then 10x lower), with what else to check: a wider net
trained the same way would not learn either.

Evidence: only history runs that did better than the run are cited (and
proposed) as peer architectures; peer statistics leave out diverged runs and
non-finite values and are cited only when they separate the run from its
peers on the side that supports the edit (:mod:`runwatch.nas.evidence`). On a
run that overfits (finding or peer rule), edits that cut capacity or add
regularisation (narrower, shallower, more dropout) rank above every other
edit. On a CNN, GRU/LSTM or transformer run with a capacity finding, the
family's first remedy (:func:`~runwatch.nas.seeding.family_remedies`: dropout
0.3 in an overfitting GRU/LSTM or transformer, one convolution fewer in an
overfitting CNN, the narrowest blocks widened in an underfitting net) ranks
above every other candidate, when the constraints and the guard let it
through.

Empty answers: when no edit survives the constraints, :meth:`Advisor.suggest`
raises :class:`NoSuggestionError` naming the constraint and the smallest
candidate ("constraints.max_params: no edit fits the 1,000-parameter budget;
the smallest candidate within the search space has 4,810 parameters (...)").

Latency constraint: a FLOPs-based proxy, ``latency_ms = flops / flops_per_ms +
layer_overhead_ms * layers`` for one example (``layers`` = weight layers and
normalizations). The defaults (1e7 FLOPs per ms, 0.006 ms per layer) fit
batch-1 CPU inference of MLPs with one thread of torch 2.13 on the
development machine (64->64->10: 0.016 ms measured, 0.013 predicted; 64->2048x3->10:
1.76 ms measured, 1.73 predicted); set them for your hardware.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

import numpy as np

from runwatch.nas.architecture import Change, Genome
from runwatch.nas.evidence import PeerSummary, run_summary
from runwatch.nas.features import architecture_features
from runwatch.nas.guards import EditGuard
from runwatch.nas.history import RunObservation
from runwatch.nas.learning import CHECKS, learning_evidence, learning_fixes
from runwatch.nas.portfolio import DEFAULT_POOL, batch_order
from runwatch.nas.prior import ArchSupport, OutcomePrior, PriorEstimate
from runwatch.nas.risk import DivergenceRisk, diverged
from runwatch.nas.search import (
    Candidate,
    CandidateScorer,
    SearchConfig,
    edit_cost_of,
    edit_directions,
    search_candidates,
)
from runwatch.nas.seeding import Seed, budget_seeds, run_findings, seed_genomes
from runwatch.nas.space import SearchSpace, width_choices
from runwatch.nas.stability import STABILITY_KINDS, StabilityFix, divergence_evidence, stability_fixes
from runwatch.nas.surrogate import Z80, Surrogate, SurrogateConfig, is_loss_like
from runwatch.nas.transfer import peer_architectures

__all__ = [
    "Advisor",
    "AdvisorConfig",
    "Constraints",
    "NoArchitectureError",
    "NoSuggestionError",
    "PredictedEffect",
    "Suggestion",
    "estimated_latency_ms",
    "infer_direction",
]

_MAXIMIZE_TOKENS = ("acc", "auc", "f1", "precision", "recall", "bleu", "rouge", "iou", "r2", "reward", "return")


class NoArchitectureError(ValueError):
    """The run has no architecture record, so there is nothing to edit."""


class NoSuggestionError(ValueError):
    """No edit survives the constraints; the message names the constraint and the smallest candidate.

    ``field`` is the constraint that excluded every edit (``"constraints.max_params"``,
    ``"constraints.max_latency_ms"``, or ``""`` when the run's findings or the
    search space did).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def infer_direction(metric: str) -> str:
    """``"maximize"`` for accuracy-like names, ``"minimize"`` otherwise (losses, errors, unknown names).

    Examples
    --------
    >>> infer_direction("val/loss"), infer_direction("val/acc"), infer_direction("val/top1_accuracy")
    ('minimize', 'maximize', 'maximize')
    """
    if is_loss_like(metric):
        return "minimize"
    low = metric.lower()
    return "maximize" if any(t in low for t in _MAXIMIZE_TOKENS) else "minimize"


def estimated_latency_ms(genome: Genome, flops_per_ms: float = 1e7, layer_overhead_ms: float = 0.006) -> float:
    """Batch-1 inference latency proxy (see the module docstring for where the defaults come from).

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> round(estimated_latency_ms(Genome(64, 10, (Block("fc1", "linear", 64, "relu"),))), 4)
    0.0129
    """
    layers = len(genome.blocks) + 1 + sum(1 for b in genome.blocks if b.normalization)
    return genome.flops() / flops_per_ms + layer_overhead_ms * layers


@dataclass
class Constraints:
    """Limits a suggestion must respect (0 = no limit); ``num_suggestions`` 0 means 3."""

    max_params: int = 0
    max_latency_ms: float = 0.0
    num_suggestions: int = 3


@dataclass(frozen=True)
class PredictedEffect:
    """Predicted value of the target metric after the change, its change against the run, and its uncertainty.

    ``predicted`` is the median prediction; ``lower`` / ``upper`` the ``level``
    (80 %) interval, computed on the surrogate's scale and mapped back (inside
    the metric's range); ``stddev`` the smaller half-width / 1.2816, so that
    ``predicted ± 1.28 * stddev`` stays inside the interval. ``delta`` is NaN
    when the run has no baseline value (it diverged, never logged the metric or has not finished); every field but
    ``metric`` is NaN when the history is too small to predict.

    Examples
    --------
    >>> e = PredictedEffect("val/acc", 0.93, 0.01, 0.01, lower=0.90, upper=0.95)
    >>> e.interval()
    '80% interval 0.9–0.95'
    """

    metric: str
    predicted: float
    delta: float
    stddev: float
    lower: float = math.nan
    upper: float = math.nan
    level: float = 0.8

    def interval(self) -> str:
        """The interval as text ("80% interval 0.9–0.95"); "" when there is none."""
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            return ""
        return f"{100 * self.level:.0f}% interval {_fmt(self.lower)}–{_fmt(self.upper)}"


@dataclass(frozen=True)
class Suggestion:
    """One ranked suggestion (rank 1 = best): the edited genome, its diff, effect, evidence and cost change.

    ``hyperparameters`` holds the training settings the suggestion changes
    (a stability fix: ``{"lr": 0.15}``); empty for architecture edits.
    """

    rank: int
    genome: Genome
    changes: list[Change]
    effect: PredictedEffect
    evidence: list[str]
    params_delta: int
    flops_delta: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdvisorConfig:
    """Settings of :class:`Advisor` (JSON round trip through ``to_dict``/``from_dict``).

    Attributes
    ----------
    target_metric
        Metric to improve, read from ``RunObservation.outcome``.
    direction
        ``"minimize"``, ``"maximize"`` or ``""`` to infer it from the name
        (:func:`infer_direction`).
    seed
        Seeds the surrogate and the search: same seed, same suggestions.
    risk_aversion
        Weight of the standard deviation in the search objective and ranking,
        on the surrogate's scale (``z + risk_aversion * s`` when minimizing;
        log for a loss, logit for an accuracy).
    parsimony
        Ranking cost per single edit, as a fraction of the run's predicted
        value, taken on the surrogate's scale (on a log scale: 1 % of any
        candidate's prediction; see :func:`~runwatch.nas.search.search_candidates`).
    tpe_trials, evolution_population, evolution_cycles, use_nni
        Search budget (see :class:`~runwatch.nas.search.SearchConfig`).
    anchor_to_observed
        Report ``observed + delta`` as the predicted value for finished runs.
    flops_per_ms, layer_overhead_ms
        The latency proxy (:func:`estimated_latency_ms`).
    surrogate
        Surrogate settings (its ``seed`` is overridden by ``seed``).
    seeding
        Seed the search with the edits read off the run's findings
        (:mod:`runwatch.nas.seeding`); ``False`` leaves the surrogate and the
        search alone (the edit guard and the seeds that meet a parameter or
        latency budget stay: they are constraints, not advice).
    peer_candidates
        How many of the history's best architectures with the run's input and
        output sizes join the candidates (:mod:`runwatch.nas.transfer`); 0 = none.
    exhaustive_limit
        Score every genome of the search space when it has at most this many
        parameter sets (:func:`~runwatch.nas.choices.all_genomes`); 0 = never.
    prior_for_unsupported
        Rank a strong finding's seeds whose edit the history never saw by the
        task's prior instead of the surrogate (module docstring); other such
        edits keep the surrogate's mean with a widened uncertainty either way.
    findings_lead_when_unexplained
        Put a strong finding's seeds (the whole-stack fixes of a run that did
        not train) first when the surrogate cannot explain the run as it is:
        its outcome lies outside the surrogate's calibrated interval for the
        run's own architecture, or the surrogate's uncertainty there exceeds
        the spread of the task's outcomes. Its edit effects for such a run are
        extrapolations (a tiny initialisation is not a feature it sees).
    portfolio_pool
        When the surrogate's ranking orders the edits (no finding puts its own
        fixes first), the suggestions are a list to try together
        (:func:`~runwatch.nas.portfolio.batch_order`): the best-ranked edit,
        then each time the one of the ``portfolio_pool`` best-ranked that most
        lowers the surrogate members' expected best outcome of the list. 0 =
        the best-ranked edit of each edit idea instead (one of dropout 0.2 and
        0.3 on fc1), as when a finding's fixes lead.

    Examples
    --------
    >>> import json
    >>> cfg = AdvisorConfig(target_metric="val/acc", tpe_trials=4)
    >>> AdvisorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg, cfg.resolved_direction()
    (True, 'maximize')
    """

    target_metric: str = "val/loss"
    direction: str = ""
    seed: int = 0
    risk_aversion: float = 0.5
    parsimony: float = 0.01
    tpe_trials: int = 24
    evolution_population: int = 8
    evolution_cycles: int = 24
    use_nni: bool = True
    anchor_to_observed: bool = True
    flops_per_ms: float = 1e7
    layer_overhead_ms: float = 0.006
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    seeding: bool = True
    peer_candidates: int = 10
    prior_for_unsupported: bool = True
    findings_lead_when_unexplained: bool = True
    exhaustive_limit: int = 2048
    portfolio_pool: int = DEFAULT_POOL

    def resolved_direction(self) -> str:
        if self.direction not in ("", "minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize', 'maximize' or '' (infer), got {self.direction!r}")
        return self.direction or infer_direction(self.target_metric)

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            tpe_trials=self.tpe_trials,
            evolution_population=self.evolution_population,
            evolution_cycles=self.evolution_cycles,
            risk_aversion=self.risk_aversion,
            parsimony=self.parsimony,
            seed=self.seed,
            use_nni=self.use_nni,
            exhaustive_limit=self.exhaustive_limit,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdvisorConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        if isinstance(values.get("surrogate"), Mapping):
            values["surrogate"] = SurrogateConfig.from_dict(values["surrogate"])
        return cls(**values)


# Which end-of-run numbers back up which kind of edit (see evidence.SUMMARY_LABELS), and on which side of the
# peers the run must lie for the number to be a reason for it.
_SMALLER = {"rel_gap": "above", "gap": "above", "params": "above"}
_BIGGER = {"final_train_loss": "above", "params": "below"}
_GRADIENTS = {"min_layer_grad_norm": "below", "max_grad_norm": "above"}
_ACTIVATIONS = {"max_dead_frac": "above", "max_sat_frac": "above", "min_layer_grad_norm": "below"}


def _evidence_keys(change: Change) -> dict[str, str]:
    if change.attribute in ("width", "depth", "dropout"):
        try:
            grows = float(change.after) > float(change.before)
        except ValueError:
            grows = False
        if change.attribute == "dropout":
            grows = not grows  # more dropout = less capacity
        return _BIGGER if grows else _SMALLER
    if change.attribute in ("normalization", "residual"):
        return _GRADIENTS
    if change.attribute == "activation":
        return _ACTIVATIONS
    return {}


# Edits that act on an overfitting run: less capacity or more regularisation.
_REGULARISING = {("width", "down"), ("depth", "down"), ("layers", "down"), ("dropout", "up")}


def _regularises(base: Genome, genome: Genome) -> bool:
    """Whether ``genome`` cuts ``base``'s capacity or adds regularisation somewhere (narrower, shallower, dropout)."""
    return any((attribute, way) in _REGULARISING for _, attribute, way in edit_directions(base, genome))


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def _pct(p: float) -> str:
    """A probability as a percentage: whole percents, one decimal under 1 %."""
    return f"{100 * p:.1f}%" if p < 0.01 else f"{100 * p:.0f}%"


def _reading_note(
    metric: str, direction: str, observed: float, current: float, edited: float, effect: PredictedEffect
) -> str:
    """What the change against the observed value does not say, when it and the surrogate's own edit effect part.

    The prediction is only partly anchored on what the run reached (``Surrogate.anchored``), so where the surrogate
    misreads the run, the change against the observed value carries that misreading. ""
    when there is nothing to add.

    >>> e = PredictedEffect("val/loss", 1.03, 0.67, 0.2, 0.6, 1.8, 0.8)
    >>> _reading_note("val/loss", "minimize", 0.36, 1.389, 0.7047, e)
    "no gain over this run is expected: the edit improves on the surrogate's reading of this run (1.389 -> 0.7047), but the run reached 0.36, better than that reading, and the edited run's prediction, 1.03, is worse than it"
    """
    values = (observed, current, edited, effect.predicted, effect.delta)
    if not all(math.isfinite(v) for v in values):
        return ""
    better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
    gains_on_run = better(effect.predicted, observed)
    gains_on_reading = better(edited, current)
    if not gains_on_run and gains_on_reading:
        return (
            f"no gain over this run is expected: the edit improves on the surrogate's reading of this run "
            f"({_fmt(current)} -> {_fmt(edited)}), but the run reached {_fmt(observed)}, better than that reading, and "
            f"the edited run's prediction, {_fmt(effect.predicted)}, is worse than it"
        )
    if not gains_on_run:
        return (
            f"no gain over this run is expected: the edited run's prediction, {_fmt(effect.predicted)}, is worse "
            f"than the {_fmt(observed)} it reached"
        )
    if not gains_on_reading:
        return (
            f"the gain is not the edit's: the surrogate reads this run at {_fmt(current)}, better than the "
            f"{_fmt(observed)} it reached, and the edit at {_fmt(edited)}, no better; the predicted {metric} is "
            "that reading, not an effect of the edit"
        )
    return ""


def _so_far(comparison: str) -> str:
    """A peer comparison of a run that has not finished: its numbers are the latest, not final.

    >>> _so_far("final train loss 1.86 vs peers' median 0.218 (n=10)")
    "latest train loss 1.86 vs peers' median 0.218 (n=10) (so far: the run has not finished)"
    """
    return f"{comparison.replace('final ', 'latest ', 1)} (so far: the run has not finished)"


def _no_baseline(run: RunObservation, metric: str, observed: float) -> str:
    """Why no change is given for ``run``: what its ``metric`` is, or why it has none to compare with.

    >>> import numpy as np
    >>> s = np.arange(3)
    >>> nan_loss = RunObservation("r", None, series={"val/acc": (s, np.array([0.1, 0.09, 0.09]))},
    ...                           outcome={"loss": float("nan"), "val/acc": float("nan")})
    >>> _no_baseline(nan_loss, "val/acc", float("nan"))
    "no change is given: this run's loss ended nan, so its final model has no val/acc to compare with (the last val/acc logged before, 0.09, is not it)"
    >>> _no_baseline(RunObservation("q", None), "val/acc", float("nan"))
    'no change is given: this run has no val/acc of its own (never logged, or not finished), so there is no baseline'
    """
    prefix = "no change is given: this run"
    values = np.asarray(run.series[metric][1], dtype=float) if metric in run.series else np.zeros(0)
    loss = run.outcome.get("loss", math.nan)
    if metric in run.outcome and values.size and math.isfinite(values[-1]) and not math.isfinite(loss):
        # observations.py gives a run whose loss ended non-finite no outcome at all: its final model is broken
        return (
            f"{prefix}'s loss ended {loss}, so its final model has no {metric} to compare with "
            f"(the last {metric} logged before, {_fmt(float(values[-1]))}, is not it)"
        )
    if metric not in run.outcome:
        return f"{prefix} has no {metric} of its own (never logged, or not finished), so there is no baseline"
    return f"{prefix}'s {metric} is {observed}, so there is no baseline value to compare with"


def _smallest_candidate(base: Genome, space: SearchSpace) -> Genome:
    """The smallest genome (fewest parameters) the space allows within ``max_changes`` edits, built greedily.

    Remove as many blocks as the space allows in one edit budget, then give
    the widest remaining blocks their smallest allowed width, one edit each.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(64, 10, (Block("fc1", "linear", 512, "relu"), Block("fc2", "linear", 512, "relu")))
    >>> _smallest_candidate(g, SearchSpace(max_changes=3)).key()
    '64>linear256.relu>10'
    """
    from runwatch.nas.space import remove_blocks, within

    best = base
    budget = space.max_changes
    shrink = [d for d in space.depth_changes if d < 0]
    options = [0]
    if shrink:
        options += list(range(1, min(budget, base.depth - 1) + 1))
    for removed in options:
        g = remove_blocks(base, base.depth - removed, removed) if removed else base
        left = budget - removed
        order = sorted(range(g.depth), key=lambda i: -g.blocks[i].width)
        for i in order[:left]:
            smallest = min(width_choices(g.blocks[i], space, g))
            trial = g.replace_block(i, width=smallest)
            if not trial.validate():
                g = trial
        if g != base and not g.validate() and within(g, base, space) and g.params() < best.params():
            best = g
    return best


def redundant_pair(
    chosen: Sequence[tuple[frozenset, float]], shape: frozenset, mean: float, current: float, direction: str
) -> str | int | None:
    """Whether a candidate only repeats a chosen suggestion with edits the prediction does not reward.

    ``chosen`` are the suggestions so far as (edit shape, predicted mean); ``shape`` and ``mean`` the candidate's;
    ``current`` the prediction for the unchanged run. Returns ``"longer"`` when the candidate adds edits to a
    chosen one and is predicted no better than it (within 1 % of that one's gain over ``current``), the index of a
    chosen suggestion that adds edits to the candidate and is predicted no better than it (to be replaced), else
    None.

    >>> wider = frozenset({("fc1", "width", "up")})
    >>> wider_dropout = wider | {("fc1", "dropout", "up")}
    >>> redundant_pair([(wider, 0.80)], wider_dropout, 0.80, 1.0, "minimize")
    'longer'
    >>> redundant_pair([(wider, 0.80)], wider_dropout, 0.70, 1.0, "minimize") is None
    True
    >>> redundant_pair([(wider_dropout, 0.80)], wider, 0.80, 1.0, "minimize")
    0
    """
    sign = 1.0 if direction == "minimize" else -1.0
    for i, (other, other_mean) in enumerate(chosen):
        if not (math.isfinite(mean) and math.isfinite(other_mean)):
            continue
        if other < shape:
            tol = 0.01 * abs(current - other_mean) if math.isfinite(current) else 0.0
            if sign * (mean - other_mean) >= -tol:
                return "longer"
        elif shape < other:
            tol = 0.01 * abs(current - mean) if math.isfinite(current) else 0.0
            if sign * (other_mean - mean) >= -tol:
                return i
    return None


def _feature_view(genome: Genome) -> tuple:
    """What the surrogate sees of ``genome``: two genomes with one view are the same candidate to it."""
    return tuple(sorted((k, round(v, 9)) for k, v in architecture_features(genome).items()))


def _over_budget(genome: Genome, constraints: Constraints, cfg: AdvisorConfig) -> str:
    """Why ``genome`` breaks the constraints ("" when it does not)."""
    reasons = []
    if constraints.max_params and genome.params() > constraints.max_params:
        reasons.append(f"parameters {genome.params():,} over the limit {constraints.max_params:,}")
    latency = estimated_latency_ms(genome, cfg.flops_per_ms, cfg.layer_overhead_ms)
    if constraints.max_latency_ms and latency > constraints.max_latency_ms:
        reasons.append(f"estimated latency {latency:.3g} ms over the limit {constraints.max_latency_ms:.3g} ms")
    return "; ".join(reasons)


class Advisor:
    """Suggests architecture edits for a run from its findings and from what worked for other runs.

    Parameters
    ----------
    config
        Target metric, search budget, seed, latency proxy; see :class:`AdvisorConfig`.

    Examples
    --------
    >>> import numpy as np
    >>> from runwatch.nas.architecture import Block, Genome
    >>> def run(i, width):
    ...     g = Genome(64, 10, (Block("fc1", "linear", width, "relu"),))
    ...     return RunObservation(f"r{i}", g, outcome={"val/loss": 0.1 + abs(np.log2(width / 64)) / 10})
    >>> history = [run(i, w) for i, w in enumerate([16, 32, 64, 128, 256, 512] * 4)]
    >>> advisor = Advisor(AdvisorConfig(use_nni=False)).fit(history)
    >>> best = advisor.suggest(run(99, 256), Constraints(num_suggestions=1))[0]
    >>> best.changes[0].description, best.effect.delta < 0, best.effect.lower < best.effect.predicted < best.effect.upper
    ('fc1 (Linear 64→256): 256 -> 128 units', True, True)
    """

    def __init__(self, config: AdvisorConfig | None = None) -> None:
        self.config = config or AdvisorConfig()
        self.surrogate: Surrogate | None = None
        self.peers = PeerSummary()
        self.support = ArchSupport()
        self.prior = OutcomePrior(self.config.target_metric)
        self.risk = DivergenceRisk()
        self.history: list[RunObservation] = []

    def fit(self, history: Sequence[RunObservation]) -> Self:
        """Learn from other runs: the surrogate from those with a target outcome, the peer statistics from all.

        Also fits the divergence risk (:class:`~runwatch.nas.risk.DivergenceRisk`) on the same history: it
        ranks the stability fixes of a run that diverged and adds one evidence line to every suggestion.
        """
        cfg = self.config
        cfg.resolved_direction()  # fail early on a bad direction
        sur_cfg = SurrogateConfig.from_dict({**cfg.surrogate.to_dict(), "seed": cfg.seed})
        self.surrogate = Surrogate(sur_cfg).fit(history, cfg.target_metric)
        self.peers = PeerSummary.from_history(history)
        self.support = ArchSupport.from_history(history)
        self.prior = OutcomePrior.from_history(history, cfg.target_metric)
        self.risk = DivergenceRisk().fit(history)
        self.history = list(history)
        return self

    def suggest(
        self, run: RunObservation, constraints: Constraints | None = None, space: SearchSpace | None = None
    ) -> list[Suggestion]:
        """Ranked edits of ``run``'s architecture (and, for a run that diverged, of its training), best first.

        Parameters
        ----------
        run
            The run to improve.
        constraints
            Parameter / latency limits and how many suggestions to return.
        space
            Edits allowed; defaults to :class:`SearchSpace`.

        Returns
        -------
        list[Suggestion]
            At most ``num_suggestions``. A run that diverged or is predicted
            to gets the stability fixes first (module docstring), ranked by
            the divergence-risk model; a run whose loss never left its
            start gets the learning-rate fixes first. The other edits are ranked by the
            risk-adjusted prediction on the surrogate's scale (``z +
            risk_aversion * s`` when minimizing; log for a loss) plus the
            parsimony cost per edit (1 % of the prediction); on an
            overfitting run the edits that cut capacity or add dropout come
            first; on a run that did not train and that the surrogate
            cannot explain, a strong finding's whole-stack fixes come first
            (module docstring). Where the surrogate's ranking orders the edits,
            the list is one to try together (``portfolio_pool``,
            :mod:`runwatch.nas.portfolio`): the best-ranked edit, then the edits
            most likely to beat it where it fails; where a finding's fixes lead,
            only the best of each edit idea (the same attributes of
            the same layers changed in the same direction: dropout 0.2 and 0.3
            on fc1 are one idea, fc1 wider and fc1 narrower two) is shown.
            Edits the surrogate cannot tell apart are shown once. When nothing is
            predicted to help, the least harmful edits are still returned:
            check ``effect.delta``. A run over its budget is also seeded with
            smaller versions of itself (:func:`~runwatch.nas.seeding.budget_seeds`).

        Raises
        ------
        NoArchitectureError
            (a ``ValueError``) when ``run.genome`` is ``None``.
        NoSuggestionError
            (a ``ValueError``) when no edit survives the constraints; the
            message names the constraint and the smallest candidate.
        RuntimeError
            When :meth:`fit` was not called.

        Examples
        --------
        >>> from runwatch.nas.architecture import Block, Genome
        >>> g = Genome(64, 10, (Block("fc1", "linear", 256, "relu"),))
        >>> hist = [RunObservation(f"r{i}", g, outcome={"val/loss": 0.3 + 0.01 * i}) for i in range(10)]
        >>> try:
        ...     Advisor(AdvisorConfig(use_nni=False)).fit(hist).suggest(hist[0], Constraints(max_params=1000))
        ... except NoSuggestionError as e:
        ...     print(e)
        constraints.max_params: no edit fits the 1,000-parameter budget: the smallest candidate within the search space has 9,610 parameters (fc1 (Linear 64→256): 256 -> 128 units; the run has 19,210)
        """
        if run.genome is None:
            raise NoArchitectureError(
                f"run {run.run_id} has no architecture record: start it with the model "
                "(runwatch.client init/start_run(model=...)) so runwatch can describe its layers"
            )
        if self.surrogate is None:
            raise RuntimeError("Advisor.fit(history) must be called before suggest()")
        cfg = self.config
        constraints = constraints or Constraints()
        space = space or SearchSpace()
        limit = constraints.num_suggestions or 3
        base = run.genome
        surrogate = self.surrogate
        direction = cfg.resolved_direction()
        peers = self.peers.without(run.run_id)
        risk = self.risk.with_run(run)
        kinds = {f.kind for f in run_findings(run, peers)}
        observed = run.outcome.get(cfg.target_metric, math.nan)
        seeds = seed_genomes(run, space, peers) if cfg.seeding else []
        over = _over_budget(base, constraints, cfg)
        if over:
            seeds += budget_seeds(base, space, over, first_priority=len(seeds))

        def score(genomes: Sequence[Genome]):
            return surrogate.score(run, genomes)

        guard = EditGuard.for_run(run, peers)
        rejected = {"budget": 0, "guard": 0}

        def accept(g: Genome) -> bool:
            if _over_budget(g, constraints, cfg):
                rejected["budget"] += 1
                return False
            if not guard.allows(base, g):
                rejected["guard"] += 1
                return False
            return True

        search_cfg = cfg.search_config()
        if surrogate.mode == "prior":
            search_cfg.use_nni = False  # a constant objective: nothing for a tuner to learn
        extra = []
        if cfg.peer_candidates > 0:
            history = [o for o in self.history if o.run_id != run.run_id]
            better = observed if math.isfinite(observed) else None
            for p in peer_architectures(
                base, history, cfg.target_metric, space, cfg.peer_candidates, direction, accept, better_than=better
            ):
                extra.append((p.genome, "peer", (p.evidence(cfg.target_metric, better),)))
        to_model = surrogate.transform.to_model if surrogate.can_predict else None
        candidates = search_candidates(base, space, score, seeds, search_cfg, direction, accept, extra, to_model)
        cur_mean = float(score([base])[0][0])
        candidates, notes = self._judge_unseen_edits(run, candidates, seeds, cur_mean, observed, search_cfg.parsimony)
        strong = {s.genome.key(): s.priority for s in seeds if s.strong}
        findings_lead = False  # a finding's fixes, not the surrogate's ranking, order the candidates
        if strong and cfg.findings_lead_when_unexplained and self._surrogate_lost(run, observed):
            # A run that did not train for a reason the surrogate cannot see: the finding's whole-stack fixes lead, in
            # the finding's own order (the surrogate's effects for such a run are extrapolations, its ranking too).
            candidates = sorted(candidates, key=lambda c: strong.get(c.genome.key(), math.inf))
            findings_lead = True
        if "overfitting" in kinds:  # capacity and regularisation fixes first, each group in its own order
            candidates = sorted(candidates, key=lambda c: not _regularises(base, c.genome))
            findings_lead = True
        first = {s.genome.key() for s in seeds if s.first}
        if first:  # a non-MLP family's first remedy for its capacity finding (seeding.family_remedies) leads
            candidates = sorted(candidates, key=lambda c: c.genome.key() not in first)
            findings_lead = True
        summary = run_summary(run)

        stability: list[StabilityFix] = []
        p_run = float(risk.predict(run.hyperparameters, [base])[0]) if risk.mode != "unfitted" else math.nan
        if self._needs_stability(run, kinds, risk, p_run):
            stability = self._rank_stability(run, space, risk, accept)
        # A loss that never left its start: the learning rate before any capacity edit (runwatch.nas.learning).
        not_learning = "" if stability else learning_evidence(run, kinds)
        learning = [f for f in learning_fixes(run) if accept(f.genome)] if not_learning else []
        fixes = stability or learning

        chosen: list[Candidate] = []
        seen: set[object] = set()
        for fix in fixes:
            seen.add(edit_directions(base, fix.genome) if fix.genome != base else ("hp", fix.rule))
            seen.add(fix.genome.key() if fix.genome != base else ("hp", fix.rule))
        room = max(0, limit - len(fixes))
        shapes: list[frozenset] = []
        if room and cfg.portfolio_pool > 0 and not findings_lead and surrogate.can_predict:
            chosen = self._portfolio(run, candidates, seen, room, direction)
            candidates = []
        for c in candidates if room else ():
            # One suggestion per edit idea (which attributes of which layers change, which way: dropout 0.2 and 0.3
            # on fc1 are variants of one idea) and per surrogate view (dropout on fc1 or on fc2 of equal blocks).
            shape = edit_directions(base, c.genome)
            view = _feature_view(c.genome)
            if shape in seen or view in seen or c.genome.key() in seen:
                continue
            seen.update((shape, view))
            # A change the prediction does not reward is no idea of its own: of two suggestions where one adds
            # edits to the other, the longer one is listed only when it is predicted better.
            pair = redundant_pair([(shp, ch.mean) for shp, ch in zip(shapes, chosen)], shape, c.mean, cur_mean, direction)
            if pair == "longer":
                continue
            if isinstance(pair, int):
                chosen[pair], shapes[pair] = c, shape
                continue
            chosen.append(c)
            shapes.append(shape)
            if len(chosen) == room:
                break
        suggestions = [self._stability_suggestion(fix, run, risk) for fix in stability[:limit]]
        suggestions += [self._learning_suggestion(fix, run, not_learning) for fix in learning[:limit]]
        suggestions += [self._suggestion(c, run, observed, summary, peers, notes.get(c.genome.key())) for c in chosen]
        if not suggestions:
            raise self._nothing_fits(base, space, constraints, rejected)
        if risk.mode == "logistic" or risk.includes:
            # One line per suggestion, P(diverge) of the run as it was -> with the suggestion applied. A base
            # rate is the same number for every run and edit ("40% -> 40%"): no reason for any of them, but on
            # a run that diverged it says how many others did ("1 of 10 runs diverged, this run among them").
            variants = [(s.genome, {**run.hyperparameters, **s.hyperparameters}) for s in suggestions]
            p = risk.predict_variants(variants)
            for s, q in zip(suggestions, p, strict=True):
                s.evidence.append(f"{risk.describe()}: {_pct(p_run)} -> {_pct(float(q))}")
        return [dataclasses.replace(s, rank=i) for i, s in enumerate(suggestions, start=1)]

    def _portfolio(
        self, run: RunObservation, candidates: Sequence[Candidate], seen: set[object], room: int, direction: str
    ) -> list[Candidate]:
        """``room`` of ``candidates`` (ranked best first) to try together (:func:`~runwatch.nas.portfolio.batch_order`).

        Candidates the surrogate cannot tell apart (the same architecture features) count once, the best-ranked.
        """
        surrogate = self.surrogate
        assert surrogate is not None
        pool: list[Candidate] = []
        views: set[tuple] = set()
        for c in candidates:
            view = _feature_view(c.genome)
            if view in views or view in seen or c.genome.key() in seen:
                continue
            views.add(view)
            pool.append(c)
            if len(pool) == self.config.portfolio_pool:
                break
        if len(pool) <= 1:
            return pool[:room]
        members = surrogate.members(surrogate.variant_rows(run, [c.genome for c in pool]))
        sign = 1.0 if direction == "minimize" else -1.0
        order = batch_order(np.arange(len(pool), dtype=float), sign * members, room, len(pool))
        return [pool[i] for i in order]

    def _surrogate_lost(self, run: RunObservation, observed: float) -> bool:
        """The surrogate cannot explain the run as it is, so its edit effects for it are extrapolations.

        Either the observed outcome lies outside the surrogate's calibrated
        interval for the run's own architecture, or the surrogate's
        uncertainty there exceeds the spread of the task's outcomes (it knows
        less about this run than the task's median does).
        """
        s = self.surrogate
        assert s is not None and run.genome is not None
        if not s.can_predict or not math.isfinite(observed):
            return False
        centre, spread = s.model_stats(s.variant_rows_hp(run, [(run.genome, run.hyperparameters)]))
        uncertainty = float(spread[0])
        miss = abs(float(s.transform.forward(observed)) - float(centre[0]))
        if miss > s.calibration(anchored=False) * uncertainty:
            return True
        estimate = self.prior.estimate(run)
        return estimate is not None and uncertainty > s.transform.to_model(estimate.mean, estimate.std)[1]

    def _needs_stability(self, run: RunObservation, kinds: set[str], risk: DivergenceRisk, p_run: float) -> bool:
        """Stability first: the run diverged; or it has no final outcome yet and is predicted to diverge.

        A finished run with a finite outcome did not diverge, whatever was predicted on the way.
        """
        if diverged(run):
            return True
        if math.isfinite(run.outcome.get(self.config.target_metric, math.nan)):
            return False
        return bool(kinds & set(STABILITY_KINDS)) or (risk.mode == "logistic" and p_run >= 0.5)

    def _rank_stability(
        self, run: RunObservation, space: SearchSpace, risk: DivergenceRisk, accept: Any
    ) -> list[StabilityFix]:
        """The stability fixes the constraints allow, lowest predicted P(diverge) first, rule order on ties."""
        assert run.genome is not None
        # A hyperparameter fix keeps the run's genome: no edit for the guard to ban, but the budget still applies.
        fixes = [f for f in stability_fixes(run, space) if accept(f.genome)]
        if not fixes:
            return []
        p = risk.predict_variants([(f.genome, f.hyperparameters) for f in fixes])
        p_run = float(risk.predict(run.hyperparameters, [run.genome])[0])
        ranked = []
        for f, q in zip(fixes, p, strict=True):
            # A fix the model has never seen (no history run logs that hyperparameter) keeps the run's own risk.
            judged = risk.mode == "logistic" and (not f.changed or risk.judges(f.changed))
            ranked.append((round(float(q), 3) if judged else round(p_run, 3), f.priority, f, judged))
        ranked.sort(key=lambda t: (t[0], t[1]))
        return [dataclasses.replace(f, judged={"p": q, "judged": judged}) for q, _, f, judged in ranked]

    def _effect(
        self, run: RunObservation, genome: Genome, hyperparameters: Mapping[str, Any] | None = None, widen: float = 0.0
    ) -> tuple[PredictedEffect, list[str]]:
        """The predicted effect of training ``run`` with ``genome`` (and ``hyperparameters``), and what to say of it.

        ``widen`` adds that much model-scale spread (the task's, for an edit the history never saw) in quadrature.
        """
        cfg = self.config
        s = self.surrogate
        assert s is not None and run.genome is not None
        metric = cfg.target_metric
        observed = run.outcome.get(metric, math.nan)
        nan = math.nan
        no_baseline = _no_baseline(run, metric, observed)
        if not s.can_predict:
            note = (
                f"not enough history to predict {metric} (n={s.n_train} finished runs with it; at least "
                f"{max(3, s.config.min_predict)} are needed): ranked by the run's findings and the edit's size, "
                "with no predicted value"
            )
            notes = [no_baseline] if metric in run.outcome and not math.isfinite(observed) else []
            return PredictedEffect(metric, nan, nan, nan, nan, nan, s.config.interval), [*notes, note]
        hps = dict(run.hyperparameters if hyperparameters is None else hyperparameters)
        rows = s.variant_rows_hp(run, [(run.genome, run.hyperparameters), (genome, hps)])
        centre, spread = s.model_stats(rows)
        t = s.transform
        z_cur, z_new = float(centre[0]), float(centre[1])
        z_obs = float(t.forward(observed)) if math.isfinite(observed) else nan
        notes: list[str] = []
        anchored = cfg.anchor_to_observed and math.isfinite(z_obs)
        z = s.anchored(z_new, z_cur, z_obs) if anchored else z_new
        half = math.hypot(s.calibration(anchored=anchored) * float(spread[1]), Z80 * widen)
        predicted, lower, upper = (float(v) for v in t.inverse([z, z - half, z + half]))
        if math.isfinite(observed):
            delta = float(predicted - observed)
        else:  # no value of the run's own to compare with: the surrogate's guess for it is no baseline
            delta = nan
            notes.append(f"{no_baseline}; the prediction is for the edited run")
        stddev = min(predicted - lower, upper - predicted) / Z80
        effect = PredictedEffect(metric, predicted, delta, stddev, lower, upper, s.config.interval)
        notes.append(
            f"predicted {metric} {_fmt(predicted)}, {effect.interval()} (computed on the {t.describe()}, "
            f"calibrated on the history's errors for runs the model did not see)"
        )
        return effect, notes

    def _stability_suggestion(self, fix: StabilityFix, run: RunObservation, risk: DivergenceRisk) -> Suggestion:
        base = run.genome
        assert base is not None
        cfg = self.config
        effect, notes = self._effect(run, fix.genome, fix.hyperparameters)
        evidence = []
        why = divergence_evidence(run, cfg.target_metric)
        if not why:
            kinds = [d.kind for d in run.diagnoses if d.kind in STABILITY_KINDS]
            if kinds:
                d = next(d for d in run.diagnoses if d.kind in STABILITY_KINDS)
                why = f"{d.kind} at step {d.step}: the run is predicted to diverge"
            else:
                why = f"{risk.describe()}: this run's own risk is at least 50 %"
        evidence.append(f"stability first: {why}")
        evidence.append(f"{fix.reason}")
        if fix.judged.get("judged"):
            evidence.append(f"ranked by the divergence-risk model: P(diverge) {_pct(fix.judged['p'])} with this fix")
        elif risk.mode == "logistic":
            keys = ", ".join(fix.changed) or fix.rule
            evidence.append(
                f"the divergence-risk model cannot judge this fix (no history run logs {keys}): ranked after the "
                "fixes it can judge, by the usual order of remedies"
            )
        else:
            evidence.append("too few diverged runs for a risk model: the fixes follow the usual order of remedies")
        return self._fix_suggestion(fix, run, effect, evidence + notes)

    def _learning_suggestion(self, fix: StabilityFix, run: RunObservation, why: str) -> Suggestion:
        effect, notes = self._effect(run, fix.genome, fix.hyperparameters)
        evidence = [f"learning first: {why}", fix.reason]
        if fix.priority == 0:
            evidence.append(CHECKS)
        return self._fix_suggestion(fix, run, effect, evidence + notes)

    @staticmethod
    def _fix_suggestion(fix: StabilityFix, run: RunObservation, effect: PredictedEffect, evidence: list[str]) -> Suggestion:
        """A stability or learning fix as a suggestion: the fix's genome (the run's own for a hyperparameter fix)."""
        base = run.genome
        assert base is not None
        return Suggestion(
            rank=0,
            genome=fix.genome,
            changes=list(fix.changes),
            effect=effect,
            evidence=evidence,
            params_delta=fix.genome.params() - base.params(),
            flops_delta=fix.genome.flops() - base.flops(),
            hyperparameters=dict(fix.changed),
        )

    def _nothing_fits(
        self, base: Genome, space: SearchSpace, constraints: Constraints, rejected: Mapping[str, int]
    ) -> NoSuggestionError:
        """Why no edit is left: the constraint that excluded them, with the smallest candidate the space allows."""
        cfg = self.config
        small = _smallest_candidate(base, space)
        what = "; ".join(c.description for c in base.diff(small)) or "the run's own architecture"
        if constraints.max_params and small.params() > constraints.max_params:
            return NoSuggestionError(
                f"no edit fits the {constraints.max_params:,}-parameter budget: the smallest candidate within the "
                f"search space has {small.params():,} parameters ({what}; the run has {base.params():,})",
                "constraints.max_params",
            )
        latency = estimated_latency_ms(small, cfg.flops_per_ms, cfg.layer_overhead_ms)
        if constraints.max_latency_ms and latency > constraints.max_latency_ms:
            return NoSuggestionError(
                f"no edit fits the {constraints.max_latency_ms:.3g} ms latency budget: the smallest candidate within "
                f"the search space is estimated at {latency:.3g} ms ({what})",
                "constraints.max_latency_ms",
            )
        if rejected.get("guard"):
            return NoSuggestionError(
                f"every edit within the constraints works against the run's findings ({rejected['guard']} ruled "
                "out, e.g. widening an overfitting net); relax the constraints or the search space"
            )
        if rejected.get("budget"):
            return NoSuggestionError(
                f"{rejected['budget']} candidate edits were over the parameter or latency budget and no other edit "
                f"was found (smallest candidate: {small.params():,} parameters, {latency:.3g} ms)",
                "constraints.max_params" if constraints.max_params else "constraints.max_latency_ms",
            )
        return NoSuggestionError("the search space allows no edit of this architecture")

    def _judge_unseen_edits(
        self,
        run: RunObservation,
        candidates: list[Candidate],
        seeds: Sequence[Seed],
        current: float,
        observed: float,
        parsimony: float,
    ) -> tuple[list[Candidate], dict[str, tuple[list[str], float, float]]]:
        """Re-score the candidates whose edit the history never saw (module docstring), and re-sort.

        A strong seed's edit gets the task prior (mean and spread); any other
        such edit keeps the surrogate's mean with its uncertainty widened to at
        least the task's spread (what the outcome could be when nothing about
        the edit is known). Returns the re-sorted candidates and, per re-scored
        genome key, the evidence sentences and the surrogate's own mean and std.
        """
        assert run.genome is not None and self.surrogate is not None
        estimate = self.prior.estimate(run)
        if estimate is None or not math.isfinite(current):
            return candidates, {}
        cfg = self.config
        strong = {s.genome.key(): s for s in seeds if s.strong}
        log = self.surrogate.log_target and current > 0
        anchored = cfg.anchor_to_observed and math.isfinite(observed) and (observed > 0 or not log)
        # The prior is in target units; the candidates' means are on the surrogate's scale for this run, which the
        # suggestion anchors to the observed value. Convert so that the anchored prediction is the prior itself.
        if anchored:
            t = self.surrogate.transform
            z_prior, s_prior = t.to_model(estimate.mean, estimate.std)
            z_edit = self.surrogate.unanchored(z_prior, float(t.forward(current)), float(t.forward(observed)))
            prior_mean = float(t.inverse(z_edit))
            prior_std = s_prior / self.surrogate.edit_slope * float(t.slope(z_edit))
        else:
            prior_mean, prior_std = estimate.mean, estimate.std
        scorer = CandidateScorer(
            lambda gs: ([], []),
            cfg.resolved_direction(),
            cfg.risk_aversion,
            to_model=self.surrogate.transform.to_model if self.surrogate.can_predict else None,
        )
        edit_cost = edit_cost_of(current, 0.0, parsimony, scorer.to_model)
        notes: dict[str, tuple[list[str], float, float]] = {}
        out = []
        for c in candidates:
            unseen = self.support.unsupported(run.genome, c.genome)
            if not unseen:
                out.append(c)
                continue
            why = "the history has no run like this edit (" + "; ".join(unseen) + ")"
            seed = strong.get(c.genome.key())
            if seed is not None and cfg.prior_for_unsupported:
                mean, std, source = prior_mean, prior_std, "prior"
                ranked = f"ranked by the {seed.rule} rule's prior, not by the surrogate"
                texts = [f"{ranked}: {why}, so the surrogate cannot judge it", estimate.describe(cfg.target_metric)]
            else:
                mean, std, source = c.mean, math.hypot(c.std, prior_std), "unseen"
                widened = f"its uncertainty is widened by the spread of the {estimate.n} runs of {estimate.scope}"
                texts = [f"{why}: the surrogate extrapolates, so {widened}"]
            notes[c.genome.key()] = (texts, c.mean, c.std)
            objective = scorer.value(mean, std)
            # A prior does not tell how much of the net a fix should touch: each is one of the rule's whole-stack
            # fixes (one fix, whatever its edits), and equal priors follow the rule's order (seed priority).
            size = 1 if source == "prior" else c.extent
            out.append(
                dataclasses.replace(
                    c,
                    mean=mean,
                    std=std,
                    objective=objective,
                    sources=tuple(sorted({*c.sources, source})),
                    ranking=objective + edit_cost * size,
                )
            )
        out.sort(key=lambda c: (c.ranking, c.priority, c.genome.key()))
        return out, notes

    def _suggestion(
        self,
        c: Candidate,
        run: RunObservation,
        observed: float,
        summary: Mapping[str, float],
        peers: PeerSummary,
        prior_note: tuple[list[str], float, float] | None = None,
    ) -> Suggestion:
        cfg = self.config
        base = run.genome
        s = self.surrogate
        assert base is not None and s is not None
        estimate = self.prior.estimate(run) if prior_note is not None else None
        ranked_by_prior = "prior" in c.sources and estimate is not None
        if ranked_by_prior:
            effect, notes = self._prior_effect(estimate, observed)
        else:
            widen = self._task_spread(estimate) if prior_note is not None else 0.0
            effect, notes = self._effect(run, c.genome, widen=widen)
        changes = base.diff(c.genome)
        evidence = list(c.evidence)
        sides: dict[str, str] = {}
        for ch in changes:
            for k, side in _evidence_keys(ch).items():
                sides.setdefault(k, side)
        comparisons = peers.compare_all(list(sides), summary, sides)
        evidence += [e for e in comparisons if e not in evidence]
        if not run.outcome:  # still running: its numbers so far, against its peers' end-of-run ones
            evidence = [_so_far(e) if "peers'" in e else e for e in evidence]
        if prior_note is not None:
            texts = prior_note[0]
            evidence = texts + [e for e in evidence if e not in texts]
        evidence += notes
        if s.can_predict:
            current = float(s.score(run, [base])[0][0])
            edited = c.mean if prior_note is None else prior_note[1]
            anchored = (
                f", before anchoring to the observed {_fmt(observed)}"
                if cfg.anchor_to_observed and math.isfinite(observed)
                else ""
            )
            evidence.append(
                f"surrogate ({s.kind}, {s.n_train} runs with {cfg.target_metric}): {_fmt(current)} for this run's "
                f"architecture -> {_fmt(edited)} with the edit (its own predictions from this run's hyperparameters "
                f"and logs{anchored})" + (" (outside its data)" if prior_note is not None else "")
            )
            # The reading explains the surrogate's number; a prior's prediction is not the surrogate's.
            reading = "" if prior_note is not None else _reading_note(
                cfg.target_metric, cfg.resolved_direction(), observed, current, edited, effect
            )
            if reading:
                evidence.insert(len(evidence) - 1, reading)
        return Suggestion(
            rank=0,
            genome=c.genome,
            changes=changes,
            effect=effect,
            evidence=evidence,
            params_delta=c.genome.params() - base.params(),
            flops_delta=c.genome.flops() - base.flops(),
        )

    def _task_spread(self, estimate: PriorEstimate | None) -> float:
        """The spread of the task's outcomes on the surrogate's scale (IQR / 1.349); 0 when unknown."""
        if estimate is None or not estimate.values or self.surrogate is None:
            return 0.0
        z = self.surrogate.transform.forward(np.asarray(estimate.values, dtype=float))
        z = z[np.isfinite(z)]
        if z.size < 3:
            return 0.0
        q1, q3 = np.quantile(z, [0.25, 0.75])
        return float(q3 - q1) / 1.349

    def _prior_effect(self, estimate: PriorEstimate, observed: float) -> tuple[PredictedEffect, list[str]]:
        """The task prior as the predicted effect: the median of the task's runs and their 10–90 % range."""
        cfg = self.config
        level = self.surrogate.config.interval if self.surrogate is not None else 0.8
        values = np.asarray(estimate.values, dtype=float)
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        predicted = float(estimate.mean)  # the median, on the log scale for losses (what the ranking used)
        lower, upper = (float(v) for v in np.quantile(values, [lo_q, hi_q]))
        delta = float(predicted - observed) if math.isfinite(observed) else math.nan
        stddev = min(predicted - lower, upper - predicted) / Z80
        effect = PredictedEffect(cfg.target_metric, predicted, delta, stddev, lower, upper, level)
        notes = [
            (
                f"predicted {cfg.target_metric} {_fmt(predicted)}, {effect.interval()} (the prior: the range of the "
                f"{estimate.n} history runs of {estimate.scope})"
            )
        ]
        if not math.isfinite(observed):
            notes.insert(
                0,
                f"no change is given: this run's {cfg.target_metric} is {observed}, so there is no "
                "baseline value to compare with",
            )
        return effect, notes
