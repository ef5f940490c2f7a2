"""Edits the history never saw (prior ranking, widened uncertainty), the seeding switch, peer candidates."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints
from runwatch.nas.architecture import Block, Genome
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.prior import ArchSupport, OutcomePrior
from runwatch.nas.space import SearchSpace
from runwatch.nas.transfer import as_edit_of, peer_architectures

STEPS = np.arange(0, 300)
VAL_STEPS = STEPS[::20]
FAST = {"use_nni": False}  # seeds, neighbours, group edits and peers: enough here, and quick


def _series(start: float, end: float, val: float) -> dict:
    loss = end + (start - end) * np.exp(-STEPS / 30.0)
    return {"loss": (STEPS, loss), "val/loss": (VAL_STEPS, np.full(VAL_STEPS.size, val))}


def _history() -> list[RunObservation]:
    """Plain MLPs on one task (no LayerNorm, no residual connection anywhere): outcome falls with width, 1-3 blocks."""
    runs = []
    rng = np.random.default_rng(0)
    for i in range(48):
        depth, width = int(rng.integers(1, 4)), int(rng.choice([16, 32, 64, 128]))
        act = str(rng.choice(["relu", "tanh", "gelu"]))
        g = Genome(64, 10, tuple(Block(f"fc{j}", "linear", width, act) for j in range(1, depth + 1)))
        val = 0.08 + 1.6 / width + 0.02 * depth + 0.01 * rng.standard_normal()
        hp = {"lr": 1e-3, "batch_size": 32.0, "optimizer": "adam", "dataset": "digits"}
        runs.append(
            RunObservation(
                f"h{i:02d}", g, hyperparameters=hp, series=_series(2.3, val * 0.8, val), outcome={"val/loss": val}
            )
        )
    return runs


DEEP = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 32, "sigmoid") for i in range(1, 11)))


def _stuck_deep_run() -> RunObservation:
    hp = {"lr": 1e-3, "batch_size": 32.0, "optimizer": "adam", "dataset": "digits"}
    return RunObservation(
        "deep-sigmoid",
        DEEP,
        hyperparameters=hp,
        series=_series(2.31, 2.30, 2.31),
        diagnoses=[Diagnosis("vanishing_gradient", "fc2", "grad_norm/fc2", 40, 6.0), Diagnosis("plateau", "", "loss")],
        outcome={"val/loss": 2.31},
    )


@pytest.fixture(scope="module")
def history() -> list[RunObservation]:
    return _history()


def test_support_and_task_prior_come_from_the_history(history):
    support = ArchSupport.from_history(history)
    res = DEEP.with_blocks(dataclasses.replace(b, residual=i > 0) for i, b in enumerate(DEEP.blocks))
    (why,) = support.unsupported(DEEP, res)
    assert why == "share of blocks with a residual connection 0.9 (the 48 mlp runs of the history: 0 to 0)"
    assert support.unsupported(DEEP, DEEP.replace_block(0, width=64)) == []
    prior = OutcomePrior.from_history(history, "val/loss").estimate(_stuck_deep_run())
    values = [r.outcome["val/loss"] for r in history]
    assert prior.scope == "dataset=digits" and prior.n == 48
    assert prior.mean == pytest.approx(math.exp(np.median(np.log(values))))
    q1, q3 = np.quantile(np.log(values), [0.25, 0.75])
    assert prior.std == pytest.approx(prior.mean * (q3 - q1) / 1.349)


def test_a_strong_finding_outranks_a_surrogate_that_never_saw_its_fix(history):
    run = _stuck_deep_run()
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    top = advisor.suggest(run, Constraints(num_suggestions=3))[0]
    # the vanishing-gradient rule's first whole-stack fix (skips, with tanh for a sigmoid stack), ranked by the
    # task's prior: one fix, though two edits, so it keeps the rule's order ahead of the one-edit LayerNorm
    assert [c.description for c in top.changes] == [
        "Sigmoid -> Tanh in fc1-fc10",
        "add residual connections around fc2-fc10",
    ]
    prior = advisor.prior.estimate(run)
    assert top.effect.predicted == pytest.approx(prior.mean) and top.effect.delta == pytest.approx(prior.mean - 2.31)
    # the interval is the 10-90 % range of the task's runs; stddev its smaller half-width / 1.28
    lo, hi = np.quantile(prior.values, [0.1, 0.9])
    assert (top.effect.lower, top.effect.upper) == pytest.approx((lo, hi))
    assert top.effect.stddev == pytest.approx(min(prior.mean - lo, hi - prior.mean) / 1.2815515655446004)
    assert top.evidence[0].startswith("ranked by the vanishing_gradient rule's prior, not by the surrogate: ")
    assert "so the surrogate cannot judge it" in top.evidence[0]
    assert top.evidence[1].startswith("prior = median val/loss of the 48 history runs of dataset=digits")
    assert any(e.endswith("the net did not train") for e in top.evidence)
    assert re.match(
        r"surrogate \((tree ensembles|deep forest|forest|extra trees|linear forest), 48 runs with val/loss\)", top.evidence[-1]
    )
    assert top.evidence[-1].endswith("(outside its data)")
    # 0 of 48 runs diverged: the risk is a base rate, the same for every edit, so it is no reason for this one
    assert not any(e.startswith("divergence risk") for e in top.evidence)


def test_without_the_prior_unseen_edits_keep_the_surrogate_with_a_widened_uncertainty(history):
    run = _stuck_deep_run()
    plain = Advisor(AdvisorConfig(prior_for_unsupported=False, **FAST)).fit(history)
    out = plain.suggest(run, Constraints(num_suggestions=10))
    unseen = [s for s in out if any(e.startswith("the history has no run like this edit") for e in s.evidence)]
    assert unseen, [[c.description for c in s.changes] for s in out]
    prior_std = plain.prior.estimate(run).std
    for s in unseen:
        assert s.effect.stddev > prior_std  # at least the task's spread, in quadrature with the surrogate's own
        assert not any(e.startswith("ranked by") for e in s.evidence)
    top = out[0]
    assert not any(e.startswith("ranked by") for e in top.evidence)


def lead_keys(advisor: Advisor, run: RunObservation) -> set[str]:
    from runwatch.nas.seeding import seed_genomes

    return {s.genome.key() for s in seed_genomes(run, SearchSpace(), advisor.peers.without(run.run_id)) if s.strong}


def test_when_the_surrogate_cannot_explain_a_stuck_run_the_findings_fixes_lead(history):
    # the history's runs all trained (val 0.1-0.2); a run stuck at 2.31 is outside what the surrogate can explain,
    # so even scored by the surrogate (no prior), the vanishing-gradient rule's whole-stack fixes come first
    run = _stuck_deep_run()
    lead = Advisor(AdvisorConfig(prior_for_unsupported=False, **FAST)).fit(history)
    assert lead._surrogate_lost(run, 2.31)
    out = lead.suggest(run, Constraints(num_suggestions=3))
    assert "add LayerNorm after fc1-fc10" in {c.description for s in out for c in s.changes}
    assert all(s.genome.key() in lead_keys(lead, run) for s in out)  # every one a strong finding's fix
    off = AdvisorConfig(prior_for_unsupported=False, findings_lead_when_unexplained=False, **FAST)
    top = Advisor(off).fit(history).suggest(run, Constraints(num_suggestions=3))[0]
    assert top.evidence[0].startswith("the architecture of run h")  # a history architecture, transferred
    assert AdvisorConfig.from_dict(off.to_dict()).findings_lead_when_unexplained is False
    # a run the history explains (a healthy member of it) is not reordered
    assert not lead._surrogate_lost(history[0], history[0].outcome["val/loss"])


def test_seeding_can_be_switched_off(history):
    run = _stuck_deep_run()
    off = Advisor(AdvisorConfig(seeding=False, **FAST)).fit(history).suggest(run, Constraints(num_suggestions=5))
    assert off and not any(e.startswith(("vanishing_gradient in", "ranked by")) for s in off for e in s.evidence)
    on = Advisor(AdvisorConfig(**FAST)).fit(history).suggest(run, Constraints(num_suggestions=5))
    assert any(e.startswith("vanishing_gradient in fc2") for e in on[0].evidence)
    assert AdvisorConfig.from_dict(AdvisorConfig(seeding=False).to_dict()).seeding is False


def test_history_architectures_become_candidates_as_edits_of_the_run(history):
    base = Genome(64, 10, (Block("fc1", "linear", 32, "relu"), Block("fc2", "linear", 32, "relu")))
    peers = peer_architectures(base, history, "val/loss", SearchSpace(), 4)
    assert peers and all(p.genome.blocks[0].name == "fc1" and p.genome.input_size == 64 for p in peers)
    values = [p.value for p in peers]
    assert values == sorted(values)  # best first
    best_in_space = min(
        r.outcome["val/loss"]
        for r in history
        if (g := as_edit_of(base, r.genome)) is not None
        and g.key() != base.key()
        and all(b.width in (16, 32, 64) for b in g.blocks)
        and g.depth in (1, 2, 3)
    )
    assert values[0] == pytest.approx(best_in_space)
    # other input or output sizes, or other layer kinds, are not this run's peers
    assert as_edit_of(base, Genome(30, 2, base.blocks)) is None
    assert as_edit_of(base, Genome(64, 10, (Block("c1", "conv", 8),))) is None

    run = RunObservation(
        "r",
        base,
        hyperparameters=history[0].hyperparameters,
        series=_series(2.3, 0.3, 0.35),
        outcome={"val/loss": 0.35},
    )
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    out = advisor.suggest(run, Constraints(num_suggestions=10))
    offered = {p.genome.key(): p for p in peer_architectures(base, history, "val/loss", SearchSpace(), 10)}
    cited = [s for s in out if any(e.startswith("the architecture of run h") for e in s.evidence)]
    assert cited
    for s in cited:  # the evidence names the run whose architecture it is, and what that run reached
        p = offered[s.genome.key()]
        assert f"the architecture of run {p.run_id} (same input and output sizes), which reached val/loss" in " ".join(
            s.evidence
        )
    none = Advisor(AdvisorConfig(peer_candidates=0, **FAST)).fit(history).suggest(run, Constraints(num_suggestions=10))
    assert not any(e.startswith("the architecture of run") for s in none for e in s.evidence)
