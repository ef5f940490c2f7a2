"""The demo scenarios really train and really behave as named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runwatch.client.convert import to_struct
from runwatch.service.demo_training import CONFIGS, HYPERPARAMETERS, SCENARIOS, build_model, diverging
from runwatch.v1 import runs_pb2


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.metrics: list[dict[str, float]] = []

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append(step)
        self.metrics.append(dict(metrics))

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(s, m[name]) for s, m in zip(self.steps, self.metrics) if name in m]


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[dict, Recorder]]:
    out = {}
    for name, fn in SCENARIOS.items():
        rec = Recorder()
        out[name] = (fn(rec, seed=0), rec)
    return out


def test_scenarios_hyperparameters_and_models_line_up():
    assert set(SCENARIOS) == set(CONFIGS) == set(HYPERPARAMETERS) == {"healthy", "diverging", "overshooting", "overfitting", "not_learning"}
    for name, hp in HYPERPARAMETERS.items():
        start = runs_pb2.RunStart(run_id=f"demo-{name}", hyperparameters=to_struct(hp))
        assert start.hyperparameters["lr"] == CONFIGS[name].lr
        assert len(build_model(name)) == 2 * len(CONFIGS[name].hidden) + 1


def test_every_step_is_logged_with_the_standard_metrics(runs):
    for name, (summary, rec) in runs.items():
        assert rec.steps == list(range(summary["steps"])), name
        for m in rec.metrics:
            assert {"loss", "lr", "grad_norm", "step_time", "data_time"} <= set(m), name
            assert {"grad_norm/0", "act/mean/0", "act/std/0", "act/zero_frac/0", "weight_norm/0"} <= set(m), name
            assert m["step_time"] > 0 and m["data_time"] >= 0
        with_update = [m for m in rec.metrics if "update_ratio/0" in m]
        assert len(with_update) == summary["steps"] - 1  # all but the first step
        val_steps = [s for s, _ in rec.series("val/loss")]
        every = CONFIGS[name].val_every
        assert val_steps[: len(val_steps) - 1] == list(range(0, summary["steps"] - 1, every))[: len(val_steps) - 1]
        assert [s for s, _ in rec.series("val/acc")] == val_steps


def test_healthy_converges(runs):
    summary, rec = runs["healthy"]
    losses = [v for _, v in rec.series("loss")]
    assert summary["first_nonfinite_step"] is None
    assert all(math.isfinite(v) for m in rec.metrics for v in m.values())
    assert summary["steps"] == CONFIGS["healthy"].max_steps
    assert summary["final_val_acc"] > 0.9
    assert np.mean(losses[-20:]) < 0.15 * np.mean(losses[:20])
    val = [v for _, v in rec.series("val/loss")]
    assert val[-1] < 0.2 * val[0]


def test_diverging_climbs_then_goes_non_finite(runs):
    summary, rec = runs["diverging"]
    nf = summary["first_nonfinite_step"]
    assert nf is not None and nf == rec.steps[-1]  # logged, then stopped
    assert not math.isfinite(rec.metrics[-1]["loss"])
    losses = np.array([m["loss"] for m in rec.metrics[:-1]])
    assert np.all(np.isfinite(losses))

    # It trains first: the smoothed loss falls well below its start.
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    low = int(np.argmin(smooth))
    assert smooth[low] < 0.5 * smooth[0]
    # Then it climbs for tens of steps before the first non-finite value.
    climb_start = next(i for i in range(low, nf) if losses[i] > 2 * smooth[low])
    assert nf - climb_start >= 15
    assert nf - summary["min_loss_step"] >= 20
    tail = losses[climb_start:]
    assert np.all(tail > smooth[low])  # it never recovers
    assert tail[-1] > 1e6 * smooth[low]
    grad = [m["grad_norm"] for m in rec.metrics]
    assert max(grad[climb_start:]) > 100 * max(grad[:low])


def test_diverging_is_deterministic(runs):
    rec = Recorder()
    summary = diverging(rec, seed=0)
    assert summary["first_nonfinite_step"] == runs["diverging"][0]["first_nonfinite_step"]
    assert summary["losses"][:-1] == runs["diverging"][0]["losses"][:-1]


def test_overfitting_val_loss_rises_while_train_loss_falls(runs):
    summary, rec = runs["overfitting"]
    assert summary["first_nonfinite_step"] is None
    losses = [v for _, v in rec.series("loss")]
    val = rec.series("val/loss")
    best_step, best = min(val, key=lambda sv: sv[1])
    assert best_step < summary["steps"] // 3
    assert val[-1][1] > 1.3 * best
    # The rise is steady, not a blip: each later third of the evaluations is higher.
    after = [v for s, v in val if s > best_step]
    thirds = np.array_split(np.array(after), 3)
    assert thirds[0].mean() < thirds[1].mean() < thirds[2].mean()
    # ...while the training loss keeps falling towards zero.
    assert np.mean(losses[-20:]) < 0.01
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[best_step : best_step + 20])


def test_whole_demo_is_fast(runs):
    assert sum(summary["wall_time"] for summary, _ in runs.values()) < 30
