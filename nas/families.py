"""What the torch builders can rebuild of each family, and the family's own capacity edits (no torch).

A genome read from a CNN, a recurrent tagger or a transformer encoder keeps
the user's layer names, widths and layer settings, but not the glue between
them (the token embedding, an image reshape, the encoder layer's residual
wiring). :mod:`runwatch.nas.family_builders` rebuilds such models from the
genome and a :class:`Stem` (how inputs reach the first block); this module
says which genomes follow a shape the builders know (:func:`structure_problems`)
and adds the capacity edits that only make sense per family
(:func:`family_edits`):

=============  ===================================================================
family         capacity edits (besides the generic width / dropout / depth edits)
=============  ===================================================================
``cnn``        channels (block width) and depth: the generic edits
``rnn``        hidden size (block width); stacked layers (``num_layers`` ± 1)
``transformer``  feed-forward width (``linear1``-like blocks); model width (``d_model``
               x2 / ÷2: embedding, attention and outputs together); heads (x2 / ÷2,
               always dividing the model width); depth: a whole encoder layer
               removed or the last one repeated
=============  ===================================================================

A transformer's model width (``d_model``) is tied to its embedding, a fixed
layer: :func:`model_width` changes both (the builder makes the embedding at the
genome's input size), so only token models get that edit. The record counts each encoder
layer's second LayerNorm as a fixed layer, so after an encoder layer is
removed (repeated) :meth:`Genome.params` over- (under-) states the rebuilt
model by ``2 x d_model`` per layer: ``within`` keeps ``fixed_params`` equal.

Examples
--------
>>> from runwatch.nas.architecture import Block, Genome
>>> from runwatch.nas.space import SearchSpace
>>> layer = lambda i: (Block(f"enc.{i}.attn", "attention", 32, attributes=(("num_heads", "2"),)),
...                    Block(f"enc.{i}.lin1", "linear", 64, dropout=0.1),
...                    Block(f"enc.{i}.lin2", "linear", 32, "", "layernorm", 0.1))
>>> g = Genome(32, 9, layer(0) + layer(1), output_name="head", family="transformer")
>>> transformer_layers(g)
[(0, 1, 2), (3, 4, 5)]
>>> structure_problems(g), structure_problems(g.with_blocks(g.blocks[:5]))
([], ['transformer: blocks must come as (attention, linear, linear) encoder layers'])
>>> sorted({a for a, _ in family_edits(g, SearchSpace())})  # no embedding: no model-width edit
['depth', 'heads']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runwatch.nas.architecture import Block, Genome

if TYPE_CHECKING:
    from runwatch.nas.space import SearchSpace

__all__ = [
    "MAX_RNN_LAYERS",
    "MIN_MODEL_WIDTH",
    "Stem",
    "deeper",
    "family_edits",
    "keeps_structure",
    "model_width",
    "shallower",
    "structure_problems",
    "transformer_layers",
]

MAX_RNN_LAYERS = 4


@dataclass(frozen=True)
class Stem:
    """How a model's inputs reach its first block: what the genome leaves out.

    ``tokens``: vocabulary size of a token embedding (``nn.Embedding(tokens,
    input_size)``; 0 = the input is already features). ``positions``: rows
    of a learned position embedding added to the token embedding (0 =
    none). ``image``: ``(channels, height, width)`` a CNN reshapes flat
    inputs to (empty = the input is already ``[batch, C, H, W]``).
    :func:`runwatch.nas.family_builders.stem_of_model` reads it off a torch
    model.

    Examples
    --------
    >>> Stem.from_dict(Stem(tokens=9, positions=12).to_dict())
    Stem(tokens=9, positions=12, image=())
    """

    tokens: int = 0
    positions: int = 0
    image: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"tokens": self.tokens, "positions": self.positions, "image": list(self.image)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stem:
        """Inverse of :meth:`to_dict`."""
        return cls(int(data.get("tokens", 0)), int(data.get("positions", 0)), tuple(data.get("image", ())))


MIN_MODEL_WIDTH = 4
"""The narrowest model width :func:`model_width` gives a transformer."""


def _int_attribute(block: Block, name: str, default: int) -> int:
    try:
        return int(block.attribute_map().get(name, default) or default)
    except ValueError:
        return default


def rnn_layers(block: Block) -> int:
    """Stacked layers of a recurrent block (its ``num_layers``; 1 when not recorded)."""
    return _int_attribute(block, "num_layers", 1)


def heads(block: Block) -> int:
    """Heads of an attention block (its ``num_heads``; 1 when not recorded)."""
    return _int_attribute(block, "num_heads", 1)


def _set_attribute(block: Block, name: str, value: str) -> Block:
    attributes = dict(block.attributes)
    attributes[name] = value
    return dataclasses.replace(block, attributes=tuple(sorted(attributes.items())))


def transformer_layers(genome: Genome) -> list[tuple[int, int, int]] | None:
    """Block indices of each encoder layer ``(attention, feed-forward in, feed-forward out)``; None if not that shape.

    The shape is what ``describe_architecture`` records of ``nn.TransformerEncoderLayer`` stacks:
    ``self_attn`` (width d), ``linear1`` (d -> ff), ``linear2`` (ff -> d).
    """
    blocks = genome.blocks
    if not blocks or len(blocks) % 3:
        return None
    out = []
    for i in range(0, len(blocks), 3):
        attention, ff_in, ff_out = blocks[i : i + 3]
        if (attention.kind, ff_in.kind, ff_out.kind) != ("attention", "linear", "linear"):
            return None
        out.append((i, i + 1, i + 2))
    return out


def _square(n: float) -> bool:
    r = math.isqrt(int(n)) if n >= 1 and float(n).is_integer() else 0
    return r > 0 and r * r == n


def structure_problems(genome: Genome) -> list[str]:
    """Why :func:`runwatch.nas.family_builders.build` cannot rebuild ``genome``; ``[]`` when it can.

    Beyond :meth:`Genome.validate`: ``mlp`` needs a plain stack with no fixed
    parameters; ``cnn`` needs ``Conv2d`` blocks, then linear blocks, the first
    linear layer after the convolutions reading a square grid of positions
    (``in_scale`` 1, 4, 9, 16, ...) and residual convolutions padded to keep
    their size; ``rnn`` needs RNN/GRU/LSTM blocks (one direction, LayerNorm at
    most), then plain linear blocks; ``transformer`` needs
    :func:`transformer_layers`, the feed-forward output as wide as the
    attention and carrying the layer's LayerNorm (nothing else), heads
    dividing the width (an attention block's dropout is the attention's own:
    ``nn.MultiheadAttention(dropout=...)``).

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(16, 9, (Block("rnn", "rnn", 64, layer_type="GRU"),), output_name="head", family="rnn")
    >>> structure_problems(g), structure_problems(g.replace_block(0, normalization="batchnorm"))
    ([], ['rnn: BatchNorm after the recurrent block rnn cannot be rebuilt'])
    """
    family = genome.family
    head_linear = genome.head.kind == "linear"
    if family == "mlp":
        problems = []
        if genome.fixed_params:
            problems.append(f"mlp: {genome.fixed_params} parameters in fixed layers {list(genome.fixed)}")
        if genome.output_in_scale != 1.0 or any(b.in_scale != 1.0 for b in genome.blocks):
            problems.append("mlp: not a plain stack (an in_scale other than 1)")
        return problems + ([] if head_linear else ["mlp: the output layer is not Linear"])
    if family == "cnn":
        return _cnn_problems(genome)
    if family == "rnn":
        return _rnn_problems(genome)
    if family == "transformer":
        return _transformer_problems(genome)
    return [f"no builder for family {family!r}"]


def _cnn_problems(genome: Genome) -> list[str]:
    problems = []
    blocks = genome.blocks
    n_conv = next((i for i, b in enumerate(blocks) if b.kind != "conv"), len(blocks))
    if any(b.kind != "linear" for b in blocks[n_conv:]) or genome.head.kind != "linear":
        problems.append("cnn: blocks must be convolutions followed by linear layers")
    for b in blocks[:n_conv]:
        if b.torch_type != "Conv2d":
            problems.append(f"cnn: {b.name} is a {b.torch_type}; only Conv2d is rebuilt")
        if b.residual:
            a = b.attribute_map()
            kernel = [int(k) for k in a.get("kernel_size", "1x1").split("x")]
            padding = [int(p) for p in a.get("padding", "0x0").split("x")]
            dilation = [int(d) for d in a.get("dilation", "1x1").split("x")]
            if any(p != d * (k - 1) // 2 or k % 2 == 0 for k, p, d in zip(kernel, padding, dilation, strict=False)):
                problems.append(f"cnn: residual connection around {b.name}, whose padding changes the size")
    scales = [b.in_scale for b in blocks[1:n_conv]]
    if any(s != 1.0 for s in scales) or any(b.in_scale != 1.0 for b in blocks[n_conv + 1 :]):
        problems.append("cnn: only the first linear layer may read flattened feature maps")
    flatten_scale = blocks[n_conv].in_scale if n_conv < len(blocks) else genome.output_in_scale
    if n_conv < len(blocks) and genome.output_in_scale != 1.0:
        problems.append("cnn: only the first linear layer may read flattened feature maps")
    if not _square(flatten_scale):
        problems.append(f"cnn: the classifier reads {flatten_scale:g} positions per channel, not a square grid")
    return problems


def _rnn_problems(genome: Genome) -> list[str]:
    problems = []
    blocks = genome.blocks
    n_rnn = next((i for i, b in enumerate(blocks) if b.kind != "rnn"), len(blocks))
    if any(b.kind != "linear" for b in blocks[n_rnn:]) or genome.head.kind != "linear":
        problems.append("rnn: blocks must be recurrent layers followed by linear layers")
    for b in blocks[:n_rnn]:
        if b.attribute_map().get("bidirectional", "false") == "true":
            problems.append(f"rnn: {b.name} is bidirectional; only one direction is rebuilt")
        if b.attribute_map().get("batch_first", "true") != "true":
            problems.append(f"rnn: {b.name} is not batch_first")
        if b.normalization not in ("", "layernorm"):
            problems.append(f"rnn: BatchNorm after the recurrent block {b.name} cannot be rebuilt")
        if "proj_size" in b.attribute_map() and b.attribute_map()["proj_size"] not in ("", "0"):
            problems.append(f"rnn: {b.name} has an LSTM projection")
    if genome.output_in_scale != 1.0 or any(b.in_scale != 1.0 for b in blocks):
        problems.append("rnn: not a plain stack (an in_scale other than 1)")
    return problems


def _transformer_problems(genome: Genome) -> list[str]:
    layers = transformer_layers(genome)
    if layers is None:
        return ["transformer: blocks must come as (attention, linear, linear) encoder layers"]
    problems = []
    d = genome.input_size
    for attention, _, ff_out in layers:
        a, out = genome.blocks[attention], genome.blocks[ff_out]
        if a.width != d or out.width != d:
            problems.append(f"transformer: {out.name} must give back the model width {d}, not {out.width}")
        if d % heads(a):
            problems.append(f"transformer: {heads(a)} heads do not divide width {d} in {a.name}")
        if a.normalization or a.residual:
            problems.append(f"transformer: {a.name} carries a norm / residual the layer has elsewhere")
        ff_in = genome.blocks[attention + 1]
        if ff_in.normalization or ff_in.residual or out.activation or out.residual:
            problems.append(f"transformer: {ff_in.name} / {out.name} carry a setting a pre-norm encoder layer lacks")
        if out.normalization != "layernorm":
            problems.append(f"transformer: {out.name} lost the encoder layer's LayerNorm")
    if genome.output_in_scale != 1.0 or any(b.in_scale != 1.0 for b in genome.blocks):
        problems.append("transformer: not a plain stack (an in_scale other than 1)")
    if genome.head.kind != "linear":
        problems.append("transformer: the output layer is not Linear")
    return problems


def keeps_structure(base: Genome, genome: Genome) -> bool:
    """False when ``base`` can be rebuilt and ``genome`` (an edit of it) no longer can.

    Edits of genomes the builders cannot rebuild anyway are not judged here.
    """
    if base.family == "mlp" and genome.family == "mlp":
        return True  # the MLP edits predate the builders; mlp_builder judges them itself
    return bool(structure_problems(base)) or not structure_problems(genome)


def _copy_layer(genome: Genome, indices: tuple[int, ...]) -> Genome:
    """``genome`` with copies of blocks ``indices`` appended after the last block (names "new.N")."""
    from runwatch.nas.space import new_block_name

    result = genome
    for i in indices:
        copy = dataclasses.replace(genome.blocks[i], name=new_block_name(result), in_scale=1.0)
        result = result.with_blocks((*result.blocks, copy))
    return result


def shallower(genome: Genome, space: SearchSpace) -> Genome | None:
    """One unit of depth less in a family that has its own unit: the last encoder layer; a stacked RNN layer.

    None for other families (the generic "remove the last block" applies) or when the space forbids it.
    """
    if -1 not in space.depth_changes:
        return None
    layers = transformer_layers(genome) if genome.family == "transformer" else None
    if layers is not None:
        return genome.with_blocks(genome.blocks[: layers[-1][0]]) if len(layers) > 1 else None
    if genome.family == "rnn":
        for i in reversed(range(genome.depth)):
            b = genome.blocks[i]
            if b.kind == "rnn" and rnn_layers(b) > 1:
                return genome.with_blocks(
                    (
                        *genome.blocks[:i],
                        _set_attribute(b, "num_layers", str(rnn_layers(b) - 1)),
                        *genome.blocks[i + 1 :],
                    )
                )
    return None


def deeper(genome: Genome, space: SearchSpace) -> Genome | None:
    """One unit of depth more: the last encoder layer repeated; one more stacked layer in the last RNN block."""
    if 1 not in space.depth_changes:
        return None
    layers = transformer_layers(genome) if genome.family == "transformer" else None
    if layers is not None:
        return _copy_layer(genome, layers[-1])
    if genome.family == "rnn":
        for i in reversed(range(genome.depth)):
            b = genome.blocks[i]
            if b.kind == "rnn" and rnn_layers(b) < MAX_RNN_LAYERS:
                return genome.with_blocks(
                    (
                        *genome.blocks[:i],
                        _set_attribute(b, "num_layers", str(rnn_layers(b) + 1)),
                        *genome.blocks[i + 1 :],
                    )
                )
    return None


def model_width(genome: Genome, width: int) -> Genome | None:
    """A transformer encoder with model width (``d_model``) ``width``: its embedding, every attention and output.

    Only for a token model (its embedding is a fixed layer, rebuilt at the new
    width; a model fed features of the input's width cannot change it) whose
    every attention keeps its heads dividing ``width`` (at least
    :data:`MIN_MODEL_WIDTH`). The fixed layers (embedding, learned positions,
    the encoder layers' second LayerNorm) all scale with the width, so
    ``fixed_params`` scales with it. None when not possible.

    >>> from runwatch.nas.architecture import Block
    >>> layer = (Block("enc.0.attn", "attention", 32, attributes=(("num_heads", "2"),)),
    ...          Block("enc.0.lin1", "linear", 64), Block("enc.0.lin2", "linear", 32, "", "layernorm"))
    >>> g = Genome(32, 9, layer, output_name="head", family="transformer", fixed_params=320, fixed=("embed",))
    >>> w = model_width(g, 64)
    >>> w.input_size, [b.width for b in w.blocks], w.fixed_params
    (64, [64, 64, 64], 640)
    >>> model_width(g, 3) is None, model_width(dataclasses.replace(g, fixed=()), 64) is None
    (True, True)
    """
    layers = transformer_layers(genome) if genome.family == "transformer" else None
    d = genome.input_size
    if layers is None or not genome.fixed or width == d or width < MIN_MODEL_WIDTH:
        return None
    blocks = list(genome.blocks)
    for attention, _, ff_out in layers:
        if width % heads(blocks[attention]):
            return None
        blocks[attention] = dataclasses.replace(blocks[attention], width=width)
        blocks[ff_out] = dataclasses.replace(blocks[ff_out], width=width)
    fixed = round(genome.fixed_params * width / d)
    return dataclasses.replace(genome, input_size=width, blocks=tuple(blocks), fixed_params=fixed)


def family_edits(genome: Genome, space: SearchSpace) -> Iterator[tuple[str, Genome]]:
    """The family's own single edits as ``(attribute, genome)``: RNN ``layers``, transformer ``heads``, ``depth``, width.

    ``layers``: a recurrent block's ``num_layers`` ± 1 (1 .. :data:`MAX_RNN_LAYERS`, the directions
    ``space.depth_changes`` allows). ``heads``: an attention block's heads doubled or halved when the result
    divides its width. ``depth``: a whole encoder layer removed (any of them, at least one stays) or the last
    one repeated. ``width``: a token transformer's model width times each of ``space.width_multipliers`` (:func:`model_width`).
    """
    for i, b in enumerate(genome.blocks):
        if b.kind == "rnn":
            for change in space.depth_changes:
                n = rnn_layers(b) + change
                if change and 1 <= n <= MAX_RNN_LAYERS:
                    yield (
                        "layers",
                        genome.replace_block(i, attributes=_set_attribute(b, "num_layers", str(n)).attributes),
                    )
        if b.kind == "attention":
            h = heads(b)
            for n in {h * 2, h // 2} - {0, h}:
                if b.width % n == 0:
                    yield "heads", genome.replace_block(i, attributes=_set_attribute(b, "num_heads", str(n)).attributes)
    layers = transformer_layers(genome) if genome.family == "transformer" else None
    if layers is None:
        return
    for factor in space.width_multipliers:
        resized = model_width(genome, round(genome.input_size * factor))
        if resized is not None:
            yield "width", resized
    if -1 in space.depth_changes and len(layers) > 1:
        for start, _, stop in layers:
            yield "depth", genome.with_blocks(genome.blocks[:start] + genome.blocks[stop + 1 :])
    if 1 in space.depth_changes:
        yield "depth", _copy_layer(genome, layers[-1])
