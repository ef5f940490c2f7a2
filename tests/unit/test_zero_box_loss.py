"""zero_box_loss: a detector's box-regression loss at exactly 0 while its other losses are not."""

import math

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.zero_box_loss import ZeroBoxLossDiagnostic
from runwatch.models.findings import AnomalyKind, Severity


def feed(rows, block=1, start=0):
    d = ZeroBoxLossDiagnostic()
    found = []
    for i in range(0, len(rows), block):
        part = rows[i : i + block]
        found += d.observe_block(
            MetricBlock.from_rows(list(range(start + i, start + i + len(part))), [0.0] * len(part), part)
        )
    return found


def ultralytics(box, cls, n=8):
    return [{"train/box_loss": box, "train/cls_loss": cls - 0.01 * i, "train/dfl_loss": box} for i in range(n)]


def test_labels_missing_box_losses_at_zero_from_the_start():
    (f,) = feed(ultralytics(0.0, 3.2))
    assert (f.kind, f.severity, f.metric, f.step, f.since) == (
        AnomalyKind.PLATEAU,
        Severity.ERROR,
        "train/box_loss",
        4,
        0,
    )
    assert "label files" in f.explanation


def test_the_same_alert_whatever_the_blocks():
    rows = ultralytics(0.0, 3.2, n=12)
    assert [(f.step, f.metric) for f in feed(rows, block=1)] == [(f.step, f.metric) for f in feed(rows, block=5)]
    assert [(f.step, f.metric) for f in feed(rows, block=12)] == [(4, "train/box_loss")]


def test_healthy_box_losses_and_a_short_stretch_of_zeros_are_quiet():
    assert feed(ultralytics(1.23, 3.2)) == []
    rows = ultralytics(0.0, 3.2, n=4) + ultralytics(0.8, 3.0, n=6)  # four zeros, then matched boxes
    assert feed(rows) == []


def test_every_loss_at_zero_is_not_this_rules_case():
    assert feed(ultralytics(0.0, 0.0)) == []


def test_a_nan_neither_breaks_nor_counts_as_a_zero():
    rows = (
        ultralytics(0.0, 3.2, n=3) + [{"train/box_loss": math.nan, "train/cls_loss": 3.1}] + ultralytics(0.0, 3.0, n=2)
    )
    (f,) = feed(rows)
    assert f.step == 5 and f.since == 0


def test_mmdetection_and_detectron2_names():
    rows = [{"loss_bbox": 0.0, "loss_cls": 0.7, "loss": 0.7}] * 5
    assert [f.metric for f in feed(rows)] == ["loss_bbox"]
    rows = [{"loss_box_reg": 0.0, "loss_cls": 0.5, "loss_rpn_bbox": 0.0}] * 5
    assert [f.metric for f in feed(rows)] == ["loss_box_reg"]
