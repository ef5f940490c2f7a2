"""Training histories saved as one JSON document: what a script writes when it keeps its curves in a dict.

The commonest shapes, all read as one run indexed by epoch:

- a Keras ``History.history`` dump, ``json.dump(history.history, f)``: ``{"loss": [...], "accuracy": [...],
  "val_loss": [...], "val_accuracy": [...], "learning_rate": [...]}``;
- a PyTorch script's own dict of lists: ``{"train_loss": [...], "val_loss": [...], "train_acc": [...]}``, often
  with an ``"epoch"``/``"epochs"`` list, and with scalars beside the lists (``"best_val_acc": 0.93``,
  ``"lr": 0.001``), which become hyperparameters;
- the same one level down: ``{"history": {...}}``, or per split ``{"train": {"loss": [...]}, "val": {"loss":
  [...]}}`` (read as ``train/loss``, ``val/loss``);
- a list of per-epoch objects: ``[{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}, ...]``, also one level down
  beside the run's config (``{"config": {...}, "history": [...]}``);
- pandas' ``DataFrame(history.history).to_json()``: each metric ``{"0": v0, "1": v1, ...}``;
- ``json.dump(str(history.history), f)``: one JSON string holding the Python dict (read as a literal, never run);
- Sacred's ``FileStorageObserver`` ``metrics.json``: each metric ``{"steps": [...], "values": [...],
  "timestamps": [...]}``, read at its own steps and times.

The step is the epoch list's value where there is one (an ``epoch`` key of the row objects, or an ``epoch``
list as long as the longest series), else the position from 0, as Keras's ``CSVLogger`` counts. A series
shorter than the longest (evaluated every few epochs; or per epoch beside a per-batch series) is spread over
the longest one's positions, each value at the end of its share (``n / m`` positions), with a note. JSON has
no NaN, so scripts write ``NaN``/``Infinity`` bare (Python's ``json`` accepts and writes them) or as strings;
both are read as numbers. ``null`` is a value not logged. Lists of lists (per-batch values per epoch) are
left out with a note.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from runwatch.client.importers.base import STRICT, ImportedRun, ImportFormatError, Problems, RunBuilder
from runwatch.client.importers.util import meaningful_name, open_text, strip_gz
from runwatch.client.log_lines import parse_time  # Sacred's naive ISO timestamps are UTC, as parse_time reads them

__all__ = ["FORMAT", "looks_like", "read", "series_of"]

FORMAT = "history"
MAX_BYTES = 64 * 1024 * 1024  # a training history is small; a larger .json is some other document
EPOCH_KEYS = ("epoch", "epochs", "Epoch", "step", "steps")
_MIN_POINTS = 2  # a list shorter than this is a value, not a series
_NUMBER_WORDS = {"nan": math.nan, "inf": math.inf, "infinity": math.inf, "-inf": -math.inf, "-infinity": -math.inf}


def _number(x: Any) -> float | None:
    """A JSON value as a number: numbers, strings such as ``"0.5"``, ``"NaN"``, and a list of one number (a
    script that appended each epoch's value as a list); None for anything else."""
    if isinstance(x, list) and len(x) == 1:
        x = x[0]
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        word = x.strip().lower()
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
        try:
            return float(word)
        except ValueError:
            return None
    return None


def _is_series(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= _MIN_POINTS
        and all(v is None or _number(v) is not None for v in value)
        and any(v is not None for v in value)
    )


def _indexed(value: Any) -> Any:
    """pandas' ``DataFrame.to_json()`` (columns orient) writes each column as ``{"0": v0, "1": v1, ...}``: a list."""
    if isinstance(value, dict) and value and all(isinstance(k, str) and k.isdigit() for k in value):
        top = max(int(k) for k in value)
        if top < 10 * len(value):  # the keys are the rows' positions: a gap is a row without this column
            at = {int(k): v for k, v in value.items()}
            return [at.get(i) for i in range(top + 1)]
        return [value[k] for k in sorted(value, key=int)]
    return value


def _flatten(doc: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Series and scalars of a dict, one level of nesting flattened (``{"train": {"loss": ...}}`` ->
    ``train/loss``; a single wrapping key such as ``history`` adds no prefix)."""
    out: dict[str, Any] = {}
    doc = {k: _indexed(v) for k, v in doc.items()}
    lists = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 2:
            wrapper = len(lists) == 1 and not any(_is_series(v) for v in doc.values())
            out.update(_flatten(value, prefix if wrapper else f"{name}/", depth + 1))
        else:
            out[name] = value
    return out


def series_of(doc: Any) -> tuple[dict[str, list], dict[str, Any], list[str]] | None:
    """``(series, scalars, left_out)`` of a dict-of-lists history, or None when ``doc`` is not one.

    Examples
    --------
    >>> s, hp, left = series_of({"history": {"loss": [0.9, 0.7, 0.6], "val_loss": [1.0, "NaN", 0.9]}, "lr": 0.01})
    >>> s, hp
    ({'loss': [0.9, 0.7, 0.6], 'val_loss': [1.0, 'NaN', 0.9]}, {'lr': 0.01})
    >>> series_of({"train": {"loss": [0.9, 0.7, 0.6]}, "val": {"loss": [1.0, 0.8]}})[0]
    {'train/loss': [0.9, 0.7, 0.6], 'val/loss': [1.0, 0.8]}
    >>> series_of({"name": "resnet", "layers": [64, 128]}) is None  # one list of two numbers: not a history
    True
    """
    if not isinstance(doc, dict):
        return None
    flat = _flatten(doc)
    series = {k: v for k, v in flat.items() if _is_series(v)}
    if not series or max(len(v) for v in series.values()) < 3:
        return None
    scalars = {k: v for k, v in flat.items() if k not in series and isinstance(v, (int, float, str, bool))}
    left_out = [k for k, v in flat.items() if k not in series and isinstance(v, list) and v]
    return series, scalars, left_out


def _stepped(doc: Any) -> dict[str, tuple[list, list, list]] | None:
    """Sacred's ``metrics.json``: ``{name: (steps, values, timestamps)}``, or None when ``doc`` is not one.

    >>> _stepped({"loss": {"steps": [0, 10], "values": [2.3, 1.9], "timestamps": ["2024-01-01T00:00:00.5"] * 2}})
    {'loss': ([0, 10], [2.3, 1.9], ['2024-01-01T00:00:00.5', '2024-01-01T00:00:00.5'])}
    """
    if not isinstance(doc, dict) or not doc:
        return None
    out = {}
    for name, value in doc.items():
        if not isinstance(value, dict) or not isinstance(value.get("steps"), list) or not isinstance(value.get("values"), list):
            return None
        if len(value["steps"]) != len(value["values"]):
            return None
        times = value.get("timestamps")
        out[name] = (value["steps"], value["values"], times if isinstance(times, list) and len(times) == len(value["values"]) else [])
    return out


def _rows_of(doc: Any) -> list[Mapping[str, Any]] | None:
    """The per-epoch objects of a list-of-objects history, or None."""
    if not isinstance(doc, list) or len(doc) < _MIN_POINTS or not all(isinstance(r, dict) for r in doc):
        return None
    numeric = [sum(_number(v) is not None for v in r.values()) for r in doc]
    return doc if min(numeric) >= 1 and max(numeric) >= 2 else None


def _document(doc: Any) -> Any:
    """``doc``, or what it holds when it is a string holding a Python dict or list: ``json.dump(str(history.history),
    f)`` writes ``"{'loss': [0.9, ...]}"``. Read with :func:`ast.literal_eval` (literals only, never code)."""
    if isinstance(doc, str) and doc.lstrip()[:1] in ("{", "["):
        try:
            return ast.literal_eval(doc.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return doc
    return doc


def _parse(path: Path) -> Any:
    """The document in ``path``; :class:`ImportFormatError` when it is not JSON or not UTF-8."""
    try:
        with open_text(path) as f:
            return _document(json.load(f))  # Python's json reads the bare NaN / Infinity that Python's json writes
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, "file", f"not UTF-8 text: {exc.reason}") from None


def _load(path: Path) -> Any:
    try:
        return None if path.stat().st_size > MAX_BYTES else _parse(path)
    except (OSError, EOFError, ImportFormatError):
        return None


def _inner_rows(doc: Any) -> tuple[list[Mapping[str, Any]], dict[str, Any]] | None:
    """A list of per-epoch objects one level down (``{"config": {...}, "history": [{...}, ...]}``), and the
    document's scalars."""
    if not isinstance(doc, dict):
        return None
    found = [v for v in doc.values() if _rows_of(v) is not None]
    if len(found) != 1:
        return None
    scalars = _flatten({k: v for k, v in doc.items() if not isinstance(v, list)})
    return found[0], {k: v for k, v in scalars.items() if isinstance(v, (int, float, str, bool))}


def looks_like(path: Path) -> bool:
    """A ``.json`` document that is a dict of numeric lists (one level of nesting allowed) or a list of per-epoch
    objects."""
    if not strip_gz(path.name).endswith(".json"):
        return False
    doc = _load(path)
    return (series_of(doc) is not None or _rows_of(doc) is not None or _inner_rows(doc) is not None
            or _stepped(doc) is not None)


_SPLITS = ("train", "training", "val", "valid", "validation", "eval", "test")


def _split_names(series: dict[str, list], stem: str) -> dict[str, list]:
    """Series named only by their split (``{"train": [...], "val": [...]}``) in a file whose name says what they
    are (``loss_history.json``, ``accuracy_history.json``): ``train_loss``, ``val_loss``.

    >>> list(_split_names({"train": [1, 0.8, 0.7], "val": [1.1, 0.9, 0.95]}, "loss_history"))
    ['train_loss', 'val_loss']
    >>> list(_split_names({"train": [1, 0.8, 0.7]}, "history"))  # the file does not say: kept
    ['train']
    """
    said = [what for what in ("loss", "acc") if what in stem.lower()]
    if len(said) != 1:
        return series
    return {f"{k}_{said[0]}" if k.lower() in _SPLITS else k: v for k, v in series.items()}


def _steps_from(values: list) -> list[int] | None:
    steps = [_number(v) for v in values]
    if any(s is None or not math.isfinite(s) or s < 0 or s != int(s) for s in steps):
        return None
    out = [int(s) for s in steps if s is not None]
    return out if all(b > a for a, b in pairwise(out)) else None


def _position(i: int, m: int, n: int) -> int:
    """Where the ``i``-th of ``m`` values of a shorter series lands on ``n`` positions: the end of its share."""
    return n - 1 if m == 1 else max(i, round((i + 1) * n / m) - 1)


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read one history document as one run.

    Raises :class:`ImportFormatError` when the file is not JSON or has no series.
    """
    path = Path(path)
    doc = _parse(path)
    stem = strip_gz(path.name).removesuffix(".json")
    run = ImportedRun(FORMAT, path, key=str(path), name=meaningful_name(path.parent, leaf=stem, parts=1))
    builder = RunBuilder(run)
    if (rows := _rows_of(doc)) is not None:
        return [_read_rows(rows, builder, canonical)]
    if (stepped := _stepped(doc)) is not None:
        return [_read_stepped(stepped, builder, canonical, path)]
    found = series_of(doc)
    if found is None and (inner := _inner_rows(doc)) is not None:
        run.hyperparameters = inner[1]
        return [_read_rows(inner[0], builder, canonical)]
    if found is None:
        raise ImportFormatError(path, "file", "no training history: expected lists of numbers by metric name, or a "
                                "list of per-epoch objects")  # fmt: skip
    series, scalars, left_out = found
    series = _split_names(series, stem)
    epoch_key = next((k for k in series if k.rsplit("/", 1)[-1] in EPOCH_KEYS), None)
    n = max(len(v) for k, v in series.items() if k != epoch_key)
    steps = _steps_from(series[epoch_key]) if epoch_key else None
    indexed_by = repr(epoch_key)
    if steps is None or len(steps) != n:
        steps, indexed_by = list(range(n)), "position (from 0)"
        if epoch_key:
            run.notes.append(f"{epoch_key!r} is not one increasing whole number per epoch: positions used as steps")
    spread: list[str] = []
    for name, values in series.items():
        if name == epoch_key:
            continue
        m = len(values)
        if m != n:
            spread.append(f"{name} ({m} of {n})")
        for i, value in enumerate(values):
            number = _number(value)
            if number is not None:
                builder.add(steps[_position(i, m, n) if m != n else i], name, number)
    run.hyperparameters = {k: v for k, v in scalars.items() if k.rsplit("/", 1)[-1] not in EPOCH_KEYS}
    built = builder.build(canonical)
    if spread:
        built.notes.append("shorter series spread over the longest, each value at the end of its share: " + ", ".join(spread))
    if left_out:
        built.notes.append("left out (not one number per epoch): " + ", ".join(left_out))
    built.notes.append(f"history indexed by {indexed_by}")
    return [built]


def _read_rows(rows: list[Mapping[str, Any]], builder: RunBuilder, canonical: bool) -> ImportedRun:
    keys = [k for r in rows for k in r]
    index = next((k for k in EPOCH_KEYS if k in keys), None)
    steps = _steps_from([r.get(index) for r in rows]) if index else None
    if steps is None:
        steps, index = list(range(len(rows))), None
    for i, row in enumerate(rows):
        values = {}
        for key, value in row.items():
            if key == index:
                continue
            number = _number(value)
            if number is not None:
                values[key] = number
        builder.add_row(steps[i], values)
    built = builder.build(canonical)
    built.notes.append(f"history of per-epoch objects, indexed by {repr(index) if index else 'position (from 0)'}")
    return built


def _read_stepped(metrics: dict[str, tuple[list, list, list]], builder: RunBuilder, canonical: bool, path: Path) -> ImportedRun:
    for name, (steps, values, times) in metrics.items():
        for i, (step, value) in enumerate(zip(steps, values, strict=True)):
            number, at = _number(value), _number(step)
            if number is None or at is None or not math.isfinite(at) or at < 0 or at != int(at):
                continue
            builder.add(int(at), name, number, (parse_time(times[i]) or 0.0) if times else 0.0)
    built = builder.build(canonical)
    if not built.steps:
        raise ImportFormatError(path, "file", "no training history: every metric's steps and values are empty")
    built.notes.append("Sacred metrics, each at its own steps")
    return built
