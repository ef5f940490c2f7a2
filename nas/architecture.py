"""The editable view of a model's architecture that the advisor searches around.

A :class:`Genome` is an input size, a stack of hidden :class:`Block` s and an
output layer. It is read from a ``runwatch.v1.Architecture`` record
(:meth:`Genome.from_architecture`), edited by :mod:`runwatch.nas.space`,
compared with :meth:`Genome.diff` (one :class:`Change` per user-visible edit),
costed with :meth:`Genome.params` / :meth:`Genome.flops` and built into a
torch model with :meth:`Genome.build` (MLP, CNN, GRU/LSTM and transformer families). Imports neither torch nor NNI.

Examples
--------
>>> g = Genome(input_size=64, output_size=10, blocks=(Block("fc1", "linear", 128, "relu"),))
>>> g.params()  # 64*128+128 + 128*10+10
9610
>>> wider = g.replace_block(0, width=256, activation="gelu")
>>> [c.description for c in g.diff(wider)]
['fc1 (Linear 64→128): 128 -> 256 units', 'ReLU -> GELU in fc1 (Linear 64→128)']
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from runwatch.nas.layer_costs import DEFAULT_TYPE, norm_params, weight_macs, weight_params

__all__ = ["Block", "Change", "Genome"]

_RESIDUAL_KINDS = ("linear", "conv")


@dataclass(frozen=True)
class Block:
    """One hidden block of a layer stack: a weight layer and what follows it.

    ``kind`` is the weight layer's family ("linear", "conv", "rnn", "attention");
    ``width`` its output features / channels / hidden size; ``activation`` a
    lower-case torch name ("relu", "tanh", "gelu", "sigmoid", "" = none);
    ``normalization`` "" | "layernorm" | "batchnorm"; ``dropout`` the dropout
    probability after the block; ``residual`` whether a skip connection adds
    the block's input to its output (needs equal in/out width).
    ``name`` is the weight layer's module path in the original model ("fc2",
    "net.3"); new blocks get a generated name ("new.1").

    ``layer_type`` is the torch class ("Conv2d", "GRU"; "" = the kind's usual
    type, "Linear" for linear), ``attributes`` the layer's recorded settings
    as sorted (key, value) pairs (kernel size, ``("bias", "false")``, number of
    stacked RNN layers: what the cost formulas need; a bias is the default and
    not listed), and ``in_scale`` how many input
    features the layer reads per unit of the previous layer's width: 1 in a
    plain stack, 49 for a ``Linear`` reading 7x7 flattened feature maps, so
    narrowing the convolution before it narrows the Linear's input too.
    """

    name: str
    kind: str
    width: int
    activation: str = ""
    normalization: str = ""
    dropout: float = 0.0
    residual: bool = False
    layer_type: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    in_scale: float = 1.0

    @property
    def torch_type(self) -> str:
        """The torch class name of the weight layer ("Linear" when ``layer_type`` is unset)."""
        return self.layer_type or DEFAULT_TYPE.get(self.kind, "Linear")

    def attribute_map(self) -> dict[str, str]:
        """``attributes`` as a dict."""
        return dict(self.attributes)


@dataclass(frozen=True)
class Genome:
    """A model as input size, hidden blocks and an output layer.

    ``fixed`` lists layers the advisor must leave alone (embeddings, the output
    head, layers of types it does not understand), kept so costs stay honest:
    ``fixed_params`` are the trainable parameters the blocks and the output
    layer do not account for (those fixed layers, parameters held by container
    modules, and any gap between the cost formulas and the recorded counts),
    so that :meth:`params` of the genome read from a record equals the model's
    parameter count. The output layer (``output_name``) is not editable; its
    torch type, attributes, activation and ``output_in_scale`` (see
    :attr:`Block.in_scale`) are kept for costs and :meth:`build`.
    """

    input_size: int
    output_size: int
    blocks: tuple[Block, ...]
    output_name: str = "output"
    family: str = "mlp"
    fixed_params: int = 0
    fixed: tuple[str, ...] = field(default_factory=tuple)
    output_type: str = "Linear"
    output_attributes: tuple[tuple[str, str], ...] = ()
    output_activation: str = ""
    output_in_scale: float = 1.0

    # ------------------------------------------------------------------ records

    @classmethod
    def from_architecture(cls, arch: Any) -> Genome:
        """The genome of a ``runwatch.v1.Architecture`` record.

        Weight layers (Linear, Conv*, RNN/GRU/LSTM, MultiheadAttention) are
        taken in order; the last is the output layer, the earlier ones become
        blocks. A Dropout after a block sets its ``dropout``, a
        LayerNorm/BatchNorm its ``normalization``; the activation is the
        block's own or, when the record folded it into a following layer,
        that layer's. Embeddings and unknown layers become ``fixed``.

        Parameters
        ----------
        arch
            A ``runwatch.v1.runs_pb2.Architecture`` (or anything with ``layers``
            and ``total_params`` of the same shape).

        Returns
        -------
        Genome

        Raises
        ------
        ValueError
            When the record has no weight layer, or only one (nothing but the
            output layer to edit); the message names the layers.

        Examples
        --------
        >>> from runwatch.v1 import runs_pb2
        >>> arch = runs_pb2.Architecture(total_params=1074, layers=[
        ...     runs_pb2.Layer(name="fc1", type="Linear", in_size=64, out_size=16, activation="ReLU", param_count=1040),
        ...     runs_pb2.Layer(name="drop", type="Dropout", attributes={"p": "0.1"}),
        ...     runs_pb2.Layer(name="out", type="Linear", in_size=16, out_size=2, param_count=34)])
        >>> g = Genome.from_architecture(arch)
        >>> g.blocks[0].width, g.blocks[0].activation, g.blocks[0].dropout, g.output_name, g.params()
        (16, 'relu', 0.1, 'out', 1074)
        """
        from runwatch.nas.genome_records import genome_from_architecture

        return genome_from_architecture(arch)

    def to_architecture(self) -> Any:
        """This genome as a ``runwatch.v1.Architecture``.

        Fixed layers come first as layers of type ``"Fixed"`` (their positions
        are not kept; the first carries ``fixed_params``), then each block's
        weight layer (with ``{"residual": "true"}`` when it has a skip
        connection), normalization and dropout layers, then the output layer.
        ``Genome.from_architecture(g.to_architecture()) == g`` for genomes made
        of linear blocks.

        Examples
        --------
        >>> g = Genome(64, 10, (Block("fc1", "linear", 32, "relu", "layernorm", 0.2),))
        >>> [(l.name, l.type) for l in g.to_architecture().layers]
        [('fc1', 'Linear'), ('fc1.norm', 'LayerNorm'), ('fc1.dropout', 'Dropout'), ('output', 'Linear')]
        >>> Genome.from_architecture(g.to_architecture()) == g
        True
        """
        from runwatch.nas.genome_records import genome_to_architecture

        return genome_to_architecture(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``Genome.from_dict`` inverts it).

        Examples
        --------
        >>> g = Genome(8, 2, (Block("fc1", "linear", 4, "tanh"),))
        >>> Genome.from_dict(g.to_dict()) == g
        True
        """
        data = dataclasses.asdict(self)
        data["blocks"] = [{**dataclasses.asdict(b), "attributes": dict(b.attributes)} for b in self.blocks]
        data["fixed"] = list(self.fixed)
        data["output_attributes"] = dict(self.output_attributes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        """Inverse of :meth:`to_dict`."""
        blocks = tuple(
            Block(**{**b, "attributes": tuple(sorted(dict(b.get("attributes", {})).items()))}) for b in data["blocks"]
        )
        return cls(
            **{
                **data,
                "blocks": blocks,
                "fixed": tuple(data.get("fixed", ())),
                "output_attributes": tuple(sorted(dict(data.get("output_attributes", {})).items())),
            }
        )

    # ------------------------------------------------------------------ shape and cost

    @property
    def depth(self) -> int:
        """Number of hidden blocks."""
        return len(self.blocks)

    @property
    def head(self) -> Block:
        """The output layer as a (non-editable) block, for uniform cost arithmetic."""
        return Block(
            self.output_name,
            _kind_of(self.output_type),
            self.output_size,
            self.output_activation,
            layer_type=self.output_type,
            attributes=self.output_attributes,
            in_scale=self.output_in_scale,
        )

    def in_sizes(self) -> tuple[int, ...]:
        """Input width of each hidden block, then of the output layer.

        Examples
        --------
        >>> Genome(64, 10, (Block("a", "linear", 32), Block("b", "linear", 16))).in_sizes()
        (64, 32, 16)
        """
        sizes = []
        previous = self.input_size
        for layer in (*self.blocks, self.head):
            size = previous if layer.in_scale == 1.0 else round(previous * layer.in_scale)
            sizes.append(size)
            previous = layer.width
        return tuple(sizes)

    def params(self) -> int:
        """Trainable parameters: weight layers, normalizations, output layer and ``fixed_params``.

        Linear: ``in * out + out``; LayerNorm/BatchNorm: ``2 * width``;
        convolution, recurrent and attention layers by their usual formulas
        (:func:`runwatch.nas.layer_costs.weight_params`).

        Examples
        --------
        >>> Genome(64, 10, (Block("fc1", "linear", 128, normalization="layernorm"),)).params()
        9866
        """
        total = self.fixed_params
        for layer, in_size in zip((*self.blocks, self.head), self.in_sizes(), strict=True):
            total += weight_params(layer.torch_type, layer.attribute_map(), in_size, layer.width)
            total += norm_params(layer.normalization, layer.width)
        return total

    def flops(self) -> int:
        """Forward FLOPs for one example: ``2 x`` multiply-accumulates of the weight layers.

        Convolutions count one output position, recurrent layers one time
        step, attention one token's projections (see
        :mod:`runwatch.nas.layer_costs`); fixed layers, biases, normalizations
        and activations are not counted. Use it to compare genomes of one
        family.

        Examples
        --------
        >>> Genome(64, 10, (Block("fc1", "linear", 128),)).flops()  # 2 * (64*128 + 128*10)
        18944
        """
        macs = 0
        for layer, in_size in zip((*self.blocks, self.head), self.in_sizes(), strict=True):
            macs += weight_macs(layer.torch_type, layer.attribute_map(), in_size, layer.width)
        return 2 * macs

    # ------------------------------------------------------------------ identity and validity

    def key(self) -> str:
        """Canonical id: equal for structurally equal genomes (block names are ignored).

        Examples
        --------
        >>> Genome(64, 10, (Block("fc1", "linear", 128, "relu", dropout=0.1),)).key()
        '64>linear128.relu.d0.1>10'
        >>> a = Genome(4, 2, (Block("x", "linear", 8),)); b = Genome(4, 2, (Block("y", "linear", 8),))
        >>> a.key() == b.key()
        True
        """
        parts = [str(self.input_size)]
        for b in self.blocks:
            token = f"{b.kind}{b.width}"
            if b.layer_type and b.layer_type != DEFAULT_TYPE.get(b.kind):
                token += f":{b.layer_type}"
            token += "".join(f".{v}" for v in (b.activation, b.normalization) if v)
            token += f".d{b.dropout:g}" if b.dropout else ""
            token += ".res" if b.residual else ""
            token += f"@{b.in_scale:g}" if b.in_scale != 1.0 else ""
            if _significant(b.attributes):
                token += "#" + _digest(_significant(b.attributes))
            parts.append(token)
        tail = str(self.output_size)
        if self.output_type != "Linear" or _significant(self.output_attributes):
            tail += f":{self.output_type}#{_digest(_significant(self.output_attributes))}"
        if self.output_activation:
            tail += f".{self.output_activation}"
        if self.output_in_scale != 1.0:
            tail += f"@{self.output_in_scale:g}"
        if self.fixed_params:
            tail += f"+{self.fixed_params}"
        parts.append(tail)
        return ">".join(parts)

    def validate(self) -> list[str]:
        """Problems that make this genome inconsistent; ``[]`` when valid.

        Checks: at least one block, unique non-empty names, positive widths and
        input sizes, dropout in ``[0, 1)``, residual connections only around
        linear/conv blocks whose input width equals their width (and, for
        convolutions, stride 1: the spatial size must not change), attention
        blocks reading exactly their width, grouped convolutions whose channels
        divide by the groups.

        Examples
        --------
        >>> Genome(64, 10, (Block("fc1", "linear", 128, residual=True),)).validate()
        ['fc1: residual connection needs input width 64 == width 128']
        """
        problems: list[str] = []
        if not self.blocks:
            problems.append("no hidden block")
        names = [b.name for b in self.blocks]
        if any(not n for n in names) or len(set(names)) != len(names) or self.output_name in names:
            problems.append(f"block names must be unique and non-empty: {names}")
        for b, in_size in zip(self.blocks, self.in_sizes(), strict=False):
            if b.width < 1 or in_size < 1:
                problems.append(f"{b.name}: sizes must be positive (input {in_size}, width {b.width})")
            if not 0.0 <= b.dropout < 1.0:
                problems.append(f"{b.name}: dropout {b.dropout} outside [0, 1)")
            if b.residual and (b.kind not in _RESIDUAL_KINDS or in_size != b.width):
                why = (
                    f"{b.kind} block" if b.kind not in _RESIDUAL_KINDS else f"input width {in_size} == width {b.width}"
                )
                problems.append(f"{b.name}: residual connection needs {why}")
            stride = b.attribute_map().get("stride", "1")
            if b.residual and b.kind == "conv" and any(s != "1" for s in stride.split("x")):
                problems.append(f"{b.name}: residual connection around a strided convolution ({stride})")
            if b.kind == "attention" and in_size != b.width:
                problems.append(f"{b.name}: attention reads its own width {b.width}, got input {in_size}")
            groups = int(b.attribute_map().get("groups", "1") or 1)
            if b.kind == "conv" and groups > 1 and (in_size % groups or b.width % groups):
                problems.append(f"{b.name}: {groups} groups do not divide channels {in_size} -> {b.width}")
        head_in = self.in_sizes()[-1]
        if self.head.kind == "attention" and head_in != self.output_size:
            problems.append(f"{self.output_name}: attention reads its own width {self.output_size}, got {head_in}")
        return problems

    # ------------------------------------------------------------------ edits and diffs

    def replace_block(self, index: int, **changes: Any) -> Genome:
        """A copy with block ``index`` changed (fields of :class:`Block`).

        Examples
        --------
        >>> g = Genome(8, 2, (Block("fc1", "linear", 4),))
        >>> g.replace_block(0, width=16).blocks[0].width
        16
        """
        blocks = list(self.blocks)
        blocks[index] = dataclasses.replace(blocks[index], **changes)
        return self.with_blocks(blocks)

    def with_blocks(self, blocks: Any) -> Genome:
        """A copy with these blocks (and the family they imply)."""
        blocks = tuple(blocks)
        return dataclasses.replace(self, blocks=blocks, family=family_of(blocks))

    def diff(self, other: Genome) -> list[Change]:
        """Changes that turn ``self`` into ``other``, one per user-visible edit.

        Blocks are matched by name. Layers are named by the user's module
        paths with their type and shape in ``self`` ("encoder.fc2 (Linear
        128→512)"; bare ``nn.Sequential`` indices read "layer 3 (Linear
        64→32)"; added blocks "a new Linear block (64→64, ReLU)", never an
        internal name). The depth change comes first ("depth 6 -> 4 (remove
        blocks fc5 (Linear 64→64), fc6 (Linear 64→64))"), then per block in
        ``other``'s order: width ("fc2 (Linear 64→512): 512 -> 256 units"),
        activation ("ReLU -> GELU in fc1 (Linear 64→128)"), normalization
        ("add LayerNorm after fc3 (...)"), dropout ("fc1 (...): dropout 0.0 ->
        0.2"), residual ("add residual connection around fc2 (...)"), stacked
        RNN layers ("rnn (GRU 16→64): 2 -> 1 layers") and attention heads
        ("... self_attn (MultiheadAttention 48→48): 2 -> 4 heads").
        Consecutive blocks with the same change of one attribute are merged
        into one change ("ReLU -> GELU in fc1-fc3", "add LayerNorm after
        fc1-fc12", "fc1-fc3: 2 -> 16 units", "layers 0-4 (3 Linear layers):
        2 -> 16 units"); ``Change.layer`` then lists the
        names comma-separated. Input, output and fixed layers are assumed
        equal and not compared.

        Examples
        --------
        >>> a = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 64, "relu") for i in (1, 2, 3)))
        >>> b = a.with_blocks(dataclasses.replace(x, activation="gelu") for x in a.blocks)
        >>> [(c.layer, c.description) for c in a.diff(b)]
        [('fc1,fc2,fc3', 'ReLU -> GELU in fc1-fc3')]
        """
        from runwatch.nas.genome_diff import diff_genomes

        return diff_genomes(self, other)

    # ------------------------------------------------------------------ torch

    def build(self, stem: Any = None) -> Any:
        """A freshly initialised torch model for this genome (mlp, cnn, rnn and transformer families).

        MLPs are a ``torch.nn.Sequential``: each block ``Linear -> [norm] ->
        [activation] -> [Dropout]``, wrapped in a skip connection when
        ``residual``; then the output ``Linear`` (and its activation); they
        expect ``(batch, input_size)`` inputs. CNNs, GRU/LSTM taggers and
        transformer encoders are rebuilt by :mod:`runwatch.nas.family_builders`
        from the blocks and ``stem`` (a :class:`runwatch.nas.families.Stem`:
        the token embedding, positions or image shape the genome leaves out;
        ``stem_of_model`` reads it off the original model). Module names are
        the block names with "." replaced by "_". The model of an unedited
        genome has exactly :meth:`params` parameters.

        Raises
        ------
        ValueError
            For invalid genomes, families without a builder, genomes whose
            blocks do not follow the shape their family's builder knows
            (:func:`runwatch.nas.families.structure_problems`), or MLPs with
            fixed layers (which the genome does not describe well enough to
            rebuild).

        Examples
        --------
        >>> import torch
        >>> g = Genome(8, 3, (Block("fc1", "linear", 16, "relu", "layernorm", 0.1, residual=False),))
        >>> model = g.build()
        >>> sum(p.numel() for p in model.parameters()) == g.params(), tuple(model(torch.zeros(2, 8)).shape)
        (True, (2, 3))
        >>> from runwatch.nas.families import Stem
        >>> gru = Genome(16, 9, (Block("rnn", "rnn", 32, layer_type="GRU"),), output_name="head", family="rnn",
        ...              fixed_params=144, fixed=("embed",))
        >>> tuple(gru.build(Stem(tokens=9))(torch.zeros(2, 12, dtype=torch.long)).shape)
        (2, 12, 9)
        """
        if self.family == "mlp":
            from runwatch.nas.mlp_builder import build_mlp

            return build_mlp(self)  # its own, more specific messages for what an MLP cannot be
        from runwatch.nas.family_builders import build

        return build(self, stem)


@dataclass(frozen=True)
class Change:
    """One difference between two genomes, as shown to users.

    Mirrors ``runwatch.v1.ArchitectureChange``: ``layer`` ("" for model-wide
    changes such as depth), ``attribute`` ("width", "depth", "activation",
    "dropout", "normalization", "residual"), ``before``/``after`` as strings and
    a one-line ``description`` ("fc2: 512 -> 256 units").
    """

    layer: str
    attribute: str
    before: str
    after: str
    description: str


def _kind_of(layer_type: str) -> str:
    from runwatch.nas.layer_costs import weight_kind

    return weight_kind(layer_type) or "linear"


def _significant(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Attributes that change the layer (a bias is the default and does not make a genome different)."""
    return tuple(p for p in pairs if p != ("bias", "true"))


def _digest(pairs: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha1(repr(pairs).encode()).hexdigest()[:8]


def family_of(blocks: Any) -> str:
    """ "mlp" when every block is linear, else "cnn", "rnn", "transformer" or "mixed".

    Linear blocks alongside one other kind do not make a family "mixed": a CNN
    with a linear classifier stack is still "cnn".

    Examples
    --------
    >>> family_of([Block("c", "conv", 8), Block("f", "linear", 8)]), family_of([Block("f", "linear", 8)])
    ('cnn', 'mlp')
    """
    kinds = {b.kind for b in blocks} - {"linear"}
    if not kinds:
        return "mlp"
    if len(kinds) > 1:
        return "mixed"
    return {"conv": "cnn", "rnn": "rnn", "attention": "transformer"}.get(kinds.pop(), "mixed")
