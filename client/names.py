"""Map metric names other tools write onto runwatch's conventions.

runwatch's detectors read ``loss``, ``val/loss``, ``val/acc``, ``lr`` and
``grad_norm`` (see ``runs.proto``). Lightning, Hugging Face, TensorBoard and
MLflow users name the same things ``train_loss``, ``eval_loss``,
``Loss/train``, ``learning_rate``, ``lr-Adam``... :func:`canonical_name` maps
the common spellings; everything else keeps its name (with whitespace and
control characters replaced, which the server refuses). :func:`rename_map`
applies it to a run's whole set of names so two source names never land on
one canonical name (the one already spelled canonically, else the first in
sorted order, wins; the others keep their own names).

Rules, applied to the name with a Lightning ``_step`` suffix removed (an
``_epoch`` suffix keeps the name unchanged: epoch aggregates are other series):

- training loss: ``train_loss``, ``train/loss``, ``training_loss``,
  ``loss/train``, ``Loss/train`` -> ``loss``
- validation: prefixes ``val_``, ``valid_``, ``validation_``, ``eval_``,
  ``val/``, ``eval/``, ``valid/``, ``validation/`` and suffixes ``/val``,
  ``/valid``, ``/validation``, ``/eval`` -> ``val/<base>``, where ``acc`` and
  ``accuracy`` become ``acc`` (``eval_accuracy`` -> ``val/acc``)
- learning rate: ``learning_rate``, ``lr-<Optimizer>`` (one param group) -> ``lr``
- gradient norm: ``gradient_norm``, ``grad_norm_total`` -> ``grad_norm``
- a ``train/`` or ``train_`` prefix in front of a learning rate or gradient norm
  (W&B's Hugging Face integration: ``train/learning_rate``, ``train/grad_norm``)
  is dropped

Examples
--------
>>> [canonical_name(n) for n in ["train_loss_step", "eval_accuracy", "Loss/train", "lr-Adam", "val_mse", "epoch"]]
['loss', 'val/acc', 'loss', 'lr', 'val/mse', 'epoch']
>>> [canonical_name(n) for n in ["train/learning_rate", "train/grad_norm", "train/epoch", "train_acc"]]
['lr', 'grad_norm', 'train/epoch', 'train_acc']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["canonical_name", "rename_map", "safe_name"]

_VAL_PREFIXES = ("validation_", "valid_", "val_", "eval_", "validation/", "valid/", "val/", "eval/")
_VAL_SUFFIXES = ("/validation", "/valid", "/val", "/eval")
_TRAIN_LOSS = {"train_loss", "train/loss", "training_loss", "training/loss", "loss/train", "loss/training", "trainloss"}
_TRAIN_PREFIXES = ("train/", "training/", "train_")
_GRAD_NORM = ("gradient_norm", "grad_norm_total", "total_grad_norm", "grad_norm")
_LR = re.compile(r"lr-[A-Za-z0-9_.]+")
_BAD = re.compile(r"[\s\x00-\x1f\x7f]+")


def safe_name(name: str) -> str:
    """``name`` with whitespace and control characters replaced by ``_``, cut to 256 characters."""
    out = _BAD.sub("_", name.strip())[:256]
    return out or "_"


def _base(base: str) -> str:
    low = base.lower()
    if low in ("acc", "accuracy"):
        return "acc"
    if low == "loss":
        return "loss"
    return base


def canonical_name(name: str) -> str:
    """runwatch's name for a metric another tool wrote (see the module docstring)."""
    name = safe_name(name)
    stem = name[: -len("_step")] if name.endswith("_step") and len(name) > 5 else name
    if stem.endswith("_epoch"):
        return name
    low = stem.lower()
    if low in _TRAIN_LOSS:
        return "loss"
    for prefix in _TRAIN_PREFIXES:
        if low.startswith(prefix) and len(stem) > len(prefix):
            inner = canonical_name(stem[len(prefix) :])
            if inner in ("lr", "grad_norm"):
                return inner
    if low in ("learning_rate", "lr", "learning-rate") or _LR.fullmatch(stem):
        return "lr"
    if low in _GRAD_NORM:
        return "grad_norm"
    for p in _VAL_PREFIXES:
        if low.startswith(p) and len(stem) > len(p):
            return "val/" + _base(stem[len(p) :])
    for sfx in _VAL_SUFFIXES:
        if low.endswith(sfx) and len(stem) > len(sfx):
            return "val/" + _base(stem[: -len(sfx)].rstrip("/"))
    return stem if stem != name and stem == "loss" else name


def rename_map(names: Iterable[str], canonical: bool = True) -> dict[str, str]:
    """Source name -> name to log, for one run's names, without collisions.

    Examples
    --------
    >>> rename_map(["loss", "train_loss", "val_loss"])
    {'loss': 'loss', 'train_loss': 'train_loss', 'val_loss': 'val/loss'}
    """
    names = sorted(set(names))
    out: dict[str, str] = {}
    if not canonical:
        return {n: safe_name(n) for n in names}
    wanted = {n: canonical_name(n) for n in names}
    taken: dict[str, str] = {}
    # Names already spelled canonically claim their target first.
    for n in names:
        if wanted[n] == safe_name(n):
            taken.setdefault(wanted[n], n)
    for n in names:
        target = wanted[n]
        owner = taken.setdefault(target, n)
        out[n] = target if owner == n else safe_name(n)
    # A fallback may itself collide with a claimed target: keep the source name, suffixed.
    seen: dict[str, str] = {}
    for n in names:
        t = out[n]
        if t in seen and seen[t] != n:
            out[n] = f"{t}#{n}"[:256]
        seen.setdefault(out[n], n)
    return out
