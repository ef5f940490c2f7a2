"""A value printed where a run's lines printed numbers, now NaN/Inf (models/text/nonfinite_slot.py)."""

from __future__ import annotations

from runwatch.models.findings import Severity
from runwatch.models.text.monitor import TextMonitor
from runwatch.models.text.nonfinite_slot import NonfiniteSlotWatch
from runwatch.models.text.templates import masker

# A custom loop printing "step loss" without names: no metric reader can know what the number is.
BARE = [f"{step} {loss:.5f}" for step, loss in zip(range(100, 160, 10), (2.71, 2.65, 2.69, 2.6, 2.58, 2.61))]


def findings(lines):
    tm = TextMonitor("r")
    out = []
    for line in lines:
        out += tm.observe_lines([line])[1]
    return out


def test_a_bare_value_turning_nan_is_a_warning_on_that_line():
    found = findings([*BARE, "160 nan", "170 nan"])
    assert [(f.metric, f.severity, f.lines) for f in found] == [("log/nonfinite_message", Severity.WARNING, ["160 nan"])]


def test_inf_with_a_sign_and_punctuation_count_too():
    found = findings(["[val] 0.51, 0.62", "[val] 0.49, 0.63", "[val] -inf, 0.60"])
    assert [f.lines for f in found] == [["[val] -inf, 0.60"]]


def test_nan_in_a_shape_never_seen_with_numbers_is_not_this_check():
    assert findings(["starting", "metric: nan until the first evaluation", "done"]) == []
    assert findings(["INFO step 1 ok", "INFO step 2 ok", "INFO step inference ok"]) == []


def test_lines_whose_values_were_read_are_left_to_the_metric_detectors():
    # "loss: nan" is read as the metric loss = NaN; the NONFINITE metric check reports it, not this one.
    lines = [f"epoch 1 step {s} loss: {v}" for s, v in ((1, "0.9"), (2, "0.8"), (3, "nan"))]
    tm = TextMonitor("r")
    events, found = tm.observe_lines(lines)
    assert events[-1][1]["loss"] != events[-1][1]["loss"]  # NaN read
    assert all(f.metric != "log/nonfinite_message" for f in found)


def test_state_round_trip_keeps_the_shapes():
    mask, a = masker(), NonfiniteSlotWatch(max_shapes=2)
    for line in ("a 1", "b 2", "c 3"):
        a.observe(mask(line), line, 0)
    b = NonfiniteSlotWatch(max_shapes=2)
    b.load_state_dict(a.state_dict())
    assert b.observe(mask("a nan"), "a nan", 9) is None  # the oldest shape was dropped at the cap
    assert b.observe(mask("c nan"), "c nan", 9).line == 9
    assert b.observe(mask("b nan"), "b nan", 10) is None  # once per run
