"""Torch models for genomes of every family the corpus has: MLP, CNN, GRU/LSTM tagger, transformer encoder.

:func:`build` dispatches on :attr:`Genome.family` through :data:`BUILDERS`;
each builder rebuilds the blocks with the user's module names ("." -> "_"),
widths and layer settings, plus the :class:`~runwatch.nas.families.Stem` the
genome leaves out (:func:`stem_of_model` reads it off the user's model). The
rebuilt model of an unedited genome has the recorded parameter count; what the
record cannot say is fixed by convention and documented per builder.

Examples
--------
>>> import torch
>>> from runwatch.nas.architecture import Block, Genome
>>> g = Genome(16, 9, (Block("rnn", "rnn", 32, layer_type="GRU", attributes=(("num_layers", "2"),)),),
...            output_name="head", family="rnn", fixed_params=9 * 16, fixed=("embed",))
>>> model = build(g, Stem(tokens=9))
>>> tuple(model(torch.zeros(2, 12, dtype=torch.long)).shape), sum(p.numel() for p in model.parameters()) == g.params()
((2, 12, 9), True)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.families import Stem, heads, rnn_layers, structure_problems, transformer_layers
from runwatch.nas.mlp_builder import Residual, activation_module, block_layers, build_mlp, module_name

__all__ = ["BUILDERS", "Stem", "build", "stem_of_model"]


def _pair(text: str, default: int) -> tuple[int, int]:
    parts = [int(p) for p in (text or "").split("x") if p]
    if not parts:
        return default, default
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _flag(block: Block, name: str, default: str = "true") -> bool:
    return block.attribute_map().get(name, default) != "false"


def _tail(block: Block, width: int, norm: Callable[[int], nn.Module]) -> list[tuple[str, nn.Module]]:
    """[norm], [activation], [Dropout] after a block's weight layer."""
    name = module_name(block.name)
    out: list[tuple[str, nn.Module]] = []
    if block.normalization:
        out.append((f"{name}_norm", norm(width)))
    if block.activation:
        out.append((f"{name}_act", activation_module(block.activation)))
    if block.dropout:
        out.append((f"{name}_drop", nn.Dropout(block.dropout)))
    return out


def _linear_stack(genome: Genome, start: int, in_size: int) -> list[tuple[str, nn.Module]]:
    """Linear blocks ``start..`` and the output layer (applied to the last dimension)."""
    modules: list[tuple[str, nn.Module]] = []
    for block in genome.blocks[start:]:
        layers = block_layers(block, in_size)
        if block.residual:
            modules.append((module_name(block.name), Residual(nn.Sequential(OrderedDict(layers)))))
        else:
            modules.extend(layers)
        in_size = block.width
    head = genome.head
    modules.append((module_name(head.name), nn.Linear(in_size, head.width, bias=_flag(head, "bias"))))
    if head.activation:
        modules.append((f"{module_name(head.name)}_act", activation_module(head.activation)))
    return modules


# -- CNN ------------------------------------------------------------------------------------------


class ImageCNN(nn.Module):
    """``[reshape] -> Conv2d blocks -> adaptive max-pool -> flatten -> linear blocks -> output``.

    The pool makes the grid the first linear layer reads (its ``in_scale``
    positions per channel, a square), whatever the convolutions did to the
    size: the record keeps that count but not the pooling that produced it.
    The last convolution's dropout comes after the pool (where a classifier's
    dropout usually sits).
    """

    def __init__(self, genome: Genome, stem: Stem) -> None:
        super().__init__()
        self.image = tuple(stem.image)
        blocks = genome.blocks
        n_conv = next((i for i, b in enumerate(blocks) if b.kind != "conv"), len(blocks))
        channels = genome.input_size
        convs: list[tuple[str, nn.Module]] = []
        for k, block in enumerate(blocks[:n_conv]):
            a = block.attribute_map()
            conv = nn.Conv2d(
                channels,
                block.width,
                _pair(a.get("kernel_size", ""), 1),
                stride=_pair(a.get("stride", ""), 1),
                padding=_pair(a.get("padding", ""), 0),
                dilation=_pair(a.get("dilation", ""), 1),
                groups=int(a.get("groups", "1") or 1),
                bias=_flag(block, "bias"),
            )
            last = k == n_conv - 1
            tail = [
                (n, m)
                for n, m in _tail(block, block.width, _conv_norm(block.normalization))
                if not (last and isinstance(m, nn.Dropout))
            ]
            layers = [(module_name(block.name), conv), *tail]
            if block.residual:
                convs.append((module_name(block.name), Residual(nn.Sequential(OrderedDict(layers)))))
            else:
                convs.extend(layers)
            channels = block.width
        self.features = nn.Sequential(OrderedDict(convs))
        scale = blocks[n_conv].in_scale if n_conv < len(blocks) else genome.output_in_scale
        side = math.isqrt(round(scale))
        self.pool = nn.AdaptiveMaxPool2d((side, side))
        last_dropout = blocks[n_conv - 1].dropout
        self.drop = nn.Dropout(last_dropout) if last_dropout else nn.Identity()
        self.classifier = nn.Sequential(OrderedDict(_linear_stack(genome, n_conv, channels * side * side)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.image:
            x = x.reshape(x.shape[0], *self.image)
        h = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.drop(h))


def _conv_norm(normalization: str) -> Callable[[int], nn.Module]:
    # LayerNorm over a feature map's channels is GroupNorm with one group: 2 x channels parameters, as costed.
    return {"batchnorm": nn.BatchNorm2d, "layernorm": lambda c: nn.GroupNorm(1, c)}.get(
        normalization, lambda c: nn.Identity()
    )


# -- recurrent tagger -------------------------------------------------------------------------------


class RecurrentTagger(nn.Module):
    """``[token embedding] -> RNN/GRU/LSTM blocks -> per-position linear blocks -> output``.

    Each recurrent block is one ``nn.GRU``/``nn.LSTM``/``nn.RNN`` with its
    recorded ``num_layers`` and inter-layer dropout, then the block's
    LayerNorm and dropout; the output is per position (``[batch, time,
    outputs]``), as a tagger's.
    """

    def __init__(self, genome: Genome, stem: Stem) -> None:
        super().__init__()
        self.embed = nn.Embedding(stem.tokens, genome.input_size) if stem.tokens else None
        blocks = genome.blocks
        n_rnn = next((i for i, b in enumerate(blocks) if b.kind != "rnn"), len(blocks))
        size = genome.input_size
        self.recurrent = nn.ModuleDict()
        self.after = nn.ModuleDict()
        for block in blocks[:n_rnn]:
            layers = rnn_layers(block)
            dropout = float(block.attribute_map().get("dropout", "0") or 0.0) if layers > 1 else 0.0
            cls = {"GRU": nn.GRU, "RNN": nn.RNN}.get(block.torch_type, nn.LSTM)
            name = module_name(block.name)
            self.recurrent[name] = cls(
                size, block.width, num_layers=layers, batch_first=True, dropout=dropout, bias=_flag(block, "bias")
            )
            self.after[name] = nn.Sequential(OrderedDict(_tail(block, block.width, nn.LayerNorm)))
            size = block.width
        self.head = nn.Sequential(OrderedDict(_linear_stack(genome, n_rnn, size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.embed is not None else x
        for name, rnn in self.recurrent.items():
            h = self.after[name](rnn(h)[0])
        return self.head(h)


# -- transformer encoder ----------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: ``x + drop(attn(norm1(x)))``, then ``x + drop(linear2(drop(act(linear1(norm2(x))))))``.

    Names follow ``nn.TransformerEncoderLayer`` (``self_attn``, ``linear1``,
    ``linear2``, ``norm1``, ``norm2``). The feed-forward activation is the
    ``linear1`` block's, ReLU when the record has none (torch's default, a
    functional call the record cannot see). The attention's dropout (on its
    weights) is the attention block's dropout when set, else the recorded
    one; ``linear1``'s dropout follows the feed-forward activation and
    ``linear2``'s is the layer's residual dropout (``dropout1``, ``dropout2``).
    """

    def __init__(self, attention: Block, ff_in: Block, ff_out: Block) -> None:
        super().__init__()
        d = attention.width
        # The attention block's dropout (an edit) or the recorded attention dropout: dropout on the attention weights.
        attn_dropout = attention.dropout or float(attention.attribute_map().get("dropout", "0") or 0.0)
        self.self_attn = nn.MultiheadAttention(d, heads(attention), dropout=attn_dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, ff_in.width, bias=_flag(ff_in, "bias"))
        self.activation = activation_module(ff_in.activation or "relu")
        self.dropout = nn.Dropout(ff_in.dropout)
        self.linear2 = nn.Linear(ff_in.width, d, bias=_flag(ff_out, "bias"))
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(ff_out.dropout)
        self.dropout2 = nn.Dropout(ff_out.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h, h, need_weights=False)[0])
        return x + self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(self.norm2(x))))))


class TransformerTagger(nn.Module):
    """``token embedding [+ learned positions] -> encoder layers -> per-position output``.

    The embedding is ``nn.Embedding(stem.tokens, d)`` (or the input itself,
    ``[batch, time, d]``), the positions a ``[stem.positions, d]`` parameter
    initialised ``N(0, 0.1)``.
    """

    def __init__(self, genome: Genome, stem: Stem) -> None:
        super().__init__()
        d = genome.input_size
        self.embed = nn.Embedding(stem.tokens, d) if stem.tokens else None
        self.pos = nn.Parameter(torch.randn(stem.positions, d) * 0.1) if stem.positions else None
        layers = transformer_layers(genome) or []
        self.layers = nn.ModuleList(EncoderLayer(*(genome.blocks[i] for i in idx)) for idx in layers)
        self.head = nn.Sequential(OrderedDict(_linear_stack(genome, len(genome.blocks), d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.embed is not None else x
        if self.pos is not None:
            h = h + self.pos[: h.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


# -- registry -----------------------------------------------------------------------------------------


def _mlp(genome: Genome, stem: Stem) -> nn.Module:
    return build_mlp(genome)


BUILDERS: dict[str, Callable[[Genome, Stem], nn.Module]] = {
    "mlp": _mlp,
    "cnn": ImageCNN,
    "rnn": RecurrentTagger,
    "transformer": TransformerTagger,
}


def build(genome: Genome, stem: Stem | None = None) -> nn.Module:
    """A freshly initialised torch model for ``genome`` (see :data:`BUILDERS`; :meth:`Genome.build` calls it).

    Raises
    ------
    ValueError
        For an invalid genome, a family without a builder, or a genome the
        family's builder cannot rebuild (:func:`runwatch.nas.families.structure_problems`),
        and for a token model without ``stem.tokens``.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> conv = (("kernel_size", "3x3"), ("padding", "1x1"))
    >>> g = Genome(1, 10, (Block("conv1", "conv", 8, "relu", attributes=conv),
    ...                    Block("conv2", "conv", 16, "relu", attributes=conv)),
    ...            output_name="fc", family="cnn", output_in_scale=16.0)
    >>> model = build(g, Stem(image=(1, 8, 8)))
    >>> tuple(model(torch.zeros(2, 64)).shape), sum(p.numel() for p in model.parameters()) == g.params()
    ((2, 10), True)
    """
    stem = stem or Stem()
    problems = genome.validate() + structure_problems(genome)
    if problems:
        raise ValueError(f"cannot build this {genome.family} genome: " + "; ".join(problems))
    builder = BUILDERS.get(genome.family)
    if builder is None:
        raise ValueError(f"no builder for family {genome.family!r}")
    if genome.fixed_params and genome.family in ("rnn", "transformer") and not stem.tokens:
        raise ValueError(
            f"the {genome.family} genome has fixed layers {list(genome.fixed)} (an embedding, or an input "
            "projection from features): only a token embedding is rebuilt, pass Stem(tokens=...) "
            "(stem_of_model reads it off the model)"
        )
    return builder(genome, stem)


def stem_of_model(model: nn.Module) -> Stem:
    """The :class:`Stem` of a torch model: its first ``nn.Embedding``, learned positions, ``nn.Unflatten`` image.

    Positions are a parameter held directly by the model (not by a layer) of
    shape ``[positions, embedding dim]``.

    Examples
    --------
    >>> m = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    >>> stem_of_model(m)
    Stem(tokens=0, positions=0, image=(1, 8, 8))
    """
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    tokens = int(embedding.num_embeddings) if embedding is not None else 0
    positions = 0
    if embedding is not None:
        for p in model._parameters.values():
            if p is not None and p.dim() == 2 and p.shape[1] == embedding.embedding_dim:
                positions = int(p.shape[0])
    unflatten = next((m for m in model.modules() if isinstance(m, nn.Unflatten)), None)
    image = tuple(int(s) for s in unflatten.unflattened_size) if unflatten is not None else ()
    return Stem(tokens, positions, image if len(image) == 3 else ())
