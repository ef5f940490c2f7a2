"""Stability fixes for a run that diverged or is predicted to: what to try before any capacity edit.

A run whose loss or validation metric went non-finite (or that runwatch
predicts will, or whose divergence risk is at least 50 %) has no outcome an
architecture edit could be compared with, and its first problem is not its
capacity. :func:`stability_fixes` lists the standard remedies, in the order
practitioners reach for them when a model does not tell which applies:

=====================  ============================================================
rule                   fix
=====================  ============================================================
``lr``                 the learning rate 10x lower (the most common cause)
``warmup``             a linear learning-rate warm-up over the first 5 % of the steps
``normalization``      LayerNorm after every hidden block (architecture edit)
``residual``           residual connections around every block whose widths match
``init``               a smaller initialisation of the output layer (x0.1) with fan-in
                       scaled weights elsewhere
``clipping``           gradient-norm clipping at 1.0
=====================  ============================================================

A fix is offered only when the run does not already have it (a run that logs
``warmup_steps > 0`` gets no warm-up advice; a net with LayerNorm after every
block no normalization advice) and the search space allows it. The advisor
ranks them by :class:`~runwatch.nas.risk.DivergenceRisk`: the predicted
probability that the run diverges with the fix applied, lowest first, this
order breaking ties (a base-rate model, or a fix the model cannot judge
because no history run logs that hyperparameter, keeps the run's own risk).

Examples
--------
>>> from runwatch.nas.architecture import Block, Genome
>>> from runwatch.nas.space import SearchSpace
>>> g = Genome(64, 10, (Block("fc1", "linear", 256, "relu"), Block("fc2", "linear", 256, "relu")))
>>> run = RunObservation("r", g, hyperparameters={"lr": 1.5, "steps": 200})
>>> [(f.rule, [c.description for c in f.changes]) for f in stability_fixes(run, SearchSpace())][:3]
[('lr', ['learning rate lr 1.5 -> 0.15 (10x lower)']), ('warmup', ['add a linear learning-rate warm-up over the first 10 steps (warmup_steps 0 -> 10)']), ('normalization', ['add LayerNorm after fc1-fc2'])]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runwatch.nas.architecture import Change, Genome
from runwatch.nas.features import train_loss_name
from runwatch.nas.history import RunObservation
from runwatch.nas.risk import loss_blowup
from runwatch.nas.space import RESIDUAL_KINDS, SearchSpace, within

__all__ = ["STABILITY_KINDS", "StabilityFix", "divergence_evidence", "learning_rate_fix", "stability_fixes"]

# Findings that say a run is heading for a non-finite loss.
STABILITY_KINDS = ("nonfinite", "divergence_predicted", "exploding_gradient")

_LR_KEYS = ("lr", "learning_rate", "learning-rate", "optimizer.lr", "optim.lr")
_WARMUP_KEYS = ("warmup_steps", "warmup", "warmup_ratio", "lr_warmup_steps", "num_warmup_steps", "warmup_epochs")
_CLIP_KEYS = ("grad_clip", "clip_grad_norm", "max_grad_norm", "gradient_clip_val", "clip_norm", "grad_clip_norm")
_STEP_KEYS = ("steps", "max_steps", "total_steps", "num_steps", "iterations")
_INIT_KEYS = ("init", "init_scale", "initialization")


@dataclass(frozen=True)
class StabilityFix:
    """One remedy: the genome to train (the run's own for a hyperparameter fix) and the hyperparameters to change.

    ``hyperparameters`` are the run's hyperparameters with the fix applied (what
    the risk model and the surrogate score); ``changed`` only the keys the fix
    sets; ``priority`` the rule's place in the table of the module docstring.
    """

    rule: str
    genome: Genome
    hyperparameters: dict[str, Any]
    changed: dict[str, Any]
    changes: tuple[Change, ...]
    reason: str
    priority: int = 0
    judged: dict[str, Any] = field(default_factory=dict)


def _find(hps: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    lowered = {str(k).lower(): k for k in hps}
    for key in keys:
        if key in lowered:
            return lowered[key], hps[lowered[key]]
    return None


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def learning_rate_fix(
    base: Genome, hps: dict[str, Any], factor: float, rule: str, reason: str, priority: int = 0
) -> StabilityFix | None:
    """The run's learning rate times ``factor`` as a fix (the run logs none: "10x lower" in words).

    None when the logged learning rate is not a positive number.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(64, 10, (Block("fc1", "linear", 16, "relu"),))
    >>> learning_rate_fix(g, {"learning_rate": 3e-4}, 10.0, "lr_up", "too small").changes[0].description
    'learning rate learning_rate 0.0003 -> 0.003 (10x higher)'
    >>> learning_rate_fix(g, {}, 0.1, "lr", "too large").changed
    {'lr': '10x lower'}
    """
    word = "higher" if factor > 1 else "lower"
    times = f"{max(factor, 1 / factor):g}x {word}"
    found = _find(hps, _LR_KEYS)
    if found is None:
        key, before, after, text = "lr", "not logged", times, f"learning rate {times} (the run logs none)"
    else:
        key, before = found
        value = _number(before)
        if not (math.isfinite(value) and value > 0):
            return None
        after = float(f"{value * factor:.3g}")
        text = f"learning rate {key} {value:g} -> {after:g} ({times})"
    change = Change("", key, str(before), str(after), text)
    return StabilityFix(rule, base, {**hps, key: after}, {key: after}, (change,), reason, priority)


def _steps(run: RunObservation) -> int:
    found = _find(run.hyperparameters, _STEP_KEYS)
    if found is not None and math.isfinite(_number(found[1])) and _number(found[1]) > 0:
        return int(_number(found[1]))
    loss = train_loss_name(run.series)
    if loss:
        steps = np.asarray(run.series[loss][0])
        if steps.size:
            return int(steps.max()) + 1
    return 0


def _with_norm_everywhere(genome: Genome, space: SearchSpace) -> Genome | None:
    if "layernorm" not in space.normalizations:
        return None
    g = genome
    for i, b in enumerate(genome.blocks):
        if not b.normalization:
            g = g.replace_block(i, normalization="layernorm")
    return None if g == genome else g


def _with_residuals(genome: Genome, space: SearchSpace) -> Genome | None:
    if not space.allow_residual:
        return None
    sizes = genome.in_sizes()
    g = genome
    for i, b in enumerate(genome.blocks):
        if not b.residual and b.kind in RESIDUAL_KINDS and sizes[i] == b.width:
            g = g.replace_block(i, residual=True)
    return None if g == genome else g


def stability_fixes(run: RunObservation, space: SearchSpace) -> list[StabilityFix]:
    """The stability remedies ``run`` does not have yet, in the rule order of the module docstring."""
    base = run.genome
    if base is None:
        return []
    hps = dict(run.hyperparameters)
    out: list[StabilityFix] = []

    def hp_fix(rule: str, key: str, before: Any, after: Any, text: str, reason: str) -> None:
        changed = {key: after}
        change = Change("", key, str(before), str(after), text)
        out.append(StabilityFix(rule, base, {**hps, **changed}, changed, (change,), reason, len(out)))

    def arch_fix(rule: str, genome: Genome | None, reason: str) -> None:
        if genome is None or genome.validate() or not within(genome, base, space):
            return
        out.append(StabilityFix(rule, genome, hps, {}, tuple(base.diff(genome)), reason, len(out)))

    too_high = "a learning rate too high for the net is the most common cause of a non-finite loss"
    lr = learning_rate_fix(base, hps, 0.1, "lr", too_high, len(out))
    if lr is not None:
        out.append(lr)
    warm = _find(hps, _WARMUP_KEYS)
    if warm is None or not _number(warm[1]) > 0:
        steps = _steps(run)
        n = max(1, round(0.05 * steps)) if steps else 0
        key = warm[0] if warm is not None else "warmup_steps"
        what = f"over the first {n} steps" if n else "over the first 5 % of the steps"
        hp_fix(
            "warmup",
            key,
            warm[1] if warm is not None else 0,
            n or "5%",
            f"add a linear learning-rate warm-up {what} ({key} {warm[1] if warm is not None else 0} -> {n or '5%'})",
            "early updates at the full learning rate, before the optimizer's statistics settle, blow up first",
        )
    arch_fix(
        "normalization",
        _with_norm_everywhere(base, space),
        "normalization keeps every block's activations at unit scale, so one large update cannot compound",
    )
    arch_fix(
        "residual",
        _with_residuals(base, space),
        "residual paths keep an identity route for the signal and the gradient through every block",
    )
    init = _find(hps, _INIT_KEYS)
    if init is None:
        hp_fix(
            "init",
            "init",
            "default",
            "small_output",
            "initialise the output layer's weights x0.1 (fan-in scaled init elsewhere: Kaiming for ReLU, Xavier "
            "for tanh)",
            "a large initial output makes the first losses and gradients large",
        )
    clip = _find(hps, _CLIP_KEYS)
    if clip is None or not _number(clip[1]) > 0:
        key = clip[0] if clip is not None else "grad_clip"
        hp_fix(
            "clipping",
            key,
            clip[1] if clip is not None else 0,
            1.0,
            f"clip the gradient norm at 1.0 ({key} {clip[1] if clip is not None else 0} -> 1.0)",
            "clipping bounds the size of any one update",
        )
    return out


def divergence_evidence(run: RunObservation, target: str) -> str:
    """Where the run went non-finite (the first non-finite point of its training loss or ``target``) or blew up
    (:func:`~runwatch.nas.risk.loss_blowup`); "" if neither.

    Examples
    --------
    >>> s = np.arange(5)
    >>> run = RunObservation("r", None, series={"loss": (s, np.array([2.0, 1.5, 9.0, np.inf, np.nan]))})
    >>> divergence_evidence(run, "val/loss")
    'the run diverged: loss became inf at step 3 (last finite value 9 at step 2)'
    """
    for name in (train_loss_name(run.series), target):
        if not name or name not in run.series:
            continue
        steps, values = (np.asarray(a) for a in run.series[name])
        bad = np.flatnonzero(~np.isfinite(values.astype(float)))
        if bad.size:
            i = int(bad[0])
            before = f" (last finite value {values[i - 1]:.3g} at step {int(steps[i - 1])})" if i else ""
            return f"the run diverged: {name} became {values[i]} at step {int(steps[i])}{before}"
    value = run.outcome.get(target)
    if value is not None and not math.isfinite(value):
        return f"the run diverged: its final {target} is {value}"
    blowup = loss_blowup(run)
    if blowup is not None:
        return (
            f"the run diverged: {train_loss_name(run.series)} ended at {blowup.last:.3g} (step {blowup.last_step}), "
            f"{blowup.last / blowup.best:.3g}x its best {blowup.best:.3g} (step {blowup.best_step})"
        )
    return ""
