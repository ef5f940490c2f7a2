"""A divergence forecast while the training loss is calm needs ``calm_forecast_patience`` rows (default 4).

The fixture holds the first 41 steps of two healthy runs of a residual MLP (an architecture the forecaster was
never fitted on) from the novel-domain validation corpus, both in a learning-rate warm-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic

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
def test_a_short_forecast_during_a_calm_warm_up_is_not_raised(block: int) -> None:
    rows = _run("run-0006")
    assert _forecasts(rows, LearnedConfig(calm_forecast_patience=2), block) == [22]  # what patience 2 raised
    assert _forecasts(rows, LearnedConfig(), block) == []


def test_a_loss_that_left_its_best_keeps_the_ordinary_patience() -> None:
    rows = _run("run-0094")
    d = LearnedDiagnostic()
    for i, row in enumerate(rows[:16]):
        d.observe_block(MetricBlock.from_rows([i], [0.0], [row]))
        if i == 14:
            assert d.loss_calm(14)  # step 14: calm, the second row at the forecast's level
    assert not d.loss_calm(15)  # the loss jumped 0.29 -> 0.51, 79 % above its best
    assert _forecasts(rows, LearnedConfig(calm_forecast_patience=2)) == [14, 15]
    assert _forecasts(rows, LearnedConfig()) == [15]


def test_the_setting_is_alert_policy_so_checkpoints_fit_across_it() -> None:
    saved = LearnedDiagnostic(LearnedConfig(calm_forecast_patience=2))
    rows = _run("run-0006")
    saved.observe_block(MetricBlock.from_rows(range(10), [0.0] * 10, rows[:10]))
    restored = LearnedDiagnostic()
    assert restored.load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match="calm_forecast_patience"):
        LearnedConfig(calm_forecast_patience=0)
