"""frozen_loss: a training loss repeated exactly, value after value (cases from issue threads and real runs)."""

from __future__ import annotations

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.frozen_loss import FrozenLossConfig, FrozenLossDiagnostic, significant_digits


def _feed(rows, block=1, config=None):
    d = FrozenLossDiagnostic(config)
    out = []
    for i in range(0, len(rows), block):
        part = rows[i : i + block]
        steps = list(range(10 * i, 10 * (i + len(part)), 10))
        out += d.observe_block(MetricBlock.from_rows(steps, [0.0] * len(part), part))
    return out


def test_a_language_model_frozen_at_ln_vocabulary_is_flagged_once():
    rows = [{"loss": 10.9734}, {"loss": 10.8911}] + [{"loss": 10.8259}] * 23  # lit-gpt#689: ln 50304
    for block in (1, 3, 25):
        out = _feed(rows, block)
        assert len(out) == 1, block
        (f,) = out
        assert f.kind.name == "PLATEAU" and f.severity.name == "WARNING" and f.key == "frozen_loss"
        assert f.step == 10 * 9 and f.since == 10 * 2  # the 8th repeated value


def test_values_that_move_or_are_printed_coarsely_or_sit_at_a_floor_are_not():
    moving = [{"loss": 2.0 - 0.0001 * i} for i in range(40)]
    coarse = [{"loss": 0.45}] * 40  # two digits: a plateau printed coarsely
    floor = [{"loss": 0.0001}] * 60  # the Trainer's 4 decimals of a converged loss
    short = [{"loss": 0.7232}] * 7 + [{"loss": 0.7231}]
    for rows in (moving, coarse, floor, short):
        assert _feed(rows) == []


def test_a_falling_held_out_loss_means_it_still_learns():
    rows = [{"loss": 1.2345, "val/loss": 2.0 - 0.1 * i} for i in range(12)]
    assert _feed(rows) == []
    rows = [{"loss": 1.2345, "val/loss": 2.0} for _ in range(12)]
    assert len(_feed(rows)) == 1


def test_policy_gradient_runs_are_not_judged():
    rows = [{"loss": 0.1234, "reward": 0.5 + 0.01 * i} for i in range(20)]
    assert _feed(rows) == []


def test_settings_and_digits():
    assert significant_digits(2.30259) == 6 and significant_digits(100.0) == 1 and significant_digits(0.566) == 3
    rows = [{"loss": 0.566}] * 5
    assert _feed(rows) == [] and len(_feed(rows, config=FrozenLossConfig(patience=5))) == 1
