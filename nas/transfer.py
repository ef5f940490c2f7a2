"""Architectures of other runs as edits of this run's: the history's best models as candidates.

A practitioner whose model does poorly first looks at what worked for the
same data. :func:`peer_architectures` takes the history runs with the same
input and output sizes and model family, best target first, and rewrites each
architecture as an edit of the run's (:func:`as_edit_of`: blocks matched by
position, so the diff reads "fc1: 64 -> 256 units" rather than "replace the
model"); those the search space allows become candidates, scored by the
surrogate like every other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from runwatch.nas.architecture import Genome
from runwatch.nas.history import RunObservation
from runwatch.nas.space import SearchSpace, new_block_name, within

__all__ = ["PeerArchitecture", "as_edit_of", "peer_architectures"]


@dataclasses.dataclass(frozen=True)
class PeerArchitecture:
    """A history run's architecture rewritten as an edit of the run's, with what that run reached."""

    genome: Genome
    run_id: str
    value: float

    def evidence(self, metric: str, own: float | None = None) -> str:
        """The sentence a suggestion of exactly this architecture cites (``own``: the run's value, when known)."""
        where = "same input and output sizes"
        mine = f" (this run: {own:.4g})" if own is not None and math.isfinite(own) else ""
        return f"the architecture of run {self.run_id} ({where}), which reached {metric} {self.value:.4g}{mine}"


def as_edit_of(base: Genome, other: Genome) -> Genome | None:
    """``other``'s blocks under ``base``'s names (matched by position) in ``base``'s frame; None when incompatible.

    Compatible: same input and output sizes, family, output layer type and
    fixed parameters, and the matched blocks of the same kind and torch type
    reading plain inputs (``in_scale`` 1). Blocks ``other`` has beyond
    ``base``'s depth get generated names; ``base``'s extra blocks are dropped.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> base = Genome(64, 10, tuple(Block(f"fc{i}", "linear", 32, "sigmoid") for i in (1, 2, 3, 4)))
    >>> other = Genome(64, 10, (Block("l1", "linear", 64, "relu"), Block("l2", "linear", 64, "relu")))
    >>> [c.description for c in base.diff(as_edit_of(base, other))]  # doctest: +NORMALIZE_WHITESPACE
    ['depth 4 -> 2 (remove blocks fc3 (Linear 32→32), fc4 (Linear 32→32))', 'fc1-fc2: 32 -> 64 units',
     'Sigmoid -> ReLU in fc1-fc2']
    """
    frame = (base.input_size, base.output_size, base.family, base.output_type, base.fixed_params)
    if frame != (other.input_size, other.output_size, other.family, other.output_type, other.fixed_params):
        return None
    if any(b.in_scale != 1.0 for b in (*base.blocks, *other.blocks)):
        return None
    blocks = []
    for i, b in enumerate(other.blocks):
        if i < base.depth:
            mine = base.blocks[i]
            if (mine.kind, mine.torch_type) != (b.kind, b.torch_type):
                return None
            blocks.append(dataclasses.replace(b, name=mine.name))
        else:
            blocks.append(b)
    result = base.with_blocks(blocks[: base.depth])
    for b in blocks[base.depth :]:
        result = result.with_blocks([*result.blocks, dataclasses.replace(b, name=new_block_name(result))])
    return result


def peer_architectures(
    base: Genome,
    history: Sequence[RunObservation],
    target: str,
    space: SearchSpace,
    limit: int,
    direction: str = "minimize",
    accept: Callable[[Genome], bool] | None = None,
    better_than: float | None = None,
) -> list[PeerArchitecture]:
    """The ``limit`` best distinct history architectures (by their own ``target``) that are allowed edits of ``base``.

    With ``better_than`` (the run's own value), only runs that did strictly
    better are taken: a peer architecture is cited as support, and a run that
    did worse supports nothing.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = lambda w: Genome(8, 2, (Block("fc1", "linear", w, "relu"),))
    >>> hist = [RunObservation(f"r{w}", g(w), outcome={"val/loss": 1 / w}) for w in (8, 16, 32, 64, 128)]
    >>> [(p.run_id, p.genome.blocks[0].width) for p in peer_architectures(g(32), hist, "val/loss", SearchSpace(), 2)]
    [('r64', 64), ('r16', 16)]
    >>> [p.run_id for p in peer_architectures(g(32), hist, "val/loss", SearchSpace(), 2, better_than=1 / 32)]
    ['r64']
    """
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted(
        (o for o in history if o.genome is not None and math.isfinite(o.outcome.get(target, math.nan))),
        key=lambda o: (sign * o.outcome[target], o.run_id),
    )
    out: list[PeerArchitecture] = []
    seen = {base.key()}
    for o in ranked:
        assert o.genome is not None
        g = as_edit_of(base, o.genome)
        if g is None or g.key() in seen or g.validate() or not within(g, base, space):
            continue
        if better_than is not None and not sign * o.outcome[target] < sign * better_than:
            break  # ranked best first: every later run did no better either
        if accept is not None and not accept(g):
            continue
        seen.add(g.key())
        out.append(PeerArchitecture(g, o.run_id, float(o.outcome[target])))
        if len(out) == limit:
            break
    return out
