"""Wide tables: one row per step, one column per metric, as CSV, tab-separated text or JSON Lines.

What many tools write when they write a table:

- Lightning ``CSVLogger`` ``metrics.csv`` (``step``, blanks where a metric was not logged);
- Keras ``CSVLogger`` (``training.log`` or ``*.csv``: ``epoch,loss,val_loss,...``, one row per epoch);
- a W&B run history exported as CSV or JSON Lines (``run.history()``, the UI's CSV download,
  ``wandb-history.jsonl``: ``_step``, ``_timestamp``, ``_runtime``, then ``train/loss``, ``eval/loss``...);
- detectron2's ``metrics.json`` (JSON Lines despite its name: ``iteration``, ``total_loss``, ``loss_cls``,
  ``lr``, and ``bbox/AP`` on evaluation lines);
- OpenMMLab's JSON logs (MMCV 1.x ``<timestamp>.log.json``, MMEngine ``vis_data/scalars.json``), their rows
  first placed on one iteration axis by :mod:`runwatch.client.importers.openmmlab`;
- a script's own table (``iteration,loss,lr`` or ``global_step\\tloss``);
- TensorBoard's "Download CSV" of one scalar (``Wall time,Step,Value``): the metric is
  named after the file's tag (``run-version_0-tag-train_loss.csv`` -> ``train_loss``);
- a Ray Tune trial's ``progress.csv`` / ``result.json`` (``training_iteration``, the trial's metrics, Ray's own
  bookkeeping such as ``trial_id`` and ``time_total_s``, left out, and its ``config/<name>`` columns, read as the
  run's hyperparameters);
- Stable-Baselines3's ``progress.csv`` (``time/total_timesteps``, ``rollout/ep_rew_mean``, ``train/loss``...).

The step is the first of :data:`INDEX_COLUMNS` the header has; without any, a table
indexed by ``epoch`` (Keras) uses the epoch as its step. The wall clock is the first
of :data:`TIME_COLUMNS` (read by :func:`runwatch.client.log_lines.parse_time`: seconds since the
epoch, milliseconds when above 1e11, or a date-time string).
Every other column is a metric, except columns whose names start with ``_``
(W&B's own bookkeeping: ``_runtime``, ``_wandb``). Empty cells (and JSON
``null``, and the ``NA`` Keras's ``CSVLogger`` writes for a metric an epoch lacks) were not logged at that step. A cell that is not a number (a W&B media
entry, a string) is a malformed entry: strictly it stops the read; leniently the
cell is left out, the first one of each column is reported, and the run's notes
count the rest, so a text column never costs the numbers beside it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from runwatch.client.importers import openmmlab
from runwatch.client.importers._yaml import load_flat, scalar
from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
    RunBuilder,
    parse_float,
    parse_step,
)
from runwatch.client.importers.util import meaningful_name, open_text, strip_gz
from runwatch.client.log_lines import parse_time

__all__ = [
    "INDEX_COLUMNS",
    "TIME_COLUMNS",
    "index_column",
    "looks_like",
    "read",
    "read_rows",
    "sniff_text",
    "tensorboard_tag",
    "wandb_config",
    "wandb_run",
]

FORMAT = "wide"
INDEX_COLUMNS = (
    "step",
    "global_step",
    "_step",
    "trainer/global_step",
    "train/global_step",
    "iteration",
    "iter",
    "Step",
    "training_iteration",  # Ray Tune / Ray Train results
    "time/total_timesteps",  # Stable-Baselines3's progress.csv
)
EPOCH_COLUMN = "epoch"
# pandas' DataFrame.to_csv() writes its index first under an empty name (read back by pandas as "Unnamed: 0"):
# pd.DataFrame(history.history).to_csv(...) gives ",loss,accuracy,val_loss" and rows "0,0.69,...".
PANDAS_INDEX = ("", "Unnamed: 0")
POSITION = "_position"  # the index given to a history table written without one (to_csv(index=False))
TIME_COLUMNS = ("_timestamp", "wall_time", "Wall time", "timestamp", "created_at")  # created_at: Lightning < 1.0
_JSONL = (".jsonl", ".ndjson")
# Cells that say "no value here": Keras's CSVLogger writes NA for a metric missing from an epoch (validation
# every few epochs), R and pandas write NA / N/A, and None is Python's str(None). (NaN is a value: a diverged loss.)
NOT_LOGGED = frozenset({"NA", "N/A", "n/a", "None", "null", "-"})


def index_column(header: Iterable[str], indexes: Sequence[str] | None = None) -> str | None:
    """The column a table is indexed by: the first of :data:`INDEX_COLUMNS` present, else ``epoch``, else None.

    Examples
    --------
    >>> index_column(["_step", "_runtime", "train/loss"]), index_column(["epoch", "loss", "val_loss"])
    ('_step', 'epoch')
    >>> index_column(["epoch", "step", "loss"]), index_column(["loss", "acc"]) is None
    ('step', True)
    >>> index_column(["", "loss", "val_loss"]), index_column(["Unnamed: 0", "epoch", "loss"])  # pandas' index
    ('', 'epoch')
    """
    header = list(header)
    names = set(header)
    for name in indexes or INDEX_COLUMNS:
        if name in names:
            return name
    if indexes is not None:
        return None
    if EPOCH_COLUMN in names:
        return EPOCH_COLUMN
    return header[0] if header and header[0] in PANDAS_INDEX else None


def _no_index(path: Path, position: str, header: Sequence[str], indexes: Sequence[str] | None) -> ImportFormatError:
    others = [*(indexes or INDEX_COLUMNS)[1:], *([] if indexes else [EPOCH_COLUMN])]
    also = f"; also accepted: {', '.join(others)}" if others else ""
    return ImportFormatError(path, position, f"no 'step' column in the header {list(header)[:8]}{also}")


# Ray's own columns in a trial's results: where and when it ran, not what it measured
_RAY_BOOKKEEPING = frozenset({
    "done", "trial_id", "date", "pid", "hostname", "node_ip", "experiment_id", "experiment_tag", "time_total_s",
    "time_since_restore", "iterations_since_restore", "timesteps_since_restore", "timesteps_total", "episodes_total",
    "should_checkpoint", "checkpoint_dir_name", "warmup_time",
})
_RAY_CONFIG = "config/"


def _is_metric(name: str, index: str, clock: str | None) -> bool:
    if index == "training_iteration" and (name in _RAY_BOOKKEEPING or name.startswith(_RAY_CONFIG)):
        return False
    return bool(name) and name not in (index, clock) and not name.startswith("_")


class _Cells:
    """Parses one row's metric cells; leniently leaves out non-numeric cells, reporting each column once."""

    def __init__(self, path: Path, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.bad: dict[str, int] = {}

    def values(self, cells: Iterable[tuple[str, Any]], where: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cell in cells:
            if cell is None or (isinstance(cell, str) and (not cell.strip() or cell.strip() in NOT_LOGGED)):
                continue
            try:
                out[name] = parse_float(
                    cell.strip() if isinstance(cell, str) else cell, self.path, where, f"column {name!r}"
                )
            except ImportFormatError as exc:
                seen = self.bad.get(name, 0)
                self.bad[name] = seen + 1
                if not seen:
                    self.problems.skip(exc, "the cell was left out (and any later non-numeric cell of this column)")
        return out

    def note(self, run: ImportedRun) -> None:
        for name, n in sorted(self.bad.items()):
            run.notes.append(f"column {name!r}: {n} non-numeric cell(s) left out")


def read_rows(
    path: Path,
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    header: Sequence[str],
    run: ImportedRun,
    canonical: bool = True,
    problems: Problems = STRICT,
    indexes: Sequence[str] | None = None,
    skip: Collection[str] = (),
) -> ImportedRun:
    """Build ``run`` from ``(position, row)`` pairs, ``row`` mapping column names to cells (``skip``: columns not read).

    Raises :class:`ImportFormatError` when ``header`` has no index column.
    """
    index = index_column(header, indexes)
    if index is None:
        raise _no_index(path, "header", header, indexes)
    clock = next((c for c in TIME_COLUMNS if c in header), None)
    metrics = [h for h in header if _is_metric(h, index, clock) and h not in skip]
    builder = RunBuilder(run)
    cells = _Cells(path, problems)
    settings = [h for h in header if h.startswith(_RAY_CONFIG)] if index == "training_iteration" else []
    # Epochs that start again: Keras's CSVLogger(append=True) over a second fit() (a resumed training) writes its
    # epochs from the first one again below the first fit's. Laid end to end, not merged by epoch (which mixed
    # the two). A fit resumed at a later epoch (initial_epoch=k) rewrites those epochs: merged, the later kept.
    restarts, offset, last, first = 0, 0, -1, None
    for where, row in rows:
        if settings and not run.hyperparameters:  # the trial's config, the same on every row
            given = {h[len(_RAY_CONFIG) :]: row.get(h) for h in settings if row.get(h) not in (None, "")}
            run.hyperparameters = {k: scalar(v) if isinstance(v, str) else v for k, v in given.items()}  # CSV cells
        try:
            step = parse_step(row.get(index), path, where, index)
            if index == EPOCH_COLUMN:
                first = step if first is None else first
                if step == first and step + offset <= last:
                    restarts += 1
                    offset = last + 1 - step
                step += offset
                last = max(last, step)
            wall = 0.0
            if clock is not None and row.get(clock) not in (None, ""):
                wall = parse_time(row[clock])
                if wall is None:
                    raise ImportFormatError(path, where, f"column {clock!r} is not a time: {row[clock]!r}")
        except ImportFormatError as exc:
            problems.skip(exc, "the row was skipped")
            continue
        builder.add_row(step, cells.values(((m, row.get(m)) for m in metrics), where), wall)
    built = builder.build(canonical)
    cells.note(built)
    if index == EPOCH_COLUMN:
        built.notes.append("indexed by epoch (no step column): each epoch is one step")
    if restarts:
        built.notes.append(f"the epochs started again {restarts} time(s) (a training appended to the same file): "
                           "laid end to end")
    return built


def _csv_rows(path: Path, reader: Iterator[list[str]], header: list[str], problems: Problems):
    line = 1
    try:
        for row in reader:
            line = getattr(reader, "line_num", line + 1)
            if not row or all(not c.strip() for c in row):
                continue
            where = f"line {line}"
            if len(row) != len(header):
                problems.skip(
                    ImportFormatError(path, where, f"{len(row)} fields, the header has {len(header)}"),
                    "the row was skipped",
                )
                continue
            yield where, dict(zip(header, row))
    except csv.Error as exc:
        raise ImportFormatError(path, f"line {line}", f"bad CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, f"after line {line}", f"not UTF-8 text: {exc.reason}") from None


def _jsonl_rows(path: Path, lines: Iterable[str], problems: Problems):
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"line {n}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.skip(ImportFormatError(path, where, f"invalid JSON: {exc.msg}"), "the line was skipped")
            continue
        if not isinstance(row, dict):
            problems.skip(ImportFormatError(path, where, "not a JSON object"), "the line was skipped")
            continue
        yield where, row


def sniff_text(head: str) -> str | None:
    """The separator (``","`` or tab) of text whose first line is a table header with a step or epoch column
    and whose second line has as many fields and a number in that column; else None.

    Examples
    --------
    >>> sniff_text("epoch,accuracy,loss\\n0,0.51,0.93\\n"), sniff_text("global_step\\tloss\\n10\\t2.1\\n")
    (',', '\\t')
    >>> sniff_text("step 1 loss 0.3\\nstep 2 loss 0.2\\n") is None, sniff_text("epoch,note\\nfirst,x\\n") is None
    (True, True)
    """
    # Blank lines skipped: Keras's CSVLogger on Windows writes "\r\r\n" (csv's "\r\n" through a text-mode file).
    lines = [line for line in head.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    for sep in ("\t", ","):
        header = [h.strip() for h in next(csv.reader([lines[0]], delimiter=sep))]
        index = index_column(header)
        if len(header) < 2 or index is None:
            continue
        row = next(csv.reader([lines[1]], delimiter=sep), [])
        if len(row) != len(header):
            return None
        try:
            float(row[header.index(index)])
        except ValueError:
            return None
        return sep
    return None


WANDB_HISTORY = "wandb-history.jsonl"


def wandb_config(path: Path) -> dict[str, Any]:
    """Hyperparameters from a W&B run's ``config.yaml`` (``key: {desc, value}``; W&B's own ``_wandb`` left out).

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "config.yaml"
    >>> _ = f.write_text("wandb_version: 1\\n_wandb:\\n  desc: null\\n  value: {t: 1}\\nlr:\\n  desc: null\\n  value: 0.001\\n")
    >>> wandb_config(f)
    {'lr': 0.001}
    """
    out: dict[str, Any] = {}
    for key, entry in load_flat(path).items():
        if key.startswith("_") or key == "wandb_version":
            continue
        value = entry.get("value") if isinstance(entry, dict) and "value" in entry else entry
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, list):
            out[key] = value
    return out


def wandb_run(path: Path) -> ImportedRun:
    """The run a W&B ``wandb-history.jsonl`` belongs to: named by its run folder (``run-<date>-<id>``, above
    ``files/``), its id as the original id, and the hyperparameters of ``config.yaml`` beside it."""
    folder = path.parent.parent if path.parent.name == "files" else path.parent
    name = folder.name or "wandb-run"
    run = ImportedRun(FORMAT, path, key=str(path), name=name, original_id=name.rsplit("-", 1)[-1], tags=["wandb"])
    config = path.parent / "config.yaml"
    if config.is_file():
        run.hyperparameters = wandb_config(config)
    return run


def tensorboard_tag(path: Path) -> str:
    """The scalar's tag in the name TensorBoard gives a downloaded CSV (``run-<run>-tag-<tag>.csv``), else the stem.

    Examples
    --------
    >>> tensorboard_tag(Path("run-version_0-tag-train_loss.csv")), tensorboard_tag(Path("val_acc.csv"))
    ('train_loss', 'val_acc')
    """
    stem = strip_gz(path.name).rsplit(".", 1)[0]
    return stem.rsplit("-tag-", 1)[1] if "-tag-" in stem else stem


def _head(path: Path, size: int = 65536) -> str:
    try:
        with open_text(path) as f:
            return f.read(size)
    except (OSError, UnicodeDecodeError, EOFError, ValueError):
        return ""


def is_json_lines(path: Path, head: str | None = None) -> bool:
    """Whether ``path`` holds JSON Lines: named ``.jsonl``/``.ndjson``, or a ``.json`` file whose first line is
    a whole JSON object (detectron2's ``metrics.json`` is JSON Lines under that name; a JSON document spread
    over several lines is not).
    """
    name = strip_gz(path.name)
    if name.endswith(_JSONL):
        return True
    if not name.endswith(".json"):
        return False
    first = next((line for line in (_head(path) if head is None else head).splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def positional(path: Path, head: str | None = None) -> bool:
    """A history table written without any index (``to_csv(index=False)``): the file's name says it is a history
    (``training_history.csv``, ``loss_history.csv``), its header names two or more columns, none a number, and the
    next line is as many numbers. Its rows are read in order, from step 0.

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "training_history.csv"
    >>> _ = f.write_text("loss,accuracy,val_loss\\n0.69,0.51,0.66\\n0.52,0.70,0.58\\n")
    >>> positional(f), positional(f.with_name("predictions.csv"), "label,score\\n1,0.9\\n")
    (True, False)
    """
    if "history" not in strip_gz(path.name).lower():
        return False
    lines = [line for line in (_head(path) if head is None else head).splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    row = [c.strip() for c in next(csv.reader([lines[1]]))]
    return (
        len(header) >= 2
        and len(row) == len(header)
        and all(h and not _is_number(h) for h in header)
        and all(_is_number(c) for c in row)
    )


def looks_like(path: Path) -> bool:
    """A CSV / tab-separated table (see :func:`sniff_text`), or JSON Lines (:func:`is_json_lines`) whose first
    object has an index key and no long-format ``metric``/``value`` pair."""
    head = _head(path)
    if is_json_lines(path, head):
        first = next((line for line in head.splitlines() if line.strip()), "")
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return False
        if isinstance(obj, dict) and index_column(obj) is not None and not {"metric", "value"} <= set(obj):
            return True
        return openmmlab.shape(list(_jsonl_rows(path, head.splitlines()[:-1], Problems(strict=False)))) is not None
    return sniff_text(head) is not None or positional(path, head)


def read(
    path: Path,
    canonical: bool = True,
    problems: Problems = STRICT,
    run: ImportedRun | None = None,
    indexes: Sequence[str] | None = None,
    sep: str | None = None,
    skip: Collection[str] = (),
) -> list[ImportedRun]:
    """Read one wide table as one run (malformed rows and cells go to ``problems``).

    ``run`` carries what a caller already knows (a Lightning run's name and hyperparameters); by default the
    run is named after the file (``<folder>/<file stem>``). ``indexes`` narrows the accepted step columns
    (Lightning: ``("step",)``, and no epoch fallback). ``sep``: the separator when the caller has already
    sniffed it (:func:`sniff_text`), so the file's head is not read again. ``skip``: columns not read.
    """
    path = Path(path)
    if run is None and strip_gz(path.name) == WANDB_HISTORY:
        run = wandb_run(path)
    if run is None:
        name = strip_gz(path.name)
        stem = (name.rsplit(".", 1)[0] if "." in name else name).removesuffix(".log")  # MMCV's <time>.log.json
        # MMEngine's scalars.json sits in <config>/<time>/vis_data/: the two folders name the run.
        label = meaningful_name(path.parent, parts=2) if name == "scalars.json" else None
        run = ImportedRun(FORMAT, path, key=str(path), name=label or meaningful_name(path.parent, leaf=stem, parts=1))
    if is_json_lines(path):
        with open_text(path) as f:
            try:
                rows = list(_jsonl_rows(path, f, problems))
            except UnicodeDecodeError as exc:
                raise ImportFormatError(path, "file", f"not UTF-8 text: {exc.reason}") from None
        notes: list[str] = []
        if kind := openmmlab.shape(rows):
            placed = openmmlab.place(path, rows, kind, problems)
            rows, notes = placed.rows, placed.notes
            run.hyperparameters = {**placed.hyperparameters, **run.hyperparameters}
        header: list[str] = []
        for _, row in rows:
            header.extend(k for k in row if k not in header)
        built = read_rows(path, rows, header, run, canonical, problems, indexes, skip)
        built.notes[:0] = notes
        return [built]
    sep = sep or sniff_text(_head(path)) or ","
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ImportFormatError(path, "line 1", "empty file: expected a header with a 'step' column") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFormatError(path, "line 1", f"not CSV text: {exc}") from None
        index = index_column(header, indexes)
        by_position = index is None and indexes is None and positional(path)
        if index is None and not by_position:
            raise _no_index(path, "line 1", header, indexes)
        if sorted(header) == ["Step", "Value", "Wall time"]:
            header[header.index("Value")] = tensorboard_tag(path)
        rows = _csv_rows(path, reader, header, problems)
        if by_position:
            rows = ((where, {**row, POSITION: str(i)}) for i, (where, row) in enumerate(rows))
            built = read_rows(path, rows, [*header, POSITION], run, canonical, problems, (POSITION,), skip)
            built.notes.append("no step or epoch column (a history written without its index): rows in order, from 0")
            return [built]
        built = read_rows(path, rows, header, run, canonical, problems, indexes, skip)
        if index in PANDAS_INDEX:
            built.notes.append("indexed by pandas' index column (each row one epoch, from 0)")
        return [built]
