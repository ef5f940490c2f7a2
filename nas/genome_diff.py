"""Human-readable differences between two genomes (see :meth:`Genome.diff`)."""

from __future__ import annotations

from runwatch.nas.architecture import Block, Change, Genome
from runwatch.nas.layer_costs import NORMALIZATION_NAMES, activation_name

__all__ = ["diff_genomes", "format_dropout"]

_UNITS = {"linear": "units", "conv": "channels", "rnn": "units", "attention": "dims"}


def format_dropout(p: float) -> str:
    """A dropout probability with at least one decimal ("0.0", "0.2", "0.25").

    Examples
    --------
    >>> format_dropout(0), format_dropout(0.2), format_dropout(0.25)
    ('0.0', '0.2', '0.25')
    """
    text = f"{p:g}"
    return text if "." in text or "e" in text else f"{text}.0"


def shown(name: str) -> str:
    """A module path as users read it: ``nn.Sequential`` indices become ``layer 0``.

    >>> shown("fc2"), shown("0"), shown("net.3")
    ('fc2', 'layer 0', 'net.3')
    """
    return f"layer {name}" if name.isdigit() else name


def _span(names: list[str]) -> str:
    if len(names) == 1:
        return shown(names[0])
    if all(n.isdigit() for n in names):
        return f"layers {names[0]}-{names[-1]}"
    return f"{names[0]}-{names[-1]}"


def _activation_text(before: str, after: str, names: list[str]) -> str:
    where = _span(names)
    if not before:
        return f"add {activation_name(after)} after {where}"
    if not after:
        return f"remove {activation_name(before)} from {where}"
    return f"{activation_name(before)} -> {activation_name(after)} in {where}"


def _norm_name(normalization: str) -> str:
    return NORMALIZATION_NAMES.get(normalization, normalization)


def _depth_change(old: Genome, new: Genome) -> Change | None:
    new_names = {b.name for b in new.blocks}
    old_names = {b.name for b in old.blocks}
    removed = [b.name for b in old.blocks if b.name not in new_names]
    added: list[str] = []
    for i, b in enumerate(new.blocks):
        if b.name in old_names:
            continue
        where = f"after {shown(new.blocks[i - 1].name)}" if i else "first"
        detail = f"{b.width} {_UNITS.get(b.kind, 'units')}"
        if b.activation:
            detail += f", {activation_name(b.activation)}"
        added.append(f"{shown(b.name)} ({detail}) {where}")
    if not removed and not added:
        return None
    parts = []
    if removed:
        parts.append(f"remove block{'s' if len(removed) > 1 else ''} {', '.join(map(shown, removed))}")
    if added:
        parts.append(f"add block{'s' if len(added) > 1 else ''} {'; '.join(added)}")
    before, after = str(old.depth), str(new.depth)
    return Change("", "depth", before, after, f"depth {before} -> {after} ({'; '.join(parts)})")


_GROUPED = ("width", "activation", "normalization", "dropout", "residual")


def _field_change(old: Block, new: Block, attribute: str) -> tuple[str, str, str] | None:
    """``(before, after, unit)`` of one attribute of a matched block, as strings; None when unchanged."""
    if attribute == "width":
        if old.width == new.width:
            return None
        return str(old.width), str(new.width), _UNITS.get(new.kind, "units")
    if attribute == "dropout":
        return None if old.dropout == new.dropout else (format_dropout(old.dropout), format_dropout(new.dropout), "")
    if attribute == "residual":
        if old.residual == new.residual:
            return None
        return str(old.residual).lower(), str(new.residual).lower(), ""
    before, after = getattr(old, attribute), getattr(new, attribute)
    return None if before == after else (before, after, "")


def _group_text(attribute: str, before: str, after: str, unit: str, names: list[str]) -> str:
    where = _span(names)
    if attribute == "width":
        return f"{where}: {before} -> {after} {unit}"
    if attribute == "activation":
        return _activation_text(before, after, names)
    if attribute == "normalization":
        if not before:
            return f"add {_norm_name(after)} after {where}"
        if not after:
            return f"remove {_norm_name(before)} after {where}"
        return f"{where}: {_norm_name(before)} -> {_norm_name(after)}"
    if attribute == "dropout":
        return f"{where}: dropout {before} -> {after}"
    verb = "add" if after == "true" else "remove"
    plural = "s" if len(names) > 1 else ""
    return f"{verb} residual connection{plural} around {where}"


def _groups(old_by_name: dict[str, Block], new: Genome, attribute: str) -> dict[str, Change]:
    """Changes of one attribute, adjacent matched blocks with the same change merged; keyed by the first block.

    ``Change.layer`` lists the merged blocks' names comma-separated.
    """
    groups: dict[str, Change] = {}
    run: list[str] = []
    run_change: tuple[str, str, str] | None = None

    def flush() -> None:
        if run_change is not None and run:
            before, after, unit = run_change
            text = _group_text(attribute, before, after, unit, run)
            groups[run[0]] = Change(",".join(run), attribute, before, after, text)

    for b in new.blocks:
        previous = old_by_name.get(b.name)
        change = _field_change(previous, b, attribute) if previous is not None else None
        if change != run_change:
            flush()
            run, run_change = [], change
        if change is not None:
            run.append(b.name)
    flush()
    return groups


def diff_genomes(old: Genome, new: Genome) -> list[Change]:
    """See :meth:`Genome.diff`."""
    changes: list[Change] = []
    depth = _depth_change(old, new)
    if depth is not None:
        changes.append(depth)
    old_by_name = {b.name: b for b in old.blocks}
    groups = {attribute: _groups(old_by_name, new, attribute) for attribute in _GROUPED}
    for b in new.blocks:
        changes.extend(groups[a][b.name] for a in _GROUPED if b.name in groups[a])
    return changes
