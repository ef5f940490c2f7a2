"""A loss logged only as parts (Ultralytics YOLO's ``train/box_loss``, ``train/cls_loss``...) is read as its sum.

Before, such a run gave the rules that read the training loss nothing to read: a YOLO ``results.csv`` whose
losses blew up raised nothing but what the per-metric rules saw.
"""

from __future__ import annotations

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.loss_parts import loss_part_target, part_totals
from runwatch.models.metric_names import DetectorNames
from runwatch.models.registry import DiagnosticSuite, SuiteConfig
from tests.unit.test_metric_names import _rows, _stream

YOLO_TRAIN = ("train/box_loss", "train/cls_loss")
YOLO_VAL = ("val/box_loss", "val/cls_loss")


def _as_parts(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """The rows with ``loss`` and ``val/loss`` logged as two halves each (x/2 + x/2 == x exactly)."""
    out = []
    for row in rows:
        new = {k: v for k, v in row.items() if k not in ("loss", "val/loss")}
        for total, parts in (("loss", YOLO_TRAIN), ("val/loss", YOLO_VAL)):
            if total in row:
                new.update({p: row[total] / 2 for p in parts})
        out.append(new)
    return out


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("train/box_loss", "loss"), ("train/dfl_loss", "loss"), ("train_seg_loss", "loss"), ("loss_bbox", "loss"),
        ("box_loss", "loss"), ("val/obj_loss", "val/loss"), ("val/loss_giou", "val/loss"),
        ("train/loss", None), ("loss", None), ("val/loss", None), ("loss_scale", None), ("avg_loss", None),
        ("running_loss", None), ("loss_weight", None), ("test/box_loss", None), ("metrics/mAP50(B)", None),
        ("lr/pg0", None), ("train/loss/extra", None),
    ],
)
def test_which_names_are_parts_of_which_total(name, target):
    assert loss_part_target(name) == target


def test_totals_need_two_parts_and_no_adversarial_or_policy_part():
    assert part_totals(["train/box_loss", "lr"]) == {}
    assert part_totals(["train/g_loss", "train/l1_loss"]) == {}  # a GAN: generator and discriminator pull apart
    assert part_totals(["policy_loss", "value_loss"]) == {}  # a policy-gradient surrogate does not fall
    assert part_totals(["train/box_loss", "train/cls_loss", "train/obj_loss"]) == {
        "loss": ("train/box_loss", "train/cls_loss", "train/obj_loss")}
    assert part_totals(["val/box_loss", "val/cls_loss"], claimed={"val/loss"}) == {}


def test_a_yolo_run_is_detected_as_the_same_run_logging_its_total():
    suite = DiagnosticSuite(SuiteConfig())
    as_total = _stream(_rows(("loss", "val/loss", "lr", "grad_norm")), suite.monitor("a"))
    as_parts = _stream(_as_parts(_rows(("loss", "val/loss", "lr", "grad_norm"))), suite.monitor("b"))
    assert [f.kind for f in as_total], "the run with its total raised nothing: the test lost its point"
    assert [(f.kind, f.step, f.severity, f.score) for f in as_parts] == [
        (f.kind, f.step, f.severity, f.score) for f in as_total]
    joined = {"loss": "+".join(YOLO_TRAIN), "val/loss": "+".join(YOLO_VAL)}
    for want, got in zip(as_total, as_parts):
        assert got.metric == joined.get(want.metric, want.metric)
        assert [(joined.get(m, m), s, v) for m, s, v in want.evidence] == got.evidence


def test_a_restored_monitor_keeps_the_total_and_blocks_of_any_size_agree():
    rows = _as_parts(_rows(("loss", "val/loss", "lr", "grad_norm")))
    suite = DiagnosticSuite(SuiteConfig())
    straight = _stream(rows, suite.monitor("r"))
    restored = _stream(rows, suite.monitor("r"), restore_at=200)
    one_by_one = _stream(rows, suite.monitor("r"), size=1)
    key = [(f.kind, f.step, f.metric, f.score, f.evidence) for f in straight]
    assert key and [(f.kind, f.step, f.metric, f.score, f.evidence) for f in restored] == key
    assert [(f.kind, f.step, f.metric) for f in one_by_one] == [k[:3] for k in key]


def test_a_logged_total_wins_and_parts_at_different_steps_make_none():
    names = DetectorNames()
    both = names.rename(MetricBlock.from_rows([1], [0.0], [{"loss": 3.0, "train/box_loss": 1.0, "train/cls_loss": 2.0}]))
    assert both.columns["loss"].values.tolist() == [3.0] and names.source("loss") == "loss"

    apart = DetectorNames()
    block = apart.rename(MetricBlock.from_rows(
        [1, 2], [0.0, 0.0], [{"train/box_loss": 1.0, "train/cls_loss": 2.0}, {"train/box_loss": 0.9}]))
    assert "loss" not in block.columns  # box_loss at steps 1, 2 and cls_loss at step 1: no sum event by event
    same = apart.rename(MetricBlock.from_rows([3], [0.0], [{"train/box_loss": 0.8, "train/cls_loss": 1.5}]))
    assert same.columns["loss"].values.tolist() == [2.3]
    assert same.matrix is not None and same.matrix[:, list(same.columns).index("loss")].tolist() == [2.3]


def test_the_totals_survive_a_json_checkpoint():
    import json

    names = DetectorNames()
    names.rename(MetricBlock.from_rows([1], [0.0], [{"train/box_loss": 1.0, "train/cls_loss": 2.0, "lr": 0.1}]))
    again = DetectorNames()
    again.load_state_dict(json.loads(json.dumps(names.state_dict())))  # a checkpoint is JSON text (store, Kafka)
    block = again.rename(MetricBlock.from_rows([2], [0.0], [{"train/box_loss": 0.5, "train/cls_loss": 1.0, "lr": 0.1}]))
    assert block.columns["loss"].values.tolist() == [1.5] and again.source("loss") == "train/box_loss+train/cls_loss"
    assert again.rename(MetricBlock.from_rows([3], [0.0], [{"train_loss": 9.0}])).columns.keys() == {"train_loss"}
