"""A detector whose mAP stays at 0 while its losses fall: the run is broken, and the loss rules cannot see it."""

from __future__ import annotations

import math

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.zero_score import ZeroScoreConfig, ZeroScoreDiagnostic
from runwatch.models.registry import DiagnosticSuite, SuiteConfig


def _yolo_rows(maps: list[float]) -> list[dict[str, float]]:
    """An Ultralytics-style epoch log: falling box/cls losses, the given mAP50-95 and twice it as mAP50."""
    rows = []
    for epoch, m in enumerate(maps):
        fall = math.exp(-epoch / 15)
        rows.append({
            "train/box_loss": 1.2 + 0.6 * fall, "train/cls_loss": 1.0 + 2.0 * fall,
            "val/box_loss": 1.3 + 0.5 * fall, "val/cls_loss": 1.1 + 1.8 * fall,
            "metrics/mAP50(B)": 2 * m, "metrics/mAP50-95(B)": m,
        })
    return rows


def _findings(rows, size: int, restore_at: int | None = None):
    suite = DiagnosticSuite(SuiteConfig())
    monitor = suite.monitor("yolo")
    out = []
    for lo in range(0, len(rows), size):
        if restore_at is not None and lo == restore_at:
            fresh = suite.monitor("yolo")
            fresh.load_state_dict(monitor.state_dict())
            monitor = fresh
        chunk = rows[lo:lo + size]
        block = MetricBlock.from_rows(list(range(lo, lo + len(chunk))), [float(lo + i) for i in range(len(chunk))], chunk)
        out += [a.finding for a in monitor.observe_block(block)]
    return [f for f in out if f.key == "zero_score"]


@pytest.mark.parametrize(("size", "restore_at"), [(30, None), (1, None), (4, 8)])
def test_a_map_at_zero_for_ten_epochs_is_one_error_whatever_the_blocks(size, restore_at):
    found = _findings(_yolo_rows([0.0, 0.0002, 0.0, 0.0004, 0.0, 0.0, 0.0001, 0.0, 0.0, 0.0, 0.0, 0.0] + [0.0] * 18),
                      size, restore_at)
    assert [(f.kind.name, f.severity.name, f.step) for f in found] == [("PLATEAU", "ERROR", 9)]
    assert found[0].metric in ("metrics/mAP50(B)", "metrics/mAP50-95(B)")
    assert "labels" in found[0].explanation


def test_a_slow_start_that_scores_is_not_flagged():
    # a detector trained from scratch: 0.0 and 0.0014 in its first two epochs, 0.04 by its fifth
    assert _findings(_yolo_rows([0.0, 0.0014, 0.0042, 0.019, 0.04] + [0.05 + 0.01 * i for i in range(25)]), 30) == []


def test_settings_round_trip_and_a_shorter_patience():
    cfg = ZeroScoreConfig.from_json(ZeroScoreConfig(patience=3).to_json())
    d = ZeroScoreDiagnostic(cfg)
    rows = [{"val/acc": 0.0} for _ in range(3)]
    (f,) = d.observe_block(MetricBlock.from_rows([10, 20, 30], [0.0] * 3, rows))
    assert (f.step, f.metric) == (30, "val/acc")
    assert d.observe_block(MetricBlock.from_rows([40], [0.0], [{"val/acc": 0.0}])) == []  # once per run


def test_a_coco_ap_that_is_nan_by_design_is_context_and_a_nan_loss_is_still_critical():
    # detectron2 on a dataset without small objects: bbox/APs is NaN at every evaluation of a healthy run
    rows = []
    for it in range(19, 600, 20):
        row = {"total_loss": 2.0 * math.exp(-it / 300) + 0.3, "loss_cls": 0.5 * math.exp(-it / 300), "lr": 2.5e-4}
        if it % 100 == 99:
            row.update({"bbox/AP": 20.0 + it / 30, "bbox/APs": float("nan"), "bbox/APm": 15.0 + it / 40})
        rows.append(row)
    suite = DiagnosticSuite(SuiteConfig())
    healthy = [a.finding for a in suite.monitor("d2").observe_block(
        MetricBlock.from_rows(list(range(19, 600, 20)), [0.0] * len(rows), rows))]
    assert any(f.metric == "bbox/APs" for f in healthy)
    assert all(f.severity.name == "INFO" for f in healthy)  # context on the dashboard, no alert
    rows[20]["total_loss"] = float("nan")
    broken = [a.finding for a in suite.monitor("d2b").observe_block(
        MetricBlock.from_rows(list(range(19, 600, 20)), [0.0] * len(rows), rows))]
    assert any(f.kind.name == "NONFINITE" and f.severity.name == "CRITICAL" for f in broken)
