"""The divergence forecaster stays quiet on a loss that has converged to (a logged) zero."""

from __future__ import annotations

import math

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic


def _converged_to_zero() -> tuple[list[int], list[dict[str, float]]]:
    """A fine-tuned classifier as the HF Trainer logs it: loss 0.85, then 0.0017 falling to 0.0000 (4 decimals)."""
    steps = list(range(10, 1510, 10))

    def loss(step: int) -> float:
        return 0.8496 if step == 10 else round(0.0017 * math.exp(-max(0, step - 70) / 120.0), 4)

    rows = [{"loss": loss(s), "learning_rate": 4.983e-5 * (1 - (s - 10) / 3000), "grad_norm": 6.17 * math.exp(-s / 15.0) + 5e-4}
            for s in steps]
    return steps, rows


def _forecasts(config: LearnedConfig) -> list[int]:
    steps, rows = _converged_to_zero()
    d = LearnedDiagnostic(config)
    found = []
    for i in range(0, len(steps), 50):
        block = MetricBlock.from_rows(steps[i:i + 50], [0.0] * len(steps[i:i + 50]), rows[i:i + 50])
        found += [f.step for f in d.observe_block(block) if f.kind is AnomalyKind.DIVERGENCE_PREDICTED]
    return found


def test_no_forecast_once_the_loss_is_logged_as_zero() -> None:
    assert _converged_to_zero()[1][60]["loss"] == 0.0
    assert _forecasts(LearnedConfig()) == []


def test_without_the_guard_the_forecaster_reads_a_zero_loss_as_divergence(unfloored_learned: LearnedConfig) -> None:
    # What the default guards against: the log-ratio features of a 0.0 loss are far outside training.
    # The forecaster's floor under the gradient norm's fall (test_forecast_floors.py) now covers this run
    # too (its gradient norm falls 6.17 -> 5e-4), so the guard is shown on the forecaster without it.
    no_guard = {"forecast_converged_below": 0.0}
    found = _forecasts(unfloored_learned.model_copy(update=no_guard))
    assert found and min(found) >= 500  # from where the logged loss reaches 0.0000
    assert _forecasts(unfloored_learned) == []
    assert _forecasts(LearnedConfig(**no_guard)) == []


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_the_bar_is_a_fraction(bad: float) -> None:
    with pytest.raises(ValueError, match="forecast_converged_below"):
        LearnedConfig(forecast_converged_below=bad)
