"""The start-blowup diagnostic: a high learning rate whose loss doubles in the first steps, on real training runs."""

from __future__ import annotations

import json

from test_diagnostics import feed
from training import RunConfig, train

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.start_blowup import StartBlowupDiagnostic
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _found(rows: list[dict[str, float]], steps: list[int] | None = None, size: int = 1000) -> list[int]:
    steps = steps if steps is not None else list(range(len(rows)))
    d, out = StartBlowupDiagnostic(), []
    for i in range(0, len(rows), size):
        block = MetricBlock.from_rows(steps[i : i + size], [float(s) for s in steps[i : i + size]], rows[i : i + size])
        out += [f.step for f in d.observe_block(block)]
    return out


def test_adam_at_a_far_too_high_rate_is_warned_at_the_first_value_up() -> None:
    run = train(RunConfig(lr=0.3, steps=40))  # Adam on digits: 2.3 -> 54 -> 105 ...
    alerts = feed(run.events, DiagnosticSuite(SuiteConfig()))
    first = min(alerts, key=lambda a: a.first_step)
    assert first.finding.detector == "start_blowup" and first.first_step == 1
    f = first.finding
    assert f.kind == AnomalyKind.DIVERGENCE_PREDICTED and f.severity == Severity.WARNING and f.since == 0
    assert "at its 2nd value with lr 0.3" in f.explanation and "lower the learning rate" in f.explanation
    # The divergence diagnostic, which needs the climb to persist, speaks two steps later.
    divergence = [a.first_step for a in alerts if a.finding.detector == "divergence"]
    assert divergence and min(divergence) > 1


def test_healthy_starts_at_high_rates_are_quiet() -> None:
    for cfg in (RunConfig(optimizer="sgd", lr=0.5, steps=60), RunConfig(optimizer="sgd", momentum=0.9, lr=0.1, steps=60),
                RunConfig(steps=60)):
        run = train(cfg)
        assert not [a for a in feed(run.events) if a.finding.detector == "start_blowup"], cfg


def test_only_the_start_of_a_log_from_its_start_counts() -> None:
    up = [{"lr": 0.5, "loss": v} for v in (2.0, 1.0, 0.9, 0.8, 0.7, 0.6, 3.0)]
    assert _found(up) == []  # a rise after the first values is the divergence diagnostic's
    early = [{"lr": 0.5, "loss": v} for v in (2.0, 1.0, 2.5)]
    assert _found(early) == [2]  # 2.5 is 2.5x the lowest so far (1.0)
    # A Hugging Face log every 500 steps at lr 5: judged on its logged values.
    assert _found([{"lr": 5.0, "loss": v} for v in (1.6, 11.8, 11.9)], [500, 1000, 1500]) == [1000]
    # A log that starts at step 20,000 (a resumed run): its first values are not the run's start.
    assert _found([{"lr": 0.5, "loss": v} for v in (1.6, 11.8)], [20000, 20010]) == []
    # The learning rate is read at or before each loss value: warmed up from 0.01 to 0.2 by step 2.
    ramp = [{"lr": 0.01, "loss": 2.0}, {"lr": 0.05, "loss": 4.5}, {"lr": 0.2, "loss": 4.6}]
    assert _found(ramp) == [2]
    # A loss that goes negative (a Trainer's GRPO loss around 0, a real run): ratios of it say nothing.
    grpo = [{"lr": 5e-5, "loss": v} for v in (-0.0143, 0.008, 0.0008, 0.0133, -0.0002)]
    assert _found(grpo, [10, 20, 30, 40, 50]) == []
    assert _found([{"loss": v} for v in (0.0008, 0.0009, 0.0003, -0.0002, 0.0133)]) == []


def test_blocks_and_checkpoints_do_not_change_what_is_found() -> None:
    rows = [{"lr": 0.8, "loss": v} for v in (1.47, 1.3, 5.38, 39.2, 36.0, 42.0)]
    assert _found(rows) == [2]
    assert all(_found(rows, size=k) == [2] for k in (1, 2, 4))
    a = StartBlowupDiagnostic()
    assert a.observe_block(MetricBlock.from_rows([0, 1], [0.0, 1.0], rows[:2])) == []
    b = StartBlowupDiagnostic()
    assert b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [f.step for f in b.observe_block(MetricBlock.from_rows([2, 3], [2.0, 3.0], rows[2:4]))] == [2]


def test_a_tenfold_jump_over_the_first_values_median_counts_at_any_rate() -> None:
    # No learning rate logged, or a low one: a loss three orders of magnitude up in the first values is blowing up.
    jump = [{"loss": v} for v in (11.7, 8.85, 8712.6, 15806.4)]
    assert _found(jump, [100, 200, 300, 400]) == [300]
    assert _found([{"lr": 0.001, "loss": v} for v in (2.3, 2.1, 40.0)]) == [2]
    # Over the median, not the lowest value: one near-zero batch loss among ordinary ones is no baseline.
    noisy = [{"loss": v} for v in (0.67, 0.66, 0.01, 0.58, 1.07, 0.63, 0.77)]
    assert _found(noisy) == []
    assert _found([{"loss": v} for v in (2.3, 2.1, 19.0)]) == []  # 9x: under the 10x
    assert _found([{"loss": v} for v in (2.0, 1.0, 0.9, 0.8, 0.7, 0.6, 60.0)]) == []  # after the first values
    (f,) = StartBlowupDiagnostic().observe_block(MetricBlock.from_rows([0, 1, 2], [0.0] * 3, jump[:3]))
    assert "jumped 848x over the median of its first values" in f.explanation and "lr" not in f.explanation
    assert f.kind == AnomalyKind.DIVERGENCE_PREDICTED and f.severity == Severity.WARNING and f.since == 0
