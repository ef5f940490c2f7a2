"""A divergence forecast while the training loss is calm needs ``calm_forecast_patience`` rows (default 4).

The fixture holds the first 41 steps of two healthy runs of a residual MLP (an architecture the forecaster was
never fitted on) from the novel-domain validation corpus, both in a learning-rate warm-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic, _calm
from runwatch.models.learned.features import FEATURES

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "learned" / "novel22_warmups.json"


def _run(run_id: str) -> list[dict[str, float]]:
    return json.loads(FIXTURE.read_text())["runs"][run_id]["rows"]


def _forecasts(rows: list[dict[str, float]], config: LearnedConfig, block: int = 1) -> list[int]:
    d = LearnedDiagnostic(config)
    found = []
    for i in range(0, len(rows), block):
        chunk = rows[i:i + block]
        found += [f.step for f in d.observe_block(MetricBlock.from_rows(range(i, i + len(chunk)), [0.0] * len(chunk), chunk))
                  if f.kind is AnomalyKind.DIVERGENCE_PREDICTED]
    return found


@pytest.mark.parametrize("block", [1, 7, 41])
def test_a_short_forecast_during_a_calm_warm_up_is_not_raised(earlier_learned: LearnedConfig, block: int) -> None:
    rows = _run("run-0006")
    patience_2 = earlier_learned.model_copy(update={"calm_forecast_patience": 2})
    assert _forecasts(rows, patience_2, block) == [22]  # what patience 2 raised (the forecaster until 2026-12-06)
    assert _forecasts(rows, earlier_learned, block) == []
    assert _forecasts(rows, LearnedConfig(), block) == []


def test_a_loss_within_its_own_noise_of_its_best_counts_as_calm_for_the_forecast(earlier_learned: LearnedConfig) -> None:
    rows = _run("run-0094")
    d = LearnedDiagnostic()
    for i, row in enumerate(rows[:16]):
        d.observe_block(MetricBlock.from_rows([i], [0.0], [row]))
        if i == 14:
            assert d.loss_calm(14)  # step 14: calm, the second row at the forecast's level
    # Step 15: the minibatch loss jumped 0.29 -> 0.51; smoothed, 12 % above its best, in a run whose loss swings
    # ~30 % from batch to batch. Not calm for the fusion gate; calm, within its noise, for the forecast.
    assert not d.loss_calm(15)
    assert _forecasts(rows, earlier_learned.model_copy(update={"calm_forecast_patience": 2})) == [14, 15]
    assert _forecasts(rows, earlier_learned) == []
    assert _forecasts(rows, LearnedConfig()) == []


def _row(vs_best: float, noise: float, trend: float = 0.0, jump: float = 0.0) -> np.ndarray:
    row = np.zeros(len(FEATURES))
    row[[FEATURES.index(n) for n in ("loss_vs_best", "loss_noise", "loss_trend", "loss_jump")]] = vs_best, noise, trend, jump
    return row


def test_calm_within_noise_allows_the_runs_noise_above_its_best_and_nothing_else() -> None:
    assert not _calm(_row(0.114, 0.31)) and _calm(_row(0.114, 0.31), within_noise=True)
    assert not _calm(_row(0.5, 0.31), within_noise=True)  # beyond 10 % plus its noise
    assert not _calm(_row(0.0, 0.31, trend=0.2), within_noise=True)  # rising
    assert not _calm(_row(0.0, 0.31, jump=4.0), within_noise=True)  # a jump of 4x its noise
    assert _calm(_row(0.05, float("nan")), within_noise=True)  # no noise estimate yet: the plain 10 %


def test_the_setting_is_alert_policy_so_checkpoints_fit_across_it() -> None:
    saved = LearnedDiagnostic(LearnedConfig(calm_forecast_patience=2))
    rows = _run("run-0006")
    saved.observe_block(MetricBlock.from_rows(range(10), [0.0] * 10, rows[:10]))
    restored = LearnedDiagnostic()
    assert restored.load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match="calm_forecast_patience"):
        LearnedConfig(calm_forecast_patience=0)
