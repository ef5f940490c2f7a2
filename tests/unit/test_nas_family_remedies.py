"""Capacity remedies for CNN, GRU/LSTM and transformer runs: regularise an overfitting net, widen an underfitting one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints
from runwatch.nas.architecture import Block, Genome
from runwatch.nas.evidence import PeerSummary
from runwatch.nas.guards import EditGuard
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.seeding import family_remedies, run_findings, seed_genomes
from runwatch.nas.space import SearchSpace, edit_distance, within

SPACE = SearchSpace()
STEPS = np.arange(0, 300, 10)
CONV = (("kernel_size", "3x3"), ("padding", "1x1"))

GRU = Genome(
    16,
    9,
    (Block("rnn", "rnn", 64, layer_type="GRU", attributes=(("num_layers", "2"),)),),
    output_name="head",
    family="rnn",
    fixed_params=9 * 16,
    fixed=("embed",),
)
CNN = Genome(
    1,
    10,
    (Block("conv1", "conv", 16, "relu", attributes=CONV), Block("conv2", "conv", 32, "relu", attributes=CONV)),
    output_name="fc",
    family="cnn",
    output_in_scale=16.0,
)


def _encoder_layer(i: int, ff: int = 96) -> tuple[Block, ...]:
    return (
        Block(f"encoder.layers.{i}.self_attn", "attention", 48, attributes=(("num_heads", "2"),)),
        Block(f"encoder.layers.{i}.linear1", "linear", ff),
        Block(f"encoder.layers.{i}.linear2", "linear", 48, "", "layernorm"),
    )


TRANSFORMER = Genome(
    48,
    9,
    _encoder_layer(0) + _encoder_layer(1),
    output_name="head",
    family="transformer",
    fixed_params=9 * 48,
    fixed=("embed",),
)


def _run(genome: Genome, train_end: float, val_end: float, *diagnoses: Diagnosis, run_id: str = "r") -> RunObservation:
    series = {
        "loss": (STEPS, np.geomspace(2.0, train_end, STEPS.size)),
        "val/loss": (STEPS, np.linspace(2.0, val_end, STEPS.size)),
    }
    return RunObservation(
        run_id, genome, hyperparameters={"dataset": "digits"}, series=series, diagnoses=list(diagnoses)
    )


def _overfitting(genome: Genome) -> RunObservation:
    return _run(genome, 0.001, 2.5, Diagnosis("overfitting", "", "val/loss", 200, 3.0))


def _firsts(run: RunObservation, peers: PeerSummary | None = None):
    return [s for s in seed_genomes(run, SPACE, peers) if s.first]


def test_an_overfitting_gru_is_first_given_dropout_not_a_smaller_hidden_size():
    firsts = _firsts(_overfitting(GRU))
    assert len(firsts) == 1
    edited = firsts[0].genome.blocks[0]
    assert edited.dropout == pytest.approx(0.3)
    assert edited.width == 64 and edited.attribute_map()["num_layers"] == "2"  # hidden size and layers kept
    assert firsts[0].rule == "overfitting" and firsts[0].evidence


def test_an_overfitting_transformer_gets_dropout_in_every_encoder_layer_as_one_edit():
    (first,) = _firsts(_overfitting(TRANSFORMER))
    assert [b.dropout for b in first.genome.blocks] == [0.3] * 6
    assert edit_distance(TRANSFORMER, first.genome) == 1 and within(first.genome, TRANSFORMER, SPACE)
    assert [b.width for b in first.genome.blocks] == [b.width for b in TRANSFORMER.blocks]  # no layer removed


def test_the_transformer_builder_puts_the_attention_blocks_dropout_on_the_attention_weights():
    torch = pytest.importorskip("torch")
    from runwatch.nas.families import Stem

    (first,) = _firsts(_overfitting(TRANSFORMER))
    model = first.genome.build(Stem(tokens=9))
    attention = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert [a.dropout for a in attention] == [0.3, 0.3]
    unedited = TRANSFORMER.build(Stem(tokens=9))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in unedited.parameters())
    assert [m.dropout for m in unedited.modules() if isinstance(m, torch.nn.MultiheadAttention)] == [0.0, 0.0]


def test_recorded_attention_dropout_counts_and_the_budget_falls_back_to_the_feed_forward():
    # nn.TransformerEncoderLayer's defaults as recorded: attention dropout 0.1 (an attribute), feed-forward dropout 0.1
    recorded = TRANSFORMER.with_blocks(
        dataclasses.replace(b, attributes=(("dropout", "0.1"), ("num_heads", "2")))
        if b.kind == "attention"
        else dataclasses.replace(b, dropout=0.1)
        for b in TRANSFORMER.blocks
    )
    (g,) = family_remedies("overfitting", recorded, SPACE)
    assert within(g, recorded, SPACE)
    assert all(b.dropout == pytest.approx(0.3) for b in g.blocks if b.kind == "linear")


def test_an_overfitting_cnn_first_loses_its_last_convolution():
    (first,) = _firsts(_overfitting(CNN))
    assert [b.name for b in first.genome.blocks] == ["conv1"]
    assert within(first.genome, CNN, SPACE)


def test_mlps_keep_the_generic_rules():
    mlp = Genome(64, 10, (Block("fc1", "linear", 256, "relu"), Block("fc2", "linear", 256, "relu")))
    assert family_remedies("overfitting", mlp, SPACE) == []
    assert _firsts(_overfitting(mlp)) == []


def _cnn_and_mlp_peers() -> PeerSummary:
    """digits peers: MLPs whose training losses spread widely, CNNs that all train to near zero."""
    by_run, families = {}, {}
    for i, loss in enumerate([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]):
        by_run[f"m{i}"], families[f"m{i}"] = {"final_train_loss": loss, "rel_gap": 0.3}, "mlp"
    for i, loss in enumerate([0.004, 0.006, 0.01, 0.012, 0.02]):
        by_run[f"c{i}"], families[f"c{i}"] = {"final_train_loss": loss, "rel_gap": 0.3}, "cnn"
    return PeerSummary(by_run, dict.fromkeys(by_run, "dataset=digits"), families=families)


def test_a_narrowed_cnn_is_underfitting_against_its_own_family_not_the_mlps():
    narrow = CNN.replace_block(0, width=2).replace_block(1, width=2)
    run = _run(narrow, 0.15, 0.14)
    peers = _cnn_and_mlp_peers()
    found = run_findings(run, peers)
    assert [f.kind for f in found] == ["underfitting"]
    assert "cnn dataset=digits" in found[0].evidence[0]
    # the MLPs alone would not have flagged it (0.15 is below their upper quartile)
    mlp_only = PeerSummary(
        {k: v for k, v in peers.by_run.items() if k.startswith("m")},
        {k: v for k, v in peers.tasks.items() if k.startswith("m")},
    )
    assert run_findings(run, mlp_only) == []
    (first,) = _firsts(run, peers)
    assert [b.width for b in first.genome.blocks] == [4, 4]
    guard = EditGuard.for_run(run, peers)
    assert not guard.allows(narrow, narrow.replace_block(1, dropout=0.3))  # no dropout for an underfitting net


def test_a_healthy_cnn_is_not_flagged_by_its_family():
    assert run_findings(_run(CNN, 0.011, 0.011), _cnn_and_mlp_peers()) == []


def test_a_val_loss_within_20_percent_of_the_train_loss_is_not_overfitting():
    # peers' gaps cluster at 0 (parity taggers that generalise): a gap of 0.5 % is above their quartile, not overfitting
    peers = PeerSummary(
        {f"p{i}": {"final_train_loss": 0.5, "rel_gap": g} for i, g in enumerate([-0.02, -0.01, 0.0, 0.001, 0.002])}
    )
    run = _run(GRU, 0.5, 0.5025)
    assert "overfitting" not in {f.kind for f in run_findings(run, peers)}


def test_the_guard_rules_out_a_stacked_layer_more_on_an_overfitting_run():
    from runwatch.nas.families import _set_attribute

    run = _overfitting(GRU)
    guard = EditGuard.for_run(run)
    more = GRU.replace_block(0, attributes=_set_attribute(GRU.blocks[0], "num_layers", "3").attributes)
    fewer = GRU.replace_block(0, attributes=_set_attribute(GRU.blocks[0], "num_layers", "1").attributes)
    assert not guard.allows(GRU, more) and guard.allows(GRU, fewer)


def test_the_advisor_ranks_the_family_remedy_first_on_an_overfitting_gru():
    history = [
        _run(GRU.replace_block(0, width=w), 0.01 * (1 + i % 3), 0.5 + 0.05 * i, run_id=f"h{i}")
        for i, w in enumerate([32, 64, 128] * 4)
    ]
    for i, h in enumerate(history):
        h.outcome["val/loss"] = 0.5 + 0.05 * i
    advisor = Advisor(AdvisorConfig(use_nni=False)).fit(history)
    run = _overfitting(GRU)
    run.outcome["val/loss"] = 2.5
    top = advisor.suggest(run, Constraints(num_suggestions=3), SPACE)[0]
    assert [c.attribute for c in top.changes] == ["dropout"]
    assert top.genome.blocks[0].dropout == pytest.approx(0.3)


def test_an_underfitting_transformer_gets_its_model_width_doubled_when_that_is_the_bottleneck():
    from runwatch.nas.families import model_width

    narrow = model_width(TRANSFORMER, 8)  # d_model 8 under a 96-wide feed-forward
    (wider,) = family_remedies("underfitting", narrow, SPACE)
    assert wider.input_size == 16 and wider.fixed_params == 2 * narrow.fixed_params
    assert [b.width for b in wider.blocks] == [16, 96, 16, 16, 96, 16]
    assert within(wider, narrow, SPACE) and edit_distance(narrow, wider) == 1
    # a feed-forward narrower than the model width is widened instead, as for every family
    (ff,) = family_remedies("underfitting", TRANSFORMER.replace_block(1, width=4).replace_block(4, width=4), SPACE)
    assert ff.input_size == 48 and [b.width for b in ff.blocks] == [48, 8, 48, 48, 8, 48]
