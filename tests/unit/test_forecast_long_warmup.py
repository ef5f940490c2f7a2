"""A long learning-rate warm-up is no precursor of divergence by itself.

The shape of a language-model run as its training loop logs it every 10 steps: the learning rate warms up
linearly over 2,000 steps, the gradient norm falls from ~5 to ~0.3 in the first few hundred (a large
initial gradient), the loss falls from 11 towards 3. The forecaster shipped until 2026-12-06 had seen long
warm-ups only in runs that overshot (the corpus's healthy runs warm up over 2-10 % of their steps) and
forecast a divergence during this one; the one fitted with the healthy long-warm-up controls
(``python -m bench.corpus.generate --controls long_warmup``) does not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic


def _language_model_warm_up(seed: int) -> tuple[list[int], list[dict[str, float]]]:
    rng = np.random.default_rng(seed)
    steps = list(range(0, 4000, 10))
    rows = []
    for s in steps:
        rows.append({
            "loss": (3 + 8 * math.exp(-s / 800)) * (1 + 0.03 * rng.standard_normal()),
            "lr": 3e-4 * min(1.0, s / 2000),
            "grad_norm": (5 * math.exp(-s / 500) + 0.3) * math.exp(0.2 * rng.standard_normal()),
        })
    return steps, rows


def _forecasts(config: LearnedConfig, seed: int, block: int = 50) -> list[int]:
    steps, rows = _language_model_warm_up(seed)
    d = LearnedDiagnostic(config)
    found = []
    for i in range(0, len(steps), block):
        b = MetricBlock.from_rows(steps[i:i + block], [float(s) for s in steps[i:i + block]], rows[i:i + block])
        found += [f.step for f in d.observe_block(b) if f.kind is AnomalyKind.DIVERGENCE_PREDICTED]
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_long_warm_up_with_a_falling_gradient_norm_is_no_divergence_warning(earlier_learned: LearnedConfig, seed: int) -> None:
    assert _forecasts(LearnedConfig(), seed) == []
    earlier = _forecasts(earlier_learned, seed)
    assert earlier and 1000 <= min(earlier) < 2000  # during the warm-up, the loss still falling


def test_the_whole_suite_stays_quiet_on_it(service_suite) -> None:
    steps, rows = _language_model_warm_up(0)
    monitor = service_suite.monitor("lm")
    alerts = []
    for i in range(0, len(steps), 50):
        b = MetricBlock.from_rows(steps[i:i + 50], [float(s) for s in steps[i:i + 50]], rows[i:i + 50])
        alerts += [a for a in monitor.observe_block(b) if a.finding.severity.name != "INFO"]
    assert alerts == []
