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

The importers and integrations rename before sending. Whatever arrives
otherwise (``run.log({"train_loss": ...})``, a gRPC client in another
language, a Kafka producer) is stored as sent, and :class:`DetectorNames`
gives the detectors each run's metrics under runwatch's names, with findings
naming the metrics as the run logged them.

Rules, applied to the name with a Lightning ``_step`` suffix removed (an
``_epoch`` suffix keeps a training name unchanged: epoch aggregates are other
series; a validation name's epoch aggregate, ``val_loss_epoch``, is its
validation metric, ``val/loss``, which Lightning writes so when validation also
logs per step):

- training loss: ``train_loss``, ``train/loss``, ``training_loss``,
  ``loss/train``, ``Loss/train``, ``loss_train``, ``tr_loss``, a script's list ``train_losses`` and the per-batch
  ``train_loss_batch``, ``loss_batch`` -> ``loss``; so
  is the total of a multi-part
  loss: ``total_loss`` (detectron2), ``loss/train/total`` (Composer),
  ``reduced_train_loss`` (NeMo), ``loss_total``, ``loss/total``, while its parts
  (``loss_cls``, ``train/box_loss``) keep their names
- validation: prefixes ``val_``, ``valid_``, ``validation_``, ``eval_``, ``va_``,
  ``val/``, ``eval/``, ``valid/``, ``validation/`` and suffixes ``/val``,
  ``/valid``, ``/validation``, ``/eval`` -> ``val/<base>``, and ``_val``, ``_valid`` after a loss or an
  accuracy (``loss_val``), where ``acc`` and
  ``accuracy`` (and the lists' ``accs``, ``accuracies``) become ``acc`` (``eval_accuracy`` -> ``val/acc``) and
  ``total_loss`` and ``losses`` become ``loss`` (``val/total_loss``, ``val_losses`` -> ``val/loss``)
- Keras's TensorBoard callback: ``epoch_loss``, ``batch_loss`` -> ``loss``,
  ``epoch_learning_rate`` -> ``lr`` (its ``validation/`` folder's ``epoch_loss`` is
  read as ``val_epoch_loss`` -> ``val/loss`` by the TensorBoard importer)
- learning rate: ``learning_rate``, ``lr-<Optimizer>`` (one param group) -> ``lr``
- gradient norm: ``gradient_norm``, ``grad_norm_total``, ``global_grad_norm``, ``grad-norm``, ``gradnorm`` and
  Lightning's ``grad_2.0_norm_total``
  -> ``grad_norm``; Lightning's per-parameter ``grad_2.0_norm/<name>`` -> ``grad_norm/<name>``
- a ``train/`` or ``train_`` prefix in front of a learning rate or gradient norm
  (W&B's Hugging Face integration: ``train/learning_rate``, ``train/grad_norm``)
  is dropped

Examples
--------
>>> [canonical_name(n) for n in ["train_loss_step", "eval_accuracy", "Loss/train", "lr-Adam", "val_mse", "epoch"]]
['loss', 'val/acc', 'loss', 'lr', 'val/mse', 'epoch']
>>> [canonical_name(n) for n in ["train/learning_rate", "train/grad_norm", "train/epoch", "train_acc"]]
['lr', 'grad_norm', 'train/epoch', 'train_acc']
>>> [canonical_name(n) for n in ["total_loss", "loss_cls", "val/total_loss", "loss/train/total", "train/box_loss"]]
['loss', 'loss_cls', 'val/loss', 'loss', 'train/box_loss']
>>> [canonical_name(n) for n in ["epoch_loss", "batch_loss", "epoch_learning_rate", "val_epoch_loss", "epoch_accuracy"]]
['loss', 'loss', 'lr', 'val/loss', 'epoch_accuracy']
>>> [canonical_name(n) for n in ["train_loss_batch", "loss_batch", "val_loss_batch"]]
['loss', 'loss', 'val/loss_batch']
>>> [canonical_name(n) for n in ["grad_2.0_norm_total", "grad_2.0_norm/encoder.fc1.weight", "grad_inf_norm_total"]]
['grad_norm', 'grad_norm/encoder.fc1.weight', 'grad_inf_norm_total']
>>> [canonical_name(n) for n in ["train/global_grad_norm", "grad-norm", "Gradnorm"]]
['grad_norm', 'grad_norm', 'grad_norm']
>>> [canonical_name(n) for n in ["val_loss_epoch", "val_acc_epoch", "train_loss_epoch"]]
['val/loss', 'val/acc', 'train_loss_epoch']
>>> [canonical_name(n) for n in ["train_losses", "val_losses", "val_accs", "valid_accuracies", "train_accs"]]
['loss', 'val/loss', 'val/acc', 'val/acc', 'train_accs']
>>> [canonical_name(n) for n in ["tr_loss", "va_loss", "loss_train", "loss_val", "acc_valid", "clip_val"]]
['loss', 'val/loss', 'loss', 'val/loss', 'val/acc', 'clip_val']
>>> [canonical_name(n) for n in ["training.loss", "validation.loss", "val.accuracy"]]
['loss', 'val/loss', 'val/acc']
>>> [canonical_name(n) for n in ["lossvalue", "loss_value"]]
['loss', 'loss']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from runwatch.models.block import MetricBlock
from runwatch.models.loss_parts import joined_name, part_totals, sum_columns

__all__ = ["DetectorNames", "canonical_name", "is_score_metric", "rename_map", "safe_name"]

_VAL_PREFIXES = ("validation_", "valid_", "val_", "eval_", "validation/", "valid/", "val/", "eval/", "va_",
                 "validation.", "valid.", "val.", "eval.")
_VAL_SUFFIXES = ("/validation", "/valid", "/val", "/eval")
_TRAIN_LOSS = {"train_loss", "train/loss", "training_loss", "training/loss", "loss/train", "loss/training", "trainloss",
               # the total of a multi-part loss: detectron2, Composer, NeMo (mean over data-parallel ranks)
               "total_loss", "loss_total", "loss/total", "train/total_loss", "train_total_loss", "loss/train/total",
               "reduced_train_loss",
               # a script's own lists, named for what they collect (train_losses.append(loss.item()))
               "train_losses", "training_losses", "train/losses",
               # the split abbreviated, or named after the loss
               "tr_loss", "trn_loss", "loss_train", "loss_tr", "loss_trn",
               # dotted, as Sacred's documentation logs them (_run.log_scalar("training.loss", ...))
               "train.loss", "training.loss",
               # the loss's value under its own name (insightface's LossValueMetric, "lossvalue=6.24" in MXNet's
               # Speedometer line)
               "lossvalue", "loss_value", "loss-value"}
_TOTAL_LOSS = ("total_loss", "loss_total")
_KERAS_PREFIXES = ("epoch_", "batch_")  # Keras's TensorBoard callback: epoch_loss, batch_loss, epoch_learning_rate
# Lightning's lightning.pytorch.utilities.grad_norm(model, norm_type=2): the total and one per parameter
_LIGHTNING_GRAD = re.compile(r"grad_2(?:\.0)?_norm(?:(_total)|/(.+))")
_TRAIN_PREFIXES = ("train/", "training/", "train_")
_SPLIT_LAST = re.compile(r"(loss|losses|acc|accuracy|accs|accuracies)_(?:val|valid|validation|va)")
_GRAD_NORM = ("gradient_norm", "grad_norm_total", "total_grad_norm", "grad_norm", "global_grad_norm", "grad-norm",
              "gradnorm")
_LR = re.compile(r"lr-[A-Za-z0-9_.]+")
_BAD = re.compile(r"[\s\x00-\x1f\x7f]+")


def safe_name(name: str) -> str:
    """``name`` with whitespace and control characters replaced by ``_``, cut to 256 characters."""
    out = _BAD.sub("_", name.strip())[:256]
    return out or "_"


def _base(base: str) -> str:
    low = base.lower()
    if low in ("acc", "accuracy", "accs", "accuracies"):
        return "acc"
    if low in ("loss", "losses") or low in _TOTAL_LOSS or low in ("epoch_loss", "batch_loss"):
        return "loss"
    return base


def canonical_name(name: str) -> str:
    """runwatch's name for a metric another tool wrote (see the module docstring)."""
    name = safe_name(name)
    stem = name[: -len("_step")] if name.endswith("_step") and len(name) > 5 else name
    if stem.endswith("_epoch"):
        inner = canonical_name(stem[: -len("_epoch")])
        return inner if inner.startswith("val/") else name
    low = stem.lower()
    if low in _TRAIN_LOSS:
        return "loss"
    if low.endswith("_batch") and (low[: -len("_batch")] in _TRAIN_LOSS or low == "loss_batch"):
        return "loss"  # "train_loss_batch", "loss_batch": the per-batch training loss (Keras's is "batch_loss")
    for prefix in _KERAS_PREFIXES:
        if low.startswith(prefix) and low[len(prefix) :] in ("loss", "learning_rate", "lr"):
            return "loss" if low.endswith("loss") else "lr"
    for prefix in _TRAIN_PREFIXES:
        if low.startswith(prefix) and len(stem) > len(prefix):
            inner = canonical_name(stem[len(prefix) :])
            if inner in ("lr", "grad_norm"):
                return inner
    if low in ("learning_rate", "lr", "learning-rate") or _LR.fullmatch(stem):
        return "lr"
    if low in _GRAD_NORM:
        return "grad_norm"
    lightning = _LIGHTNING_GRAD.fullmatch(stem)
    if lightning is not None:
        return "grad_norm" if lightning.group(1) else "grad_norm/" + lightning.group(2)
    for p in _VAL_PREFIXES:
        if low.startswith(p) and len(stem) > len(p):
            return "val/" + _base(stem[len(p) :])
    for sfx in _VAL_SUFFIXES:
        if low.endswith(sfx) and len(stem) > len(sfx):
            return "val/" + _base(stem[: -len(sfx)].rstrip("/"))
    split_last = _SPLIT_LAST.fullmatch(low)
    if split_last is not None:  # loss_val, acc_valid: only for a loss or an accuracy ("clip_val" is a setting)
        return "val/" + _base(split_last.group(1))
    return stem if stem != name and stem == "loss" else name


# The last part of a metric name that says it is a higher-is-better score in [0, 1] (or a percentage): it ends
# in mAP or AP (detection: Ultralytics' metrics/mAP50-95(B), YOLOv5's metrics/mAP_0.5, detectron2's bbox/AP and
# its size ranges APs/APm/APl), accuracy, top-1, F1, IoU or Dice, with at most an averaging word, IoU thresholds
# and a tag after it, or a class name after a dash (bbox/AP-hazelnut). A name that goes on otherwise
# (eval_best_f1_thresh, a threshold that is 0.0 by design) is no score.
_SCORE = re.compile(
    r"(?:^|[^a-z])(?:m?ap[sml]?|acc|accuracy|top_?[15]|f1|m?iou|dice)(?:[_\-]?(?:score|macro|micro|weighted|avg|mean))?"
    r"(?:[\d_.:\-]*(?:\([a-z]+\))?|-[^/]+)$"
)


# Scores on the foreground alone start at 0 by design: detectron2's fast_rcnn/fg_cls_accuracy is 0.0 while the box
# head still calls every proposal background (8 logged values in a row in one real run, then 1.0).
_FOREGROUND = re.compile(r"(?:^|[^a-z])(?:fg|foreground)(?:[^a-z]|$)")


@functools.lru_cache(maxsize=1024)
def is_score_metric(name: str) -> bool:
    """Whether ``name`` (its last path part) names a higher-is-better score such as mAP, accuracy or F1.

    >>> [is_score_metric(n) for n in ["metrics/mAP50-95(B)", "metrics/mAP_0.5", "bbox/AP", "val/acc", "val/f1"]]
    [True, True, True, True, True]
    >>> [is_score_metric(n) for n in ["bbox/APs", "segm/APl", "bbox/AP-hazelnut"]]  # COCO's size ranges, one class
    [True, True, True]
    >>> [is_score_metric(n) for n in ["val/f1_score", "metrics/accuracy_top1", "val/map_50", "val/acc_macro"]]
    [True, True, True, True]
    >>> [is_score_metric(n) for n in ["loss", "lr/pg0", "val/gap", "metrics/precision(B)", "val/best_f1_thresh"]]
    [False, False, False, False, False]
    >>> is_score_metric("fast_rcnn/fg_cls_accuracy"), is_score_metric("fast_rcnn/cls_accuracy")
    (False, True)
    """
    last = name.rsplit("/", 1)[-1].lower()
    return _SCORE.search(last) is not None and _FOREGROUND.search(last) is None


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


_LOADER_SUFFIX = re.compile(r"/dataloader_idx_(\d+)$")


def first_evaluation_set_loss(names: Iterable[str]) -> str | None:
    """Of a run evaluated on several sets, the first set's loss, to be its ``val/loss`` (None: no such names).

    Lightning names a metric of validation loader ``i`` ``<name>/dataloader_idx_<i>``; the HF Trainer names the
    metrics of evaluation set ``x`` (``eval_dataset={"x": ...}``) ``eval_x_loss``, with ``eval_x_runtime`` beside
    it, which tells a set's loss from a loss component such as ``eval_kl_loss``. Without this the overfitting rule
    read no validation loss at all on such runs.

    >>> first_evaluation_set_loss(["loss", "val_loss/dataloader_idx_1", "val_loss/dataloader_idx_0"])
    'val_loss/dataloader_idx_0'
    >>> first_evaluation_set_loss(["eval_b_loss", "eval_b_runtime", "eval_a_loss", "eval_a_runtime"])
    'eval_a_loss'
    >>> first_evaluation_set_loss(["val/a_loss", "val/a_runtime", "val/loss/dataloader_idx_0"])
    'val/loss/dataloader_idx_0'
    >>> first_evaluation_set_loss(["eval_kl_loss", "eval_loss", "eval_runtime"]) is None
    True
    """
    names = sorted(names)
    present = set(names)
    for n in names:
        m = _LOADER_SUFFIX.search(n)
        if m is not None and m.group(1) == "0" and canonical_name(n[: m.start()]) == "val/loss":
            return n
    for n in names:
        low = n.lower()
        for prefix in ("eval_", "eval/", "val/"):  # val/: the SDK sends eval_x_loss as val/x_loss
            if low.startswith(prefix) and low.endswith("_loss") and len(low) > len(prefix) + len("_loss"):
                dataset = n[len(prefix) : -len("_loss")]
                if f"{n[: len(prefix)]}{dataset}_runtime" in present:
                    return n
    return None


def _claimable(name: str) -> bool:
    """Whether :func:`canonical_name` can map another name onto ``name`` (or it is a fallback)."""
    return name in ("loss", "lr", "grad_norm") or name.startswith("val/") or "#" in name


_TEST_LOSS = {"test_loss", "test/loss", "loss/test", "test loss", "test_losses", "testing_loss", "testing/loss",
              "test.loss"}


def test_set_loss(names: Iterable[str]) -> str | None:
    """A run's held-out loss named for a test set, to be its ``val/loss`` when no name is a validation loss
    (:class:`DetectorNames` asks after :func:`first_evaluation_set_loss` found none).

    Scripts and research code (DETR's ``log.txt``, many Keras and PyTorch histories) evaluate on a held-out
    set they call "test" every epoch; without this the overfitting rule read no held-out loss on such runs.

    >>> test_set_loss(["train_loss", "test_loss", "test_acc"]), test_set_loss(["loss", "val_loss", "test_loss"])
    ('test_loss', None)
    """
    names = list(names)
    if any(canonical_name(n) == "val/loss" for n in names):
        return None
    return next((n for n in sorted(names) if n.lower() in _TEST_LOSS), None)


class _Plan(NamedTuple):
    """How :class:`DetectorNames` turns one layout of names into the detectors' block."""

    renames: dict[str, str]  # name as logged -> detectors' name, for the names that differ
    totals: tuple[tuple[str, tuple[str, ...]], ...]  # (total, its parts) to add as columns


class DetectorNames:
    """One run's metric names as its detectors read them: each name mapped once, when first seen, for the whole run.

    A name already spelled the runwatch way claims itself; another name takes its
    :func:`canonical_name` unless the run already has a metric there (``loss`` logged
    beside ``train_loss``: ``train_loss`` keeps its name). First come, first served
    across blocks, canonical spellings first within one, so a name's series never
    moves. :meth:`rename` costs one dictionary look-up per block when nothing needs
    a new name (a run logged with runwatch's names).

    Examples
    --------
    >>> names = DetectorNames()
    >>> block = MetricBlock.from_rows([1], [0.0], [{"train_loss": 0.5, "learning_rate": 1e-3, "acc": 0.9}])
    >>> sorted(names.rename(block).columns)
    ['acc', 'loss', 'lr']
    >>> names.source("loss"), names.source("acc"), names.mapping["train_loss"]
    ('train_loss', 'acc', 'loss')
    >>> sorted(names.rename(MetricBlock.from_rows([2], [0.0], [{"loss": 0.4}])).columns)  # "loss" is taken
    ['loss#as-logged']
    >>> names.source("loss#as-logged")
    'loss'

    A loss logged only as parts (Ultralytics YOLO's ``train/box_loss``, ``train/cls_loss``...) is read
    as their sum, ``loss`` (and ``val/loss`` for ``val/`` parts), where the run has no such metric
    (:mod:`runwatch.models.loss_parts`); findings name it by its parts:

    >>> yolo = DetectorNames()
    >>> b = yolo.rename(MetricBlock.from_rows([1], [0.0], [{"train/box_loss": 1.5, "train/cls_loss": 2.0}]))
    >>> b.columns["loss"].values.tolist(), yolo.source("loss")
    ([3.5], 'train/box_loss+train/cls_loss')
    """

    MAX_LAYOUTS = 256
    _TOTAL_KEY = "\x00total:"  # state_dict keys of derived totals (no metric name holds a control character)

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}  # name as logged -> name for the detectors
        self._source: dict[str, str] = {}  # the reverse, for names that differ
        self._taken: set[str] = set()
        self._totals: dict[str, tuple[str, ...]] = {}  # derived total -> its parts (detectors' names)
        # Per layout of names: (renamed names, totals to add), None when the block goes through unchanged.
        self._layouts: dict[tuple[str, ...], _Plan | None] = {}

    def rename(self, block: MetricBlock) -> MetricBlock:
        """``block`` with its columns under the detectors' names (the same object when none changes)."""
        names = tuple(block.columns)
        try:
            plan = self._layouts[names]
        except KeyError:
            plan = self._plan(names)
        if plan is None:
            return block
        renames, totals = plan
        columns = {renames.get(n, n): c for n, c in block.columns.items()}
        finite, matrix = block.finite, block.matrix
        for target, parts in totals:
            col = sum_columns([columns[p] for p in parts])
            if col is None:  # the parts came at different steps within this block: no total for it
                continue
            columns[target] = col
            if matrix is not None:
                matrix = np.concatenate([matrix, col.values[:, None]], axis=1)
            if finite and not np.isfinite(col.values).all():  # finite parts whose sum overflows
                finite = False
        return MetricBlock(block.steps, block.wall_times, columns, finite, matrix)

    def _plan(self, names: tuple[str, ...]) -> _Plan | None:
        new = [n for n in names if n not in self.mapping]
        first_set = (first_evaluation_set_loss(new) or test_set_loss(new)) if "val/loss" not in self._taken else None
        for n in sorted(new, key=lambda n: (canonical_name(n) != n, n)):
            target = canonical_name(n) if n != first_set else "val/loss"
            if target in self._taken:
                target = n
            if target in self._taken:  # the canonical spelling itself, after another name claimed it
                target = f"{n}#as-logged"
            self.mapping[n] = target
            self._taken.add(target)
            if target != n:
                self._source[target] = n
        mapped = [self.mapping[n] for n in names]
        for target, parts in part_totals(mapped, claimed=self._taken).items():
            self._totals[target] = parts
            self._taken.add(target)
            self._source[target] = joined_name(self.source(p) for p in parts)
        present = set(mapped)
        totals = tuple((t, parts) for t, parts in self._totals.items() if present.issuperset(parts))
        renames = {n: self.mapping[n] for n in names if self.mapping[n] != n}
        plan = _Plan(renames, totals) if renames or totals else None
        if len(self._layouts) >= self.MAX_LAYOUTS:
            self._layouts.clear()
        self._layouts[names] = plan
        return plan

    def source(self, name: str) -> str:
        """The name the run logged for the detectors' ``name`` (``name`` itself when unchanged)."""
        return self._source.get(name, name)

    def relabel(self, finding) -> None:
        """Name a finding's metrics, related metrics and evidence as the run logged them."""
        source = self.source
        finding.metric = source(finding.metric)
        finding.related = tuple(source(m) for m in finding.related)
        finding.evidence = [(source(m), s, v) for m, s, v in finding.evidence]

    @property
    def renamed(self) -> bool:
        """Whether any of the run's names differs for the detectors."""
        return bool(self._source)

    def state_dict(self) -> dict[str, str]:
        """The mappings a restored run needs to go on exactly: renamed names, claimable ones it logged, totals."""
        out = {n: t for n, t in self.mapping.items() if t != n or _claimable(n)}
        out.update({self._TOTAL_KEY + t: "\n".join(parts) for t, parts in self._totals.items()})
        return out

    def load_state_dict(self, state: dict[str, str]) -> None:
        self.__init__()
        for n, t in state.items():
            if n.startswith(self._TOTAL_KEY):
                continue
            self.mapping[str(n)] = str(t)
            self._taken.add(str(t))
            if t != n:
                self._source[str(t)] = str(n)
        for n, parts in state.items():
            if n.startswith(self._TOTAL_KEY):
                target = n[len(self._TOTAL_KEY) :]
                self._totals[target] = tuple(str(parts).split("\n"))
                self._taken.add(target)
                self._source[target] = joined_name(self.source(p) for p in self._totals[target])
