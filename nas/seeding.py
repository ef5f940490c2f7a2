"""Starting points for the search, read off what went wrong in the run.

Each finding runwatch raised maps to the edits a practitioner would try first,
applied where the finding points (its layer) when it names one:

================================  ============================================================
finding (``Diagnosis.kind``)      seeds
================================  ============================================================
``vanishing_gradient``            LayerNorm, a residual connection, a non-saturating activation
                                  (ReLU / GELU) at the layer
``dead_units``                    the layer x1/2 narrower; its ReLU -> GELU (LeakyReLU when allowed)
``saturation``                    tanh / sigmoid -> ReLU or GELU at the layer
``overfitting``                   narrower blocks; more dropout; one block fewer
``plateau`` / underfitting        wider blocks; one block more
``exploding_gradient``,           LayerNorm (at the layer, and on every block)
``divergence_predicted``,
``nonfinite``, ``loss_spike``
================================  ============================================================

Without a finding, the run's end-of-run numbers against its peers add the
overfitting seeds (val/train gap above the peers' upper quartile and twice
their median) or the underfitting ones (final training loss above the peers'
upper quartile without such a gap). Every seed carries the evidence it came
from: ``"vanishing_gradient in fc3 at step 120 (grad_norm/fc3 = 1e-07)"``,
``"val/train gap 0.42 vs peers' median 0.05 (n=37)"``.

A run over its parameter or latency budget gets smaller versions of itself
as well (:func:`budget_seeds`), evidence ``"parameters 563,210 over the limit
187,736"``.

Only edits the search space allows are made (activations, dropouts,
normalizations, depth changes, residuals, widths from
:func:`~runwatch.nas.space.width_choices`), multi-block edits touch at most
``space.max_changes`` blocks, and every seed satisfies
:func:`~runwatch.nas.space.within`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.evidence import PeerSummary, run_summary
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.space import SearchSpace, insert_copies, remove_blocks, width_choices, within

__all__ = ["SEEDED_KINDS", "Seed", "budget_seeds", "diagnosis_evidence", "seed_genomes"]

_SATURATING = ("tanh", "sigmoid", "hardtanh", "softsign", "")
_GRADIENT_BLOWUPS = ("exploding_gradient", "divergence_predicted", "nonfinite", "loss_spike")
_MIN_PEERS = 3


@dataclass(frozen=True)
class Seed:
    """One diagnosis-driven starting point.

    Attributes
    ----------
    genome
        The edited architecture.
    rule
        The finding kind (or ``"overfitting"`` / ``"underfitting"`` for
        peer-based rules) that produced it.
    evidence
        Sentences citing the logs that motivated it.
    priority
        Generation order, lower first: findings in the order they were
        raised, then peer-based rules; ties in the search are broken by it.
    """

    genome: Genome
    rule: str
    evidence: tuple[str, ...]
    priority: int = 0


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def _value_at(run: RunObservation, metric: str, step: int) -> float | None:
    if metric not in run.series:
        return None
    steps, values = (np.asarray(a) for a in run.series[metric])
    idx = int(np.searchsorted(steps, step, side="right")) - 1
    return float(values[idx]) if idx >= 0 else None


def diagnosis_evidence(run: RunObservation, d: Diagnosis) -> str:
    """One sentence for a finding: kind, layer, step and the metric's logged value there.

    Examples
    --------
    >>> import numpy as np
    >>> run = RunObservation("r", None, series={"grad_norm/fc3": (np.array([100, 120]), np.array([1e-5, 1e-7]))})
    >>> diagnosis_evidence(run, Diagnosis("vanishing_gradient", "fc3", "grad_norm/fc3", 120, 4.0))
    'vanishing_gradient in fc3 at step 120 (grad_norm/fc3 = 1e-07)'
    """
    where = f" in {d.layer}" if d.layer else ""
    value = _value_at(run, d.metric, d.step) if d.metric else None
    detail = f"{d.metric} = {_fmt(value)}" if value is not None else f"score {_fmt(d.score)}"
    return f"{d.kind}{where} at step {d.step} ({detail})"


# -- single edits (None when the space does not allow them) ---------------------------------------


def _block_index(genome: Genome, layer: str) -> int | None:
    """The hidden block a finding's layer refers to; the last block for the output layer; None if unknown."""
    if not layer:
        return None
    for i, b in enumerate(genome.blocks):
        if b.name == layer or layer.startswith(b.name + "."):
            return i
    if layer == genome.output_name:
        return len(genome.blocks) - 1
    return None


def _nearest(choices: Sequence[int], target: float) -> int | None:
    return min(choices, key=lambda w: (abs(math.log(w / target)), w)) if choices else None


def _resized(genome: Genome, i: int, space: SearchSpace, factor: float) -> Genome | None:
    b = genome.blocks[i]
    choices = width_choices(b, space)
    pool = [w for w in choices if (w < b.width if factor < 1 else w > b.width)]
    w = _nearest(pool, b.width * factor)
    return None if w is None else genome.replace_block(i, width=w)


def _with_activation(genome: Genome, idxs: Sequence[int], act: str) -> Genome | None:
    g = genome
    for i in idxs:
        if g.blocks[i].activation != act:
            g = g.replace_block(i, activation=act)
    return None if g == genome else g


def _with_norm(genome: Genome, idxs: Sequence[int], space: SearchSpace, norm: str = "layernorm") -> Genome | None:
    if norm not in space.normalizations:
        return None
    g = genome
    for i in idxs:
        if not g.blocks[i].normalization:
            g = g.replace_block(i, normalization=norm)
    return None if g == genome else g


def _with_residual(genome: Genome, i: int, space: SearchSpace) -> Genome | None:
    b = genome.blocks[i]
    if not space.allow_residual or b.residual or genome.in_sizes()[i] != b.width:
        return None
    return genome.replace_block(i, residual=True)


def _with_more_dropout(genome: Genome, idxs: Sequence[int], space: SearchSpace) -> Genome | None:
    g = genome
    for i in idxs:
        higher = sorted(p for p in space.dropouts if p > g.blocks[i].dropout)
        if higher:
            g = g.replace_block(i, dropout=higher[0])
    return None if g == genome else g


def _deeper(genome: Genome, space: SearchSpace) -> Genome | None:
    if 1 not in space.depth_changes or not genome.blocks:
        return None
    return insert_copies(genome, len(genome.blocks) - 1)


def _shallower(genome: Genome, space: SearchSpace) -> Genome | None:
    if -1 not in space.depth_changes or len(genome.blocks) < 2:
        return None
    return remove_blocks(genome, len(genome.blocks) - 1)


def _widest(genome: Genome, k: int) -> list[int]:
    return sorted(sorted(range(len(genome.blocks)), key=lambda i: (-genome.blocks[i].width, i))[:k])


def _narrowest(genome: Genome, k: int) -> list[int]:
    return sorted(sorted(range(len(genome.blocks)), key=lambda i: (genome.blocks[i].width, i))[:k])


def _resize_many(genome: Genome, idxs: Sequence[int], space: SearchSpace, factor: float) -> Genome | None:
    g = genome
    for i in idxs:
        g = _resized(g, i, space, factor) or g
    return None if g == genome else g


def _activation_fix(current: str, space: SearchSpace, dead: bool) -> list[str]:
    """Activations to try instead of ``current``: non-saturating ones, or a leaky one for dead ReLUs."""
    if dead:
        prefs = ("leakyrelu", "gelu", "silu") if current == "relu" else ("gelu", "leakyrelu", "silu")
    else:
        prefs = ("relu", "gelu")
    return [a for a in prefs if a in space.activations and a != current][:2]


# -- rules ----------------------------------------------------------------------------------------


def _edits_for(kind: str, genome: Genome, i: int | None, space: SearchSpace) -> list[Genome | None]:
    n = len(genome.blocks)
    cap = max(1, space.max_changes)
    at = [i] if i is not None else list(range(n))[:cap]
    if kind == "vanishing_gradient":
        out = [_with_norm(genome, at, space)]
        if i is not None:
            out.append(_with_residual(genome, i, space))
        saturating = [j for j in at if genome.blocks[j].activation in _SATURATING]
        for act in _activation_fix("tanh", space, dead=False):
            out.append(_with_activation(genome, saturating, act) if saturating else None)
        return out
    if kind == "dead_units":
        out = [_resize_many(genome, at if i is not None else _widest(genome, cap), space, 0.5)]
        relu = [j for j in at if genome.blocks[j].activation == "relu"] or at
        for act in _activation_fix("relu", space, dead=True)[:1]:
            out.append(_with_activation(genome, relu, act))
        return out
    if kind == "saturation":
        return [_with_activation(genome, at, act) for act in _activation_fix("tanh", space, dead=False)]
    if kind == "overfitting":
        return [
            _resize_many(genome, _widest(genome, cap), space, 0.5),
            _with_more_dropout(genome, list(range(n))[:cap], space),
            _shallower(genome, space),
        ]
    if kind in ("plateau", "underfitting"):
        return [_resize_many(genome, _narrowest(genome, cap), space, 2.0), _deeper(genome, space)]
    if kind in _GRADIENT_BLOWUPS:
        out = [_with_norm(genome, at, space)]
        if i is not None:
            out.append(_with_norm(genome, list(range(n))[:cap], space))
        return out
    return []


def _peer_rules(run: RunObservation, peers: PeerSummary | None) -> list[tuple[str, str]]:
    """(rule, evidence) from the run's end-of-run numbers against its peers."""
    if peers is None:
        return []
    summary = run_summary(run)
    out = []
    gap = summary.get("gap", math.nan)
    overfit = False
    if (
        peers.n("gap") >= _MIN_PEERS
        and math.isfinite(gap)
        and gap > max(peers.quantile("gap", 0.75), 2 * peers.median("gap"), 0.0)
    ):
        out.append(("overfitting", peers.compare("gap", gap)))
        overfit = True
    train = summary.get("final_train_loss", math.nan)
    if (
        not overfit
        and peers.n("final_train_loss") >= _MIN_PEERS
        and math.isfinite(train)
        and train > peers.quantile("final_train_loss", 0.75)
    ):
        out.append(("underfitting", peers.compare("final_train_loss", train)))
    return out


def seed_genomes(run: RunObservation, space: SearchSpace, peers: PeerSummary | None = None) -> list[Seed]:
    """Diagnosis-driven edits of ``run.genome``, each with the evidence behind it.

    Parameters
    ----------
    run
        The run to improve; must have a genome.
    space
        The edits allowed.
    peers
        End-of-run numbers of other runs (the run itself excluded), for the
        peer-based overfitting / underfitting rules; ``None`` skips them.

    Returns
    -------
    list[Seed]
        Deduplicated by :meth:`Genome.key` (evidence merged, first priority
        kept), in priority order; never the run's own genome.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(64, 10, (Block("fc1", "linear", 256, "relu"), Block("fc2", "linear", 256, "relu")))
    >>> run = RunObservation("r", g, diagnoses=[Diagnosis("dead_units", "fc2", "act/zero_frac/fc2", 80, 0.9)])
    >>> seeds = seed_genomes(run, SearchSpace(activations=("relu", "gelu")))
    >>> [(s.genome.blocks[1].width, s.genome.blocks[1].activation) for s in seeds]
    [(128, 'relu'), (256, 'gelu')]
    >>> seeds[0].evidence
    ('dead_units in fc2 at step 80 (score 0.9)',)
    """
    base = run.genome
    if base is None:
        raise ValueError(f"run {run.run_id} has no architecture record to seed from")
    found: dict[str, Seed] = {}
    order: list[str] = []

    def add(genome: Genome | None, rule: str, evidence: str) -> None:
        if genome is None or genome.key() == base.key() or genome.validate() or not within(genome, base, space):
            return
        key = genome.key()
        if key in found:
            old = found[key]
            if evidence not in old.evidence:
                found[key] = Seed(old.genome, old.rule, (*old.evidence, evidence), old.priority)
            return
        found[key] = Seed(genome, rule, (evidence,), len(order))
        order.append(key)

    rules: list[tuple[str, int | None, str]] = []
    for d in run.diagnoses:
        rules.append((d.kind, _block_index(base, d.layer), diagnosis_evidence(run, d)))
    for rule, evidence in _peer_rules(run, peers):
        rules.append((rule, None, evidence))
    for kind, i, evidence in rules:
        for genome in _edits_for(kind, base, i, space):
            add(genome, kind, evidence)
    return [found[k] for k in order]


def budget_seeds(base: Genome, space: SearchSpace, evidence: str, first_priority: int = 0) -> list[Seed]:
    """Smaller versions of ``base`` for a run over its parameter or latency budget.

    The ``k`` widest blocks halved (``k = 1 .. max_changes``), the last block
    removed, and the last block removed with the ``k`` widest of the others
    halved; the search then explores around them. Each carries ``evidence``
    (e.g. ``"parameters 563,210 over the limit 187,736"``).

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(64, 10, (Block("fc1", "linear", 512, "relu"), Block("fc2", "linear", 256, "relu")))
    >>> [s.genome.key() for s in budget_seeds(g, SearchSpace(max_changes=2), "over budget")]
    ['64>linear256.relu>linear256.relu>10', '64>linear256.relu>linear128.relu>10', '64>linear512.relu>10', '64>linear256.relu>10']
    """
    cap = max(1, space.max_changes)
    candidates = [_resize_many(base, _widest(base, k), space, 0.5) for k in range(1, cap + 1)]
    shallow = _shallower(base, space)
    if shallow is not None:
        candidates.append(shallow)
        candidates += [_resize_many(shallow, _widest(shallow, k), space, 0.5) for k in range(1, cap)]
    out: list[Seed] = []
    seen = {base.key()}
    for g in candidates:
        if g is None or g.key() in seen or g.validate() or not within(g, base, space):
            continue
        seen.add(g.key())
        out.append(Seed(g, "budget", (evidence,), first_priority + len(out)))
    return out


# Rules by kind, for callers that want to know which kinds drive seeds.
SEEDED_KINDS: tuple[str, ...] = (
    "vanishing_gradient",
    "dead_units",
    "saturation",
    "overfitting",
    "plateau",
    "underfitting",
    *_GRADIENT_BLOWUPS,
)
