"""ActivationSpikeDiagnostic: a layer's activation std jumping at one logged step (a bad input batch)."""

from __future__ import annotations

import numpy as np

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.activation_spike import ActivationSpikeConfig, ActivationSpikeDiagnostic
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _rows(values: dict[str, list[float]]) -> list[dict[str, float]]:
    n = len(next(iter(values.values())))
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _feed(d: ActivationSpikeDiagnostic, values: dict[str, list[float]], every: int = 10, start: int = 0):
    n = len(next(iter(values.values())))
    steps = list(range(start, start + every * n, every))
    return d.observe_block(MetricBlock.from_rows(steps, [0.0] * n, _rows(values)))


def test_a_scaled_input_batch_fires_once_at_its_step_naming_the_layer_and_the_others():
    rng = np.random.default_rng(0)
    base = {f"act/std/{name}": list(s * (1 + 0.05 * rng.standard_normal(30))) for name, s in
            (("inp", 1.0), ("fc1", 0.6), ("head", 2.0))}
    d = ActivationSpikeDiagnostic()
    assert _feed(d, base) == []
    (f,) = _feed(d, {"act/std/inp": [45.0], "act/std/fc1": [9.0], "act/std/head": [2.1]}, start=300)
    assert f.kind == AnomalyKind.ACTIVATION_SPIKE and f.severity == Severity.WARNING
    assert f.step == 300 and f.layer == "inp" and f.metric == "act/std/inp"
    assert 40 < f.score < 50
    assert f.related == ("act/std/fc1",)  # fc1 jumped 15x too; head did not
    assert "inp's activation std jumped" in f.explanation and "1 more layer(s)" in f.explanation
    # the batch after is back to normal: nothing more; a hundredfold jump is an ERROR
    assert _feed(d, {"act/std/inp": [1.0], "act/std/fc1": [0.6], "act/std/head": [2.0]}, start=310) == []
    (g,) = _feed(d, {"act/std/inp": [150.0], "act/std/fc1": [0.6], "act/std/head": [2.0]}, start=320)
    assert g.severity == Severity.ERROR


def test_steady_growth_a_dead_layer_twitching_and_the_first_values_stay_quiet():
    d = ActivationSpikeDiagnostic()
    # an output layer whose scale grows 40x over its first values, 30 % per logged step at most
    grow = [0.1 * 1.3**i for i in range(15)]
    # a layer that died: std 0.5, then ~1e-6 with 100x twitches
    dead = [0.5] * 5 + [1e-6, 1e-6, 1e-4, 1e-6, 1e-6, 1e-4, 1e-6, 1e-6, 1e-4, 1e-6]
    assert _feed(d, {"act/std/head": grow, "act/std/fc3": dead}) == []
    # warm-up: a jump within a layer's first values is not judged
    d = ActivationSpikeDiagnostic()
    assert _feed(d, {"act/std/fc1": [1.0, 1.0, 1.0, 30.0, 1.0]}) == []


def test_a_jump_must_clear_the_median_too_and_only_act_std_is_read():
    d = ActivationSpikeDiagnostic(ActivationSpikeConfig(warmup=3))
    # the previous value dipped (0.05) but the layer's median is 1.0: 4.0 is 80x the previous, 4x the median
    assert _feed(d, {"act/std/fc1": [1.0, 1.0, 1.0, 1.0, 0.05, 4.0]}) == []
    assert not d.watches("act/mean/fc1") and not d.watches("act/std/") and d.watches("act/std/fc1")
    assert _feed(d, {"loss": [1.0, 50.0]}) == []


def test_state_survives_a_checkpoint_and_the_suite_runs_it_by_default():
    suite = DiagnosticSuite(SuiteConfig())
    monitor = suite.monitor("r", "p")
    rows = [{"loss": 1.0, "act/std/inp": 1.0 + 0.01 * (i % 2)} for i in range(20)]
    monitor.observe_block(MetricBlock.from_rows(list(range(20)), [0.0] * 20, rows))
    restored = suite.monitor("r", "p")
    restored.load_state_dict(monitor.state_dict())
    alerts = restored.observe_block(MetricBlock.single(20, 0.0, {"loss": 1.0, "act/std/inp": 60.0}))
    kinds = {a.finding.kind for a in alerts}
    assert AnomalyKind.ACTIVATION_SPIKE in kinds
