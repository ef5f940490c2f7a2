"""Genome: reading real torch models' architecture records, costs, diffs, records and torch builds."""

from __future__ import annotations

import doctest
import importlib
import json

import pytest
import torch
from torch import nn

from runwatch.client.torch_watch import describe_architecture
from runwatch.nas.architecture import Block, Genome
from runwatch.nas.space import insert_copies, remove_blocks
from runwatch.v1 import runs_pb2

torch.set_num_threads(1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


@pytest.mark.parametrize(
    "module",
    [
        "architecture",
        "layer_costs",
        "genome_records",
        "genome_diff",
        "mlp_builder",
        "space",
        "choices",
        "families",
        "family_builders",
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"runwatch.nas.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_genome_of_a_torch_mlp_counts_its_parameters_exactly(mlp):
    g = Genome.from_architecture(describe_architecture(mlp))
    assert g.family == "mlp" and g.input_size == 64 and g.output_size == 10 and g.output_name == "5"
    assert [(b.name, b.width, b.activation, b.dropout) for b in g.blocks] == [
        ("0", 128, "relu", 0.1),
        ("3", 128, "relu", 0.0),
    ]
    assert g.fixed_params == 0 and g.fixed == ()
    assert g.params() == n_params(mlp) == 26122
    assert g.flops() == 2 * (64 * 128 + 128 * 128 + 128 * 10)


def test_mutated_genome_builds_a_model_with_exactly_its_parameter_count(mlp):
    g = Genome.from_architecture(describe_architecture(mlp))
    edited = insert_copies(g.replace_block(0, width=256, activation="gelu", normalization="layernorm"), 1)
    edited = edited.replace_block(1, residual=False, dropout=0.3).replace_block(2, residual=True)
    assert edited.validate() == []
    model = edited.build()
    assert n_params(model) == edited.params() != g.params()
    out = model(torch.randn(5, 64))
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    # the built model reads back as the same genome
    again = Genome.from_architecture(describe_architecture(model))
    assert [(b.width, b.activation, b.normalization, b.dropout) for b in again.blocks] == [
        (b.width, b.activation, b.normalization, b.dropout) for b in edited.blocks
    ]
    assert again.params() == edited.params()


def test_build_refuses_what_it_cannot_rebuild():
    mixed = Genome(3, 10, (Block("c", "conv", 8, "relu"), Block("r", "rnn", 8)), family="mixed")
    with pytest.raises(ValueError, match="no builder for family 'mixed'"):
        mixed.build()
    tcn = Genome(3, 10, (Block("c", "conv", 8, "relu", layer_type="Conv1d"),), family="cnn")
    with pytest.raises(ValueError, match="only Conv2d"):
        tcn.build()
    with pytest.raises(ValueError, match="fixed layers"):
        Genome(8, 2, (Block("a", "linear", 4),), fixed_params=100, fixed=("emb",)).build()
    with pytest.raises(ValueError, match="residual"):
        Genome(8, 2, (Block("a", "linear", 4, residual=True),)).build()


def test_diff_descriptions_read_as_users_expect():
    base = Genome(
        32,
        10,
        tuple(Block(f"fc{i}", "linear", 512 if i == 2 else 64, "relu") for i in range(1, 7)),
    )
    smaller = remove_blocks(remove_blocks(base, 5), 4)
    assert [c.description for c in base.diff(smaller)] == ["depth 6 -> 4 (remove blocks fc5 (Linear 64→64), fc6 (Linear 64→64))"]
    (depth,) = base.diff(smaller)
    assert (depth.layer, depth.attribute, depth.before, depth.after) == ("", "depth", "6", "4")

    edited = base.replace_block(1, width=256)
    for i in (0, 1, 2):
        edited = edited.replace_block(i, activation="gelu")
    edited = edited.replace_block(2, normalization="layernorm").replace_block(0, dropout=0.2)
    edited = edited.replace_block(3, residual=True)
    descriptions = [c.description for c in base.diff(edited)]
    assert descriptions == [
        "ReLU -> GELU in fc1-fc3",
        "fc1 (Linear 32→64): dropout 0.0 -> 0.2",
        "fc2 (Linear 64→512): 512 -> 256 units",
        "add LayerNorm after fc3 (Linear 512→64)",
        "add residual connection around fc4 (Linear 64→64)",
    ]
    by_attribute = {c.attribute: c for c in base.diff(edited)}
    assert by_attribute["activation"].layer == "fc1,fc2,fc3"
    assert (by_attribute["width"].before, by_attribute["width"].after) == ("512", "256")
    assert (by_attribute["residual"].before, by_attribute["residual"].after) == ("false", "true")
    assert base.diff(base) == []


def test_diff_keeps_separate_activation_runs_and_describes_added_blocks():
    base = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 16, "relu") for i in range(1, 5)))
    edited = base.replace_block(0, activation="tanh").replace_block(2, activation="tanh")
    assert [c.description for c in base.diff(edited)] == ["ReLU -> Tanh in fc1 (Linear 8→16)", "ReLU -> Tanh in fc3 (Linear 16→16)"]
    deeper = insert_copies(base, 3)
    assert [c.description for c in base.diff(deeper)] == [
        "depth 4 -> 5 (add a new Linear block (16→16, ReLU) after fc4 (Linear 16→16))"
    ]  # the user's names, never the internal "new.1"


def test_cnn_record_keeps_costs_consistent_when_channels_change():
    def cnn(c2: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, c2, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 14 * 14, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    g = Genome.from_architecture(describe_architecture(cnn(32)))
    assert g.family == "cnn" and [b.kind for b in g.blocks] == ["conv", "conv", "linear"]
    assert g.blocks[0].normalization == "batchnorm" and g.blocks[0].activation == "relu"
    assert g.blocks[2].in_scale == 196.0 and g.fixed == ("3", "6")
    assert g.fixed_params == 0 and g.params() == n_params(cnn(32))
    # narrowing the second convolution narrows the classifier's flattened input too
    assert g.replace_block(1, width=8).params() == n_params(cnn(8))
    assert [c.description for c in g.diff(g.replace_block(1, width=8))] == ["layer 4 (Conv2d 16→32): 32 -> 8 channels"]
    # the per-position FLOP proxy: 2 x (conv MACs per output position + linear MACs)
    assert g.flops() == 2 * (1 * 16 * 9 + 16 * 32 * 9 + 32 * 196 * 64 + 64 * 10)


def test_recurrent_and_attention_records_with_fixed_embedding():
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 16)
            self.rnn = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
            self.att = nn.MultiheadAttention(64, 4, batch_first=True)
            self.out = nn.Linear(64, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.rnn(self.emb(x))
            h, _ = self.att(h, h, h)
            return self.out(h[:, -1])

    model = Tagger()
    g = Genome.from_architecture(describe_architecture(model, torch.zeros(2, 5, dtype=torch.long)))
    assert g.family == "mixed" and g.fixed == ("emb",)
    assert g.fixed_params == 100 * 16  # the embedding, exactly: the LSTM and attention formulas are exact
    assert g.params() == n_params(model)
    assert g.input_size == 16 and [b.width for b in g.blocks] == [64, 64]
    # an attention block must read its own width
    assert g.replace_block(0, width=32).validate() == ["att: attention reads its own width 64, got input 32"]


def test_activation_folded_after_a_norm_and_a_dropout_before_relu_still_belong_to_the_block():
    model = nn.Sequential(
        nn.Linear(10, 20),
        nn.BatchNorm1d(20),
        nn.ReLU(),
        nn.Linear(20, 20),
        nn.Dropout(0.5),
        nn.Tanh(),
        nn.Linear(20, 2),
    )
    g = Genome.from_architecture(describe_architecture(model))
    assert [(b.activation, b.normalization, b.dropout) for b in g.blocks] == [
        ("relu", "batchnorm", 0.0),
        ("tanh", "", 0.5),
    ]
    assert g.params() == n_params(model)


def test_records_without_editable_layers_are_refused_by_name():
    with pytest.raises(ValueError, match=r"only weight layer 'head' \(Linear\) is the output layer"):
        Genome.from_architecture(
            runs_pb2.Architecture(layers=[runs_pb2.Layer(name="head", type="Linear", in_size=4, out_size=2)])
        )
    with pytest.raises(ValueError, match=r"no weight layer .* 'act' \(ReLU\), 'norm' \(LayerNorm\)"):
        Genome.from_architecture(
            runs_pb2.Architecture(
                layers=[runs_pb2.Layer(name="act", type="ReLU"), runs_pb2.Layer(name="norm", type="LayerNorm")]
            )
        )


def test_record_and_json_round_trips():
    g = Genome(
        64,
        10,
        (
            Block("fc1", "linear", 128, "relu", "layernorm", 0.2),
            Block("fc2", "linear", 128, "gelu", residual=True),
            Block("fc3", "linear", 32, attributes=(("bias", "false"),)),
        ),
        fixed_params=50,
        fixed=("emb",),
    )
    assert g.validate() == []
    arch = g.to_architecture()
    assert arch.total_params == g.params()
    assert Genome.from_architecture(arch) == g
    assert Genome.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    # bias=False is counted: 128*32 weights, no bias
    assert g.params() - g.replace_block(2, attributes=()).params() == -32


def test_key_ignores_names_but_not_structure():
    a = Genome(8, 2, (Block("x", "linear", 8, "relu"),))
    assert a.key() == Genome(8, 2, (Block("y", "linear", 8, "relu"),)).key()
    variants = [
        a.replace_block(0, width=16),
        a.replace_block(0, activation="gelu"),
        a.replace_block(0, normalization="layernorm"),
        a.replace_block(0, dropout=0.1),
        a.replace_block(0, residual=True),
        insert_copies(a, 0),
    ]
    assert len({v.key() for v in variants} | {a.key()}) == len(variants) + 1
