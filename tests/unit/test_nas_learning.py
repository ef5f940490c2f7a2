"""Learning first: a run whose loss never left its start gets learning-rate fixes before capacity edits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_nas_honest_advice import FAST, STEPS, VAL_STEPS, _history, _mlp

from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.learning import CHECKS, learning_evidence, learning_fixes


@pytest.fixture(scope="module")
def advisor() -> Advisor:
    return Advisor(AdvisorConfig(**FAST)).fit(_history())


def _flat(lr: float | None = 1e-4, diagnoses: tuple[Diagnosis, ...] = (), end: float = 2.30) -> RunObservation:
    """A classifier that stayed at ln 10: its loss 2.31 -> ``end``, validation alike."""
    train = 2.31 + (end - 2.31) * STEPS / STEPS[-1]
    val = np.full(VAL_STEPS.size, end + 0.01)
    hp = {"batch_size": 32, "dataset": "digits", **({"lr": lr} if lr is not None else {})}
    return RunObservation(
        "flat", _mlp(64, 2), hyperparameters=hp, series={"loss": (STEPS, train), "val/loss": (VAL_STEPS, val)},
        diagnoses=[Diagnosis("plateau", metric="loss", step=150), *diagnoses],
        outcome={"val/loss": end + 0.01, "loss": end},
    )


def test_a_run_that_never_learned_gets_the_learning_rate_first_both_ways(advisor):
    run = _flat()
    out = advisor.suggest(run, Constraints(num_suggestions=4))
    assert [s.hyperparameters for s in out[:2]] == [{"lr": 0.001}, {"lr": 1e-05}]
    assert all(s.genome == run.genome and s.params_delta == 0 for s in out[:2])
    assert out[0].evidence[0].startswith("learning first: the loss never left its start: training loss 2.31")
    assert CHECKS in out[0].evidence and CHECKS not in out[1].evidence
    # the capacity edits the plateau finding seeds still follow, after the learning-rate fixes
    assert out[2].hyperparameters == {} and out[2].genome != run.genome
    # the surrogate has seen lr: each fix comes with its prediction against the run's own value
    assert all(math.isfinite(s.effect.predicted) for s in out[:2])


def test_a_run_without_a_logged_learning_rate_still_gets_the_advice():
    fixes = learning_fixes(_flat(lr=None))
    assert [c.description for f in fixes for c in f.changes] == [
        "learning rate 10x higher (the run logs none)", "learning rate 10x lower (the run logs none)"]


def test_runs_that_learned_diverged_or_have_an_architecture_explanation_do_not_get_it(advisor):
    assert learning_evidence(_flat(end=2.0), set()) == ""  # 13 % lower: it learned, slowly
    vanishing = _flat(diagnoses=(Diagnosis("vanishing_gradient", "fc1", "grad_norm/fc1", 40, 6.0),))
    assert learning_evidence(vanishing, {"vanishing_gradient"}) == ""
    out = advisor.suggest(vanishing, Constraints(num_suggestions=3))
    assert not any(e.startswith("learning first") for s in out for e in s.evidence)
    blown = _flat(end=9.0)  # a loss that grew fourfold is instability, not a stuck optimizer
    assert learning_evidence(blown, set()) == ""
