"""Which edits of a :class:`~runwatch.nas.architecture.Genome` the advisor may suggest.

A :class:`SearchSpace` is a typed, JSON-round-tripping config of allowed
values; :func:`neighbours` lists every valid genome one edit away,
:func:`mutate` picks one at random and :func:`within` checks that a genome is
an allowed edit of a base genome. Edits never produce invalid genomes
(:meth:`Genome.validate` is empty for every result).

Examples
--------
>>> from runwatch.nas.architecture import Block, Genome
>>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"), Block("fc2", "linear", 128, "relu")))
>>> space = SearchSpace(activations=("relu", "gelu"), dropouts=(0.0,), normalizations=("",))
>>> sorted(len(g.diff(n)) for n in neighbours(g, space)) == [1] * len(neighbours(g, space))
True
>>> SearchSpace.from_json(space.to_json()) == space
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.families import family_edits, keeps_structure, model_width

__all__ = [
    "ACTIVATION_KINDS",
    "RESIDUAL_KINDS",
    "SearchSpace",
    "change_extent",
    "edit_distance",
    "group_edits",
    "insert_copies",
    "mutate",
    "neighbours",
    "new_block_name",
    "pyramid_width",
    "remove_blocks",
    "single_edits",
    "width_choices",
    "within",
]

# Kinds whose activation is a separate module the advisor can swap (RNN and attention keep theirs inside).
ACTIVATION_KINDS = ("linear", "conv")
RESIDUAL_KINDS = ("linear", "conv")


@dataclass(frozen=True)
class SearchSpace:
    """The edits allowed around a base architecture.

    Attributes
    ----------
    width_multipliers
        A block's width may become ``round(width * m)`` for each ``m``, clamped
        to ``[min_width, max_width]``; ignored when ``width_values`` is given.
    width_values
        Explicit allowed widths (e.g. FCNet's 16..512): a block may take any of
        them in one edit, whatever its current width (a width outside the list
        may stay but is never proposed).
    min_width, max_width
        Bounds for multiplied widths.
    activations, dropouts, normalizations
        Allowed values for hidden blocks ("" = no normalization).
    depth_changes
        Allowed changes of the number of hidden blocks per edit: -1 removes a
        block (never the last one), +1 duplicates one (same width, activation,
        normalization and dropout); empty keeps the depth fixed.
    allow_residual
        Whether skip connections may be added (only where a block's input
        width equals its width).
    max_changes
        The most edits (:func:`edit_distance`) a suggestion may make; one edit
        is one attribute change applied to one block or to a run of adjacent
        blocks (LayerNorm after every block is one edit).
    grow_bottlenecks
        Whether a linear block of an MLP narrower than the geometric-pyramid
        width (:func:`pyramid_width`) may also grow straight to it, besides
        the multiplied widths (a 2-unit layer would otherwise need several x2
        edits to get anywhere).

    Examples
    --------
    >>> SearchSpace(width_values=(16, 32, 64)).to_dict()["width_values"]
    [16, 32, 64]
    >>> SearchSpace.from_dict({"max_changes": 2, "dropouts": [0.0, 0.5]}).dropouts
    (0.0, 0.5)
    """

    width_multipliers: tuple[float, ...] = (0.5, 2.0)
    width_values: tuple[int, ...] | None = None
    min_width: int = 4
    max_width: int = 4096
    activations: tuple[str, ...] = ("relu", "gelu", "tanh", "silu")
    dropouts: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    normalizations: tuple[str, ...] = ("", "layernorm")
    depth_changes: tuple[int, ...] = (-1, 1)
    allow_residual: bool = True
    max_changes: int = 3
    grow_bottlenecks: bool = True

    def __post_init__(self) -> None:
        # JSON gives lists; keep the frozen config hashable.
        for name in ("width_multipliers", "activations", "dropouts", "normalizations", "depth_changes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "dropouts", tuple(float(p) for p in self.dropouts))
        if self.width_values is not None:
            object.__setattr__(self, "width_values", tuple(sorted({int(w) for w in self.width_values})))
            if not self.width_values or self.width_values[0] < 1:
                raise ValueError(f"width_values must be positive integers, got {self.width_values}")
        if not 1 <= self.min_width <= self.max_width:
            raise ValueError(f"need 1 <= min_width <= max_width, got {self.min_width}, {self.max_width}")
        if any(not 0.0 <= p < 1.0 for p in self.dropouts):
            raise ValueError(f"dropouts must lie in [0, 1): {self.dropouts}")
        if 0 in self.depth_changes:
            raise ValueError("depth_changes lists non-zero changes; leave it empty to keep the depth fixed")
        if self.max_changes < 1:
            raise ValueError(f"max_changes must be >= 1, got {self.max_changes}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys raise ``ValueError``."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SearchSpace fields: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def pyramid_width(genome: Genome) -> int:
    """The geometric-pyramid hidden width of an MLP: ``sqrt(inputs * outputs)``, up to a power of two.

    Masters' rule of thumb (Practical Neural Network Recipes in C++, 1993) for
    a hidden layer between ``n_in`` inputs and ``n_out`` outputs; a layer much
    narrower than this is a bottleneck for the task, not a regulariser.

    Examples
    --------
    >>> mlp = lambda n_in, n_out: Genome(n_in, n_out, (Block("fc1", "linear", 2),))
    >>> pyramid_width(mlp(64, 10)), pyramid_width(mlp(10, 1)), pyramid_width(mlp(30, 2))
    (32, 4, 8)
    """
    target = math.sqrt(max(genome.input_size, 1) * max(genome.output_size, 1))
    return 1 << max(0, math.ceil(math.log2(target) - 1e-9))


def width_choices(block: Block, space: SearchSpace, genome: Genome | None = None) -> tuple[int, ...]:
    """Allowed widths for ``block``, ascending.

    With ``space.width_values``: those values. Otherwise the block's width and
    ``round(width * m)`` for each multiplier, clamped to ``[min_width,
    max_width]``; with ``genome`` (the MLP the block belongs to) and
    ``space.grow_bottlenecks``, a linear block narrower than
    :func:`pyramid_width` may also take that width. Attention blocks and
    grouped convolutions keep their width (it is tied to their input or to
    the groups).

    Examples
    --------
    >>> width_choices(Block("fc1", "linear", 100), SearchSpace())
    (50, 100, 200)
    >>> width_choices(Block("fc1", "linear", 100), SearchSpace(width_values=(16, 64, 128)))
    (16, 64, 128)
    >>> width_choices(Block("fc1", "linear", 6), SearchSpace(min_width=4))
    (4, 6, 12)
    >>> width_choices(Block("fc1", "linear", 2), SearchSpace(), Genome(64, 10, (Block("fc1", "linear", 2),)))
    (2, 4, 32)
    """
    groups = block.attribute_map().get("groups", "1")
    if block.kind == "attention" or (block.kind == "conv" and groups not in ("1", "")):
        return (block.width,)
    if space.width_values:
        return space.width_values
    scaled = {min(max(round(block.width * m), space.min_width), space.max_width) for m in space.width_multipliers}
    if space.grow_bottlenecks and genome is not None and genome.family == "mlp" and block.kind == "linear":
        target = min(pyramid_width(genome), space.max_width)
        if block.width < target:
            scaled.add(max(target, space.min_width))
    return tuple(sorted(scaled | {block.width}))


def new_block_name(genome: Genome) -> str:
    """The first unused generated block name ("new.1", "new.2", ...)."""
    taken = {b.name for b in genome.blocks} | {genome.output_name}
    n = 1
    while f"new.{n}" in taken:
        n += 1
    return f"new.{n}"


def remove_blocks(genome: Genome, start: int, count: int = 1) -> Genome:
    """``genome`` without blocks ``start .. start+count-1``; the next layer reads what they read.

    The next layer's ``in_scale`` absorbs the removed blocks' scales, so a
    classifier reading flattened feature maps still reads the right size.

    Examples
    --------
    >>> g = Genome(64, 10, (Block("a", "linear", 32), Block("b", "linear", 16)))
    >>> remove_blocks(g, 0).in_sizes()
    (64, 16)
    """
    removed = genome.blocks[start : start + count]
    scale = float(np.prod([b.in_scale for b in removed])) if removed else 1.0
    blocks = list(genome.blocks[:start]) + list(genome.blocks[start + count :])
    if start < len(blocks):
        blocks[start] = dataclasses.replace(blocks[start], in_scale=blocks[start].in_scale * scale)
        return genome.with_blocks(blocks)
    return dataclasses.replace(genome.with_blocks(blocks), output_in_scale=genome.output_in_scale * scale)


def insert_copies(genome: Genome, index: int, count: int = 1) -> Genome:
    """``genome`` with ``count`` copies of block ``index`` right after it (named "new.N").

    Examples
    --------
    >>> g = Genome(64, 10, (Block("a", "linear", 32, "relu"),))
    >>> [(b.name, b.width, b.activation) for b in insert_copies(g, 0).blocks]
    [('a', 32, 'relu'), ('new.1', 32, 'relu')]
    """
    result = genome
    for n in range(count):
        source = genome.blocks[index]
        copy = dataclasses.replace(source, name=new_block_name(result), in_scale=1.0)
        blocks = list(result.blocks)
        blocks.insert(index + 1 + n, copy)
        result = result.with_blocks(blocks)
    return result


def single_edits(genome: Genome, space: SearchSpace) -> Iterator[tuple[str, Genome]]:
    """Every valid single edit of ``genome`` as ``(attribute, edited genome)``, duplicates included.

    Besides the generic edits, the family's own (:func:`runwatch.nas.families.family_edits`: stacked RNN
    ``layers``, attention ``heads``, whole transformer encoder layers as ``depth``).
    """
    for i, b in enumerate(genome.blocks):
        for width in width_choices(b, space, genome):
            if width != b.width:
                yield "width", genome.replace_block(i, width=width)
        if b.kind in ACTIVATION_KINDS:
            for activation in space.activations:
                if activation != b.activation:
                    yield "activation", genome.replace_block(i, activation=activation)
        for p in space.dropouts:
            if p != b.dropout:
                yield "dropout", genome.replace_block(i, dropout=p)
        for norm in space.normalizations:
            if norm != b.normalization:
                yield "normalization", genome.replace_block(i, normalization=norm)
        if b.residual or (space.allow_residual and b.kind in RESIDUAL_KINDS):
            yield "residual", genome.replace_block(i, residual=not b.residual)
    for change in space.depth_changes:
        for i in range(genome.depth):
            if change < 0 and genome.depth + change >= 1 and i - change <= genome.depth:
                yield "depth", remove_blocks(genome, i, -change)
            elif change > 0:
                yield "depth", insert_copies(genome, i, change)
    yield from family_edits(genome, space)


def _runs(genome: Genome, value: Any, eligible: Any = None) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of at least two adjacent blocks with equal ``value(block)`` (and eligible)."""
    out = []
    i, n = 0, genome.depth
    while i < n:
        j = i + 1
        if eligible is None or eligible(i):
            while j < n and value(genome.blocks[j]) == value(genome.blocks[i]) and (eligible is None or eligible(j)):
                j += 1
            if j - i >= 2:
                out.append((i, j))
        i = j
    return out


def _set_run(genome: Genome, start: int, stop: int, **changes: Any) -> Genome:
    blocks = list(genome.blocks)
    for i in range(start, stop):
        blocks[i] = dataclasses.replace(blocks[i], **changes)
    return genome.with_blocks(blocks)


def group_edits(genome: Genome, space: SearchSpace) -> Iterator[tuple[str, Genome]]:
    """Edits that apply one attribute change to a run of adjacent blocks: one edit each (:func:`edit_distance`).

    For every maximal run of at least two adjacent blocks that share a value
    (width, activation, normalization, dropout), each other allowed value set
    on the whole run ("ReLU -> GELU in fc1-fc12", "add LayerNorm after
    fc1-fc12"); residual connections added around every run of adjacent
    blocks that can take one; and, with ``-1`` in ``space.depth_changes``,
    the depth halved (the last ``depth // 2`` blocks removed) for stacks of
    at least four blocks. Single-block edits are :func:`single_edits`.

    Examples
    --------
    >>> g = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 8, "sigmoid") for i in range(1, 5)))
    >>> space = SearchSpace(width_multipliers=(), activations=("relu",), dropouts=(0.0,), depth_changes=(-1,))
    >>> [(a, [c.description for c in g.diff(x)]) for a, x in group_edits(g, space)]  # doctest: +NORMALIZE_WHITESPACE
    [('activation', ['Sigmoid -> ReLU in fc1-fc4']), ('normalization', ['add LayerNorm after fc1-fc4']),
     ('residual', ['add residual connections around fc1-fc4']), ('depth', ['depth 4 -> 2 (remove blocks fc3 (Linear 8→8), fc4 (Linear 8→8))'])]
    """
    blocks = genome.blocks
    for start, stop in _runs(genome, lambda b: (b.kind, b.width, b.in_scale)):
        b = blocks[start]
        for width in width_choices(b, space, genome):
            if width != b.width:
                yield "width", _set_run(genome, start, stop, width=width)
    for start, stop in _runs(genome, lambda b: b.activation, lambda i: blocks[i].kind in ACTIVATION_KINDS):
        for activation in space.activations:
            if activation != blocks[start].activation:
                yield "activation", _set_run(genome, start, stop, activation=activation)
    for start, stop in _runs(genome, lambda b: b.normalization):
        for norm in space.normalizations:
            if norm != blocks[start].normalization:
                yield "normalization", _set_run(genome, start, stop, normalization=norm)
    for start, stop in _runs(genome, lambda b: b.dropout):
        for p in space.dropouts:
            if p != blocks[start].dropout:
                yield "dropout", _set_run(genome, start, stop, dropout=p)
    if space.allow_residual:
        sizes = genome.in_sizes()
        can = lambda i: blocks[i].kind in RESIDUAL_KINDS and sizes[i] == blocks[i].width and not blocks[i].residual
        for start, stop in _runs(genome, lambda b: True, can):
            yield "residual", _set_run(genome, start, stop, residual=True)
    if -1 in space.depth_changes and genome.depth >= 4:
        yield "depth", remove_blocks(genome, genome.depth - genome.depth // 2, genome.depth // 2)


def _valid_group_edits(genome: Genome, space: SearchSpace) -> list[tuple[str, Genome]]:
    return [(a, g) for a, g in group_edits(genome, space) if not g.validate() and keeps_structure(genome, g)]


def _valid_edits(genome: Genome, space: SearchSpace, grouped: bool = False) -> list[tuple[str, Genome]]:
    edits = [(a, g) for a, g in single_edits(genome, space) if not g.validate() and keeps_structure(genome, g)]
    return edits + (_valid_group_edits(genome, space) if grouped else [])


def neighbours(genome: Genome, space: SearchSpace) -> list[Genome]:
    """Every valid genome one single edit away from ``genome``, deduplicated by :meth:`Genome.key`.

    Edits: a block's width (:func:`width_choices`), activation (linear/conv
    blocks), dropout, normalization, residual connection on/off, each
    depth change in ``space.depth_changes`` applied at each block, and the
    family's own (stacked RNN layers, attention heads, whole encoder layers).
    Edits that would make the genome invalid (a residual around unequal
    widths, a width an attention block cannot read) or that a family's
    builder could no longer rebuild (a transformer missing half an encoder
    layer) are left out.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"),))
    >>> space = SearchSpace(width_multipliers=(2.0,), activations=("relu",), dropouts=(0.0,), normalizations=("",))
    >>> sorted(n.key() for n in neighbours(g, space))
    ['8>linear16.relu>2', '8>linear8.relu.res>2', '8>linear8.relu>linear8.relu>2']
    """
    seen: set[str] = set()
    out = []
    for _, g in _valid_edits(genome, space):
        key = g.key()
        if key not in seen and key != genome.key():
            seen.add(key)
            out.append(g)
    return out


def _as_generator(rng: np.random.Generator | random.Random | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(64))
    return np.random.default_rng(rng)


def mutate(
    genome: Genome,
    space: SearchSpace,
    rng: np.random.Generator | random.Random | int | None = None,
    grouped: bool = False,
) -> Genome:
    """One random valid edit of ``genome``.

    The attribute to edit (width, activation, dropout, normalization,
    residual, depth) is drawn uniformly among those with a valid edit, then
    the edit uniformly within it, so the many width and dropout options do not
    crowd out depth changes. ``grouped=True`` also draws from
    :func:`group_edits` (one attribute change on a run of adjacent blocks,
    also one edit), so a random edit can be as sweeping as a suggested one:
    after the attribute, one block or a run of blocks is drawn evenly (where
    the attribute has both), then the edit.

    Raises
    ------
    ValueError
        When the space allows no edit of ``genome``.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"),))
    >>> child = mutate(g, SearchSpace(), rng=0)
    >>> len(g.diff(child)), child.validate()
    (1, [])
    """
    generator = _as_generator(rng)
    by_attribute: dict[str, dict[str, list[Genome]]] = {}
    edits = [("single", a, g) for a, g in _valid_edits(genome, space)]
    if grouped:
        edits += [("group", a, g) for a, g in _valid_group_edits(genome, space)]
    for scope, attribute, g in edits:
        if g.key() != genome.key():
            by_attribute.setdefault(attribute, {}).setdefault(scope, []).append(g)
    if not by_attribute:
        raise ValueError(f"the search space allows no edit of {genome.key()}")
    attributes = sorted(by_attribute)
    scopes = by_attribute[attributes[int(generator.integers(len(attributes)))]]
    # then one block or a run of blocks, evenly: single-block options would otherwise crowd out the group edits
    scope = sorted(scopes)[int(generator.integers(len(scopes)))] if len(scopes) > 1 else next(iter(scopes))
    options = scopes[scope]
    return options[int(generator.integers(len(options)))]


def _depth_groups(base: Genome, genome: Genome) -> int:
    """Runs of adjacent removed blocks (in ``base``) plus runs of adjacent added blocks (in ``genome``)."""
    names = {b.name for b in genome.blocks}
    old = {b.name for b in base.blocks}
    groups = 0
    for blocks, gone in ((base.blocks, lambda b: b.name not in names), (genome.blocks, lambda b: b.name not in old)):
        previous = False
        for b in blocks:
            now = gone(b)
            groups += now and not previous
            previous = now
    return groups


def edit_distance(base: Genome, genome: Genome) -> int:
    """Edits from ``base`` to ``genome``: one per change :meth:`Genome.diff` lists, one per run of added/removed blocks.

    Blocks are matched by name. A change of one attribute (width,
    activation, normalization, dropout, residual) counts once whether it is
    applied to one block or to a run of adjacent blocks with the same change
    ("ReLU -> GELU in fc1-fc12" and "add LayerNorm after fc1-fc12" are one
    edit each: one idea, however deep the net); removing or adding a run of
    adjacent blocks counts once as well.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"), Block("b", "linear", 8)))
    >>> edit_distance(g, remove_blocks(g.replace_block(0, width=4, activation="gelu"), 1))
    3
    >>> deep = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 8, "sigmoid") for i in range(1, 13)))
    >>> edit_distance(deep, deep.with_blocks(dataclasses.replace(b, activation="relu") for b in deep.blocks))
    1
    >>> edit_distance(deep, remove_blocks(deep, 6, 6)), edit_distance(deep, remove_blocks(remove_blocks(deep, 9), 3))
    (1, 2)
    """
    changes = sum(1 for c in base.diff(genome) if c.attribute != "depth")
    return changes + _depth_groups(base, genome)


def change_extent(base: Genome, genome: Genome) -> int:
    """Block attributes ``genome`` changes in ``base``, plus blocks added or removed: the size of an edit.

    :func:`edit_distance` counts ideas (LayerNorm after all 12 blocks is one
    edit, so whole-stack fixes fit the budget); the extent counts how much of
    the network they touch (12), which the ranking's parsimony cost uses: a
    change to one more block must earn its place.

    Examples
    --------
    >>> deep = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 8, "sigmoid") for i in range(1, 13)))
    >>> change_extent(deep, deep.with_blocks(dataclasses.replace(b, normalization="layernorm") for b in deep.blocks))
    12
    >>> change_extent(deep, remove_blocks(deep, 6, 6).replace_block(0, width=16))
    7
    """
    extent = 0
    for c in base.diff(genome):
        if c.attribute != "depth":
            extent += len(c.layer.split(","))
    names, old = {b.name for b in genome.blocks}, {b.name for b in base.blocks}
    extent += sum(b.name not in names for b in base.blocks) + sum(b.name not in old for b in genome.blocks)
    return extent


def _close_to_any(p: float, values: tuple[float, ...]) -> bool:
    return any(abs(p - v) < 1e-9 for v in values)


def _model_width_of(base: Genome, genome: Genome, space: SearchSpace) -> bool:
    """Whether ``genome``'s input size and fixed layers are ``base``'s at a model width the space allows."""
    if not base.input_size or genome.input_size / base.input_size not in space.width_multipliers:
        return False
    scaled = model_width(base, genome.input_size)
    return scaled is not None and scaled.fixed_params == genome.fixed_params


def within(genome: Genome, base: Genome, space: SearchSpace) -> bool:
    """Whether ``genome`` is a valid edit of ``base`` that ``space`` allows.

    True when ``genome`` is valid, still rebuildable when ``base`` is
    (:func:`runwatch.nas.families.keeps_structure`), keeps ``base``'s input, output and fixed
    layers (a token transformer's model width may change them together:
    :func:`runwatch.nas.families.model_width`), is at most ``space.max_changes`` edits away, changes depth only in
    a direction ``space.depth_changes`` allows, and every changed value is
    allowed (widths from the base block's :func:`width_choices`; new blocks
    from any base block's), or unchanged.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"),))
    >>> within(g.replace_block(0, width=16), g, SearchSpace()), within(g.replace_block(0, width=24), g, SearchSpace())
    (True, False)
    """
    if genome.validate() or not keeps_structure(base, genome):
        return False
    resized = genome.input_size != base.input_size and _model_width_of(base, genome, space)
    same_frame = (genome.output_size, genome.output_name) == (base.output_size, base.output_name) and (
        (genome.input_size, genome.fixed_params) == (base.input_size, base.fixed_params) or resized
    )
    if not same_frame or edit_distance(base, genome) > space.max_changes:
        return False
    delta = genome.depth - base.depth
    if delta and not any(d * delta > 0 for d in space.depth_changes):
        return False
    base_by_name = {b.name: b for b in base.blocks}
    any_width = set().union(*(width_choices(b, space, base) for b in base.blocks), (b.width for b in base.blocks))
    for b in genome.blocks:
        old = base_by_name.get(b.name)
        widths = any_width if old is None else set(width_choices(old, space, base)) | {old.width}
        carries_model_width = resized and b.width == genome.input_size and (old is None or old.width == base.input_size)
        if b.width not in widths and not carries_model_width:
            return False
        olds = [old] if old is not None else list(base.blocks)
        if b.activation not in space.activations and all(b.activation != o.activation for o in olds):
            return False
        if b.normalization not in space.normalizations and all(b.normalization != o.normalization for o in olds):
            return False
        if not _close_to_any(b.dropout, space.dropouts) and all(b.dropout != o.dropout for o in olds):
            return False
        if b.residual and not space.allow_residual and all(not o.residual for o in olds):
            return False
    return True
