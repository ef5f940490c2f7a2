"""An object detector's box loss at exactly 0 while its other losses are not: no object reaches the box head."""

from __future__ import annotations

import re

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity

# The last name part of a detector's box-regression loss: Ultralytics' box_loss and dfl_loss, YOLOv6's iou_loss,
# mmdetection's loss_bbox / loss_iou, detectron2's loss_box_reg (not the RPN's, nor a classification part)
_BOX_LOSS = re.compile(r"(?:box|bbox|iou|giou|ciou|diou|dfl)_loss|loss_(?:box|bbox|box_reg|iou|giou|dfl)")


def is_box_loss(name: str) -> bool:
    """Whether ``name`` (its last path part) is an object detector's box-regression loss.

    >>> [is_box_loss(n) for n in ["train/box_loss", "iou_loss", "val/dfl_loss", "loss_bbox", "loss_box_reg"]]
    [True, True, True, True, True]
    >>> [is_box_loss(n) for n in ["train/cls_loss", "loss", "loss_rpn_bbox", "loss_cls", "bbox/AP"]]
    [False, False, False, False, False]
    """
    return _BOX_LOSS.fullmatch(name.rpartition("/")[2].lower()) is not None


class ZeroBoxLossConfig(DiagnosticConfig):
    """Settings of :class:`ZeroBoxLossDiagnostic`.

    Parameters
    ----------
    patience
        Logged values in a row of exactly 0. Default 5: a box loss is a regression error on
        every matched prediction, a mean over thousands of boxes; it is exactly 0 only when no
        prediction was matched to an object at all.
    """

    patience: int = Field(default=5, ge=2)


class ZeroBoxLossDiagnostic(Diagnostic):
    """Flags a box-regression loss (``box_loss``, ``iou_loss``, ``dfl_loss``, ``loss_bbox``) at exactly 0
    for ``patience`` logged values in a row while another loss of the run is above 0.

    Detectors compute their box losses on the predictions matched to a ground-truth object
    and their classification loss on every prediction. With no object in the labels (label
    files missing, empty, in another folder or format, class ids the dataset file does not
    name) nothing is matched: the box losses are exactly 0 from the first step while the
    classification loss falls, and the model learns to predict background everywhere (its
    mAP stays at 0, which :mod:`~runwatch.models.diagnostics.zero_score` sees ten evaluations
    later). One finding per run.

    Raises ``PLATEAU`` (ERROR), score 1.

    Examples
    --------
    >>> d = ZeroBoxLossDiagnostic()
    >>> rows = [{"iou_loss": 0.0, "dfl_loss": 0.0, "cls_loss": 0.0113 - 0.0001 * i} for i in range(6)]
    >>> (f,) = d.observe_block(MetricBlock.from_rows(list(range(43, 49)), [0.0] * 6, rows))
    >>> f.step, f.kind.name, f.severity.name, f.metric
    (47, 'PLATEAU', 'ERROR', 'iou_loss')
    >>> rows = [{"box_loss": 0.0, "cls_loss": 0.0}] * 6  # every loss at 0: the zero-loss rule's case, not this one
    >>> ZeroBoxLossDiagnostic().observe_block(MetricBlock.from_rows(list(range(6)), [0.0] * 6, rows))
    []
    """

    name = "zero_box_loss"
    version = "1"
    config_class = ZeroBoxLossConfig
    reference = "no ground-truth box matched: Ultralytics' 'No labels found', box_loss 0 (issue threads, set X)"
    state_attributes = ("done", "zeros", "since", "other_loss")
    transient_attributes = ("_names",)

    config: ZeroBoxLossConfig

    def __init__(self, config: ZeroBoxLossConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported: idle from now on
        self.zeros: dict[str, int] = {}  # per box loss: its latest values in a row at exactly 0
        self.since: dict[str, int] = {}  # ... and the step of the first of them
        self.other_loss = False  # another loss of the run was above 0
        self._names: tuple[tuple[str, ...], list[str], list[str]] = ((), [], [])  # the last block's names, sorted

    def watches(self, metric: str) -> bool:
        return "loss" in metric.lower()

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if self.done:
            return []
        cols = block.columns
        key = tuple(cols)
        if key != self._names[0]:
            losses = [n for n in key if "loss" in n.lower()]
            boxes = [n for n in losses if is_box_loss(n)]
            self._names = (key, boxes, [n for n in losses if n not in boxes])
        _, boxes, others = self._names
        if not boxes:
            return []
        if not self.other_loss:
            self.other_loss = any(bool((cols[n].values > 0.0).any()) for n in others)
        for name in boxes:
            col = cols[name]
            finite = np.isfinite(col.values)
            values, steps = (col.values, col.steps) if finite.all() else (col.values[finite], col.steps[finite])
            have = self.zeros.get(name, 0)
            for i, v in enumerate(values.tolist()):
                if v != 0.0:
                    have = 0
                    continue
                if have == 0:
                    self.since[name] = int(steps[i])
                have += 1
                if have >= self.config.patience and self.other_loss:
                    self.done = True
                    return [self._finding(name, int(steps[i]), have)]
            self.zeros[name] = have
        return []

    def _finding(self, name: str, step: int, count: int) -> Finding:
        since = self.since[name]
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.ERROR,
            score=1.0,
            step=step,
            metric=name,
            explanation=(
                f"{name} has been exactly 0 for {count} logged values in a row (since step {since}) while the other "
                "losses are not: no prediction is matched to a ground-truth object, so the box head learns nothing "
                "and the model learns to see background everywhere; check that the label files exist where the "
                "loader looks (Ultralytics warns 'No labels found'), are not empty, and use the format and class ids "
                "the dataset file names"
            ),
            key="zero_box_loss",
            since=since,
        )
