"""Edits a run's findings rule out, so no suggestion works against its own diagnosis.

Seeding (:mod:`runwatch.nas.seeding`) says where to look first; the guard says
where not to look at all. A surrogate fitted on a few dozen runs can predict a
small gain for widening a net that overfits; a practitioner would not try it,
and neither does the advisor:

=============================  ===================================================
finding                        ruled out
=============================  ===================================================
overfitting (finding or peers) any block wider, one block more (a stacked GRU/LSTM: one
                               layer more), less dropout
underfitting / ``plateau``     any block narrower, one block (stacked layer) fewer, more
                               dropout; one block
                               more as well while a block is a bottleneck (narrower than
                               :func:`~runwatch.nas.space.pyramid_width`): widen it first
``dead_units`` in a layer      that layer wider
``vanishing_gradient``         one block more; more dropout (it thins a signal that
                               already fails to reach the first layers, and cures
                               nothing of it)
=============================  ===================================================

Overfitting wins when a run shows both it and a plateau (a validation loss that
stopped improving is what overfitting looks like from the outside). The
findings are those the seeds are read from (:func:`~runwatch.nas.seeding.run_findings`):
in a run whose gradients vanish and that did not train, the plateau and the
underfitting are the vanishing gradient's doing and rule nothing out (removing
blocks is one of its fixes).
"""

from __future__ import annotations

from dataclasses import dataclass

from runwatch.nas.architecture import Genome
from runwatch.nas.evidence import PeerSummary
from runwatch.nas.history import RunObservation
from runwatch.nas.search import edit_directions
from runwatch.nas.seeding import run_findings
from runwatch.nas.space import pyramid_width

__all__ = ["EditGuard"]

ANY_LAYER = "*"


def _has_bottleneck(genome: Genome | None) -> bool:
    """An MLP with a linear block narrower than the pyramid width: more blocks would still pass through it."""
    if genome is None or genome.family != "mlp":
        return False
    target = pyramid_width(genome)
    return any(b.kind == "linear" and b.width < target for b in genome.blocks)


@dataclass(frozen=True)
class EditGuard:
    """Banned ``(layer, attribute, direction)`` triples; ``layer`` ``"*"`` matches every layer.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> from runwatch.nas.history import Diagnosis
    >>> g = Genome(64, 10, (Block("fc1", "linear", 256, "relu"), Block("fc2", "linear", 256, "relu")))
    >>> guard = EditGuard.for_run(RunObservation("r", g, diagnoses=[Diagnosis("overfitting", metric="val/loss")]))
    >>> guard.allows(g, g.replace_block(0, width=512)), guard.allows(g, g.replace_block(0, width=128))
    (False, True)
    """

    banned: frozenset[tuple[str, str, str]] = frozenset()

    @classmethod
    def for_run(cls, run: RunObservation, peers: PeerSummary | None = None) -> EditGuard:
        kinds = {f.kind for f in run_findings(run, peers)}
        banned: set[tuple[str, str, str]] = set()
        if "overfitting" in kinds:
            banned |= {
                (ANY_LAYER, "width", "up"),
                ("", "depth", "up"),
                (ANY_LAYER, "layers", "up"),
                (ANY_LAYER, "dropout", "down"),
            }
        elif kinds & {"underfitting", "plateau"}:
            banned |= {
                (ANY_LAYER, "width", "down"),
                ("", "depth", "down"),
                (ANY_LAYER, "layers", "down"),
                (ANY_LAYER, "dropout", "up"),
            }
            if _has_bottleneck(run.genome):
                banned.add(("", "depth", "up"))
        for d in run.diagnoses:
            if d.kind == "dead_units" and d.layer:
                banned.add((d.layer, "width", "up"))
            if d.kind == "vanishing_gradient":
                banned |= {("", "depth", "up"), (ANY_LAYER, "dropout", "up")}
        return cls(frozenset(banned))

    def allows(self, base: Genome, genome: Genome) -> bool:
        """Whether ``genome`` makes none of the banned edits to ``base``."""
        if not self.banned:
            return True
        for layer, attribute, way in edit_directions(base, genome):
            if (layer, attribute, way) in self.banned or (ANY_LAYER, attribute, way) in self.banned:
                return False
        return True
