"""Ranked architecture suggestions for one run, learnt from the other runs.

:class:`Advisor` fits a :class:`~runwatch.nas.surrogate.Surrogate` on the
history, seeds the search with edits read off the run's findings
(:mod:`runwatch.nas.seeding`), searches the space around the run's
architecture (:mod:`runwatch.nas.search`) and returns the best edits as
:class:`Suggestion` s: a diff against the run's architecture, the predicted
effect on the target metric with its uncertainty, the evidence from the logs
and the change in cost.

Predicted effect: the surrogate scores the run with the candidate
architecture and with its own (:meth:`Surrogate.score`: the run's
hyperparameters and early logs on both sides), ``delta = predicted(candidate)
- predicted(current)``. For a finished run the prediction is anchored to what
the run actually reached: ``predicted = observed + delta``, with the delta
taken on the surrogate's scale -- for losses (fitted on a log scale) that is
``predicted = observed * predicted(candidate) / predicted(current)``, which
never goes below zero -- and ``delta = predicted - observed``. Without an
observed outcome (a run in progress, or ``anchor_to_observed=False``)
``predicted`` is the surrogate's own prediction. ``stddev`` is the
surrogate's standard deviation for the candidate in the metric's units
(scaled like the prediction when anchored on a log scale).

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

Transfer: the history's best architectures with the same input and output
sizes, rewritten as edits of the run's (:mod:`runwatch.nas.transfer`), are
candidates too (``AdvisorConfig.peer_candidates`` of them), scored by the
surrogate like every other candidate.

Divergence risk: :meth:`Advisor.fit` also fits a
:class:`~runwatch.nas.risk.DivergenceRisk` on the same history, and each
suggestion's evidence ends with one line, its description and the probability
that the run diverges with its own genome and with the edit
(``"divergence risk (logistic, 41 of 659 runs diverged): 12% -> 4%"``). It is
reported, not ranked on.

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

from runwatch.nas.architecture import Change, Genome
from runwatch.nas.evidence import PeerSummary, run_summary
from runwatch.nas.features import architecture_features
from runwatch.nas.guards import EditGuard
from runwatch.nas.history import RunObservation
from runwatch.nas.prior import ArchSupport, OutcomePrior
from runwatch.nas.risk import DivergenceRisk
from runwatch.nas.search import Candidate, SearchConfig, edit_directions, search_candidates
from runwatch.nas.seeding import Seed, budget_seeds, seed_genomes
from runwatch.nas.space import SearchSpace
from runwatch.nas.surrogate import Surrogate, SurrogateConfig, is_loss_like
from runwatch.nas.transfer import peer_architectures

__all__ = [
    "Advisor",
    "AdvisorConfig",
    "Constraints",
    "NoArchitectureError",
    "PredictedEffect",
    "Suggestion",
    "estimated_latency_ms",
    "infer_direction",
]

_MAXIMIZE_TOKENS = ("acc", "auc", "f1", "precision", "recall", "bleu", "rouge", "iou", "r2", "reward", "return")


class NoArchitectureError(ValueError):
    """The run has no architecture record, so there is nothing to edit."""


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
    """Predicted value of the target metric after the change, its change against the run, and a stddev."""

    metric: str
    predicted: float
    delta: float
    stddev: float


@dataclass(frozen=True)
class Suggestion:
    """One ranked suggestion (rank 1 = best): the edited genome, its diff, effect, evidence and cost change."""

    rank: int
    genome: Genome
    changes: list[Change]
    effect: PredictedEffect
    evidence: list[str]
    params_delta: int
    flops_delta: int


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
        Weight of the standard deviation in the search objective and ranking
        (``mean + risk_aversion * std`` when minimizing).
    parsimony
        Ranking cost per single edit, as a fraction of the run's predicted
        value (see :func:`~runwatch.nas.search.search_candidates`).
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
    prior_for_unsupported
        Rank a strong finding's seeds whose edit the history never saw by the
        task's prior instead of the surrogate (module docstring); other such
        edits keep the surrogate's mean with a widened uncertainty either way.

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


# Which end-of-run numbers back up which kind of edit (see evidence.SUMMARY_LABELS).
_SMALLER = ("gap", "params")
_BIGGER = ("final_train_loss", "params")
_GRADIENTS = ("min_layer_grad_norm", "max_grad_norm")
_ACTIVATIONS = ("max_dead_frac", "max_sat_frac", "min_layer_grad_norm")


def _evidence_keys(change: Change) -> tuple[str, ...]:
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
    return ("params",)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def _pct(p: float) -> str:
    """A probability as a percentage: whole percents, one decimal under 1 %."""
    return f"{100 * p:.1f}%" if p < 0.01 else f"{100 * p:.0f}%"


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
    >>> best.changes[0].description, best.effect.delta < 0
    ('fc1: 256 -> 128 units', True)
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

        Also fits the divergence risk (:class:`~runwatch.nas.risk.DivergenceRisk`) on the same history;
        it is reported in each suggestion's evidence and does not change the ranking.
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
        """Ranked edits of ``run``'s architecture, best first.

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
            At most ``num_suggestions``, ranked by the risk-adjusted predicted
            effect (``delta + risk_aversion * stddev`` when minimizing) plus
            the parsimony cost per edit. Only the best of each edit idea (the
            same attributes of the same layers changed in the same direction:
            dropout 0.2 and 0.3 on fc1 are one idea, fc1 wider and fc1
            narrower two) and of edits the surrogate cannot tell apart is
            shown. When nothing is predicted to help, the least harmful edits
            are still returned: check ``effect.delta``. A run over its budget
            is also seeded with smaller versions of itself
            (:func:`~runwatch.nas.seeding.budget_seeds`).

        Raises
        ------
        NoArchitectureError
            (a ``ValueError``) when ``run.genome`` is ``None``.
        RuntimeError
            When :meth:`fit` was not called.
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
        peers = self.peers.without(run.run_id)
        seeds = seed_genomes(run, space, peers) if cfg.seeding else []
        over = _over_budget(base, constraints, cfg)
        if over:
            seeds += budget_seeds(base, space, over, first_priority=len(seeds))

        def score(genomes: Sequence[Genome]):
            return surrogate.score(run, genomes)

        guard = EditGuard.for_run(run, peers)

        def accept(g: Genome) -> bool:
            return not _over_budget(g, constraints, cfg) and guard.allows(base, g)

        search_cfg = cfg.search_config()
        if surrogate.mode == "prior":
            search_cfg.use_nni = False  # a constant objective: nothing for a tuner to learn
        direction = cfg.resolved_direction()
        extra = []
        if cfg.peer_candidates > 0:
            history = [o for o in self.history if o.run_id != run.run_id]
            for p in peer_architectures(
                base, history, cfg.target_metric, space, cfg.peer_candidates, direction, accept
            ):
                extra.append((p.genome, "peer", (p.evidence(cfg.target_metric),)))
        candidates = search_candidates(base, space, score, seeds, search_cfg, direction, accept, extra)
        cur_mean = float(score([base])[0][0])
        observed = run.outcome.get(cfg.target_metric, math.nan)
        candidates, notes = self._judge_unseen_edits(run, candidates, seeds, cur_mean, observed, search_cfg.parsimony)
        summary = run_summary(run)
        chosen: list[Candidate] = []
        seen: set[object] = set()
        for c in candidates:
            # One suggestion per edit idea (which attributes of which layers change, which way: dropout 0.2 and 0.3
            # on fc1 are variants of one idea) and per surrogate view (dropout on fc1 or on fc2 of equal blocks).
            shape = edit_directions(base, c.genome)
            view = tuple(sorted((k, round(v, 9)) for k, v in architecture_features(c.genome).items()))
            if shape in seen or view in seen:
                continue
            seen.update((shape, view))
            chosen.append(c)
            if len(chosen) == limit:
                break
        suggestions = [
            self._suggestion(rank, c, run, cur_mean, observed, summary, peers, notes.get(c.genome.key()))
            for rank, c in enumerate(chosen, start=1)
        ]
        if suggestions and self.risk.mode != "unfitted":
            # Reported, not ranked on: one line per suggestion, P(diverge) of the run's genome -> the edited one.
            p = self.risk.predict(run.hyperparameters, [base, *(s.genome for s in suggestions)])
            for s, q in zip(suggestions, p[1:], strict=True):
                s.evidence.append(f"{self.risk.describe()}: {_pct(float(p[0]))} -> {_pct(float(q))}")
        return suggestions

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
        if anchored and log:
            prior_mean, prior_std = estimate.mean * current / observed, estimate.std * current / observed
        elif anchored:
            prior_mean, prior_std = current + (estimate.mean - observed), estimate.std
        else:
            prior_mean, prior_std = estimate.mean, estimate.std
        sign = -1.0 if cfg.resolved_direction() == "maximize" else 1.0
        edit_cost = parsimony * abs(current)
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
            objective = sign * mean + cfg.risk_aversion * std
            # A prior does not tell how much of the net a fix should touch (it is the rule's whole-stack fix), so
            # its parsimony counts edits, not blocks; equal priors then follow the rule's order (seed priority).
            size = c.edits if source == "prior" else c.extent
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
        rank: int,
        c: Candidate,
        run: RunObservation,
        current: float,
        observed: float,
        summary: Mapping[str, float],
        peers: PeerSummary,
        prior_note: tuple[list[str], float, float] | None = None,
    ) -> Suggestion:
        cfg = self.config
        base = run.genome
        assert base is not None and self.surrogate is not None
        predicted, delta, stddev = c.mean, c.mean - current, c.std
        known = math.isfinite(c.mean) and math.isfinite(current)
        if not known:
            delta = 0.0
        elif cfg.anchor_to_observed and math.isfinite(observed):
            if self.surrogate.log_target and current > 0:
                ratio = c.mean / current  # the model's delta is on the log scale
                predicted, stddev = observed * ratio, abs(observed) * c.std / current
            else:
                predicted = observed + delta
            delta = predicted - observed
        changes = base.diff(c.genome)
        evidence = list(c.evidence)
        keys: list[str] = []
        for ch in changes:
            keys += [k for k in _evidence_keys(ch) if k not in keys]
        comparisons = peers.compare_all(keys, summary) or peers.compare_all(["params"], summary)
        evidence += [e for e in comparisons if e not in evidence]
        s = self.surrogate
        if prior_note is not None:
            texts, sur_mean, sur_std = prior_note
            evidence = texts + [e for e in evidence if e not in texts]
            evidence.append(
                f"surrogate ({s.mode}, {s.n_train} runs with {cfg.target_metric}): "
                f"{_fmt(current)} -> {_fmt(sur_mean)} ± {_fmt(sur_std)} for this run's logs with the edit "
                "(outside its data)"
            )
        else:
            evidence.append(
                f"surrogate ({s.mode}, {s.n_train} runs with {cfg.target_metric}): "
                f"{_fmt(current)} -> {_fmt(c.mean)} ± {_fmt(c.std)} for this run's logs with the edit"
            )
        return Suggestion(
            rank=rank,
            genome=c.genome,
            changes=changes,
            effect=PredictedEffect(cfg.target_metric, float(predicted), float(delta), float(stddev)),
            evidence=evidence,
            params_delta=c.genome.params() - base.params(),
            flops_delta=c.genome.flops() - base.flops(),
        )
