"""A multi-part loss logged without its total: the detectors read the sum of the parts as the loss.

Detection and segmentation trainers log their objective as parts. Ultralytics YOLO writes
``train/box_loss``, ``train/cls_loss``, ``train/dfl_loss`` (``train/obj_loss`` in YOLOv5,
``train/seg_loss``, ``train/pose_loss``...) and the same under ``val/``, and no total; what it
optimises is their sum. Without a ``loss`` the rules that read the training loss (divergence, spikes,
plateaus, overfitting against ``val/loss``) had nothing to read on such a run.

:func:`loss_part_target` says which total a metric name is a part of; :func:`part_totals` picks, in
one run's layout of names, the parts of each total the run does not log itself. A total needs at
least two parts. Names that are not additive parts are left out: aggregates of a loss
(``loss_scale``, ``avg_loss``, ``running_loss``, ``loss_ema``) and coefficients (``loss_weight``).
A layout holding an adversarial part (``g_loss``, ``loss_D``, ``adv_loss``, ``critic_loss``) or a
policy-gradient part (``policy_loss``, ``entropy_loss``, ``actor_loss``) gets no total at all: a GAN's
generator and discriminator losses pull against each other, and a policy-gradient surrogate is not
expected to fall, so neither sum is an objective whose rise means divergence.

Examples
--------
>>> [loss_part_target(n) for n in ["train/box_loss", "val/cls_loss", "loss_bbox", "train/loss", "loss_scale"]]
['loss', 'val/loss', 'loss', None, None]
>>> part_totals(["train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss", "lr"])
{'loss': ('train/box_loss', 'train/cls_loss', 'train/dfl_loss'), 'val/loss': ('val/box_loss', 'val/cls_loss')}
>>> part_totals(["train/g_loss", "train/d_loss", "train/l1_loss"])
{}
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

import numpy as np

from runwatch.models.block import Column

__all__ = ["joined_name", "loss_part_target", "part_totals", "sum_columns"]

_TRAIN_PREFIXES = ("train/", "training/", "train_", "training_")
_VAL_PREFIX = "val/"
# Words that make a loss name an aggregate or a setting of the loss rather than one of its parts.
_NOT_PART = frozenset({
    "scale", "scaler", "ema", "avg", "average", "mean", "running", "smooth", "smoothed", "min", "max", "std", "var",
    "best", "last", "epoch", "step", "total", "sum", "weight", "weights", "coef", "coeff", "ratio", "norm", "lambda",
})  # fmt: skip
# Words of parts whose sum is no objective to fall: adversarial (GAN generator / discriminator / critic) and
# policy-gradient (actor-critic, PPO) parts.
_NO_TOTAL = frozenset({
    "g", "d", "gen", "disc", "generator", "discriminator", "adv", "adversarial", "critic", "gan",
    "policy", "pg", "entropy", "actor",
})  # fmt: skip
_WORDS = re.compile(r"[_/.\-]+")


def _part_words(rest: str) -> list[str] | None:
    """The words of ``rest`` when it names a loss part (``box_loss``, ``loss_cls``), else None."""
    low = rest.lower()
    if "/" in low or low == "loss":
        return None
    if low.endswith("_loss"):
        words = _WORDS.split(low[: -len("_loss")])
    elif low.startswith("loss_"):
        words = _WORDS.split(low[len("loss_") :])
    else:
        return None
    words = [w for w in words if w]
    if not words or any(w in _NOT_PART for w in words):
        return None
    return words


def _split(name: str) -> tuple[str | None, list[str] | None]:
    """``(total, words)`` of a part name; ``(None, None)`` for a name that is no part."""
    low = name.lower()
    if low.startswith(_VAL_PREFIX):
        return "val/loss", _part_words(name[len(_VAL_PREFIX) :])
    for prefix in _TRAIN_PREFIXES:
        if low.startswith(prefix):
            return "loss", _part_words(name[len(prefix) :])
    if low.startswith(("test/", "test_", "eval/", "eval_", "valid")):
        return None, None
    return "loss", _part_words(name)


def loss_part_target(name: str) -> str | None:
    """``"loss"`` or ``"val/loss"`` when ``name`` (as the detectors read it) is a part of that total, else None.

    >>> loss_part_target("train/seg_loss"), loss_part_target("val/loss_giou"), loss_part_target("avg_loss")
    ('loss', 'val/loss', None)
    """
    total, words = _split(name)
    return total if words is not None else None


def part_totals(names: Iterable[str], claimed: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """Per total not in ``claimed`` (already logged or derived), the parts of it among ``names``, sorted.

    A total needs two or more parts; none is formed where one of its parts is adversarial or a policy gradient.

    >>> part_totals(["box_loss", "cls_loss", "loss"], claimed={"loss"})
    {}
    """
    parts: dict[str, list[str]] = {}
    refused: set[str] = set()
    for name in names:
        total, words = _split(name)
        if total is None or words is None:
            continue
        if any(w in _NO_TOTAL for w in words):
            refused.add(total)
        parts.setdefault(total, []).append(name)
    return {
        total: tuple(sorted(found))
        for total, found in sorted(parts.items())
        if len(found) >= 2 and total not in refused and total not in claimed
    }


def joined_name(parts: Iterable[str]) -> str:
    """How findings name a total the run did not log: its parts joined by ``+``.

    >>> joined_name(("train/box_loss", "train/cls_loss"))
    'train/box_loss+train/cls_loss'
    """
    return "+".join(parts)


def sum_columns(columns: list[Column]) -> Column | None:
    """The parts' sum event by event, or None when they were not logged at the same steps (no total then)."""
    first = columns[0]
    for c in columns[1:]:
        if c.steps is not first.steps and not np.array_equal(c.steps, first.steps):
            return None
    values = first.values.copy()
    for c in columns[1:]:
        values += c.values
    return Column(first.steps, values, first.wall_times)
