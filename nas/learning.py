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
divergence than as a loss that never moves. The other causes go into the
evidence as what to check.

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
>>> learning_evidence(flat, {"vanishing_gradient"})   # its architecture fix leads instead
''
"""

from __future__ import annotations

from runwatch.nas.history import RunObservation
from runwatch.nas.progress import loss_progress
from runwatch.nas.stability import StabilityFix, learning_rate_fix

__all__ = ["ARCHITECTURE_EXPLAINED", "CHECKS", "learning_evidence", "learning_fixes"]

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


def learning_fixes(run: RunObservation) -> list[StabilityFix]:
    """The learning-rate fixes of the module docstring, in its order (the run's genome, its hyperparameters changed)."""
    if run.genome is None:
        return []
    hps = dict(run.hyperparameters)
    fixes = (
        learning_rate_fix(run.genome, hps, 10.0, "lr_up", "a step far too small leaves the loss where it started", 0),
        learning_rate_fix(
            run.genome, hps, 0.1, "lr_down",
            "a step far too large can drive the net to a constant prediction from the first updates: the loss "
            "stays at the chance level without blowing up",
            1,
        ),
    )  # fmt: skip
    return [f for f in fixes if f is not None]
