"""Divergence risk: labels from a run's own record, a classifier over architecture and hyperparameters."""

from __future__ import annotations

import math

import numpy as np

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.risk import DivergenceRisk, diverged

G = Genome(64, 10, (Block("fc1", "linear", 128, "relu"), Block("fc2", "linear", 64, "relu")))


def test_labels_come_from_outcomes_losses_and_findings():
    steps = np.arange(3)
    assert diverged(RunObservation("a", G, series={"loss": (steps, np.array([1.0, 0.5, math.inf]))})) is True
    assert diverged(RunObservation("b", G, series={"loss": (steps, np.array([1.0, 0.5, 0.4]))})) is False
    assert diverged(RunObservation("c", G, diagnoses=[Diagnosis("nonfinite", metric="grad_norm")])) is True
    assert diverged(RunObservation("d", G, diagnoses=[Diagnosis("overfitting")])) is None  # nothing to judge by


def test_the_risk_rises_with_the_learning_rate_when_the_history_says_so():
    # 80 runs of one architecture: those trained above lr 0.1 diverged (as plain SGD on these nets does).
    rng = np.random.default_rng(0)
    history = []
    for i, lr in enumerate(10 ** rng.uniform(-4, 0, 80)):
        width = int(rng.choice([32, 64, 128]))
        g = G.replace_block(0, width=width)
        history.append(
            RunObservation(
                f"r{i}", g, hyperparameters={"lr": float(lr)}, outcome={"val/loss": math.nan if lr > 0.1 else 0.3}
            )
        )
    risk = DivergenceRisk().fit(history)
    assert risk.mode == "logistic" and risk.n_runs == 80 and 10 <= risk.n_diverged <= 40
    low, mid, high = (float(risk.predict({"lr": lr}, [G])[0]) for lr in (1e-3, 0.1, 0.8))
    assert low < 0.1 and high > 0.6 and low < mid < high  # regularised toward the base rate, not a step
    assert "of 80 runs diverged" in risk.describe()


def test_too_few_divergences_fall_back_to_the_smoothed_base_rate():
    history = [RunObservation(f"r{i}", G, hyperparameters={"lr": 1e-3}, outcome={"val/loss": 0.3}) for i in range(20)]
    history.append(RunObservation("bad", G, hyperparameters={"lr": 1.0}, outcome={"val/loss": math.inf}))
    risk = DivergenceRisk().fit(history)
    assert risk.mode == "base_rate"
    assert np.allclose(risk.predict({"lr": 1.0}, [G, G]), (1 + 1) / (21 + 2))
