"""Diagnosis-driven seeds: each finding kind maps to the edits a practitioner would try, with its evidence."""

from __future__ import annotations

import numpy as np
import pytest

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.evidence import PeerSummary
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.seeding import diagnosis_evidence, seed_genomes
from runwatch.nas.space import SearchSpace, within

BASE = Genome(
    64,
    10,
    (
        Block("fc1", "linear", 256, "tanh"),
        Block("fc2", "linear", 256, "tanh"),
        Block("fc3", "linear", 256, "relu"),
    ),
    output_name="out",
)
SPACE = SearchSpace()
STEPS = np.arange(0, 200, 20)


def _run(*diagnoses: Diagnosis, genome: Genome | None = BASE, **series) -> RunObservation:
    logged = {
        "loss": (STEPS, np.linspace(2.0, 0.05, STEPS.size)),
        "val/loss": (STEPS, np.linspace(2.0, 0.5, STEPS.size)),
        "grad_norm/fc2": (STEPS, 10.0 ** -(STEPS / 20)),  # 1e-6 at step 120
        "act/zero_frac/fc3": (STEPS, np.linspace(0.2, 0.9, STEPS.size)),
        "act/sat_frac/fc1": (STEPS, np.linspace(0.1, 0.8, STEPS.size)),
        **series,
    }
    return RunObservation("crafted", genome, series=logged, diagnoses=list(diagnoses))


def _edits(genome: Genome) -> set[tuple[str, str, object]]:
    """(block, field, new value) of every block field that differs from BASE, plus ("", "depth", n)."""
    base = {b.name: b for b in BASE.blocks}
    out: set[tuple[str, str, object]] = set()
    if genome.depth != BASE.depth:
        out.add(("", "depth", genome.depth))
    for b in genome.blocks:
        old = base.get(b.name)
        for f in ("width", "activation", "normalization", "dropout", "residual"):
            if old is not None and getattr(old, f) != getattr(b, f):
                out.add((b.name, f, getattr(b, f)))
    return out


def _seeds(run: RunObservation, space: SearchSpace = SPACE, peers: PeerSummary | None = None):
    seeds = seed_genomes(run, space, peers)
    for s in seeds:  # every seed is a valid, allowed edit that differs from the run's architecture
        assert s.genome.key() != BASE.key() and not s.genome.validate() and within(s.genome, BASE, space)
    return seeds


def test_vanishing_gradient_adds_normalization_residual_and_a_non_saturating_activation_at_the_layer():
    d = Diagnosis("vanishing_gradient", "fc2", "grad_norm/fc2", 120, 6.0)
    seeds = _seeds(_run(d))
    assert [_edits(s.genome) for s in seeds] == [
        {("fc2", "normalization", "layernorm")},
        {("fc2", "residual", True)},
        {("fc2", "activation", "relu")},
        {("fc2", "activation", "gelu")},
    ]
    assert all(s.rule == "vanishing_gradient" for s in seeds)
    # the value logged at the finding's step
    assert seeds[0].evidence == ("vanishing_gradient in fc2 at step 120 (grad_norm/fc2 = 1e-06)",)


def test_dead_units_narrow_the_layer_and_swap_relu():
    seeds = _seeds(_run(Diagnosis("dead_units", "fc3", "act/zero_frac/fc3", 180, 0.9)))
    assert [_edits(s.genome) for s in seeds] == [{("fc3", "width", 128)}, {("fc3", "activation", "gelu")}]
    leaky = SearchSpace(activations=("relu", "leakyrelu", "gelu"))
    seeds = seed_genomes(_run(Diagnosis("dead_units", "fc3", "act/zero_frac/fc3", 180, 0.9)), leaky)
    assert _edits(seeds[1].genome) == {("fc3", "activation", "leakyrelu")}
    assert seeds[0].evidence == ("dead_units in fc3 at step 180 (act/zero_frac/fc3 = 0.9)",)


def test_saturation_changes_the_activation():
    seeds = _seeds(_run(Diagnosis("saturation", "fc1", "act/sat_frac/fc1", 100, 0.5)))
    assert [_edits(s.genome) for s in seeds] == [{("fc1", "activation", "relu")}, {("fc1", "activation", "gelu")}]


def test_overfitting_narrows_adds_dropout_or_removes_a_block():
    seeds = _seeds(_run(Diagnosis("overfitting", "", "val/loss", 160, 3.0)))
    assert [_edits(s.genome) for s in seeds] == [
        {("fc1", "width", 128), ("fc2", "width", 128), ("fc3", "width", 128)},
        {("fc1", "dropout", 0.1), ("fc2", "dropout", 0.1), ("fc3", "dropout", 0.1)},
        {("", "depth", 2)},
    ]
    assert seeds[0].evidence == ("overfitting at step 160 (val/loss = 0.667)",)  # linspace(2, 0.5, 10)[8]


def test_plateau_widens_or_deepens():
    seeds = _seeds(_run(Diagnosis("plateau", "", "loss", 100, 2.0)))
    assert [_edits(s.genome) for s in seeds] == [
        {("fc1", "width", 512), ("fc2", "width", 512), ("fc3", "width", 512)},
        {("", "depth", 4)},
    ]
    assert seeds[1].genome.blocks[-1].width == 256 and seeds[1].genome.blocks[-1].activation == "relu"


@pytest.mark.parametrize("kind", ["exploding_gradient", "divergence_predicted", "nonfinite", "loss_spike"])
def test_gradient_blowups_add_normalization(kind):
    layered = _seeds(_run(Diagnosis(kind, "fc2", "grad_norm/fc2", 60, 9.0)))
    assert [_edits(s.genome) for s in layered] == [
        {("fc2", "normalization", "layernorm")},
        {(n, "normalization", "layernorm") for n in ("fc1", "fc2", "fc3")},
    ]
    run_wide = _seeds(_run(Diagnosis(kind, "", "loss", 60, 9.0)))
    assert [_edits(s.genome) for s in run_wide] == [{(n, "normalization", "layernorm") for n in ("fc1", "fc2", "fc3")}]


def test_peers_flag_overfitting_and_underfitting_without_a_finding():
    numbers = [{"gap": 0.05 + 0.01 * i, "final_train_loss": 0.4 + 0.01 * i} for i in range(5)]
    peers = PeerSummary({f"p{i}": {**n, "rel_gap": n["gap"] / n["final_train_loss"]} for i, n in enumerate(numbers)})
    overfit = _seeds(_run(), peers=peers)  # gap 0.5 - 0.05 = 0.45, 9x the training loss; the peers' ~0.17x
    assert [s.rule for s in overfit] == ["overfitting"] * 3
    assert overfit[0].evidence == ("val/train gap relative to the train loss 9 vs peers' median 0.167 (IQR 0.146–0.186, n=5)",)
    flat = np.linspace(2.0, 1.5, STEPS.size)  # no gap, training loss far above the peers'
    under = _seeds(_run(**{"loss": (STEPS, flat), "val/loss": (STEPS, flat)}), peers=peers)
    assert [s.rule for s in under] == ["underfitting"] * 2
    assert under[0].evidence == ("final train loss 1.5 vs peers' median 0.42 (IQR 0.41–0.43, n=5)",)
    assert _seeds(_run(), peers=PeerSummary({"p": {"gap": 0.01}})) == []  # too few peers to judge


def test_seeds_stay_inside_the_space_and_merge_evidence():
    narrow = SearchSpace(normalizations=("",), depth_changes=(), allow_residual=False, activations=("tanh", "relu"))
    d = Diagnosis("vanishing_gradient", "fc2", "grad_norm/fc2", 120, 6.0)
    seeds = _seeds(_run(d, Diagnosis("saturation", "fc2", "act/sat_frac/fc2", 140, 0.5)), narrow)
    # only the activation edit is allowed; both findings point at it
    assert [_edits(s.genome) for s in seeds] == [{("fc2", "activation", "relu")}]
    assert seeds[0].evidence == (
        "vanishing_gradient in fc2 at step 120 (grad_norm/fc2 = 1e-06)",
        "saturation in fc2 at step 140 (score 0.5)",
    )


def test_findings_on_unknown_or_output_layers_and_other_kinds():
    out_layer = _seeds(_run(Diagnosis("dead_units", "out", "", 10, 0.7)))
    assert _edits(out_layer[0].genome) == {("fc3", "width", 128)}  # the output layer is fixed: its input block
    nested = _seeds(_run(Diagnosis("saturation", "fc1.act", "", 10, 0.7)))
    assert _edits(nested[0].genome) == {("fc1", "activation", "relu")}
    assert _seeds(_run(Diagnosis("memory_growth", "", "cpu_mem", 10, 3.0))) == []


def test_a_run_without_genome_has_nothing_to_seed():
    with pytest.raises(ValueError, match="run crafted has no architecture record"):
        seed_genomes(_run(genome=None), SPACE)


def test_evidence_without_the_metric_in_the_logs_cites_the_score():
    run = _run()
    assert diagnosis_evidence(run, Diagnosis("plateau", "", "val/acc", 40, 2.5)) == "plateau at step 40 (score 2.5)"
