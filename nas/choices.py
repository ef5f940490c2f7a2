"""A genome's editable attributes as named discrete choices, and back.

The encoding both NNI paths share: the HPO tuners see it as a search space
(``{"fc1:width": {"_type": "choice", "_value": [128, 64, 256]}, ...}``), the
NAS model space as ``nni.choice`` labels. Labels are ``"<block>:<attribute>"``
plus one ``"depth"`` (NNI labels cannot contain "/"); each value list starts with the base genome's current
value, so the first value of every choice is the base genome itself. "No
activation" and "no normalization" are encoded as ``"none"`` (NNI's
LayerChoice needs non-empty candidate names).

Depth is a change of the block count: ``-k`` removes the last ``k`` hidden
blocks, ``+k`` appends ``k`` copies of the last one (same width, activation,
normalization, dropout). Decoding keeps every genome valid (a residual
connection whose widths no longer match is dropped) and within
``space.max_changes`` edits of the base: when a parameter set changes more,
a subset of its changes is kept, chosen pseudo-randomly but deterministically
from the parameters (so one parameter set always gives one genome).

Examples
--------
>>> from runwatch.nas.architecture import Block, Genome
>>> from runwatch.nas.space import SearchSpace
>>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"),))
>>> space = SearchSpace(dropouts=(0.0, 0.5), normalizations=("",), allow_residual=False, depth_changes=(1,))
>>> choices = search_choices(g, space)
>>> choices["fc1:width"], choices["fc1:activation"], choices["depth"]
([128, 64, 256], ['relu', 'gelu', 'tanh', 'silu'], [0, 1])
>>> genome_from_parameters(g, space, {"fc1:width": 64, "depth": 1}).key()
'64>linear64.relu>linear64.relu>10'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from runwatch.nas.architecture import Genome
from runwatch.nas.space import (
    ACTIVATION_KINDS,
    RESIDUAL_KINDS,
    SearchSpace,
    insert_copies,
    remove_blocks,
    width_choices,
)

__all__ = [
    "DEPTH_LABEL",
    "NONE",
    "all_genomes",
    "base_parameters",
    "choice_label",
    "genome_from_parameters",
    "limit_changes",
    "search_choices",
]

DEPTH_LABEL = "depth"
NONE = "none"


def choice_label(block_name: str, attribute: str) -> str:
    """The choice label of one block attribute ("fc1", "width" -> "fc1:width")."""
    return f"{block_name}:{attribute}"


def _current_first(current: Any, allowed: tuple | list) -> list:
    return [current] + [v for v in allowed if v != current]


def _encode(value: str) -> str:
    return value or NONE


def _decode(value: str) -> str:
    return "" if value == NONE else value


def search_choices(genome: Genome, space: SearchSpace) -> dict[str, list]:
    """Every editable attribute of ``genome`` as ``label -> values`` (current value first).

    Only attributes with at least two values are listed; widths that would
    make the genome invalid on their own (the input of an attention block) are
    left out, as are values a family's builder could not rebuild
    (:func:`runwatch.nas.families.keeps_structure`: a transformer's
    feed-forward output must keep the model width); residual connections
    widths break are dropped when decoding.
    """
    choices: dict[str, list] = {}
    # Residual connections that a width change breaks are dropped when decoding, so they do not restrict widths.
    probe = genome.with_blocks(dataclasses.replace(b, residual=False) for b in genome.blocks)
    for i, b in enumerate(genome.blocks):
        widths = [w for w in width_choices(b, space) if not probe.replace_block(i, width=w).validate()]
        candidates = {
            "width": _current_first(b.width, widths),
            "activation": _current_first(_encode(b.activation), [_encode(a) for a in space.activations])
            if b.kind in ACTIVATION_KINDS
            else [],
            "normalization": _current_first(_encode(b.normalization), [_encode(n) for n in space.normalizations]),
            "dropout": _current_first(b.dropout, space.dropouts),
            "residual": [b.residual, not b.residual] if b.residual or space.allow_residual else [],
        }
        if b.kind not in RESIDUAL_KINDS and not b.residual:
            candidates["residual"] = []
        for attribute, values in candidates.items():
            values = [
                v for v in values if _rebuildable(genome, genome.replace_block(i, **{attribute: _raw(attribute, v)}))
            ]
            if len(values) > 1:
                choices[choice_label(b.name, attribute)] = values
    depths = [0] + [
        d
        for d in sorted(space.depth_changes)
        if genome.depth + d >= 1
        and not _apply_depth(probe, d).validate()
        and _rebuildable(genome, _apply_depth(genome, d))
    ]
    if len(depths) > 1:
        choices[DEPTH_LABEL] = depths
    return choices


def _raw(attribute: str, value: Any) -> Any:
    return _decode(value) if attribute in ("activation", "normalization") else value


def _rebuildable(base: Genome, genome: Genome) -> bool:
    """Whether a family's builder can still rebuild ``genome`` (a transformer must keep whole encoder layers)."""
    from runwatch.nas.families import keeps_structure

    return keeps_structure(base, genome)


def base_parameters(genome: Genome, space: SearchSpace) -> dict[str, Any]:
    """The parameter set that decodes to ``genome`` itself (the first value of every choice)."""
    return {label: values[0] for label, values in search_choices(genome, space).items()}


def _apply_depth(genome: Genome, change: int) -> Genome:
    if change < 0:
        return remove_blocks(genome, genome.depth + change, -change)
    if change > 0:
        return insert_copies(genome, genome.depth - 1, change)
    return genome


def _weight(label: str, value: Any) -> int:
    return abs(int(value)) if label == DEPTH_LABEL else 1


def limit_changes(genome: Genome, space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with at most ``space.max_changes`` changes from the base (a depth change of k counts k).

    Which changes are kept depends on a hash of ``params``: deterministic, but
    not biased towards the first blocks.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(8, 2, tuple(Block(f"fc{i}", "linear", 8) for i in range(4)))
    >>> space = SearchSpace(max_changes=2)
    >>> limited = limit_changes(g, space, {f"fc{i}:width": 16 for i in range(4)})
    >>> sorted(limited.values()).count(16)
    2
    """
    base = base_parameters(genome, space)
    changed = [label for label, value in params.items() if label in base and value != base[label]]
    if sum(_weight(label, params[label]) for label in changed) <= space.max_changes:
        return dict(params)
    digest = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    order = sorted(changed, key=lambda label: hashlib.sha1(f"{digest}|{label}".encode()).hexdigest())
    limited = {**params, **{label: base[label] for label in changed}}
    budget = space.max_changes
    for label in order:
        if budget <= 0:
            break
        value = params[label]
        if label == DEPTH_LABEL:
            value = int(value)
            value = max(-budget, min(budget, value))
            budget -= abs(value)
        else:
            budget -= 1
        limited[label] = value
    return limited


def genome_from_parameters(genome: Genome, space: SearchSpace, params: dict[str, Any]) -> Genome:
    """The genome a parameter set (labels of :func:`search_choices`) describes; valid and within the space.

    Missing labels keep the base value. Unknown labels or values outside a
    choice raise ``ValueError``.
    """
    choices = search_choices(genome, space)
    canonical = {}
    for label, value in params.items():
        if label not in choices:
            raise ValueError(f"unknown parameter {label!r}; expected one of {sorted(choices)}")
        if value not in choices[label]:
            raise ValueError(f"{label}={value!r} is not one of {choices[label]}")
        canonical[label] = choices[label][choices[label].index(value)]  # plain Python values, not numpy scalars
    return _decode_parameters(genome, limit_changes(genome, space, canonical))


def _decode_parameters(genome: Genome, params: dict[str, Any]) -> Genome:
    """The genome of canonical, change-limited parameters (what :func:`genome_from_parameters` checked)."""
    blocks = []
    for b in genome.blocks:
        fields: dict[str, Any] = {}
        for attribute in ("width", "activation", "normalization", "dropout", "residual"):
            key = choice_label(b.name, attribute)
            if key in params:
                value = params[key]
                fields[attribute] = _decode(value) if attribute in ("activation", "normalization") else value
        blocks.append(dataclasses.replace(b, **fields))
    edited = _apply_depth(genome.with_blocks(blocks), int(params.get(DEPTH_LABEL, 0)))
    sizes = edited.in_sizes()
    fixed = [
        dataclasses.replace(b, residual=False) if b.residual and sizes[i] != b.width else b
        for i, b in enumerate(edited.blocks)
    ]
    result = edited.with_blocks(fixed)
    problems = result.validate()
    if problems:  # search_choices only offers values that keep genomes valid; this is a bug, not bad input
        raise RuntimeError(f"decoded an invalid genome from {params}: {problems}")
    return result


def all_genomes(genome: Genome, space: SearchSpace, limit: int) -> list[Genome]:
    """Every genome within ``space.max_changes`` edits of ``genome`` that :func:`search_choices` can encode, when
    there are at most ``limit`` parameter sets; ``[]`` when there are more (the search then samples the space).

    A small space (FCNet's two layers: 6 widths, 3 dropouts, 2 activations each, 1,296 architectures) is
    scored whole instead of sampled, so the best the surrogate knows of is always among the candidates.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
    >>> space = SearchSpace(activations=("relu", "tanh"), dropouts=(0.0, 0.5), normalizations=("",),
    ...                     allow_residual=False, depth_changes=())
    >>> len(all_genomes(g, space, limit=100)), all_genomes(g, space, limit=5)
    (11, [])
    """
    import itertools
    import math

    choices = search_choices(genome, space)
    labels = list(choices)
    if not labels or math.prod(len(choices[k]) for k in labels) > limit:
        return []
    out = []
    for values in itertools.product(*(choices[k] for k in labels)):
        params = dict(zip(labels, values, strict=True))
        changed = sum(_weight(k, v) for k, v in params.items() if v != choices[k][0])
        if changed == 0 or changed > space.max_changes:
            continue
        try:
            g = _decode_parameters(
                genome, params
            )  # the values are the choices' own, within max_changes: nothing to check
        except RuntimeError:
            continue
        out.append(g)
    return out
