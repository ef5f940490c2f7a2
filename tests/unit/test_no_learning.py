"""The no-learning diagnostic: a training loss that never improves on its start, on real training and sparse logs."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_diagnostics import feed
from training import RunConfig, train

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.no_learning import NoLearningConfig, NoLearningDiagnostic
from runwatch.models.findings import AnomalyKind, Severity


def _block(steps: list[int], rows: list[dict[str, float]]) -> MetricBlock:
    return MetricBlock.from_rows(steps, [float(s) for s in steps], rows)


def _chance(n: int) -> list[float]:
    """A binary classifier stuck at chance: ln 2 with +-3 % batch noise."""
    return [math.log(2.0) * (1.0 + 0.03 * math.sin(1.7 * i)) for i in range(n)]


def test_a_real_run_whose_learning_rate_is_far_too_small_is_flagged_after_min_steps() -> None:
    stuck = train(RunConfig(optimizer="sgd", lr=1e-5, steps=700))
    alerts = [a for a in feed(stuck.events) if a.finding.detector == "no_learning"]
    assert alerts, "a loss that never moves must be reported"
    f = alerts[0].finding
    assert f.kind == AnomalyKind.PLATEAU and f.severity == Severity.WARNING and f.metric == "loss"
    assert 500 <= f.step <= 520, f.step  # min_steps after the first logged loss, not before
    assert "has not improved on its start" in f.explanation and f.score >= 1.0
    assert len({a.incident_id for a in alerts}) == 1  # one incident for the whole stretch


def test_a_real_run_with_a_slow_start_that_then_learns_is_not_flagged() -> None:
    # SGD with a 400-step warm-up: the loss hardly moves for the first ~150 steps, then falls.
    slow = train(RunConfig(optimizer="sgd", lr=0.05, steps=700, schedule=lambda s: min(1.0, (s + 1) / 400)))
    losses = [v for _, v in slow.series("loss")]
    assert losses[100] > 0.95 * losses[0] and losses[-1] < 0.5 * losses[0]  # the shape this test is about
    assert not [a for a in feed(slow.events) if a.finding.detector == "no_learning"]


def test_sparse_logs_are_judged_in_steps_and_values() -> None:
    every_50 = [50 * i for i in range(40)]
    d = NoLearningDiagnostic()
    found = d.observe_block(_block(every_50, [{"loss": v} for v in _chance(40)]))
    assert found and found[0].step == 500  # 500 steps in (11 values >= 10)
    # The same loss falling by 10 % over its first 10 values has learned.
    falling = [v * (1.0 - 0.1 * min(i, 9) / 9) for i, v in enumerate(_chance(40))]
    assert NoLearningDiagnostic().observe_block(_block(every_50, [{"loss": v} for v in falling])) == []
    # One falling as slowly as 10 % over all 40 values is judged on what it has done so far: 3 % by step 500.
    slow = [v * (1.0 - 0.1 * i / 39) for i, v in enumerate(_chance(40))]
    assert NoLearningDiagnostic().observe_block(_block(every_50, [{"loss": v} for v in slow]))[0].step == 500


def test_runs_it_cannot_judge_are_left_alone() -> None:
    steps = [5000 + 50 * i for i in range(60)]  # a log that starts mid-run: the initial loss is unknown
    assert NoLearningDiagnostic().observe_block(_block(steps, [{"loss": v} for v in _chance(60)])) == []
    steps = [10 * i for i in range(100)]
    rl = [{"loss": v, "reward": 0.1, "kl": 0.01} for v in _chance(100)]  # GRPO's loss is a surrogate
    assert NoLearningDiagnostic().observe_block(_block(steps, rl)) == []
    negative = [{"loss": v - 1.0} for v in _chance(100)]  # not a ratio of anything
    assert NoLearningDiagnostic().observe_block(_block(steps, negative)) == []
    rising = [{"loss": v * (1.0 + 0.04 * i)} for i, v in enumerate(_chance(100))]  # diverging, not stuck
    assert NoLearningDiagnostic().observe_block(_block(steps, rising)) == []


def test_a_short_finished_log_compares_windows_that_share_no_value() -> None:
    steps = [500 * (i + 1) for i in range(5)]  # five logged losses: only the end-of-run judgement applies
    # Falling steadily by 8 %: the first two average 0.99, the last two 0.93 (-6 %). Windows of three would
    # share the middle value and read 0.98 -> 0.94 (-4 %): "not learning" for a run that learned.
    falling = NoLearningDiagnostic()
    assert falling.observe_block(_block(steps, [{"loss": 1.0 - 0.02 * i} for i in range(5)])) == []
    assert falling.on_end() == []
    flat = NoLearningDiagnostic()
    assert flat.observe_block(_block(steps, [{"loss": v} for v in _chance(5)])) == []
    (f,) = flat.on_end()
    assert f.step == 2500 and "mean of the last 2 values" in f.explanation


def test_findings_do_not_depend_on_how_the_values_are_batched() -> None:
    steps = [25 * i for i in range(80)]
    rows = [{"loss": v} for v in _chance(80)]
    whole = [(f.step, f.since, round(f.score, 12)) for f in NoLearningDiagnostic().observe_block(_block(steps, rows))]
    d = NoLearningDiagnostic(NoLearningConfig())
    split = []
    for i in range(0, 80, 7):
        split += [(f.step, f.since, round(f.score, 12)) for f in d.observe_block(_block(steps[i : i + 7], rows[i : i + 7]))]
        restored = NoLearningDiagnostic()
        restored.load_state_dict(d.state_dict())  # a partition handoff between blocks continues exactly
        d = restored
    assert whole and split == whole


def _split_findings(steps: list[int], rows: list[dict[str, float]], cuts: list[int]) -> list[tuple]:
    d = NoLearningDiagnostic(NoLearningConfig(min_points=6, min_steps=10))
    out, lo = [], 0
    for hi in [*sorted(set(cuts)), len(steps)]:
        if hi > lo:
            out += [(f.step, f.since, f.score) for f in d.observe_block(_block(steps[lo:hi], rows[lo:hi]))]
            lo = hi
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.floats(0.5, 0.52), st.just(0.693))), min_size=1, max_size=120),
    st.lists(st.integers(0, 120), max_size=8),
)
def test_any_finite_or_broken_stream_gives_the_same_findings_however_it_is_split(points, cuts) -> None:
    steps, step = [], 0
    for gap, _ in points:
        step += gap
        steps.append(step)
    rows = [{"loss": v} for _, v in points]
    whole = _split_findings(steps, rows, [])
    assert _split_findings(steps, rows, [c for c in cuts if c < len(steps)]) == whole
    assert all(math.isfinite(score) and score > 0 for _, _, score in whole)


def _without(events, metric: str):
    """The same run as if it had not logged ``metric``."""
    return [(step, wall, {k: v for k, v in metrics.items() if k != metric}) for step, wall, metrics in events]


def test_a_flat_loss_during_the_learning_rate_warm_up_is_not_flagged_but_a_stuck_one_after_it_is() -> None:
    # SGD warming up linearly over 1,500 steps to 0.01: the loss sits near its start for ~600 steps, then falls.
    ramp = train(RunConfig(optimizer="sgd", lr=0.01, steps=1800, schedule=lambda s: min(1.0, (s + 1) / 1500)))
    losses = [v for _, v in ramp.series("loss")]
    assert losses[500] > 0.95 * losses[0] and losses[-1] < 0.5 * losses[0]  # the shape this test is about
    flat_kinds = ("no_learning", "plateau")
    assert not [a for a in feed(ramp.events) if a.finding.detector in flat_kinds]
    # The same run without its learning rate logged: nothing tells the warm-up apart, and the flat start is flagged.
    blind = [a for a in feed(_without(ramp.events, "lr")) if a.finding.detector in flat_kinds]
    assert blind and all(a.finding.step < 1500 for a in blind)
    # Warming up to a rate far too small: judged as soon as the warm-up ends.
    tiny = train(RunConfig(optimizer="sgd", lr=1e-5, steps=1100, schedule=lambda s: min(1.0, (s + 1) / 700)))
    late = [a for a in feed(tiny.events) if a.finding.detector == "no_learning"]
    assert late and 699 <= late[0].finding.step <= 720, late[0].finding.step


def test_a_checkpoint_taken_before_the_warm_up_was_tracked_still_loads() -> None:
    d = NoLearningDiagnostic()
    steps = [25 * i for i in range(30)]
    d.observe_block(_block(steps, [{"loss": v, "lr": 1e-4 * (i + 1)} for i, v in enumerate(_chance(30))]))
    old = d.state_dict()
    del old["state"]["_warmup"]  # as written by the previous version
    restored = NoLearningDiagnostic()
    assert restored.load_state_dict(old)
    more = [25 * i for i in range(30, 60)]
    found = restored.observe_block(_block(more, [{"loss": v, "lr": 3e-3} for v in _chance(30)]))
    assert found and found[0].step == 750  # judged as a run without a warm-up, as before


def _fine_tune(n: int = 40, every: int = 25, val_fall: float = 0.20, val_from: int = 0):
    """A fine-tuning log: a noisy minibatch loss that stays within 3 % of its start, and an evaluation loss
    every ``every`` steps that falls by ``val_fall`` over the run from value ``val_from`` on."""
    steps = [every * i for i in range(n)]
    rows = []
    for i, loss in enumerate(_chance(n)):
        progress = max(0, i - val_from) / max(1, n - 1 - val_from)
        rows.append({"loss": 1.73 * loss, "val/loss": 1.2 * (1.0 - val_fall * progress)})
    return steps, rows


def test_a_falling_evaluation_loss_shows_learning_a_noisy_training_loss_hides() -> None:
    steps, rows = _fine_tune()
    assert NoLearningDiagnostic().observe_block(_block(steps, rows)) == []
    # Judged on the training loss alone, the same log is flagged at min_steps ...
    blind = NoLearningDiagnostic(NoLearningConfig(evidence_metrics=()))
    assert [f.step for f in blind.observe_block(_block(steps, rows))][:1] == [500]
    # ... and so is a run whose evaluation loss does not fall either.
    steps, flat = _fine_tune(val_fall=0.0)
    assert NoLearningDiagnostic().observe_block(_block(steps, flat))[0].step == 500
    # ... and so is a net at chance whose first evaluations were worse than chance: back at chance is not learning.
    chance4 = [math.log(4.0) * v / math.log(2.0) for v in _chance(40)]
    back = [{"loss": loss, "val/loss": math.log(4.0) + 0.33 * 0.5 ** i} for i, loss in enumerate(chance4)]
    assert NoLearningDiagnostic().observe_block(_block(steps, back))[0].step == 500
    # Short logs judged at their end: the same rule.
    short_steps, short_rows = _fine_tune(n=10, every=10)
    d = NoLearningDiagnostic()
    assert d.observe_block(_block(short_steps, short_rows)) == [] and d.on_end() == []
    # ... streamed an entry at a time (the HF Trainer's log): evaluations read before the training loss has 3 values count
    d = NoLearningDiagnostic()
    for step, row in zip(short_steps, short_rows):
        assert d.observe_block(_block([step], [row])) == []
    assert d.on_end() == [] and d._evidence["metrics"]["val/loss"]["first"][0] == short_rows[0]["val/loss"]
    d = NoLearningDiagnostic(NoLearningConfig(evidence_metrics=()))
    assert d.observe_block(_block(short_steps, short_rows)) == [] and [f.step for f in d.on_end()] == [90]


def _learned_from(rows: list[dict], steps: list[int]) -> list[int]:
    """Steps of the evaluation values after which the evaluation loss shows learning (fed one row at a time)."""
    d, out = NoLearningDiagnostic(), []
    for step, row in zip(steps, rows):
        d.observe_block(_block([step], [row]))
        if "val/loss" in row and d._evidence["learned"]:
            out.append(step)
    return out


def test_learning_shown_late_keeps_the_findings_made_before_it() -> None:
    steps, rows = _fine_tune(n=60, val_from=30)  # the evaluation loss starts falling at step 750
    d = NoLearningDiagnostic()
    found = []
    for i in range(0, 60, 7):  # as a stream of small batches
        found += d.observe_block(_block(steps[i:i + 7], rows[i:i + 7]))
    learned_from = _learned_from(rows, steps)[0]
    assert 750 < learned_from < 1200 and found and found[0].step == 500
    assert max(f.step for f in found) <= learned_from
    blind = NoLearningDiagnostic(NoLearningConfig(evidence_metrics=())).observe_block(_block(steps, rows))
    assert max(f.step for f in blind) > learned_from  # what the evaluation loss now answers
    one_block = NoLearningDiagnostic().observe_block(_block(steps, rows))
    assert [f.step for f in one_block] == [f.step for f in found]


def test_a_model_reset_to_its_start_is_judged_on_its_training_loss_again() -> None:
    # Learns (both losses fall by half), then corrupted data sends both back to chance for good.
    steps = [25 * i for i in range(60)]
    level = [1.0 if i < 3 else 0.5 if i < 20 else 1.0 for i in range(60)]
    rows = [{"loss": 0.693 * lv * v / math.log(2.0), "val/loss": 0.7 * lv} for i, (lv, v) in enumerate(zip(level, _chance(60)))]
    learned = _learned_from(rows, steps)
    assert learned and max(learned) < 25 * 30  # learning shown, then withdrawn
    found = NoLearningDiagnostic().observe_block(_block(steps, rows))
    assert found and found[0].step > max(learned)  # the training loss's verdict stands again


def test_the_evidence_does_not_depend_on_how_the_log_is_cut_into_blocks() -> None:
    steps, rows = _fine_tune(n=60, every=10)
    # evaluations at every logged step, the training loss at every 4th: the evaluation loss shows learning
    # before the training loss's start is known
    rows = [row if i % 4 == 0 else {"val/loss": row["val/loss"] * 0.97 ** min(i, 10)} for i, row in enumerate(rows)]
    verdicts = set()
    for size in (1, 2, 3, 7, 60):
        d = NoLearningDiagnostic()
        found = []
        for i in range(0, 60, size):
            found += d.observe_block(_block(steps[i:i + size], rows[i:i + size]))
        verdicts.add((d._evidence["learned"], tuple(f.step for f in found + d.on_end())))
    assert len(verdicts) == 1, verdicts


def test_a_checkpoint_taken_before_the_evaluation_loss_was_read_still_loads() -> None:
    steps, rows = _fine_tune(n=60, val_from=30)
    d = NoLearningDiagnostic()
    d.observe_block(_block(steps[:15], rows[:15]))
    old = d.state_dict()
    del old["state"]["_evidence"]  # as written by the previous version
    restored = NoLearningDiagnostic()
    assert restored.load_state_dict(old)
    assert restored.observe_block(_block(steps[15:], rows[15:]))[0].step == 500


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.one_of(
        st.floats(0.5, 0.52), st.floats(0.45, 0.7), st.just(0.693), st.floats(0.01, 100.0),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e308]))),
        min_size=30, max_size=200),
    st.integers(0, 40),
    st.one_of(st.none(), st.tuples(st.integers(0, 199), st.sampled_from([0.0, -1.0]))),
)
# stuck, then learning for a while, then stuck again: a streak that starts inside a block
@example([(1 + i % 3, 1.0 + 0.01 * (i % 2)) for i in range(30)] + [(2, 0.5)] * 12
         + [(1 + i % 4, 1.0 - 0.01 * (i % 3)) for i in range(120)], 5, None)
@example([(1, 1.0)] * 17 + [(1, 10.0)] + [(1 + i % 2, 1.0) for i in range(100)], 5, None)  # ... at its first value
def test_values_judged_together_give_what_one_by_one_gives_bit_for_bit(points, min_steps, broken) -> None:
    steps, step = [], 0
    for gap, _ in points:
        step += gap
        steps.append(step)
    rows = [{"loss": v} for _, v in points]
    if broken is not None and broken[0] < len(rows):  # a loss that is not a ratio of anything from there on
        rows[broken[0]] = {"loss": broken[1]}
    config = NoLearningConfig(min_points=6, min_steps=min_steps)
    together, one_by_one = NoLearningDiagnostic(config), NoLearningDiagnostic(config)
    whole = [(f.step, f.since, f.score, f.explanation) for f in together.observe_block(_block(steps, rows))]
    single = [(f.step, f.since, f.score, f.explanation)
              for s, r in zip(steps, rows) for f in one_by_one.observe_block(_block([s], [r]))]
    assert whole == single
    assert together.state_dict() == one_by_one.state_dict()


def test_a_short_log_that_fell_steadily_learned_even_when_its_means_moved_less() -> None:
    # A real fine-tune's five logged losses (hf_trainer_state_more): every value below the one before, -7.6 %
    # in all, but the means of the first and last two differ by 4.7 %: not a run that never learned.
    steps = [500 * (i + 1) for i in range(5)]
    steady = NoLearningDiagnostic()
    assert steady.observe_block(_block(steps, [{"loss": v} for v in (3.30, 3.15, 3.11, 3.10, 3.05)])) == []
    assert steady.on_end() == []
    creeping = NoLearningDiagnostic()  # as steady a fall, but by 1.2 % in all: still not learning
    assert creeping.observe_block(_block(steps, [{"loss": v} for v in (1.0, 0.997, 0.994, 0.991, 0.988)])) == []
    assert [f.step for f in creeping.on_end()] == [2500]


def test_the_training_losss_own_epoch_means_show_learning_its_few_noisy_step_values_hide() -> None:
    # A real Lightning run (on_step and on_epoch logging, log_every_n_steps=50): six noisy per-step losses, the
    # first and last alike, while the epoch means fall 1.19 -> 0.33 and the held-out loss with them.
    loss = {49: 0.6911, 99: 0.2285, 149: 0.3428, 199: 0.6539, 249: 0.4483, 299: 0.5753}
    epoch = [1.1932, 0.9754, 0.8204, 0.8036, 0.6497, 0.5868, 0.6696, 0.5584, 0.5263, 0.4545, 0.4687, 0.461, 0.4689,
             0.4224, 0.4477, 0.4385, 0.3986, 0.3908, 0.3568, 0.3881, 0.347, 0.3347, 0.3139, 0.3349, 0.3326]
    epoch_steps = [11 + 12 * i for i in range(len(epoch))]
    rows = {s: {"loss": v} for s, v in loss.items()}
    for s, v in zip(epoch_steps, epoch):
        rows.setdefault(s, {})["train_loss_epoch"] = v
    steps = sorted(rows)
    d = NoLearningDiagnostic()
    assert d.observe_block(_block(steps, [rows[s] for s in steps])) == [] and d.on_end() == []
    # The step losses alone are "no learning" at the end (the rule before the epoch means counted as evidence).
    blind = NoLearningDiagnostic(NoLearningConfig(epoch_loss_metrics=()))
    assert blind.observe_block(_block(steps, [rows[s] for s in steps])) == [] and [f.step for f in blind.on_end()] == [299]
    # Epoch means that do not fall show nothing.
    flat = [{**rows[s], "train_loss_epoch": 0.5} if "train_loss_epoch" in rows[s] else rows[s] for s in steps]
    d = NoLearningDiagnostic()
    assert d.observe_block(_block(steps, flat)) == [] and [f.step for f in d.on_end()] == [299]


def test_a_loss_still_falling_slowly_is_learning_until_it_stops() -> None:
    # A fine-tune from a pretrained model at a small learning rate: every logged value below the one before, by
    # 0.2 % a value, so the first and latest means stay within min_drop for many values.
    every_100 = [100 * (i + 1) for i in range(60)]
    falling = [10.4 * (1.0 - 0.002 * i) for i in range(60)]
    assert NoLearningDiagnostic().observe_block(_block(every_100, [{"loss": v} for v in falling])) == []
    # The same fall that stops after 15 values and hovers: stuck from when the trend is gone from the window.
    stops = [10.4 * (1.0 - 0.002 * min(i, 14)) * (1.0 + 0.001 * math.sin(1.7 * i)) for i in range(60)]
    found = NoLearningDiagnostic().observe_block(_block(every_100, [{"loss": v} for v in stops]))
    assert found and 1500 < found[0].step <= 3000, [f.step for f in found]
    # A creep of 0.5 % over the whole window is no sign of learning: judged as before, at the 10th value.
    creeping = [0.2522 * (1.0 - 0.0003 * i) for i in range(60)]
    assert NoLearningDiagnostic().observe_block(_block(every_100, [{"loss": v} for v in creeping]))[0].step == 1000
    # still_falling_drop 0 turns the check off: the slow fall is flagged at the 10th value, 900 steps in.
    off = NoLearningDiagnostic(NoLearningConfig(still_falling_drop=0.0))
    assert off.observe_block(_block(every_100, [{"loss": v} for v in falling]))[0].step == 1000
