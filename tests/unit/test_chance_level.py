"""The chance-level rule: a classification loss held at ln(K)."""

from __future__ import annotations

import math

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.chance_level import ChanceLevelConfig, ChanceLevelDiagnostic
from runwatch.models.findings import AnomalyKind
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _found(rows: list[dict[str, float]], steps: list[int], size: int = 1000, **config) -> list:
    d, out = ChanceLevelDiagnostic(ChanceLevelConfig(**config)), []
    for i in range(0, len(rows), size):
        out += d.observe_block(MetricBlock.from_rows(steps[i : i + size], [0.0] * len(steps[i : i + size]), rows[i : i + size]))
    return out


def test_a_log_that_starts_mid_run_at_chance_is_flagged_with_its_classes_and_accuracy() -> None:
    # keras-fractalnet issue 3: CIFAR-10 at epoch 33 of 400, loss 2.3030 and val_loss 2.3026 = ln 10, accuracy 0.1
    rows = [{"loss": 2.3030 - 1e-5 * i, "acc": 0.099, "val/loss": 2.3026, "val/acc": 0.1} for i in range(10)]
    found = _found(rows, list(range(1_650_000, 2_150_000, 50_000)))
    assert [(f.metric, f.kind, f.step) for f in found] == [("loss", AnomalyKind.PLATEAU, 1_850_000),
                                                          ("val/loss", AnomalyKind.PLATEAU, 1_850_000)]
    assert "ln(10) = 2.3026" in found[0].explanation and "acc 0.099 = 1/10" in found[0].explanation
    assert "val/acc 0.1 = 1/10" in found[1].explanation


def test_what_is_not_chance_stays_quiet() -> None:
    steps = list(range(0, 2000, 100))
    # a binary classifier that starts at ln 2 and learns
    learning = [{"loss": math.log(2) * (1 - i / 40)} for i in range(20)]
    assert _found(learning, steps) == []
    # at exactly ln 2 for its first 4 values only (a zero-initialised last layer), then learning
    start = [{"loss": math.log(2)} for _ in range(4)] + [{"loss": 0.69 - 0.02 * i} for i in range(16)]
    assert _found(start, steps) == []
    # at chance for 5 values but only 40 steps: a start, not a stuck run
    assert _found([{"loss": math.log(3)} for _ in range(5)], [0, 10, 20, 30, 40]) == []
    # a flat loss near ln(19) = 2.944, a language model's, is no K <= 20 guess to within 0.001 ... unless it is exact
    assert _found([{"loss": 2.9470} for _ in range(8)], steps[:8]) == []
    # more classes than max_classes are not tried: ln(32000) for a vocabulary is too close to its neighbours
    assert _found([{"loss": math.log(32000)} for _ in range(8)], steps[:8]) == []
    # a policy-gradient run's surrogate loss is no cross-entropy
    rl = [{"loss": math.log(2), "reward": 0.1 * i} for i in range(8)]
    assert _found(rl, steps[:8]) == []


def test_blocks_of_any_size_find_the_same() -> None:
    rows = [{"loss": 1.0 - 0.001 * i} for i in range(30)] + [{"loss": math.log(4)} for _ in range(12)]
    steps = list(range(0, 4200, 100))
    one = [(f.metric, f.step, f.explanation) for f in _found(rows, steps, size=1)]
    assert one and one == [(f.metric, f.step, f.explanation) for f in _found(rows, steps, size=7)]
    assert one == [(f.metric, f.step, f.explanation) for f in _found(rows, steps)]


def test_the_default_suite_runs_it() -> None:
    monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
    alerts = []
    for i in range(12):
        alerts += monitor.observe(1000 + 100 * i, 0.0, {"loss": math.log(2) + 1e-4, "acc": 0.5})
    assert "chance_level" in {a.finding.detector for a in alerts}


def test_an_accuracy_held_at_exactly_one_over_k_is_chance() -> None:
    # RMDL issue 12: epochs 278-284 of 300, "loss: 14.5063 - acc: 0.1000 - val_loss: 14.5063 - val_acc: 0.1000"
    rows = [{"loss": 14.5063, "acc": 0.1, "val/loss": 14.5063, "val/acc": 0.1} for _ in range(7)]
    found = _found(rows, list(range(278, 285)), size=1)
    assert [(f.metric, f.kind, f.step, f.since) for f in found] == [
        ("acc", AnomalyKind.PLATEAU, 282, 278), ("val/acc", AnomalyKind.PLATEAU, 282, 278)]
    assert found[0].explanation.startswith("acc has been exactly 1/10 = 0.1000 for 5 values in a row")


def test_an_accuracy_that_passes_one_over_k_while_its_loss_falls_is_not_chance() -> None:
    # A real Lightning run: val accuracy on 100 samples is 0.50 for 5 epochs while val loss falls 0.6685 -> 0.6607.
    losses = (0.6703, 0.6685, 0.6666, 0.6647, 0.6627, 0.6607, 0.6586)
    accs = (0.49, 0.5, 0.5, 0.5, 0.5, 0.5, 0.51)
    rows = [{"val/loss": v, "val/acc": a} for v, a in zip(losses, accs)]
    assert _found(rows, list(range(43, 50)), size=1) == []
    assert _found(rows, list(range(43, 50)), size=1, frozen_loss=0.05) != []  # what the guard keeps out


def test_an_accuracy_near_but_not_at_one_over_k_or_a_loss_at_chance_gives_no_second_finding() -> None:
    near = [{"acc": 0.1 + 0.0003 * (-1) ** i} for i in range(8)]
    assert _found(near, list(range(300, 308)), size=1) == []
    # at chance by its loss too: one finding (the loss's), not a second one for its accuracy
    both = [{"loss": 2.3026, "acc": 0.1} for _ in range(8)]
    found = _found(both, list(range(0, 400, 50)), size=1)
    assert [f.metric for f in found] == ["loss"]
    found = _found(both * 4, list(range(0, 320, 10)), size=1)  # the accuracy's 5 values come before the loss's span
    assert [f.metric for f in found] == ["acc"]
