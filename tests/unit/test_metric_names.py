"""Detection reads a run's metrics under runwatch's names, whatever the run called them.

``run.log({"train_loss": ...})``, a gRPC client in another language or a Kafka producer send the
names their users chose; the importers and integrations rename, these paths do not. The
diagnostics must still see ``loss`` and ``lr``, and findings must name what the run logged.
"""

from __future__ import annotations

import math

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.metric_names import DetectorNames, rename_map
from runwatch.models.registry import DiagnosticSuite, SuiteConfig

CANONICAL = ("loss", "val/loss", "lr", "grad_norm")


def _rows(names: tuple[str, str, str, str], steps: int = 400, diverge_at: int = 300) -> list[dict[str, float]]:
    loss_name, val_name, lr_name, grad_name = names
    rows = []
    for s in range(steps):
        loss = 2.0 * math.exp(-s / 80) + 0.3 + 0.01 * (s % 3)
        grad = 1.0 + 0.05 * (s % 4)
        if s >= diverge_at:
            loss, grad = 0.5 * 1.08 ** (s - diverge_at), 1.1 ** (s - diverge_at)
        row = {loss_name: loss, lr_name: 1e-3, grad_name: grad}
        if s % 20 == 0:
            row[val_name] = 1.1 * loss
        rows.append(row)
    return rows


def _stream(rows, monitor, size: int = 25, restore_at: int | None = None):
    out = []
    for lo in range(0, len(rows), size):
        if restore_at is not None and lo == restore_at:
            fresh = DiagnosticSuite(SuiteConfig()).monitor(monitor.run_id)
            fresh.load_state_dict(monitor.state_dict())
            monitor = fresh
        block = MetricBlock.from_rows(list(range(lo, lo + size)), [float(s) for s in range(lo, lo + size)], rows[lo:lo + size])
        out += [a.finding for a in monitor.observe_block(block)]
    return out


@pytest.mark.parametrize("names", [
    ("train_loss", "val_loss", "learning_rate", "grad_norm"),  # Keras / Lightning / MLflow
    ("Loss/train", "Loss/val", "lr-Adam", "gradient_norm"),  # TensorBoard, Lightning's LearningRateMonitor
    ("train/loss", "eval/loss", "train/learning_rate", "train/grad_norm"),  # W&B's Hugging Face integration
    ("total_loss", "val/total_loss", "lr", "grad_norm"),  # detectron2: the total of a multi-part loss
])
def test_a_run_logged_under_other_names_is_detected_as_under_runwatchs(names):
    rename = dict(zip(CANONICAL, names))
    suite = DiagnosticSuite(SuiteConfig())
    as_runwatch = _stream(_rows(CANONICAL), suite.monitor("a"))
    as_logged = _stream(_rows(names), suite.monitor("b"))
    assert [f.kind for f in as_runwatch], "the canonical run raised nothing: the test lost its point"
    assert [(f.kind, f.step, f.severity, f.score) for f in as_logged] == [
        (f.kind, f.step, f.severity, f.score) for f in as_runwatch]
    for want, got in zip(as_runwatch, as_logged):
        assert got.metric == rename.get(want.metric, want.metric)
        assert got.related == tuple(rename.get(m, m) for m in want.related)
        assert [(rename.get(m, m), s, v) for m, s, v in want.evidence] == got.evidence
    assert not {f.metric for f in as_logged} & set(CANONICAL) - set(names)


def test_a_restored_monitor_keeps_the_runs_names():
    names = ("train_loss", "val_loss", "learning_rate", "grad_norm")
    rows = _rows(names)
    suite = DiagnosticSuite(SuiteConfig())
    straight = _stream(rows, suite.monitor("r"))
    restored = _stream(rows, suite.monitor("r"), restore_at=200)
    assert straight and [(f.kind, f.step, f.metric, f.score, f.evidence) for f in restored] == [
        (f.kind, f.step, f.metric, f.score, f.evidence) for f in straight]


def test_names_are_fixed_once_seen_and_never_collide():
    names = DetectorNames()
    canonical = MetricBlock.from_rows([0], [0.0], [{"loss": 1.0, "lr": 1e-3, "grad_norm/fc1": 0.5, "act/zero_frac/fc1": 0.1}])
    assert names.rename(canonical) is canonical and not names.renamed  # runwatch's own names: no copy
    both = names.rename(MetricBlock.from_rows([1], [0.0], [{"loss": 0.9, "train_loss": 0.8, "val_loss": 1.0}]))
    assert sorted(both.columns) == ["loss", "train_loss", "val/loss"]  # "loss" was logged: train_loss keeps its name
    assert both.columns["loss"].values.tolist() == [0.9] and names.source("val/loss") == "val_loss"

    late = DetectorNames()
    late.rename(MetricBlock.from_rows([0], [0.0], [{"train_loss": 1.0}]))
    block = late.rename(MetricBlock.from_rows([1], [0.0], [{"train_loss": 0.9, "loss": 5.0}]))
    assert block.columns["loss"].values.tolist() == [0.9]  # the series stays where it started
    assert block.columns["loss#as-logged"].values.tolist() == [5.0] and late.source("loss#as-logged") == "loss"

    again = DetectorNames()
    again.load_state_dict(late.state_dict())
    assert again.mapping == late.mapping


def test_a_validation_epoch_aggregate_is_the_validation_metric():
    # Lightning's self.log("val_loss", ..., on_step=True, on_epoch=True) in validation writes both series.
    names = rename_map(["train_loss_step", "train_loss_epoch", "val_loss_step", "val_loss_epoch", "val_acc_epoch"])
    assert names == {"train_loss_step": "loss", "train_loss_epoch": "train_loss_epoch", "val_loss_epoch": "val/loss",
                     "val_loss_step": "val_loss_step", "val_acc_epoch": "val/acc"}


@pytest.mark.parametrize(
    "val_names",
    [
        ("val/loss/dataloader_idx_0", "val/loss/dataloader_idx_1"),  # Lightning, two validation loaders
        ("val/a_loss", "val/b_loss"),  # the HF Trainer, eval_dataset={"a": ..., "b": ...}, as the SDK sends it
    ],
)
def test_a_run_evaluated_on_several_sets_is_watched_for_overfitting_on_the_first(val_names):
    """With several validation sets no name was the validation loss, so an overfitting run (the first set's loss
    2 -> 6 while the training loss falls to 0) raised nothing; the first set's loss is now the run's val/loss."""
    monitor = DiagnosticSuite(SuiteConfig(enabled=["overfitting"])).monitor("r")
    kinds = set()
    for step in range(300):
        metrics = {"loss": 2.0 * 0.98**step}
        if step % 10 == 9:
            rise = 2.0 + 4.0 * max(0.0, step - 60) / 240
            metrics.update({val_names[0]: rise, val_names[1]: rise * 1.01})
            runtime = val_names[0].replace("_loss", "_runtime") if "dataloader" not in val_names[0] else None
            if runtime:
                metrics[runtime] = 0.5
        kinds.update(a.finding.kind.name for a in monitor.observe(step, 0.0, metrics))
    assert "OVERFITTING" in kinds
    assert monitor.names.source("val/loss") == val_names[0]


@pytest.mark.parametrize("test_name", ["test_loss", "test/loss", "loss/test"])
def test_a_run_evaluated_only_on_a_set_it_calls_test_is_watched_for_overfitting(test_name):
    """DETR's log.txt, many scripts' histories: the held-out loss is called test_loss, with no validation loss."""
    monitor = DiagnosticSuite(SuiteConfig(enabled=["overfitting"])).monitor("r")
    kinds = set()
    for step in range(300):
        metrics = {"loss": 2.0 * 0.98**step}
        if step % 10 == 9:
            metrics[test_name] = 2.0 + 4.0 * max(0.0, step - 60) / 240
        kinds.update(a.finding.kind.name for a in monitor.observe(step, 0.0, metrics))
    assert "OVERFITTING" in kinds and monitor.names.source("val/loss") == test_name
    both = DiagnosticSuite(SuiteConfig(enabled=["overfitting"])).monitor("r2")
    both.observe(9, 0.0, {"loss": 1.0, "val_loss": 1.0, test_name: 1.0})
    assert both.names.source("val/loss") == "val_loss"  # a validation loss is the held-out loss when there is one
