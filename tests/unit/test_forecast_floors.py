"""The forecaster reads a gradient norm's fall below its first logged value only down to a floor.

A run logged as the Hugging Face Trainer logs it (loss, grad_norm, learning_rate), at a constant learning rate,
whose first gradient norm is 40x its later level (a large initial gradient, common in transformers), and whose
loss comes down and stays flat: healthy. Without the floor the shipped forecaster read the fall itself as a
precursor of divergence (two training runs had shown one there) and raised DIVERGENCE_PREDICTED late in such runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind
from runwatch.models.learned.artifacts import load_artifact
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic
from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig
from runwatch.models.learned.training import TrainingRun, set_forecast_floors


def _trainer_like_run(seed: int, first_grad_x: float = 40.0) -> tuple[np.ndarray, list[dict[str, float]]]:
    rng = np.random.default_rng(seed)
    steps = np.arange(10, 3010, 10)
    t = steps / steps[-1]
    loss = (1.0 + 3.0 * np.exp(-t / 0.05)) * (1 + 0.03 * rng.standard_normal(len(t)))
    grad = (1 + (first_grad_x - 1) * np.exp(-t / 0.02)) * (1 + 0.2 * rng.standard_normal(len(t)))
    lr = 1e-4 * np.minimum(1, t / 0.05)
    return steps, [{"loss": float(a), "grad_norm": float(b), "learning_rate": float(c)} for a, b, c in zip(loss, grad, lr)]


def _forecast_steps(config: LearnedConfig, steps: np.ndarray, rows: list[dict[str, float]], block: int) -> list[int]:
    d = LearnedDiagnostic(config)
    found = []
    for i in range(0, len(rows), block):
        chunk = slice(i, i + block)
        b = MetricBlock.from_rows(steps[chunk].tolist(), steps[chunk].astype(float).tolist(), rows[chunk])
        found += [f.step for f in d.observe_block(b) if f.kind is AnomalyKind.DIVERGENCE_PREDICTED]
    return found


def test_the_shipped_forecaster_has_a_floor_on_the_gradient_norms_fall() -> None:
    floors = load_artifact().forecaster.config.feature_floors
    assert list(floors) == ["grad_vs_start"]
    assert -3.0 < floors["grad_vs_start"] < -2.0  # the third divergent training run's lowest: ~10x below its start


@pytest.mark.parametrize("block", [1, 25, 300])
def test_a_large_first_gradient_norm_is_no_divergence_warning(
    earlier_learned: LearnedConfig, unfloored_learned: LearnedConfig, block: int
) -> None:
    raised_without = 0
    for seed in range(3):
        steps, rows = _trainer_like_run(seed)
        assert _forecast_steps(LearnedConfig(), steps, rows, block) == []
        assert _forecast_steps(earlier_learned, steps, rows, block) == []
        raised_without += bool(_forecast_steps(unfloored_learned, steps, rows, block))
    assert raised_without >= 2  # what the forecaster until 2026-12-06 raised before the floor


def test_a_modest_first_gradient_norm_was_never_affected(unfloored_learned: LearnedConfig) -> None:
    steps, rows = _trainer_like_run(0, first_grad_x=5.0)
    assert _forecast_steps(unfloored_learned, steps, rows, 50) == _forecast_steps(LearnedConfig(), steps, rows, 50) == []


def test_floors_name_known_features_and_survive_the_artifact_round_trip(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown feature"):
        ForecasterConfig(feature_floors={"grad_vs_first": -2.0})
    art = load_artifact()
    art.save(tmp_path)
    assert load_artifact(tmp_path).forecaster.config.feature_floors == art.forecaster.config.feature_floors


def test_set_forecast_floors_reads_the_divergent_runs_and_keeps_the_weights() -> None:
    art = load_artifact()
    steps, rows = _trainer_like_run(0)
    lowered = [{**r, "grad_norm": r["grad_norm"] * 0.5 ** (i / 30)} for i, r in enumerate(rows)]  # falls ~1000x
    runs = [TrainingRun(f"d{k}", MetricBlock.from_rows(steps.tolist(), [0.0] * len(steps), lowered), "divergence",
                        onset=0, manifest=int(steps[-1]) + 10 * k + 10) for k in range(3)]
    floored = set_forecast_floors(art, runs, log=lambda m: None)
    floor = floored.forecaster.config.feature_floors["grad_vs_start"]
    assert floor < -5.0  # these runs went far lower than the corpus's
    assert floored.config.training["forecast_floors"]["floors"] == {"grad_vs_start": floor}
    for name, w in art.forecaster.weights.items():
        np.testing.assert_array_equal(floored.forecaster.weights[name], w)
