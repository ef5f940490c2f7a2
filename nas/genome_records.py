"""Conversion between :class:`~runwatch.nas.architecture.Genome` and ``runwatch.v1.Architecture`` records.

The record lists layers in forward order as ``describe_architecture`` writes
them: activations folded into the layer whose output they consume (so a ReLU
after a BatchNorm or a Dropout appears on that layer, not on the Linear), and
Dropout / normalization layers as layers of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from runwatch.nas.architecture import Block, Genome, family_of
from runwatch.nas.layer_costs import (
    ACTIVATION_NAMES,
    DEFAULT_TYPE,
    activation_key,
    activation_name,
    norm_params,
    normalization_key,
    weight_kind,
    weight_params,
)

__all__ = ["genome_from_architecture", "genome_to_architecture"]

_DROPOUT_TYPES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")
_RESIDUAL_ATTRIBUTE = "residual"


def _scale(in_size: int, previous_width: int) -> float:
    """Input features per unit of the previous width (1.0 when they match or are unknown)."""
    if not in_size or not previous_width or in_size == previous_width:
        return 1.0
    return in_size / previous_width


def _attributes(layer: Any) -> tuple[tuple[str, str], ...]:
    """Recorded settings minus defaults (a bias) and the residual marker, so records and hand-made genomes agree."""
    return tuple(
        sorted((k, v) for k, v in layer.attributes.items() if k != _RESIDUAL_ATTRIBUTE and (k, v) != ("bias", "true"))
    )


def _layer_type(layer_type: str) -> str:
    """ "" for the usual type of the kind (Linear, Conv2d, LSTM, MultiheadAttention), else the type."""
    return "" if DEFAULT_TYPE.get(weight_kind(layer_type) or "") == layer_type else layer_type


def _describe(layers: Sequence[Any]) -> str:
    return ", ".join(f"{layer.name!r} ({layer.type})" for layer in layers) or "none"


def genome_from_architecture(arch: Any) -> Genome:
    """See :meth:`Genome.from_architecture`."""
    layers = list(arch.layers)
    weight_at = [i for i, layer in enumerate(layers) if weight_kind(layer.type)]
    if not weight_at:
        raise ValueError(
            f"architecture has no weight layer (Linear, Conv, RNN/GRU/LSTM, MultiheadAttention) to edit; "
            f"layers: {_describe(layers)}"
        )
    if len(weight_at) == 1:
        only = layers[weight_at[0]]
        raise ValueError(
            f"architecture has nothing editable: its only weight layer {only.name!r} ({only.type}) is the output layer"
        )
    head_at = weight_at[-1]
    fixed = [layer.name for layer in layers[: weight_at[0]]] + [layer.name for layer in layers[head_at + 1 :]]
    blocks: list[Block] = []
    previous_width = 0
    for n, start in enumerate(weight_at[:-1]):
        layer = layers[start]
        activation = activation_key(layer.activation)
        normalization, dropout, norm_seen, dropout_seen = "", 0.0, False, False
        for trailing in layers[start + 1 : weight_at[n + 1]]:
            norm = normalization_key(trailing.type)
            standalone_activation = activation_key(trailing.type) in ACTIVATION_NAMES
            if norm and not norm_seen:
                normalization, norm_seen = norm, True
            elif trailing.type in _DROPOUT_TYPES and not dropout_seen:
                dropout, dropout_seen = float(trailing.attributes.get("p", "0") or 0.0), True
            elif standalone_activation and not activation:
                activation = activation_key(trailing.type)
                continue
            else:
                fixed.append(trailing.name)
            if not activation and trailing.activation:  # folded into the norm / dropout / pooling after the block
                activation = activation_key(trailing.activation)
        blocks.append(
            Block(
                name=layer.name,
                kind=weight_kind(layer.type) or "linear",
                width=int(layer.out_size),
                activation=activation,
                normalization=normalization,
                dropout=dropout,
                residual=layer.attributes.get(_RESIDUAL_ATTRIBUTE, "") == "true",
                layer_type=_layer_type(layer.type),
                attributes=_attributes(layer),
                in_scale=_scale(int(layer.in_size), previous_width) if blocks else 1.0,
            )
        )
        previous_width = int(layer.out_size)
    head = layers[head_at]
    input_size = int(layers[weight_at[0]].in_size)
    projection = _input_projection(blocks)
    if projection:
        # A transformer fed features through a Linear to its model width: that projection is its stem (as an
        # embedding is a token model's), not a block to widen or deepen.
        fixed += [b.name for b in blocks[:projection]]
        input_size = blocks[projection - 1].width
        blocks = [dataclasses.replace(blocks[projection], in_scale=1.0), *blocks[projection + 1 :]]
    genome = Genome(
        input_size=input_size,
        output_size=int(head.out_size),
        blocks=tuple(blocks),
        output_name=head.name,
        family=family_of(blocks),
        fixed=tuple(fixed),
        output_type=head.type,
        output_attributes=_attributes(head),
        output_activation=activation_key(head.activation),
        output_in_scale=_scale(int(head.in_size), previous_width),
    )
    # Whatever the formulas do not model (fixed layers, container-held parameters,
    # formula gaps such as LSTM projections) stays a constant so params() matches the model.
    recorded = int(arch.total_params) or sum(int(layer.param_count) for layer in layers)
    return _with_fixed_params(genome, recorded - genome.params())


def _input_projection(blocks: Sequence[Block]) -> int:
    """How many linear blocks come before the first attention block of a transformer (0 when not that shape).

    >>> blocks = [Block("proj", "linear", 32), Block("enc.0.attn", "attention", 32), Block("enc.0.lin1", "linear", 64)]
    >>> _input_projection(blocks), _input_projection(blocks[1:])
    (1, 0)
    """
    if family_of(blocks) != "transformer":
        return 0
    first = next(i for i, b in enumerate(blocks) if b.kind == "attention")
    return first if first and blocks[first - 1].width == blocks[first].width else 0


def _with_fixed_params(genome: Genome, fixed_params: int) -> Genome:
    import dataclasses

    return dataclasses.replace(genome, fixed_params=fixed_params)


def _norm_type(block: Block) -> str:
    if block.normalization != "batchnorm":
        return {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "groupnorm": "GroupNorm"}.get(
            block.normalization, block.normalization
        )
    dims = block.torch_type[-2:] if block.kind == "conv" and block.torch_type[-2:] in ("1d", "2d", "3d") else "1d"
    return f"BatchNorm{dims}"


def genome_to_architecture(genome: Genome) -> Any:
    """See :meth:`Genome.to_architecture`."""
    from runwatch.v1 import runs_pb2

    arch = runs_pb2.Architecture(total_params=genome.params())
    for n, name in enumerate(genome.fixed):
        arch.layers.add(name=name, type="Fixed", param_count=genome.fixed_params if n == 0 else 0)
    for block, in_size in zip((*genome.blocks, genome.head), genome.in_sizes(), strict=True):
        attributes = dict(block.attributes)
        if block.residual:
            attributes[_RESIDUAL_ATTRIBUTE] = "true"
        arch.layers.add(
            name=block.name,
            type=block.torch_type,
            in_size=in_size,
            out_size=block.width,
            activation=activation_name(block.activation),
            param_count=weight_params(block.torch_type, block.attribute_map(), in_size, block.width),
            attributes=attributes,
        )
        if block.normalization:
            arch.layers.add(
                name=f"{block.name}.norm",
                type=_norm_type(block),
                in_size=block.width,
                out_size=block.width,
                param_count=norm_params(block.normalization, block.width),
            )
        if block.dropout:
            arch.layers.add(name=f"{block.name}.dropout", type="Dropout", attributes={"p": repr(block.dropout)})
    return arch
