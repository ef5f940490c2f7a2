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
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from runwatch.nas.architecture import Block, Genome

__all__ = [
    "ACTIVATION_KINDS",
    "RESIDUAL_KINDS",
    "SearchSpace",
    "edit_distance",
    "insert_copies",
    "mutate",
    "neighbours",
    "new_block_name",
    "remove_blocks",
    "single_edits",
    "width_choices",
    "within",
]

# Kinds whose activation is a separate module the advisor can swap (RNN and attention keep theirs inside).
ACTIVATION_KINDS = ("linear", "conv")
RESIDUAL_KINDS = ("linear", "conv")
_EDITED_FIELDS = ("width", "activation", "normalization", "dropout", "residual")


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
        The most single edits (:func:`edit_distance`) a suggestion may make.

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


def width_choices(block: Block, space: SearchSpace) -> tuple[int, ...]:
    """Allowed widths for ``block``, ascending.

    With ``space.width_values``: those values. Otherwise the block's width and
    ``round(width * m)`` for each multiplier, clamped to ``[min_width,
    max_width]``. Attention blocks and grouped convolutions keep their width
    (it is tied to their input or to the groups).

    Examples
    --------
    >>> width_choices(Block("fc1", "linear", 100), SearchSpace())
    (50, 100, 200)
    >>> width_choices(Block("fc1", "linear", 100), SearchSpace(width_values=(16, 64, 128)))
    (16, 64, 128)
    >>> width_choices(Block("fc1", "linear", 6), SearchSpace(min_width=4))
    (4, 6, 12)
    """
    groups = block.attribute_map().get("groups", "1")
    if block.kind == "attention" or (block.kind == "conv" and groups not in ("1", "")):
        return (block.width,)
    if space.width_values:
        return space.width_values
    scaled = {min(max(round(block.width * m), space.min_width), space.max_width) for m in space.width_multipliers}
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
    """Every valid single edit of ``genome`` as ``(attribute, edited genome)``, duplicates included."""
    for i, b in enumerate(genome.blocks):
        for width in width_choices(b, space):
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


def _valid_edits(genome: Genome, space: SearchSpace) -> list[tuple[str, Genome]]:
    return [(attribute, g) for attribute, g in single_edits(genome, space) if not g.validate()]


def neighbours(genome: Genome, space: SearchSpace) -> list[Genome]:
    """Every valid genome one single edit away from ``genome``, deduplicated by :meth:`Genome.key`.

    Edits: a block's width (:func:`width_choices`), activation (linear/conv
    blocks), dropout, normalization, residual connection on/off, and each
    depth change in ``space.depth_changes`` applied at each block. Edits that
    would make the genome invalid (a residual around unequal widths, a width
    an attention block cannot read) are left out.

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


def mutate(genome: Genome, space: SearchSpace, rng: np.random.Generator | random.Random | int | None = None) -> Genome:
    """One random valid single edit of ``genome``.

    The attribute to edit (width, activation, dropout, normalization,
    residual, depth) is drawn uniformly among those with a valid edit, then
    the edit uniformly within it, so the many width and dropout options do not
    crowd out depth changes.

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
    by_attribute: dict[str, list[Genome]] = {}
    for attribute, g in _valid_edits(genome, space):
        if g.key() != genome.key():
            by_attribute.setdefault(attribute, []).append(g)
    if not by_attribute:
        raise ValueError(f"the search space allows no edit of {genome.key()}")
    attributes = sorted(by_attribute)
    options = by_attribute[attributes[int(generator.integers(len(attributes)))]]
    return options[int(generator.integers(len(options)))]


def edit_distance(base: Genome, genome: Genome) -> int:
    """Single edits from ``base`` to ``genome``: added and removed blocks plus changed fields of matched blocks.

    Blocks are matched by name; a matched block counts one edit per changed
    field among width, activation, normalization, dropout and residual.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"), Block("b", "linear", 8)))
    >>> edit_distance(g, remove_blocks(g.replace_block(0, width=4, activation="gelu"), 1))
    3
    """
    base_by_name = {b.name: b for b in base.blocks}
    names = {b.name for b in genome.blocks}
    distance = sum(1 for b in base.blocks if b.name not in names)
    for b in genome.blocks:
        old = base_by_name.get(b.name)
        if old is None:
            distance += 1
        else:
            distance += sum(getattr(old, f) != getattr(b, f) for f in _EDITED_FIELDS)
    return distance


def _close_to_any(p: float, values: tuple[float, ...]) -> bool:
    return any(abs(p - v) < 1e-9 for v in values)


def within(genome: Genome, base: Genome, space: SearchSpace) -> bool:
    """Whether ``genome`` is a valid edit of ``base`` that ``space`` allows.

    True when ``genome`` is valid, keeps ``base``'s input, output and fixed
    layers, is at most ``space.max_changes`` edits away, changes depth only in
    a direction ``space.depth_changes`` allows, and every changed value is
    allowed (widths from the base block's :func:`width_choices`; new blocks
    from any base block's), or unchanged.

    Examples
    --------
    >>> g = Genome(8, 2, (Block("a", "linear", 8, "relu"),))
    >>> within(g.replace_block(0, width=16), g, SearchSpace()), within(g.replace_block(0, width=24), g, SearchSpace())
    (True, False)
    """
    if genome.validate():
        return False
    same_frame = (genome.input_size, genome.output_size, genome.output_name, genome.fixed_params) == (
        base.input_size,
        base.output_size,
        base.output_name,
        base.fixed_params,
    )
    if not same_frame or edit_distance(base, genome) > space.max_changes:
        return False
    delta = genome.depth - base.depth
    if delta and not any(d * delta > 0 for d in space.depth_changes):
        return False
    base_by_name = {b.name: b for b in base.blocks}
    any_width = set().union(*(width_choices(b, space) for b in base.blocks), (b.width for b in base.blocks))
    for b in genome.blocks:
        old = base_by_name.get(b.name)
        widths = any_width if old is None else set(width_choices(old, space)) | {old.width}
        if b.width not in widths:
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
