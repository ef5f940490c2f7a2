"""Torch models for MLP genomes (see :meth:`Genome.build`); torch is imported here only."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.layer_costs import activation_name

__all__ = ["Residual", "activation_module", "block_layers", "build_mlp", "normalization_module"]


class Residual(nn.Module):
    """``x + body(x)``: a skip connection around a block."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def module_name(name: str) -> str:
    """A torch child-module name for a layer path ("net.3" -> "net_3")."""
    return name.replace(".", "_") or "layer"


def activation_module(activation: str) -> nn.Module:
    """A parameter-free torch activation for a canonical name ("gelu" -> ``nn.GELU()``).

    Examples
    --------
    >>> activation_module("silu")
    SiLU()
    """
    cls = getattr(nn, activation_name(activation), None)
    if cls is None or activation == "prelu":  # PReLU has parameters the genome does not count
        raise ValueError(f"cannot build activation {activation!r}")
    return cls()


def normalization_module(normalization: str, width: int) -> nn.Module:
    """A normalization over ``width`` features ("layernorm", "batchnorm" or "rmsnorm")."""
    if normalization == "layernorm":
        return nn.LayerNorm(width)
    if normalization == "batchnorm":
        return nn.BatchNorm1d(width)
    if normalization == "rmsnorm":
        return nn.RMSNorm(width)
    raise ValueError(f"cannot build normalization {normalization!r} in an MLP")


def block_layers(block: Block, in_size: int) -> list[tuple[str, nn.Module]]:
    """Named modules of one linear block: Linear, [norm], [activation], [Dropout]."""
    name = module_name(block.name)
    bias = block.attribute_map().get("bias", "true") != "false"
    layers: list[tuple[str, nn.Module]] = [(name, nn.Linear(in_size, block.width, bias=bias))]
    if block.normalization:
        layers.append((f"{name}_norm", normalization_module(block.normalization, block.width)))
    if block.activation:
        layers.append((f"{name}_act", activation_module(block.activation)))
    if block.dropout:
        layers.append((f"{name}_drop", nn.Dropout(block.dropout)))
    return layers


def build_mlp(genome: Genome) -> nn.Sequential:
    """See :meth:`Genome.build`."""
    if genome.family != "mlp" or genome.head.kind != "linear":
        raise ValueError(f"build() supports MLP genomes only, not family {genome.family!r}")
    if genome.fixed_params:
        raise ValueError(
            f"genome has {genome.fixed_params} parameters in fixed layers {list(genome.fixed)} that build() "
            "cannot recreate"
        )
    if genome.output_in_scale != 1.0 or any(b.in_scale != 1.0 for b in genome.blocks):
        raise ValueError("build() needs a plain stack (every in_scale 1.0)")
    problems = genome.validate()
    if problems:
        raise ValueError("invalid genome: " + "; ".join(problems))
    modules: list[tuple[str, nn.Module]] = []
    in_sizes = genome.in_sizes()
    for block, in_size in zip(genome.blocks, in_sizes, strict=False):
        layers = block_layers(block, in_size)
        if block.residual:
            modules.append((module_name(block.name), Residual(nn.Sequential(OrderedDict(layers)))))
        else:
            modules.extend(layers)
    head = genome.head
    bias = head.attribute_map().get("bias", "true") != "false"
    modules.append((module_name(head.name), nn.Linear(in_sizes[-1], head.width, bias=bias)))
    if head.activation:
        modules.append((f"{module_name(head.name)}_act", activation_module(head.activation)))
    return nn.Sequential(OrderedDict(modules))
