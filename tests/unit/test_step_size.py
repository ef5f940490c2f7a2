"""The step-size rule: a learning rate whose step dwarfs the weights, at the start or in a warm-up, predicts divergence."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.step_size import StepSizeConfig, StepSizeDiagnostic
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _row(lr: float, step: int = 0) -> dict[str, float]:
    # A small conv net at initialisation: the head's weights are the smallest.
    return {
        "lr": lr, "loss": 2.3,
        "grad_norm/conv1": 0.57, "weight_norm/conv1": 3.3,
        "grad_norm/head": 1.55, "weight_norm/head": 1.9,
    }


def _feed(d: StepSizeDiagnostic, rows: list[dict[str, float]], steps: list[int], size: int) -> list:
    out = []
    for i in range(0, len(rows), size):
        out += d.observe_block(MetricBlock.from_rows(steps[i : i + size], [0.0] * len(steps[i : i + size]), rows[i : i + size]))
    return out


def test_sgd_at_lr_8_is_predicted_to_diverge_at_step_0() -> None:
    (f,) = StepSizeDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [_row(7.96)]))
    assert (f.kind, f.step, f.layer, f.key) == (AnomalyKind.DIVERGENCE_PREDICTED, 0, "head", "initial_step")
    assert f.score == 7.96 * 1.55 / 1.9  # 6.5x the head's weights
    assert f.severity == Severity.WARNING
    assert "lower the learning rate" in f.explanation


def test_severity_follows_the_ratio() -> None:
    d = StepSizeDiagnostic()
    (f,) = d.observe_block(MetricBlock.from_rows([0], [0.0], [_row(20.0)]))
    assert f.severity == Severity.ERROR  # 16x
    assert StepSizeDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [_row(2.0)])) == []  # 1.6x


def test_a_usual_learning_rate_is_quiet() -> None:
    d = StepSizeDiagnostic()
    rows = [_row(0.05) for _ in range(40)]
    assert _feed(d, rows, list(range(40)), 1) == []
    assert d.done  # idle after the start window


def test_only_the_start_is_judged() -> None:
    # Fine at step 0; the head's gradient surging later at a constant lr is not this rule's business.
    d = StepSizeDiagnostic()
    rows = [_row(0.05)] + [{**_row(0.05), "grad_norm/head": 400.0} for _ in range(5)]
    assert _feed(d, rows, list(range(6)), 1) == []
    # A layer first logged long after the start is not judged either.
    late = StepSizeDiagnostic()
    assert late.observe_block(MetricBlock.from_rows([0], [0.0], [{"lr": 30.0, "loss": 2.0}])) == []
    assert late.observe_block(MetricBlock.from_rows([50], [0.0], [_row(30.0)])) == []
    # A warm-up's rising step is judged on the whole model (a small head may take large steps in healthy runs).
    ramp = [_row(0.3 * (s + 1), s) for s in range(40)]
    assert _feed(StepSizeDiagnostic(), ramp, list(range(40)), 3) == []  # no global grad_norm logged: nothing to judge


def _warmup_rows(peak: float, steps: int = 60, warm: int = 40) -> list[dict[str, float]]:
    # The whole model: weight norm sqrt(3.3^2 + 1.9^2) = 3.81, gradient norm 1.65.
    return [{**_row(peak * min(1.0, (s + 1) / warm)), "grad_norm": 1.65} for s in range(steps)]


def test_a_warm_up_towards_a_peak_too_high_is_warned_while_it_ramps() -> None:
    rows = _warmup_rows(peak=0.5)  # the step reaches 0.1x the weights at lr 0.231, step 18 of the 40-step warm-up
    (f,) = _feed(StepSizeDiagnostic(), rows, list(range(60)), 7)
    assert (f.kind, f.key, f.severity, f.step) == (AnomalyKind.DIVERGENCE_PREDICTED, "warmup_step", Severity.WARNING, 18)
    assert "still warming up" in f.explanation and "lengthen the warm-up" in f.explanation


def test_a_warm_up_to_a_usual_peak_is_quiet_and_then_idle() -> None:
    d = StepSizeDiagnostic()
    assert _feed(d, _warmup_rows(peak=0.2), list(range(60)), 7) == []  # at most 0.087x
    assert d.done  # the warm-up ended at step 40: nothing more to judge


def test_a_run_logged_from_mid_training_has_no_start_to_judge() -> None:
    # Resumed at step 5,000 (or restored from a checkpoint without this rule's state): a small head's large
    # step there is not a learning rate too high from step 0.
    d = StepSizeDiagnostic()
    assert d.observe_block(MetricBlock.from_rows([5000], [0.0], [_row(7.96)])) == [] and d.done
    assert StepSizeDiagnostic().observe_block(MetricBlock.from_rows([10], [0.0], [_row(7.96)]))  # still the start


def test_zero_initialised_layers_and_a_missing_lr_are_skipped() -> None:
    zero = {"lr": 5.0, "grad_norm/lora_B": 0.3, "weight_norm/lora_B": 0.0}
    assert StepSizeDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [zero])) == []
    no_lr = {k: v for k, v in _row(5.0).items() if k != "lr"}
    assert StepSizeDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [no_lr])) == []


def test_norms_of_one_step_in_separate_events_and_blocks() -> None:
    d = StepSizeDiagnostic()
    assert d.observe_block(MetricBlock.from_rows([0], [0.0], [{"grad_norm/head": 1.55, "lr": 7.96}])) == []
    restored = StepSizeDiagnostic()
    assert restored.load_state_dict(json.loads(json.dumps(d.state_dict())))
    (f,) = restored.observe_block(MetricBlock.from_rows([0], [0.0], [{"weight_norm/head": 1.9}]))
    assert (f.step, f.layer) == (0, "head")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.floats(0.01, 20.0), st.booleans())
def test_findings_do_not_depend_on_how_the_log_is_cut(size: int, lr: float, ramp: bool) -> None:
    steps = list(range(30))
    rows = _warmup_rows(lr / 10, steps=30, warm=20) if ramp else [_row(lr) for _ in steps]
    whole = [(f.step, f.key, f.score) for f in _feed(StepSizeDiagnostic(), rows, steps, len(steps))]
    cut = [(f.step, f.key, f.score) for f in _feed(StepSizeDiagnostic(), rows, steps, size)]
    assert whole == cut
    if not ramp:
        assert len(whole) == (1 if lr * 1.55 / 1.9 >= 2.0 else 0)


def test_the_default_suite_reports_it_before_the_loss_moves() -> None:
    monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
    alerts = monitor.observe_block(MetricBlock.from_rows([0], [0.0], [_row(7.96)]))
    assert [(a.finding.kind, a.finding.step, a.finding.severity) for a in alerts if a.finding.key == "initial_step"] == [
        (AnomalyKind.DIVERGENCE_PREDICTED, 0, Severity.WARNING)
    ]


def test_config_round_trips() -> None:
    cfg = StepSizeConfig(ratio_threshold=3.0, within_steps=0)
    assert StepSizeConfig.from_json(cfg.to_json()) == cfg
