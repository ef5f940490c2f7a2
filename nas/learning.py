"""Learning fixes for a run whose loss never left its start: the optimizer before any capacity edit.

A run whose final training loss is still about where it started
(:attr:`~runwatch.nas.progress.LossProgress.not_learning`) did not fail for
lack of capacity: a wider or deeper net trained the same way stays where it
is. The usual causes are the learning rate, parameters the optimizer never
updates (frozen layers, a detached loss, the wrong model's parameters passed
to it) and labels that do not match their inputs. Only the first is a change
the advisor can name, in both directions:

========  =====================================================================
rule      fix
========  =====================================================================
``lr_up``   the learning rate 10x higher: a step far too small leaves the loss at its start
``lr_down`` the learning rate 10x lower: a step far too large can drive the net to a constant
            prediction from the first updates (the loss at the chance level, no blow-up)
========  =====================================================================

Higher comes first: a learning rate too large more often shows as spikes or a
divergence than as a loss that never moves. When the run logged per-layer
update ratios (``update_ratio/<layer>``, the SDK's ``watch``), they say which
way: a typical step below ``SMALL_STEP`` of the weights (a healthy one is
~1e-3 of them) gets only ``lr_up``, one above ``LARGE_STEP`` only
``lr_down``. The other causes go into the evidence as what to check.

Runs that also show a finding with a whole-stack architecture fix
(vanishing gradients, dead units, saturated activations: a deep sigmoid stack
does not learn at any learning rate until it gets residual paths) are left to
those findings' seeds, and so is a run that diverged (stability first).

Examples
--------
>>> import numpy as np
>>> from runwatch.nas.architecture import Block, Genome
>>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"),))
>>> steps = np.arange(600)
>>> flat = RunObservation("r", g, hyperparameters={"lr": 1e-4}, series={"loss": (steps, np.full(600, 2.31))})
>>> learning_evidence(flat, set())
'the loss never left its start: training loss 2.31 at the start -> 2.31 at the end (100% of its start), 0% lower than two thirds in'
>>> [f.changes[0].description for f in learning_fixes(flat)]
['learning rate lr 0.0001 -> 0.001 (10x higher)', 'learning rate lr 0.0001 -> 1e-05 (10x lower)']
>>> tiny = dict(flat.series, **{"update_ratio/fc1": (steps, np.full(600, 2e-7))})
>>> [f.changes[0].description for f in learning_fixes(RunObservation("t", g, hyperparameters={"lr": 1e-6}, series=tiny))]
['learning rate lr 1e-06 -> 1e-05 (10x higher)']
>>> learning_evidence(flat, {"vanishing_gradient"})   # its architecture fix leads instead
''
"""

from __future__ import annotations

import numpy as np

from runwatch.nas.history import RunObservation
from runwatch.nas.progress import loss_progress
from runwatch.nas.stability import StabilityFix, learning_rate_fix

__all__ = ["ARCHITECTURE_EXPLAINED", "CHECKS", "LARGE_STEP", "SMALL_STEP", "learning_evidence", "learning_fixes",
           "typical_update_ratio"]

SMALL_STEP = 1e-5
"""A typical update below this fraction of the weights (100x under a tuned step's ~1e-3) is far too small."""
LARGE_STEP = 1e-1
"""A typical update above this fraction of the weights (100x over a tuned step's) is far too large."""
UPDATE_PREFIX = "update_ratio/"

# Findings whose whole-stack architecture fix makes a net trainable (runwatch.nas.seeding): they lead instead.
ARCHITECTURE_EXPLAINED = frozenset({"vanishing_gradient", "dead_units", "saturation"})

CHECKS = (
    "also check that the optimizer holds the parameters being trained (no frozen layers, no detached loss) "
    "and that the labels still match their inputs"
)


def learning_evidence(run: RunObservation, kinds: set[str]) -> str:
    """Why ``run`` gets learning fixes first, or "" when it does not (see the module docstring)."""
    if kinds & ARCHITECTURE_EXPLAINED:
        return ""
    progress = loss_progress(run)
    if progress is None or not progress.not_learning:
        return ""
    return f"the loss never left its start: {progress.describe()}"


def typical_update_ratio(run: RunObservation) -> float | None:
    """Median over the run's logged points of its largest per-layer update ratio (None when none was logged).

    >>> s = np.arange(3)
    >>> typical_update_ratio(RunObservation("r", None, series={"update_ratio/a": (s, np.array([1e-3, 2e-3, 3e-3])),
    ...                                                         "update_ratio/b": (s, np.array([1e-4, 1e-4, 5e-3]))}))
    0.002
    """
    columns = [np.asarray(v, dtype=float) for name, (_, v) in run.series.items() if name.startswith(UPDATE_PREFIX)]
    columns = [c for c in columns if len(c)]
    if not columns:
        return None
    n = min(len(c) for c in columns)  # layers logged together: align on the points they share
    largest = np.max(np.stack([c[-n:] for c in columns]), axis=0)
    largest = largest[np.isfinite(largest)]
    return float(np.median(largest)) if largest.size else None


def learning_fixes(run: RunObservation) -> list[StabilityFix]:
    """The learning-rate fixes of the module docstring, in its order (the run's genome, its hyperparameters changed),
    only the direction the logged update ratios point to when the run has them."""
    if run.genome is None:
        return []
    hps = dict(run.hyperparameters)
    ratio = typical_update_ratio(run)
    measured = "" if ratio is None else f" (this run's updates: {ratio:.2g} of the weights per step; a tuned step is ~1e-3)"
    fixes = (
        learning_rate_fix(
            run.genome, hps, 10.0, "lr_up", "a step far too small leaves the loss where it started" + measured, 0
        ),
        learning_rate_fix(
            run.genome, hps, 0.1, "lr_down",
            "a step far too large can drive the net to a constant prediction from the first updates: the loss "
            "stays at the chance level without blowing up" + measured,
            1,
        ),
    )  # fmt: skip
    if ratio is not None and ratio < SMALL_STEP:
        fixes = fixes[:1]
    elif ratio is not None and ratio > LARGE_STEP:
        fixes = fixes[1:]
    return [f for f in fixes if f is not None]
