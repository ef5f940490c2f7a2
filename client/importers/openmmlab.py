"""OpenMMLab's JSON logs (mmdetection, mmsegmentation, mmpose, mmpretrain...): rows placed at the iteration they follow.

Both shapes are JSON Lines that a plain wide-table read gets wrong:

- MMCV 1.x ``work_dirs/<config>/<timestamp>.log.json``: a first line of environment and config, then
  ``{"mode": "train", "epoch": 3, "iter": 150, "lr": ..., "loss": ...}`` rows and
  ``{"mode": "val", "epoch": 3, "iter": 7330, "bbox_mAP": ...}`` rows. Under the epoch-based runner
  ``iter`` restarts at every epoch, so read by ``iter`` each epoch overwrote the one before.
- MMEngine ``work_dirs/<config>/<timestamp>/vis_data/scalars.json``: training rows
  ``{"lr": ..., "loss": ..., "epoch": 3, "iter": 150, "data_time": ..., "time": ..., "step": 150}`` whose
  ``step`` is the iteration, and validation rows ``{"coco/bbox_mAP": ..., "data_time": ..., "time": ...,
  "step": 3}`` whose ``step`` is the *epoch* under the epoch-based loop, so read by ``step`` the
  validation landed among the first iterations.

:func:`place` gives every row a ``step`` on one iteration axis: the training rows' global iteration,
and a validation row the end of the epoch it follows (its own step where that is already an
iteration). A validation row's ``loss`` entries become ``val/...`` (MMCV's ``workflow`` with a val
phase logs the validation loss under the same names), and its timing and ``lr`` copies are dropped,
so they do not overwrite the training values at that step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from runwatch.client.importers.base import STRICT, ImportFormatError, Problems, parse_step

__all__ = ["MMCV", "MMENGINE", "Placed", "place", "shape"]

MMCV = "MMCV 1.x"
MMENGINE = "MMEngine"
_MODE, _EPOCH, _ITER, _STEP = "mode", "epoch", "iter", "step"
_TRAIN_ONLY = (_EPOCH, _ITER, "lr")  # MMEngine writes these on training rows only
_COPIES = ("lr", "time", "data_time", "memory")  # on validation rows: the phase's timing, or the training lr again
_LOOKED_AT = 50  # rows enough to tell the shape (MMEngine's first validation row may follow many training rows)

Row = tuple[str, Mapping[str, Any]]


def shape(rows: Sequence[Row]) -> str | None:
    """:data:`MMCV`, :data:`MMENGINE`, or None for rows of neither shape.

    Examples
    --------
    >>> shape([("line 1", {"env_info": "..."}), ("line 2", {"mode": "train", "epoch": 1, "iter": 50, "loss": 1.0})])
    'MMCV 1.x'
    >>> shape([("line 1", {"lr": 0.01, "loss": 1.0, "epoch": 1, "iter": 10, "data_time": 0.1, "time": 0.3, "step": 10})])
    'MMEngine'
    >>> shape([("line 1", {"step": 10, "epoch": 1, "loss": 1.0})]) is None  # a plain table that has an epoch column
    True
    """
    head = [row for _, row in rows[:_LOOKED_AT]]
    if any(row.get(_MODE) in ("train", "val") and _EPOCH in row and _ITER in row for row in head):
        return MMCV
    if any(_STEP in row and "data_time" in row and "time" in row for row in head):
        return MMENGINE
    return None


class Placed(NamedTuple):
    """Rows with a ``step`` on one iteration axis, and what was done to get there (:func:`place`)."""

    rows: list[Row]
    notes: list[str]
    hyperparameters: dict[str, Any]


def _validation_values(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in (_MODE, _EPOCH, _ITER, _STEP) or key in _COPIES:
            continue
        out[f"val/{key}" if "loss" in key and "/" not in key else key] = value
    return out


def place(path: Path, rows: Sequence[Row], kind: str, problems: Problems = STRICT) -> Placed:
    """Give each row of an OpenMMLab log of shape ``kind`` its step on the training-iteration axis.

    Examples
    --------
    MMCV 1.x, epoch-based: ``iter`` restarts each epoch; validation at the epoch's end (its ``iter``):

    >>> rows = [("line 1", {"env_info": "...", "seed": 0}),
    ...         ("line 2", {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.02, "loss": 2.0}),
    ...         ("line 3", {"mode": "train", "epoch": 1, "iter": 100, "lr": 0.02, "loss": 1.5}),
    ...         ("line 4", {"mode": "val", "epoch": 1, "iter": 120, "lr": 0.02, "bbox_mAP": 0.1}),
    ...         ("line 5", {"mode": "train", "epoch": 2, "iter": 50, "lr": 0.02, "loss": 1.2})]
    >>> placed = place(Path("x.log.json"), rows, MMCV)
    >>> [(row["step"], sorted(row)) for _, row in placed.rows]  # doctest: +NORMALIZE_WHITESPACE
    [(50, ['loss', 'lr', 'step']), (100, ['loss', 'lr', 'step']), (120, ['bbox_mAP', 'step']),
     (170, ['loss', 'lr', 'step'])]
    >>> placed.hyperparameters
    {'seed': 0}

    MMEngine, epoch-based: a validation row's ``step`` is the epoch; it goes to the last training step:

    >>> rows = [("line 1", {"lr": 0.1, "loss": 1.0, "epoch": 1, "iter": 30, "data_time": 0.1, "time": 0.2, "step": 30}),
    ...         ("line 2", {"coco/bbox_mAP": 0.2, "data_time": 0.5, "time": 0.6, "step": 1})]
    >>> [row for _, row in place(Path("scalars.json"), rows, MMENGINE).rows]
    [{'lr': 0.1, 'loss': 1.0, 'data_time': 0.1, 'time': 0.2, 'step': 30}, {'coco/bbox_mAP': 0.2, 'step': 30}]
    """
    if kind == MMCV:
        return _place_mmcv(path, rows, problems)
    return _place_mmengine(path, rows, problems)


def _place_mmcv(path: Path, rows: Sequence[Row], problems: Problems) -> Placed:
    out: list[Row] = []
    hyperparameters: dict[str, Any] = {}
    offset = 0  # iterations of the epochs before the current one, where iter restarts each epoch
    epoch: int | None = None
    last_iter = 0  # the current epoch's last training iter
    interval = 0  # between the current epoch's last two training rows (the logging interval)
    epoch_length: int | None = None  # from the first validation row that gives it (epochs are equally long)
    step = 0  # the last placed step
    restarts = 0
    for where, row in rows:
        mode = row.get(_MODE)
        if mode is None:
            if not out:  # the first line: environment, config, seed
                hyperparameters.update({k: v for k, v in row.items() if isinstance(v, (int, float, bool))})
            continue
        try:
            e = parse_step(row.get(_EPOCH), path, where, _EPOCH)
            i = parse_step(row.get(_ITER), path, where, _ITER)
        except ImportFormatError as exc:
            problems.skip(exc, "the row was skipped")
            continue
        if mode == "train":
            if epoch is not None and e > epoch and i <= last_iter:
                offset += max(last_iter, epoch_length or 0)
                restarts += 1
                last_iter = 0
            if e == epoch or not interval:  # an epoch's first row keeps the interval of the epoch before
                interval = i - last_iter
            epoch, last_iter = e, i
            step = offset + i
            values = {k: v for k, v in row.items() if k not in (_MODE, _EPOCH, _ITER)}
        else:
            # The validation's iter is the epoch's length under the epoch-based runner: the first time, within
            # one logging interval past the last training row; later, that same length. Anything else (the val
            # loader's length in a val workflow) puts it at the last training step.
            first = epoch_length is None and i < last_iter + max(interval, 1)
            if e == epoch and i >= last_iter and (first or i == epoch_length):
                epoch_length = i
                step = offset + i
            values = _validation_values(row)
        out.append((where, {**values, _STEP: step}))
    notes = [f"{MMCV} log of OpenMMLab: validation rows placed at the end of the epoch they follow"]
    if restarts:
        notes.append(f"iteration counter restarted at {restarts} epoch(s): steps made global (epoch offsets added)")
    return Placed(out, notes, hyperparameters)


def _place_mmengine(path: Path, rows: Sequence[Row], problems: Problems) -> Placed:
    out: list[Row] = []
    last_train: int | None = None
    moved = 0
    for where, row in rows:
        try:
            step = parse_step(row.get(_STEP), path, where, _STEP)
        except ImportFormatError as exc:
            problems.skip(exc, "the row was skipped")
            continue
        if any(k in row for k in _TRAIN_ONLY):
            last_train = step
            out.append((where, {k: v for k, v in row.items() if k not in (_EPOCH, _ITER)}))
            continue
        if last_train is not None and step < last_train:  # an epoch number: the epoch-based loop's validation
            step = last_train
            moved += 1
        out.append((where, {**_validation_values(row), _STEP: step}))
    notes = [f"{MMENGINE} scalars of OpenMMLab"]
    if moved:
        notes.append(f"{moved} validation row(s) stepped by epoch: placed at the last training iteration before them")
    return Placed(out, notes, {})
