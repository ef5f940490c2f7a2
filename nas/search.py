"""Find the architecture edits the surrogate likes best, within the search space and the constraints.

Candidates come from these places, all scored by the same function:

1. the diagnosis-driven seeds (:mod:`runwatch.nas.seeding`);
2. every single edit of the run's architecture and of each seed
   (:func:`~runwatch.nas.space.neighbours`), and every group edit of the
   run's architecture (one attribute change on a run of adjacent blocks,
   :func:`~runwatch.nas.space.group_edits`);
3. extra candidates the caller passes (the history's best architectures,
   :mod:`runwatch.nas.transfer`), each with its own evidence;
4. NNI's TPE tuner over the space (:func:`~runwatch.nas.nni_adapter.tpe_search`);
5. NNI's regularized evolution (:func:`~runwatch.nas.nni_adapter.regularized_evolution`);
6. every genome of the space when it is small (at most ``exhaustive_limit``
   parameter sets, :func:`~runwatch.nas.choices.all_genomes`): then the
   surrogate's best is always a candidate, whatever the tuners sample.

The objective is risk-adjusted and always minimized: ``mean + risk_aversion *
std`` for a metric to minimize, ``-mean + risk_aversion * std`` for one to
maximize, so an edit the surrogate knows little about must promise more.
Candidates are deduplicated by :meth:`Genome.key`, dropped when invalid,
outside the space or rejected by ``accept`` (the constraints), and sorted by
objective plus a parsimony cost of ``parsimony`` (1 %) of the run's own
predicted value per block attribute changed (:func:`~runwatch.nas.space.change_extent`:
LayerNorm after 12 blocks costs 12, although it is one edit of the
``max_changes`` budget) -- a change that moves the prediction by less than
that does not ride along with one that matters -- (ties: seed priority, then
key), which makes the result deterministic for a fixed seed. A candidate
inherits the evidence of every seed it shares an edit with (same layer, same
attribute, same direction: :func:`edit_directions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.seeding import Seed
from runwatch.nas.space import SearchSpace, change_extent, edit_distance, group_edits, neighbours, within

__all__ = ["Candidate", "CandidateScorer", "SearchConfig", "search_candidates"]

ScoreFn = Callable[[Sequence[Genome]], tuple[np.ndarray, np.ndarray]]
_NO_SEED = 1 << 30
_REJECTED = 1e9


@dataclass
class SearchConfig:
    """Budget and risk settings of :func:`search_candidates` (JSON round trip).

    ``use_nni=False`` (or NNI not installed) keeps only seeds and neighbours.

    Examples
    --------
    >>> SearchConfig.from_dict(SearchConfig(tpe_trials=5).to_dict()).tpe_trials
    5
    """

    tpe_trials: int = 24
    evolution_population: int = 8
    evolution_cycles: int = 24
    risk_aversion: float = 0.5
    parsimony: float = 0.01
    seed: int = 0
    use_nni: bool = True
    exhaustive_limit: int = 2048  # score every genome of the space when it has at most this many parameter sets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Candidate:
    """A scored architecture.

    ``objective`` is the risk-adjusted score the search minimized; ``sources``
    says where it was found ("seed:overfitting", "neighbour", "tpe",
    "evolution"); ``priority`` is the best priority of the seeds it contains;
    ``edits`` the number of edits from the base
    (:func:`~runwatch.nas.space.edit_distance`); ``extent`` the block
    attributes they change (:func:`~runwatch.nas.space.change_extent`);
    ``ranking`` the value candidates are sorted by, ``objective + parsimony *
    |base mean| * extent``.
    """

    genome: Genome
    mean: float
    std: float
    objective: float
    sources: tuple[str, ...]
    evidence: tuple[str, ...] = ()
    priority: int = _NO_SEED
    edits: int = 0
    ranking: float = 0.0
    extent: int = 0


@dataclass
class CandidateScorer:
    """Caches (mean, std) per genome key and turns them into the minimized objective.

    ``accept`` (the constraints) rejects genomes for the tuners; see :meth:`objective`.

    Examples
    --------
    >>> import numpy as np
    >>> from runwatch.nas.architecture import Block, Genome
    >>> scorer = CandidateScorer(lambda gs: (np.array([g.blocks[0].width / 100 for g in gs]), np.zeros(len(gs))))
    >>> scorer.objective(Genome(4, 2, (Block("a", "linear", 50),)))
    0.5
    >>> CandidateScorer(scorer.score_fn, direction="maximize").objective(Genome(4, 2, (Block("a", "linear", 50),)))
    -0.5
    """

    score_fn: ScoreFn
    direction: str = "minimize"
    risk_aversion: float = 0.5
    accept: Callable[[Genome], bool] | None = None
    cache: dict[str, tuple[float, float]] = field(default_factory=dict)
    to_model: Callable[[float, float], tuple[float, float]] | None = None  # target units -> the model's scale

    def score_many(self, genomes: Sequence[Genome]) -> list[tuple[float, float]]:
        todo = {g.key(): g for g in genomes if g.key() not in self.cache}
        if todo:
            mean, std = self.score_fn(list(todo.values()))
            for k, m, s in zip(todo, mean, std, strict=True):
                self.cache[k] = (float(m), float(s))
        return [self.cache[g.key()] for g in genomes]

    def value(self, mean: float, std: float) -> float:
        """``sign * mean + risk_aversion * std``, on the model's scale when ``to_model`` is set (log for losses)."""
        if self.to_model is not None and math.isfinite(mean):
            mean, std = self.to_model(mean, std)
        sign = -1.0 if self.direction == "maximize" else 1.0
        v = sign * mean + self.risk_aversion * (std if math.isfinite(std) else 0.0)
        return v if math.isfinite(v) else math.inf

    def objective(self, genome: Genome) -> float:
        """The minimized objective of one genome (what the NNI tuners receive).

        Genomes ``accept`` rejects (over the parameter or latency budget) get
        a large finite value, so the tuners learn to stay inside the budget.
        """
        if self.accept is not None and not self.accept(genome):
            return _REJECTED
        v = self.value(*self.score_many([genome])[0])
        return v if math.isfinite(v) else _REJECTED  # tuners need a finite number


def edit_cost_of(
    base_mean: float,
    base_std: float,
    parsimony: float,
    to_model: Callable[[float, float], tuple[float, float]] | None = None,
) -> float:
    """The ranking cost of one unit of edit extent: ``parsimony * |base_mean|`` in target units, converted to the
    model's scale at the base when ``to_model`` is set (on a log scale: ``parsimony`` itself, 1 % per edit).

    Examples
    --------
    >>> edit_cost_of(2.0, 0.1, 0.01)
    0.02
    >>> import math
    >>> round(edit_cost_of(2.0, 0.1, 0.01, lambda m, s: (math.log(m), s / m)), 5)  # log(1.01)
    0.00995
    """
    if not math.isfinite(base_mean):
        return 0.0
    cost = parsimony * abs(base_mean)
    if to_model is None or cost == 0.0:
        return cost
    z0, _ = to_model(base_mean, base_std)
    z1, _ = to_model(base_mean + cost * (1 if base_mean >= 0 else -1), base_std)
    step = abs(z1 - z0)
    return step if math.isfinite(step) else cost


def edit_directions(base: Genome, genome: Genome) -> frozenset[tuple[str, str, str]]:
    """What ``genome`` does to ``base``, per layer: ``(layer, attribute, "up" | "down" | new value)``.

    Widths, depth, dropout and stacked recurrent layers count by direction
    (any narrowing of fc2 acts on a finding the way halving it does); other
    attributes by their new value.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(8, 2, (Block("a", "linear", 16, "relu"), Block("b", "linear", 16, "relu")))
    >>> sorted(edit_directions(g, g.with_blocks([Block("a", "linear", 4, "gelu")])))
    [('', 'depth', 'down'), ('a', 'activation', 'gelu'), ('a', 'width', 'down')]
    """
    out = set()
    for c in base.diff(genome):
        way = c.after
        if c.attribute in ("width", "depth", "dropout", "layers"):
            try:
                way = "up" if float(c.after) > float(c.before) else "down"
            except ValueError:
                pass
        for layer in c.layer.split(",") if c.layer else [""]:
            out.add((layer, c.attribute, way))
    return frozenset(out)


def search_candidates(
    base: Genome,
    space: SearchSpace,
    score_fn: ScoreFn,
    seeds: Sequence[Seed] = (),
    config: SearchConfig | None = None,
    direction: str = "minimize",
    accept: Callable[[Genome], bool] | None = None,
    extra: Sequence[tuple[Genome, str, tuple[str, ...]]] = (),
    to_model: Callable[[float, float], tuple[float, float]] | None = None,
) -> list[Candidate]:
    """Scored, deduplicated, constraint-abiding edits of ``base``, best (lowest objective) first.

    Parameters
    ----------
    base
        The run's architecture.
    space
        Edits allowed.
    score_fn
        ``genomes -> (mean, std)`` arrays in target units (e.g.
        ``lambda gs: surrogate.score(run, gs)``).
    seeds
        Diagnosis-driven starting points.
    config
        Budgets, risk aversion, seed.
    direction
        ``"minimize"`` or ``"maximize"`` the target.
    accept
        Extra filter (the constraints); ``None`` accepts all.
    extra
        ``(genome, source, evidence)`` candidates to score as well; the
        evidence goes to that exact genome only.
    to_model
        ``(mean, std) -> (z, s)``: the surrogate's own scale (log for a
        loss, :meth:`~runwatch.nas.surrogate.TargetTransform.to_model`). The
        objective and the parsimony cost are then taken there: a 1 % cost per
        edit is 1 % of the candidate's predicted loss, not of the run's (a run
        that exploded to a loss of 1.0 must not make a 0.005 edit cost swamp
        the differences between candidates predicted near 0.003).

    Returns
    -------
    list[Candidate]
        Never contains ``base`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> from runwatch.nas.architecture import Block, Genome
    >>> base = Genome(16, 2, (Block("fc1", "linear", 64, "relu"),))
    >>> score = lambda gs: (np.array([abs(g.blocks[0].width - 32) / 32 for g in gs]), np.zeros(len(gs)))
    >>> best = search_candidates(base, SearchSpace(), score, config=SearchConfig(use_nni=False))[0]
    >>> best.genome.blocks[0].width, best.objective, best.edits
    (32, 0.0, 1)
    """
    cfg = config or SearchConfig()
    scorer = CandidateScorer(score_fn, direction, cfg.risk_aversion, accept=accept, to_model=to_model)
    pool: dict[str, tuple[Genome, set[str]]] = {}

    def add(genome: Genome, source: str) -> None:
        entry = pool.get(genome.key())
        if entry is None:
            pool[genome.key()] = (genome, {source})
        else:
            entry[1].add(source)

    for s in seeds:
        add(s.genome, f"seed:{s.rule}")
    extra_evidence: dict[str, tuple[str, ...]] = {}
    for g, source, evidence in extra:
        add(g, source)
        extra_evidence[g.key()] = extra_evidence.get(g.key(), ()) + tuple(evidence)
    for g in neighbours(base, space):
        add(g, "neighbour")
    for _, g in group_edits(base, space):
        if not g.validate():
            add(g, "group")
    for s in seeds:
        for g in neighbours(s.genome, space):
            add(g, "neighbour")
    if cfg.exhaustive_limit > 0:
        from runwatch.nas.choices import all_genomes

        for g in all_genomes(base, space, cfg.exhaustive_limit):
            add(g, "grid")
    scorer.score_many([g for g, _ in pool.values()])

    if cfg.use_nni:
        from runwatch.nas.nni_adapter import nni_available, regularized_evolution, tpe_search

        if nni_available():
            if cfg.tpe_trials > 0:
                for g, _ in tpe_search(base, space, scorer.objective, cfg.tpe_trials, cfg.seed):
                    add(g, "tpe")
            if cfg.evolution_cycles > 0 and cfg.evolution_population > 0:
                for g, _ in regularized_evolution(
                    base, space, scorer.objective, cfg.evolution_population, cfg.evolution_cycles, cfg.seed
                ):
                    add(g, "evolution")

    base_key = base.key()
    kept = [
        (g, src)
        for k, (g, src) in pool.items()
        if k != base_key and not g.validate() and within(g, base, space) and (accept is None or accept(g))
    ]
    seed_changes = [(s, edit_directions(base, s.genome)) for s in seeds]
    base_mean, base_std = scorer.score_many([base])[0]
    edit_cost = edit_cost_of(base_mean, base_std, cfg.parsimony, to_model)
    out = []
    for g, src in kept:
        mean, std = scorer.score_many([g])[0]
        evidence: list[str] = list(extra_evidence.get(g.key(), ()))
        priority = _NO_SEED
        if seed_changes:
            changes = edit_directions(base, g)
            for s, sc in seed_changes:
                if sc & changes:
                    priority = min(priority, s.priority)
                    evidence += [e for e in s.evidence if e not in evidence]
        value = scorer.value(mean, std)
        edits, extent = edit_distance(base, g), change_extent(base, g)
        out.append(
            Candidate(
                g,
                mean,
                std,
                value,
                tuple(sorted(src)),
                tuple(evidence),
                priority,
                edits,
                value + edit_cost * extent,
                extent,
            )
        )
    out.sort(key=lambda c: (c.ranking, c.priority, c.genome.key()))
    return out
