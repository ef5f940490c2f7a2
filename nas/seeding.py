"""Starting points for the search, read off what went wrong in the run.

Each finding runwatch raised maps to the edits a practitioner would try first,
applied where the finding points (its layer) when it names one, to the whole
stack when it does not (one edit: :func:`~runwatch.nas.space.edit_distance`):

================================  ============================================================
finding (``Diagnosis.kind``)      seeds
================================  ============================================================
``vanishing_gradient``            LayerNorm, a residual connection, a non-saturating activation
                                  (ReLU / GELU) at the layer
``vanishing_gradient``, strong    the whole stack, in this order: residual connections wherever
                                  the widths match (a sigmoid stack's sigmoids -> tanh with them),
                                  LayerNorm after every block, every saturating activation ->
                                  ReLU / GELU, the depth halved
``dead_units``                    the layer x1/2 narrower; its ReLU -> GELU (LeakyReLU when allowed)
``saturation``                    tanh / sigmoid -> ReLU or GELU at the layer
``overfitting``                   narrower blocks; more dropout; one block fewer (a transformer: one
                                  encoder layer; a stacked GRU/LSTM: one layer)
``plateau`` / underfitting        bottleneck blocks grown to the pyramid width
                                  (:func:`~runwatch.nas.space.pyramid_width`); wider blocks;
                                  one block more
``exploding_gradient``,           LayerNorm (at the layer, and on every block)
``divergence_predicted``,
``nonfinite``, ``loss_spike``
================================  ============================================================

A CNN, GRU/LSTM or transformer run with a capacity finding also gets its
family's first remedy (:func:`family_remedies`: dropout 0.3 for an
overfitting GRU/LSTM or transformer, one convolution fewer for an
overfitting CNN, the narrowest blocks doubled for an underfitting net),
marked :attr:`Seed.first`: the advisor ranks it above every other candidate.

A vanishing-gradient finding is *strong* when the run also stalled
(:mod:`runwatch.nas.progress`: its training loss stayed above half of where it
started and stopped falling): the gradients did not just shrink somewhere, the
net as a whole did not train. The stall is then the vanishing gradient's doing,
so the capacity findings it would otherwise raise (``plateau``, underfitting)
are left out: widening a net whose gradients vanish does not make it train, and
removing blocks is one of the fixes. Its seeds come first, in the order above,
even when a blow-up the stall produced (a tiny initialisation can raise
``divergence_predicted``) was raised earlier and seeds LayerNorm too. Strong seeds are marked
(:attr:`Seed.strong`); the advisor may rank them by a prior when the surrogate
has never seen their edit (:mod:`runwatch.nas.prior`), and then equal priors
follow the order above: a skip connection gives the gradient an identity path
past every block whatever the activation and the initialisation (the reason
deep residual nets train, He et al. 2016); a normalization restores the scale
of the activations but not a saturating derivative; a non-saturating
activation alone does not help a net initialised too small; half the depth is
still half the problem.

Without a finding, the run's end-of-run numbers add the overfitting seeds
(val/train gap relative to the training loss above the peers' upper quartile
and twice their median) or the underfitting ones (final training loss above
the upper quartile of the healthy-looking peers, those runwatch raised no
finding for, so faulty runs cannot lift the bar, without such a gap; or, when
the peers do not say so, the run stalled by its own measure). The "one block
more" seed never copies a bottleneck width: the new block is as wide as the
widest block (or the pyramid width, when the space allows it). Peers are the runs of the same task when the run logs one
(``dataset``/``task`` hyperparameter, :func:`~runwatch.nas.evidence.task_of`):
loss scales differ between tasks. Every seed carries the evidence it came from:
``"vanishing_gradient in fc3 at step 120 (grad_norm/fc3 = 1e-07)"``,
``"val/train gap relative to the train loss 4.2 vs dataset=digits peers' median 0.5 (n=37)"``.

A run over its parameter or latency budget gets smaller versions of itself
as well (:func:`budget_seeds`), evidence ``"parameters 563,210 over the limit
187,736"``.

Only edits the search space allows are made (activations, dropouts,
normalizations, depth changes, residuals, widths from
:func:`~runwatch.nas.space.width_choices`), and every seed satisfies
:func:`~runwatch.nas.space.within`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.evidence import PeerSummary, run_summary, task_of
from runwatch.nas.families import deeper as family_deeper
from runwatch.nas.families import model_width, transformer_layers
from runwatch.nas.families import shallower as family_shallower
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.progress import STALL_RATIO, LossProgress, loss_progress
from runwatch.nas.space import (
    RESIDUAL_KINDS,
    SearchSpace,
    insert_copies,
    pyramid_width,
    remove_blocks,
    width_choices,
    within,
)

__all__ = [
    "SEEDED_KINDS",
    "Finding",
    "Seed",
    "budget_seeds",
    "diagnosis_evidence",
    "family_remedies",
    "run_findings",
    "seed_genomes",
]

_SATURATING = ("tanh", "sigmoid", "hardtanh", "softsign", "")
_POSITIVE_ONLY = ("sigmoid", "hardsigmoid")
_GRADIENT_BLOWUPS = ("exploding_gradient", "divergence_predicted", "nonfinite", "loss_spike")
_CAPACITY = ("plateau", "underfitting")
_MIN_PEERS = 3
MIN_REL_GAP = 0.2  # the peer overfitting rule needs a val loss at least 20 % above the training loss


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
    strong
        It is a strong finding's whole-stack fix (a vanishing gradient in a
        run that did not train): the fix is expected to matter, whatever the
        surrogate has seen.
    first
        It is a non-MLP family's first remedy for a capacity finding
        (:func:`family_remedies`: dropout for an overfitting GRU/LSTM or
        transformer, one convolution fewer for an overfitting CNN, the
        narrowest blocks widened for an underfitting one): the advisor ranks
        it above every other candidate of the run.
    """

    genome: Genome
    rule: str
    evidence: tuple[str, ...]
    priority: int = 0
    strong: bool = False
    first: bool = False


@dataclass(frozen=True)
class Finding:
    """What the seeds are read from: a finding (or peer/self-relative rule), its block, its evidence.

    ``block`` is the index of the hidden block the finding points at (None:
    the whole run); ``strong`` see :class:`Seed`.
    """

    kind: str
    block: int | None
    evidence: tuple[str, ...]
    strong: bool = False


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
    choices = width_choices(b, space)  # the multiplied widths only: the pyramid growth is its own seed
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


def _with_residuals(genome: Genome, space: SearchSpace) -> Genome | None:
    """Residual connections around every block whose input width equals its width."""
    if not space.allow_residual:
        return None
    sizes = genome.in_sizes()
    g = genome
    for i, b in enumerate(genome.blocks):
        if not b.residual and b.kind in RESIDUAL_KINDS and sizes[i] == b.width:
            g = g.replace_block(i, residual=True)
    return None if g == genome else g


def _residual_stack(genome: Genome, space: SearchSpace) -> Genome | None:
    """:func:`_with_residuals`, with every positive-only activation (sigmoid) of the stack made tanh.

    A sigmoid branch adds only positive values, so a stream that sums one per block drifts up with depth
    (deep sigmoid MLPs given skip connections alone got worse or diverged in the development corpus,
    where the same skips with tanh trained); tanh keeps the saturating shape and is centred on zero.
    """
    g = _with_residuals(genome, space)
    positive = [i for i, b in enumerate(genome.blocks) if b.activation in _POSITIVE_ONLY]
    if g is None or not positive or "tanh" not in space.activations:
        return g
    return _with_activation(g, positive, "tanh") or g


def _halved(genome: Genome, space: SearchSpace) -> Genome | None:
    """The last ``depth // 2`` blocks removed (stacks of at least 4 blocks)."""
    if -1 not in space.depth_changes or genome.depth < 4:
        return None
    return remove_blocks(genome, genome.depth - genome.depth // 2, genome.depth // 2)


def _grown_bottlenecks(genome: Genome, space: SearchSpace) -> Genome | None:
    """Every block narrower than the pyramid width grown to it (when the space offers that width)."""
    target = pyramid_width(genome)
    g = genome
    for i, b in enumerate(genome.blocks):
        if b.width < target and target in width_choices(b, space, genome):
            g = g.replace_block(i, width=target)
    return None if g == genome else g


def _with_more_dropout(genome: Genome, idxs: Sequence[int], space: SearchSpace) -> Genome | None:
    g = genome
    for i in idxs:
        higher = sorted(p for p in space.dropouts if p > g.blocks[i].dropout)
        if higher:
            g = g.replace_block(i, dropout=higher[0])
    return None if g == genome else g


def _deeper(genome: Genome, space: SearchSpace) -> Genome | None:
    """One block more after the last, never narrower than the widest block (nor than a bottleneck may grow to).

    Copying a bottleneck (a block narrower than :func:`~runwatch.nas.space.pyramid_width`)
    adds a second bottleneck, not capacity: the new block takes the widest
    block's width, or the pyramid width when the space lets the blocks grow to it.
    """
    if 1 not in space.depth_changes or not genome.blocks:
        return None
    unit = family_deeper(genome, space)  # a transformer grows by an encoder layer, a GRU by a stacked layer
    if unit is not None:
        return unit
    deeper = insert_copies(genome, len(genome.blocks) - 1)
    last = len(genome.blocks)
    target = max(b.width for b in genome.blocks)
    allowed = set().union(*(width_choices(b, space, genome) for b in genome.blocks))
    pyramid = pyramid_width(genome)
    if target < pyramid and pyramid in allowed:
        target = pyramid
    new = deeper.blocks[last]
    if new.kind != "linear" or target == new.width or target not in allowed:
        return deeper
    return deeper.replace_block(last, width=target, residual=False)


def _shallower(genome: Genome, space: SearchSpace) -> Genome | None:
    unit = family_shallower(genome, space)
    if unit is not None:
        return unit
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


# -- family remedies (non-MLP capacity findings) ------------------------------------------------------

REGULARISING_DROPOUT = 0.3


def _meaningful_dropout(space: SearchSpace) -> float | None:
    """The dropout an overfitting net gets: the smallest allowed rate >= 0.3 (else the largest allowed, if > 0)."""
    rates = sorted(p for p in space.dropouts if p > 0)
    if not rates:
        return None
    return next((p for p in rates if p >= REGULARISING_DROPOUT - 1e-9), rates[-1])


def _effective_dropout(block) -> float:
    """A block's dropout; an attention block's recorded attention dropout counts (the builder uses it)."""
    if block.kind == "attention":
        try:
            return max(block.dropout, float(block.attribute_map().get("dropout", "0") or 0.0))
        except ValueError:
            return block.dropout
    return block.dropout


def _dropout_at(genome: Genome, idxs: Sequence[int], p: float) -> Genome | None:
    g = genome
    for i in idxs:
        if _effective_dropout(g.blocks[i]) < p - 1e-9:
            g = g.replace_block(i, dropout=p)
    return None if g == genome else g


def family_remedies(kind: str, genome: Genome, space: SearchSpace) -> list[Genome | None]:
    """A non-MLP net's first remedies for a capacity finding (``overfitting``; ``underfitting`` / ``plateau``).

    ================  =====================================================================
    family            overfitting
    ================  =====================================================================
    ``rnn``           dropout at a meaningful rate (0.3, :func:`_meaningful_dropout`) on the
                      output of every recurrent block, between it and the classifier; the
                      hidden size and the stacked layers are kept
    ``transformer``   dropout 0.3 in every encoder layer: on the attention weights, after the
                      feed-forward activation and on the residual branches (the dropout an
                      ``nn.TransformerEncoderLayer`` has by default, at 0.1, made stronger)
    ``cnn``           one convolution fewer (the last one: the classifier then reads the
                      previous one's fewer channels)
    ================  =====================================================================

    Underfitting (every non-MLP family): the narrowest blocks (as many as the
    edit budget allows) twice as wide; a transformer whose model width
    (``d_model``) is no wider than any block gets that doubled
    (:func:`runwatch.nas.families.model_width`: embedding, attention and
    outputs together).

    Why not the generic capacity cuts first: a recurrent or attention net
    that memorised a few sequences does so at any width (halving the hidden
    size of such a GRU/LSTM, or removing an encoder layer, made the
    validation loss worse on the development corpus); dropout inside the
    net is what keeps it from fitting each training sequence exactly
    (Zaremba et al. 2014; Vaswani et al. 2017 use dropout on attention,
    feed-forward and residuals). A CNN's dropout comes after pooling, on a
    few dozen features, where 0.1 did not change the validation loss; fewer
    convolutions do cut what a tiny image set can be fitted with. An
    underfitting net needs capacity, not regularisation: the guard
    (:mod:`runwatch.nas.guards`) already rules out more dropout there; this
    says which widening to try first. MLPs keep the generic rules.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(16, 9, (Block("rnn", "rnn", 64, layer_type="GRU"),), output_name="head", family="rnn")
    >>> [r.blocks[0].dropout for r in family_remedies("overfitting", g, SearchSpace()) if r is not None]
    [0.3]
    >>> [r.blocks[0].width for r in family_remedies("underfitting", g.replace_block(0, width=4), SearchSpace())]
    [8]
    """
    if genome.family == "mlp" or not genome.blocks:
        return []
    if kind == "overfitting":
        p = _meaningful_dropout(space)
        if genome.family == "rnn":
            idxs = [i for i, b in enumerate(genome.blocks) if b.kind == "rnn"]
            return [_dropout_at(genome, idxs, p) if p else None]
        if genome.family == "transformer":
            layers = transformer_layers(genome) or []
            if not p or not layers:
                return []
            # Every block of every layer; when that takes more edits than the budget (recorded dropouts that
            # differ between the attention and the feed-forward split the change into runs), the feed-forward
            # and residual dropouts alone.
            for idxs in ([i for layer in layers for i in layer], [i for _, a, b in layers for i in (a, b)]):
                g = _dropout_at(genome, idxs, p)
                if g is not None and within(g, genome, space):
                    return [g]
            return []
        if genome.family == "cnn":
            convs = [i for i, b in enumerate(genome.blocks) if b.kind == "conv"]
            if len(convs) < 2 or -1 not in space.depth_changes:
                return []
            return [remove_blocks(genome, convs[-1])]
        return []
    if kind in _CAPACITY:
        narrowest = min(b.width for b in genome.blocks)
        if genome.family == "transformer" and genome.input_size <= narrowest:  # the model width is the bottleneck
            wider = model_width(genome, genome.input_size * 2)
            if wider is not None and within(wider, genome, space):
                return [wider]
        idxs = [i for i, b in enumerate(genome.blocks) if b.width == narrowest and b.kind != "attention"]
        return [_resize_many(genome, idxs[: max(1, space.max_changes)], space, 2.0)]
    return []


# -- rules ----------------------------------------------------------------------------------------


def _strong_edits(kind: str, genome: Genome, space: SearchSpace) -> list[Genome | None]:
    """A strong finding's whole-stack fixes: the net did not train, so fix the stack, not the one layer measured."""
    if kind != "vanishing_gradient":
        return []
    every = list(range(len(genome.blocks)))
    saturating = [j for j in every if genome.blocks[j].activation in _SATURATING]
    out = [_residual_stack(genome, space), _with_norm(genome, every, space)]
    out += [
        _with_activation(genome, saturating, act) if saturating else None
        for act in _activation_fix("tanh", space, dead=False)
    ]
    out.append(_halved(genome, space))
    return out


def _edits_for(kind: str, genome: Genome, i: int | None, space: SearchSpace) -> list[Genome | None]:
    n = len(genome.blocks)
    cap = max(1, space.max_changes)
    every = list(range(n))
    at = [i] if i is not None else every
    if kind == "vanishing_gradient":
        out: list[Genome | None] = [_with_norm(genome, at, space)]
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
    if kind in _CAPACITY:
        return [
            _grown_bottlenecks(genome, space),
            _resize_many(genome, _narrowest(genome, cap), space, 2.0),
            _deeper(genome, space),
        ]
    if kind in _GRADIENT_BLOWUPS:
        out = [_with_norm(genome, at, space)]
        if i is not None:
            out.append(_with_norm(genome, every, space))
        return out
    return []


def _peer_rules(
    run: RunObservation, peers: PeerSummary | None, progress: LossProgress | None = None
) -> list[tuple[str, str]]:
    """(rule, evidence) from the run's end-of-run numbers against its peers (of its task), or against its own start.

    Overfitting: the val/train gap relative to the training loss (the gap on
    the run's own loss scale: 0.12 on a loss near 1 is not 0.12 on a loss near
    0.01) above the peers' upper quartile and twice their median, and at
    least :data:`MIN_REL_GAP` (a val loss within 20 % of the training loss is
    no overfitting, however tightly the peers' gaps cluster around 0).
    Underfitting: the final training loss above the upper quartile of the
    healthy-looking peers (those runwatch raised no finding for; all peers
    when fewer than 3), with no such gap; when the peers do not flag it, the
    run's own stall (:attr:`LossProgress.stalled`). A CNN, GRU/LSTM or
    transformer run is first judged against the healthy-looking peers of its
    own family on its task (a GRU tagger does not reach an MLP's training
    loss, and an MLP task's spread hides a narrowed CNN): its final training
    loss above their upper quartile and twice their median (at least 3 such
    peers; else the task's peers as above).
    """
    out = []
    summary = run_summary(run)
    task = task_of(run)
    scoped = peers.for_task(task) if peers is not None else None
    overfit = False
    rel = summary.get("rel_gap", math.nan)
    if (
        scoped is not None
        and scoped.n("rel_gap") >= _MIN_PEERS
        and math.isfinite(rel)
        and rel > max(scoped.quantile("rel_gap", 0.75), 2 * scoped.median("rel_gap"), MIN_REL_GAP)
    ):
        out.append(("overfitting", scoped.compare("rel_gap", rel)))
        overfit = True
    if overfit:
        return out
    train = summary.get("final_train_loss", math.nan)
    family = run.genome.family if run.genome is not None else "mlp"
    if scoped is not None and family != "mlp" and math.isfinite(train):
        kin = scoped.for_family(family).healthy()
        if kin.n("final_train_loss") >= _MIN_PEERS:
            bar = max(kin.quantile("final_train_loss", 0.75), 2 * kin.median("final_train_loss"))
            if train > bar:
                out.append(("underfitting", kin.compare("final_train_loss", train)))
                return out
    reference = scoped.healthy() if scoped is not None else None
    if reference is not None and reference.n("final_train_loss") < _MIN_PEERS:
        reference = scoped
    if (
        reference is not None
        and reference.n("final_train_loss") >= _MIN_PEERS
        and math.isfinite(train)
        and train > reference.quantile("final_train_loss", 0.75)
    ):
        out.append(("underfitting", reference.compare("final_train_loss", train)))
    elif progress is not None and progress.stalled:
        why = f"stalled above {STALL_RATIO:.0%} of its starting loss with val/loss close to the training loss"
        out.append(("underfitting", f"{progress.describe()}: {why}"))
    return out


def run_findings(run: RunObservation, peers: PeerSummary | None = None) -> list[Finding]:
    """The findings seeds are read from: runwatch's diagnoses, then the peer / self-relative rules.

    A vanishing-gradient finding in a run that stalled (:mod:`runwatch.nas.progress`)
    is strong, and the capacity findings (``plateau``, underfitting) of such
    a run are left out: its stall is the vanishing gradient's doing.

    Examples
    --------
    >>> import numpy as np
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 16, "sigmoid") for i in range(1, 9)))
    >>> steps = np.arange(200)
    >>> flat = {"loss": (steps, np.full(200, 0.69)), "val/loss": (steps[::20], np.full(10, 0.7))}
    >>> found = [Diagnosis("vanishing_gradient", "fc1"), Diagnosis("plateau")]
    >>> run = RunObservation("r", g, series=flat, diagnoses=found)
    >>> [(f.kind, f.strong) for f in run_findings(run)]
    [('vanishing_gradient', True)]
    """
    base = run.genome
    progress = loss_progress(run)
    stalled = progress is not None and progress.stalled
    explained = stalled and any(d.kind == "vanishing_gradient" for d in run.diagnoses)
    out: list[Finding] = []
    for d in run.diagnoses:
        if explained and d.kind in _CAPACITY:
            continue
        block = _block_index(base, d.layer) if base is not None else None
        evidence = (diagnosis_evidence(run, d),)
        strong = explained and d.kind == "vanishing_gradient"
        if strong and progress is not None:
            evidence += (f"{progress.describe()}: the net did not train",)
        out.append(Finding(d.kind, block, evidence, strong))
    for rule, evidence in _peer_rules(run, peers, progress):
        if explained and rule in _CAPACITY:
            continue
        out.append(Finding(rule, None, (evidence,)))
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
        peer-based overfitting / underfitting rules; ``None`` skips them (the
        self-relative underfitting rule still applies).

    Returns
    -------
    list[Seed]
        Deduplicated by :meth:`Genome.key` (evidence merged, first priority
        kept, strong if any source is), in priority order; never the run's
        own genome.

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

    def add(genome: Genome | None, rule: str, evidence: tuple[str, ...], strong: bool, first: bool = False) -> None:
        if genome is None or genome.key() == base.key() or genome.validate() or not within(genome, base, space):
            return
        key = genome.key()
        if key in found:
            old = found[key]
            merged = old.evidence + tuple(e for e in evidence if e not in old.evidence)
            found[key] = Seed(old.genome, old.rule, merged, old.priority, old.strong or strong, old.first or first)
            return
        found[key] = Seed(genome, rule, evidence, len(order), strong, first)
        order.append(key)

    findings = run_findings(run, peers)
    capacity = {f.kind for f in findings} & {"overfitting", *_CAPACITY}
    # Overfitting wins over a plateau / underfitting (as in the guard): a stalled val loss is what overfitting shows.
    remedy_kind = "overfitting" if "overfitting" in capacity else next(iter(sorted(capacity)), "")
    # A strong finding's whole-stack fixes keep their documented order even when an earlier finding (a blow-up the
    # stall produced) seeds one of them too: the stall is the strong finding's doing.
    for f in sorted(findings, key=lambda f: not f.strong):
        if f.strong:
            for genome in _strong_edits(f.kind, base, space):
                add(genome, f.kind, f.evidence, True)
        if f.kind == remedy_kind or (remedy_kind in _CAPACITY and f.kind in _CAPACITY):
            for genome in family_remedies(f.kind, base, space):
                add(genome, f.kind, f.evidence, False, first=True)
        for genome in _edits_for(f.kind, base, f.block, space):
            add(genome, f.kind, f.evidence, False)
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
