"""Findings the seeds are read from: the self-relative stall, per-task peers, strong vanishing gradients, the guard."""

from __future__ import annotations

import numpy as np
import pytest

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.evidence import PeerSummary, task_of
from runwatch.nas.guards import EditGuard
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.progress import loss_progress
from runwatch.nas.seeding import run_findings, seed_genomes
from runwatch.nas.space import SearchSpace, edit_distance, within

STEPS = np.arange(0, 400)
VAL_STEPS = STEPS[::20]
DEEP = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 32, "sigmoid") for i in range(1, 11)))
NARROW = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 2, "relu") for i in (1, 2, 3)))


def _curve(start: float, end: float, tau: float = 40.0) -> np.ndarray:
    """A loss that falls from ``start`` towards ``end`` and flattens (exponential approach)."""
    return end + (start - end) * np.exp(-STEPS / tau)


def _run(genome: Genome, loss: np.ndarray, val: float, *diagnoses: Diagnosis, **hp) -> RunObservation:
    series = {"loss": (STEPS, loss), "val/loss": (VAL_STEPS, np.full(VAL_STEPS.size, val))}
    return RunObservation("target", genome, hyperparameters=hp, series=series, diagnoses=list(diagnoses))


def _edits(base: Genome, genome: Genome) -> list[str]:
    return [c.description for c in base.diff(genome)]


def test_a_stall_is_judged_against_the_runs_own_start():
    stuck = loss_progress(_run(NARROW, _curve(2.3, 1.6), 1.7))
    # start = median of the first 5 % of the points (2.15 here: the loss is already falling), end = last 10 %
    assert (round(stuck.initial, 2), round(stuck.final, 2)) == (2.15, 1.6)
    assert round(stuck.ratio, 2) == 0.74 and stuck.plateaued and stuck.val_close and stuck.stalled
    trained = loss_progress(_run(NARROW, _curve(2.3, 0.2), 0.3))
    assert not trained.stalled  # it more than halved its loss
    still_falling = loss_progress(_run(NARROW, 2.3 - 1.0 * STEPS / STEPS[-1], 1.4))
    assert still_falling.ratio > 0.5 and not still_falling.plateaued and not still_falling.stalled  # slow, not stuck
    overfit = loss_progress(_run(NARROW, _curve(2.3, 1.6), 3.0))
    assert not overfit.val_close and not overfit.stalled  # the gap is the problem, not the training loss
    diverged = loss_progress(_run(NARROW, np.exp(STEPS / 50.0), 9.0))
    assert not diverged.stalled  # a loss that grows is instability, not underfitting
    assert loss_progress(RunObservation("r", NARROW, series={"loss": (STEPS[:5], np.ones(5))})) is None


def test_a_stalled_run_without_a_finding_or_peers_is_seeded_as_underfitting():
    run = _run(NARROW, _curve(2.3, 1.6), 1.7)
    (finding,) = run_findings(run)
    assert finding.kind == "underfitting" and not finding.strong
    assert finding.evidence[0].startswith("training loss 2.15 at the start -> 1.6 at the end (74% of its start)")
    seeds = seed_genomes(run, SearchSpace())
    # the bottleneck growth first (sqrt(64 * 10) -> 32 units, one edit), then x2, then a block more
    assert [_edits(NARROW, s.genome) for s in seeds] == [
        ["fc1-fc3: 2 -> 32 units"],
        ["fc1-fc3: 2 -> 4 units"],
        ["depth 3 -> 4 (add a new Linear block (2→32, ReLU) after fc3 (Linear 2→2))"],  # not a copy of the bottleneck
    ]
    assert all(within(s.genome, NARROW, SearchSpace()) for s in seeds)
    guard = EditGuard.for_run(run)
    assert not guard.allows(NARROW, NARROW.replace_block(0, width=1)) and guard.allows(NARROW, seeds[0].genome)


def test_peers_are_compared_within_the_runs_task():
    wine = {f"w{i}": {"final_train_loss": 0.04 + 0.01 * i, "gap": 0.02} for i in range(6)}
    digits = {f"d{i}": {"final_train_loss": 1.5 + 0.1 * i, "gap": 0.02} for i in range(12)}
    tasks = {**dict.fromkeys(wine, "dataset=wine"), **dict.fromkeys(digits, "dataset=digits")}
    peers = PeerSummary({**wine, **digits}, tasks)
    # trained well by its own measure (0.9 -> 0.3), but far above the other wine runs: underfitting for wine
    run = _run(NARROW, _curve(0.9, 0.3), 0.32, dataset="wine")
    assert task_of(run) == "dataset=wine"
    (finding,) = run_findings(run, peers)
    assert finding.kind == "underfitting"
    assert finding.evidence == ("final train loss 0.3 vs dataset=wine peers' median 0.065 (IQR 0.0525–0.0775, n=6)",)
    # against all peers (digits' losses are on another scale) it would not stand out: 0.3 < the upper quartile
    assert run_findings(_run(NARROW, _curve(0.9, 0.3), 0.32), peers) == []
    # a task with too few peers is not compared with other tasks' runs
    assert run_findings(_run(NARROW, _curve(0.9, 0.3), 0.32, dataset="iris"), peers) == []


def test_a_vanishing_gradient_in_a_run_that_did_not_train_seeds_whole_stack_fixes():
    flat = _curve(2.32, 2.30)
    vanishing = Diagnosis("vanishing_gradient", "fc3", "grad_norm/fc3", 50, 5.0)
    run = _run(DEEP, flat, 2.31, vanishing, Diagnosis("plateau", "", "loss", 200, 2.0), dataset="digits")
    findings = run_findings(run)
    # the plateau (and any underfitting) is the vanishing gradient's doing: not a capacity finding of its own
    assert [(f.kind, f.strong) for f in findings] == [("vanishing_gradient", True)]
    assert findings[0].evidence[1].endswith("the net did not train")
    seeds = seed_genomes(run, SearchSpace())
    strong = [s for s in seeds if s.strong]
    assert [_edits(DEEP, s.genome) for s in strong] == [
        # fc1 reads 64 inputs into 32 units: no skip there; sigmoid branches only add positive values, so the
        # skips come with tanh
        ["Sigmoid -> Tanh in fc1-fc10", "add residual connections around fc2-fc10"],
        ["add LayerNorm after fc1-fc10"],
        ["Sigmoid -> ReLU in fc1-fc10"],
        ["Sigmoid -> GELU in fc1-fc10"],
        ["depth 10 -> 5 (remove blocks " + ", ".join(f"fc{i} (Linear 32→32)" for i in range(6, 11)) + ")"],
    ]
    assert [edit_distance(DEEP, s.genome) for s in strong] == [2, 1, 1, 1, 1]
    # then the layer's own seeds, not strong; nothing widens the net
    assert [_edits(DEEP, s.genome) for s in seeds if not s.strong][:2] == [
        ["add LayerNorm after fc3 (Linear 32→32)"],
        ["add residual connection around fc3 (Linear 32→32)"],
    ]
    assert all(s.genome.depth <= DEEP.depth and max(b.width for b in s.genome.blocks) <= 32 for s in seeds)
    guard = EditGuard.for_run(run)
    assert guard.allows(DEEP, strong[-1].genome)  # removing blocks is allowed: no underfitting ban
    assert not guard.allows(DEEP, DEEP.with_blocks([*DEEP.blocks, Block("new.1", "linear", 32, "sigmoid")]))


def test_a_blow_up_raised_first_does_not_reorder_the_whole_stack_fixes():
    # tiny initialisations: runwatch may also raise divergence_predicted / exploding_gradient on the stuck run, and
    # before the vanishing gradient; their LayerNorm seed is also a whole-stack fix, which must keep its place
    flat = _curve(2.32, 2.30)
    blowups = [Diagnosis("divergence_predicted", "", "loss", 20, 1.0), Diagnosis("exploding_gradient", "", "", 30)]
    vanishing = Diagnosis("vanishing_gradient", "fc3", "grad_norm/fc3", 50, 5.0)
    run = _run(DEEP, flat, 2.31, *blowups, vanishing, dataset="digits")
    assert run_findings(run)[0].kind == "divergence_predicted"
    seeds = seed_genomes(run, SearchSpace())
    assert [_edits(DEEP, s.genome) for s in seeds[:2]] == [
        ["Sigmoid -> Tanh in fc1-fc10", "add residual connections around fc2-fc10"],
        ["add LayerNorm after fc1-fc10"],
    ]
    assert seeds[1].strong and "divergence_predicted" in " ".join(seeds[1].evidence)  # the blow-up's evidence kept


def test_a_vanishing_gradient_in_a_run_that_trains_stays_a_layer_finding():
    vanishing = Diagnosis("vanishing_gradient", "fc3", "grad_norm/fc3", 50, 5.0)
    run = _run(DEEP, _curve(2.3, 0.3), 0.35, vanishing)
    assert [(f.kind, f.strong) for f in run_findings(run)] == [("vanishing_gradient", False)]
    seeds = seed_genomes(run, SearchSpace())
    assert not any(s.strong for s in seeds)
    assert [_edits(DEEP, s.genome) for s in seeds][:2] == [
        ["add LayerNorm after fc3 (Linear 32→32)"],
        ["add residual connection around fc3 (Linear 32→32)"],
    ]


def test_the_gap_is_judged_relative_to_the_training_loss():
    # digits peers that trained well: a small absolute gap on a small loss (relative gap 0.5-1.0)
    digits = {f"d{i}": {"final_train_loss": 0.05 + 0.01 * i, "gap": 0.05} for i in range(8)}
    for v in digits.values():
        v["rel_gap"] = v["gap"] / v["final_train_loss"]
    peers = PeerSummary(digits, dict.fromkeys(digits, "dataset=digits"))
    # a narrow run near loss 1 with a 0.12 gap: 2.4x the peers' absolute gap, but only 12 % of its own loss
    narrow = _run(NARROW, _curve(2.3, 1.0), 1.12, dataset="digits")
    kinds = [f.kind for f in run_findings(narrow, peers)]
    assert "overfitting" not in kinds and "underfitting" in kinds
    guard = EditGuard.for_run(narrow, peers)
    assert guard.allows(NARROW, NARROW.replace_block(0, width=4))  # widening is not ruled out
    # a run that fits its training data and not the validation data is still overfitting
    wide = Genome(64, 10, (Block("fc1", "linear", 512, "relu"),))
    overfit = _run(wide, _curve(2.3, 0.02), 0.4, dataset="digits")
    (finding,) = run_findings(overfit, peers)
    assert finding.kind == "overfitting"
    assert finding.evidence[0].startswith(
        "val/train gap relative to the train loss 18.8 vs dataset=digits peers' median 0.59"
    )


def test_underfitting_is_judged_against_healthy_looking_peers_that_faulty_runs_cannot_lift():
    healthy = {f"h{i}": {"final_train_loss": 0.05 + 0.01 * i} for i in range(5)}
    faulty = {f"f{i}": {"final_train_loss": 1.09} for i in range(8)}  # stuck near chance: they lift the quartile
    runs = {**healthy, **faulty}
    tasks = dict.fromkeys(runs, "dataset=wine")
    # halved its loss (not stalled), and below the upper quartile of all wine runs (1.09)
    run = _run(NARROW, _curve(1.1, 0.45), 0.47, dataset="wine")
    assert not loss_progress(run).stalled
    assert run_findings(run, PeerSummary(runs, tasks)) == []  # without knowing which peers are faulty
    peers = PeerSummary(runs, tasks, flagged=frozenset(faulty))
    (finding,) = run_findings(run, peers)
    assert finding.kind == "underfitting"
    assert finding.evidence == (
        "final train loss 0.45 vs healthy-looking dataset=wine peers' median 0.07 (IQR 0.06–0.08, n=5)",
    )
    # too few healthy-looking peers: back to all of the task's peers
    few = PeerSummary(runs, tasks, flagged=frozenset(list(faulty) + ["h0", "h1", "h2"]))
    assert run_findings(run, few) == []


def test_peer_summary_from_history_marks_runs_with_findings():
    ok = _run(NARROW, _curve(2.3, 0.3), 0.35, dataset="wine")
    plateau = [Diagnosis("plateau", "", "loss", 200, 2.0)]
    bad = RunObservation("bad", NARROW, hyperparameters={"dataset": "wine"}, series=ok.series, diagnoses=plateau)
    peers = PeerSummary.from_history([ok, bad])
    assert peers.flagged == frozenset({"bad"})
    assert set(peers.for_task("dataset=wine").healthy().by_run) == {"target"}
    assert peers.without("bad").flagged == frozenset()
    summary = peers.by_run["target"]
    assert summary["rel_gap"] == pytest.approx(summary["gap"] / summary["final_train_loss"])


def test_one_block_more_never_copies_a_bottleneck_and_is_ruled_out_while_one_remains():
    space = SearchSpace()
    # 64 -> 16 -> 2 -> 10: the new block takes the pyramid width (sqrt(64 * 10) -> 32), not the 2 units of fc2
    funnel = Genome(64, 10, (Block("fc1", "linear", 16, "relu"), Block("fc2", "linear", 2, "relu")))
    run = _run(funnel, _curve(2.3, 1.6), 1.7)
    deeper = [s.genome for s in seed_genomes(run, space) if s.genome.depth == 3]
    assert [b.width for b in deeper[0].blocks] == [16, 2, 32] and within(deeper[0], funnel, space)
    guard = EditGuard.for_run(run)
    assert not guard.allows(funnel, deeper[0])  # widen the bottleneck first
    assert guard.allows(funnel, funnel.replace_block(1, width=32))
    # no bottleneck: one block more is allowed, as wide as the widest block
    roomy = Genome(64, 10, (Block("fc1", "linear", 64, "relu"), Block("fc2", "linear", 32, "relu")))
    run = _run(roomy, _curve(2.3, 1.6), 1.7)
    deeper = [s.genome for s in seed_genomes(run, space) if s.genome.depth == 3]
    assert [b.width for b in deeper[0].blocks] == [64, 32, 64]
    assert EditGuard.for_run(run).allows(roomy, deeper[0])
