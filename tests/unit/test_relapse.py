"""RelapseDiagnostic: a training loss that made real progress and went back to its start for good."""

from __future__ import annotations

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.relapse import RelapseDiagnostic
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig

START = [0.67, 0.64, 0.70, 0.66, 0.65]
LEARNED = [0.58, 0.55, 0.50, 0.46, 0.39, 0.36, 0.37, 0.31, 0.43, 0.39]
CHANCE = [0.76, 0.71, 0.67, 0.67, 0.70, 0.67, 0.69, 0.67, 0.67, 0.66, 0.68, 0.66, 0.74, 0.65, 0.67, 0.66]


def _feed(d, rows, start=0, every=10):
    steps = list(range(start, start + every * len(rows), every))
    return d.observe_block(MetricBlock.from_rows(steps, [0.0] * len(rows), rows))


def test_a_classifier_back_at_chance_after_learning_is_reported_once():
    d = RelapseDiagnostic()
    rows = [{"loss": v} for v in START + LEARNED + CHANCE]
    assert _feed(d, rows[:20]) == []
    found = []
    for i in range(20, len(rows)):  # one value at a time, as a live stream sends them
        found += _feed(d, rows[i : i + 1], start=10 * i)
    (f,) = found
    assert f.kind == AnomalyKind.DIVERGENCE_PREDICTED and f.severity == Severity.ERROR and f.key == "relapse"
    assert "back at its start" in f.explanation and f.score > 0.95
    assert _feed(d, [{"loss": 0.7}] * 20, start=1000) == []  # once per run


def test_noise_around_the_start_a_bump_that_comes_back_and_a_warm_restart_are_left_alone():
    never_learned = [{"loss": v} for v in START * 8]
    assert _feed(RelapseDiagnostic(), never_learned) == []  # no progress: the no-learning rule's case
    bump = [{"loss": v} for v in START + LEARNED + [0.66] * 9 + [0.35] * 10]  # 9 values back, then better again
    assert _feed(RelapseDiagnostic(), bump) == []
    restart = ([{"loss": v, "lr": 1e-3} for v in START + LEARNED]
               + [{"loss": v, "lr": 5e-3} for v in CHANCE])  # a cycle's climb: the rate is 5x what it was at the best
    assert _feed(RelapseDiagnostic(), restart) == []
    grpo = [{"loss": v, "kl": 0.01} for v in START + LEARNED + CHANCE]
    assert _feed(RelapseDiagnostic(), grpo) == []


def test_a_sparse_log_needs_fewer_values_back_at_the_start_but_the_same_span():
    rows = [{"loss": v} for v in START + LEARNED + [0.68] * 8]  # the 5-value median is back from the third
    (f,) = _feed(RelapseDiagnostic(), rows, every=50)  # the Trainer's loss every 50 steps: 6 levels span 250 steps
    assert f.step == 50 * 22 and "for 6 logged values" in f.explanation
    assert _feed(RelapseDiagnostic(), rows, every=10) == []  # 6 dense levels span 50 steps: minibatch noise


def test_state_survives_a_checkpoint_in_the_default_suite():
    suite = DiagnosticSuite(SuiteConfig())
    monitor = suite.monitor("r", "p")
    rows = [{"loss": v} for v in START + LEARNED + CHANCE[:6]]
    monitor.observe_block(MetricBlock.from_rows(list(range(len(rows))), [0.0] * len(rows), rows))
    restored = suite.monitor("r", "p")
    restored.load_state_dict(monitor.state_dict())
    rest = [{"loss": v} for v in CHANCE[6:]]
    alerts = restored.observe_block(MetricBlock.from_rows(list(range(len(rows), len(rows) + len(rest))),
                                                          [0.0] * len(rest), rest))
    assert "relapse" in [a.finding.detector for a in alerts]


def test_the_same_finding_whatever_the_block_size():
    rows = [{"loss": v} for v in START + [0.9, 1.1] + LEARNED + CHANCE]
    found = {}
    for size in (1, 2, 3, 7, 20, len(rows)):
        d, got = RelapseDiagnostic(), []
        for i in range(0, len(rows), size):
            got += _feed(d, rows[i : i + size], start=10 * i)
        found[size] = [(f.step, f.score) for f in got]
    assert len(found[1]) == 1 and all(v == found[1] for v in found.values()), found
