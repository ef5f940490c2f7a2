"""ZeroLossDiagnostic: a training loss that falls abruptly to exactly 0 and stays there."""

from __future__ import annotations

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.zero_loss import ZeroLossDiagnostic
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _feed(d, rows, start=0, every=10):
    steps = list(range(start, start + every * len(rows), every))
    return d.observe_block(MetricBlock.from_rows(steps, [0.0] * len(rows), rows))


def test_an_abrupt_fall_to_zero_is_reported_once_at_the_fifth_zero():
    d = ZeroLossDiagnostic()
    assert _feed(d, [{"loss": v} for v in (1.2, 0.8, 0.05, 0.0, 0.0, 0.0, 0.0)]) == []
    (f,) = _feed(d, [{"loss": 0.0}, {"loss": 0.0}], start=70)  # one value at a time, as a live stream sends them
    assert f.kind == AnomalyKind.PLATEAU and f.severity == Severity.ERROR and f.step == 70
    assert f.since == 30 and "after 0.05" in f.explanation
    assert _feed(d, [{"loss": 0.0}] * 10, start=90) == []  # once per run


def test_zeros_from_the_first_value_count_a_converged_loss_rounded_to_zero_does_not():
    (f,) = _feed(ZeroLossDiagnostic(), [{"loss": 0.0}] * 5)
    assert "from the run's first value" in f.explanation
    assert _feed(ZeroLossDiagnostic(), [{"loss": v} for v in (0.5, 0.02, 0.004, 0.0009, 0.0, 0.0, 0.0, 0.0, 0.0)]) == []
    # four zeros, then a value: no stretch of five
    assert _feed(ZeroLossDiagnostic(), [{"loss": v} for v in (0.5, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0)]) == []


def test_flowing_gradients_an_improving_eval_loss_and_policy_gradient_runs_are_left_alone():
    rows = [{"loss": 0.4, "grad_norm": 1.0}] + [{"loss": 0.0, "grad_norm": g} for g in (0.9, 1.1, 0.7, 1.3, 0.8, 1.0)]
    assert _feed(ZeroLossDiagnostic(), rows) == []  # the zero is only the logged value
    rows = [{"loss": 0.4, "grad_norm": 1.0}] + [{"loss": 0.0, "grad_norm": 0.0}] * 6
    assert len(_feed(ZeroLossDiagnostic(), rows)) == 1  # gradients stopped too
    rows = [{"loss": 0.4, "val/loss": 1.0}] + [{"loss": 0.0, "val/loss": v} for v in (0.98, 0.95, 0.9, 0.85, 0.8)]
    assert _feed(ZeroLossDiagnostic(), rows) == []
    rows = [{"loss": 0.4, "reward": 0.1}] + [{"loss": 0.0, "reward": 0.2}] * 6  # GRPO's surrogate loss
    assert _feed(ZeroLossDiagnostic(), rows) == []


def test_state_survives_a_checkpoint_in_the_default_suite():
    suite = DiagnosticSuite(SuiteConfig())
    monitor = suite.monitor("r", "p")
    rows = [{"loss": v} for v in (0.9, 0.4, 0.0, 0.0, 0.0)]
    monitor.observe_block(MetricBlock.from_rows([0, 1, 2, 3, 4], [0.0] * 5, rows))
    restored = suite.monitor("r", "p")
    restored.load_state_dict(monitor.state_dict())
    alerts = restored.observe_block(MetricBlock.from_rows([5, 6], [0.0] * 2, [{"loss": 0.0}] * 2))
    assert [a.finding.detector for a in alerts] == ["zero_loss"]
