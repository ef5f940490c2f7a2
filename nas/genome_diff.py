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


def _block_changes(old: Block, new: Block) -> list[Change]:
    """Width, normalization, dropout and residual changes of one matched block (activation is grouped apart)."""
    out = []
    name = new.name
    where = shown(name)
    if old.width != new.width:
        unit = _UNITS.get(new.kind, "units")
        out.append(Change(name, "width", str(old.width), str(new.width), f"{where}: {old.width} -> {new.width} {unit}"))
    if old.normalization != new.normalization:
        if not old.normalization:
            text = f"add {_norm_name(new.normalization)} after {where}"
        elif not new.normalization:
            text = f"remove {_norm_name(old.normalization)} after {where}"
        else:
            text = f"{where}: {_norm_name(old.normalization)} -> {_norm_name(new.normalization)}"
        out.append(Change(name, "normalization", old.normalization, new.normalization, text))
    if old.dropout != new.dropout:
        before, after = format_dropout(old.dropout), format_dropout(new.dropout)
        out.append(Change(name, "dropout", before, after, f"{where}: dropout {before} -> {after}"))
    if old.residual != new.residual:
        verb = "add" if new.residual else "remove"
        out.append(
            Change(
                name,
                "residual",
                str(old.residual).lower(),
                str(new.residual).lower(),
                f"{verb} residual connection around {where}",
            )
        )
    return out


def _activation_groups(old_by_name: dict[str, Block], new: Genome) -> dict[str, Change]:
    """Activation changes of adjacent matched blocks merged into one Change, keyed by the run's first block."""
    groups: dict[str, Change] = {}
    run: list[str] = []
    run_change: tuple[str, str] | None = None

    def flush() -> None:
        if run_change is not None and run:
            before, after = run_change
            groups[run[0]] = Change(",".join(run), "activation", before, after, _activation_text(before, after, run))

    for b in new.blocks:
        previous = old_by_name.get(b.name)
        change = (previous.activation, b.activation) if previous and previous.activation != b.activation else None
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
    activation_groups = _activation_groups(old_by_name, new)
    for b in new.blocks:
        previous = old_by_name.get(b.name)
        if previous is None:
            continue  # described by the depth change
        own = _block_changes(previous, b)
        width = [c for c in own if c.attribute == "width"]
        group = [activation_groups[b.name]] if b.name in activation_groups else []
        changes.extend(width + group + [c for c in own if c.attribute != "width"])
    return changes
