"""Human-readable differences between two genomes (see :meth:`Genome.diff`).

Layers are named by the module path the user's model gave them (the
architecture record's layer names: ``encoder.fc1``), with the layer's type and
shape in the run's architecture: ``encoder.fc1 (Linear 64→128)``; runs of
adjacent layers read ``fc1-fc3`` (``layers 0-4 (3 Linear layers)`` for indices). Bare ``nn.Sequential``
indices are all a record has for an unnamed stack: they read ``layer 0
(Linear 64→32)``. Blocks the advisor adds have no user name: they are
described by their type, shape and place (``a new Linear block (64→64, ReLU)
after fc3 (Linear 64→64)``), never by the internal ``new.1``.
"""

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


def _label(genome: Genome | None, name: str) -> str:
    """``name (Type in→out)`` for a block of ``genome`` (just the name when it is not one of its blocks)."""
    if genome is None:
        return shown(name)
    for b, size in zip(genome.blocks, genome.in_sizes(), strict=False):
        if b.name == name:
            return f"{shown(name)} ({b.torch_type} {size}→{b.width})"
    return shown(name)


def _span(names: list[str], genome: Genome | None = None) -> str:
    """The user's names of one block or of a run of adjacent blocks, with their type and shape in ``genome``.

    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(64, 10, (Block("encoder.fc1", "linear", 128), Block("encoder.fc2", "linear", 64)))
    >>> _span(["encoder.fc1"], g), _span(["encoder.fc1", "encoder.fc2"], g)
    ('encoder.fc1 (Linear 64→128)', 'encoder.fc1-encoder.fc2')
    >>> _span(["0", "2"], Genome(8, 2, (Block("0", "linear", 4), Block("2", "linear", 4))))
    'layers 0-2 (2 Linear layers)'
    """
    if len(names) == 1:
        return _label(genome, names[0])
    if all(n.isdigit() for n in names):  # bare nn.Sequential indices: say what the layers are
        types = {b.torch_type for b in genome.blocks if b.name in names} if genome is not None else set()
        what = f" ({len(names)} {types.pop()} layers)" if len(types) == 1 else ""
        return f"layers {names[0]}-{names[-1]}{what}"
    return f"{names[0]}-{names[-1]}"


def _activation_text(before: str, after: str, names: list[str], genome: Genome | None = None) -> str:
    where = _span(names, genome)
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
    sizes = new.in_sizes()
    for i, b in enumerate(new.blocks):
        if b.name in old_names:
            continue
        prev = new.blocks[i - 1].name if i else ""
        where = "first" if not i else f"after {_label(old, prev) if prev in old_names else 'it'}"
        detail = f"{sizes[i]}→{b.width}"
        if b.activation:
            detail += f", {activation_name(b.activation)}"
        added.append(f"a new {b.torch_type} block ({detail}) {where}")
    if not removed and not added:
        return None
    parts = []
    if removed:
        parts.append(f"remove block{'s' if len(removed) > 1 else ''} {', '.join(_label(old, n) for n in removed)}")
    if added:
        parts.append(f"add {'; '.join(added)}")
    before, after = str(old.depth), str(new.depth)
    return Change("", "depth", before, after, f"depth {before} -> {after} ({'; '.join(parts)})")


_GROUPED = ("width", "activation", "normalization", "dropout", "residual", "layers", "heads")
# Capacity settings kept as a block's recorded attributes: stacked RNN layers, attention heads.
_SETTINGS = {"layers": ("num_layers", "layers"), "heads": ("num_heads", "heads")}


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
    if attribute in _SETTINGS:
        key, unit = _SETTINGS[attribute]
        if new.kind not in ("rnn", "attention"):
            return None
        before, after = old.attribute_map().get(key, "1"), new.attribute_map().get(key, "1")
        return None if before == after else (before, after, unit)
    before, after = getattr(old, attribute), getattr(new, attribute)
    return None if before == after else (before, after, "")


def _group_text(
    attribute: str, before: str, after: str, unit: str, names: list[str], genome: Genome | None = None
) -> str:
    where = _span(names, genome)
    if attribute == "width" or attribute in _SETTINGS:
        return f"{where}: {before} -> {after} {unit}"
    if attribute == "activation":
        return _activation_text(before, after, names, genome)
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


def _groups(old_by_name: dict[str, Block], new: Genome, attribute: str, old: Genome | None = None) -> dict[str, Change]:
    """Changes of one attribute, adjacent matched blocks with the same change merged; keyed by the first block.

    ``Change.layer`` lists the merged blocks' names comma-separated.
    """
    groups: dict[str, Change] = {}
    run: list[str] = []
    run_change: tuple[str, str, str] | None = None

    def flush() -> None:
        if run_change is not None and run:
            before, after, unit = run_change
            text = _group_text(attribute, before, after, unit, run, old)
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


def _model_width_change(old: Genome, new: Genome) -> Change | None:
    """A transformer's model width (``d_model``) change, as one edit over every block that carries it."""
    if old.family != "transformer" or new.family != "transformer" or old.input_size == new.input_size:
        return None
    old_names = {b.name for b in old.blocks}
    carried = [b.name for b in new.blocks if b.width == new.input_size and b.name in old_names]
    before, after = str(old.input_size), str(new.input_size)
    text = (f"model width (d_model) {before} -> {after} (the embedding and every encoder layer's attention and "
            "feed-forward output)")
    return Change(",".join(carried), "width", before, after, text)


def diff_genomes(old: Genome, new: Genome) -> list[Change]:
    """See :meth:`Genome.diff`."""
    changes: list[Change] = []
    depth = _depth_change(old, new)
    if depth is not None:
        changes.append(depth)
    model = _model_width_change(old, new)
    if model is not None:
        changes.append(model)
    old_by_name = {b.name: b for b in old.blocks}
    groups = {attribute: _groups(old_by_name, new, attribute, old) for attribute in _GROUPED}
    if model is not None:  # the blocks that only follow the model width are that one change
        carried = set(model.layer.split(","))
        groups["width"] = {k: c for k, c in groups["width"].items() if not set(c.layer.split(",")) <= carried}
    for b in new.blocks:
        changes.extend(groups[a][b.name] for a in _GROUPED if b.name in groups[a])
    return changes
