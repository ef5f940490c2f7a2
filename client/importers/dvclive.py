"""DVCLive's output folder: one tab-separated file per metric, read as one run.

DVCLive (DVC's logger: ``live.log_metric("train/loss", v); live.next_step()``) writes each metric to
``<dir>/plots/metrics/<name>.tsv``, where ``<name>`` may hold folders (``train/loss``, ``eval/acc``), with a
``step`` column and the metric's own column; releases before 2.0 wrote ``<dir>/scalars/<name>.tsv`` with a
``timestamp`` (milliseconds since the epoch) column first. ``<dir>`` is ``dvclive`` unless the script chose
another; ``metrics.json`` beside it holds the last values only and is not read.

The metric's name is the file's path below the metrics folder (``train/loss``, ``eval/loss``), mapped onto
runwatch's names as every reader does (``train/loss`` -> ``loss``, ``eval/loss`` -> ``val/loss``).

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp()) / "dvclive"
>>> (root / "plots" / "metrics" / "train").mkdir(parents=True)
>>> _ = (root / "plots" / "metrics" / "train" / "loss.tsv").write_text("step\\tloss\\n0\\t2.3\\n1\\t1.9\\n")
>>> looks_like(root), [(r.steps, r.metrics) for r in read(root)]
(True, [([0, 1], [{'loss': 2.3}, {'loss': 1.9}])])
"""

from __future__ import annotations

import csv
from pathlib import Path

from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
    RunBuilder,
    parse_float,
    parse_step,
)
from runwatch.client.importers.util import meaningful_name, open_text
from runwatch.client.log_lines import parse_time

__all__ = ["FORMAT", "METRIC_FOLDERS", "looks_like", "read", "root_of"]

FORMAT = "dvclive"
METRIC_FOLDERS = (("plots", "metrics"), ("scalars",))  # DVCLive >= 2.0, then before it
_NOT_VALUES = ("step", "timestamp")


def _metrics_folder(root: Path) -> Path | None:
    for parts in METRIC_FOLDERS:
        folder = root.joinpath(*parts)
        if folder.is_dir() and any(folder.rglob("*.tsv")):
            return folder
    return None


def looks_like(root: Path) -> bool:
    """Whether ``root`` is a DVCLive output folder (a metrics folder holding ``.tsv`` files)."""
    return root.is_dir() and _metrics_folder(root) is not None


def root_of(tsv: Path) -> Path | None:
    """The DVCLive folder a ``.tsv`` file belongs to (None: not below a metrics folder).

    >>> str(root_of(Path("run/dvclive/plots/metrics/train/loss.tsv"))), root_of(Path("data/table.tsv"))
    ('run/dvclive', None)
    """
    parts = tsv.parts
    for folder in METRIC_FOLDERS:
        n = len(folder)
        for i in range(len(parts) - n - 1, 0, -1):
            if parts[i : i + n] == folder:
                return Path(*parts[:i])
    return None


def read(root: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Every metric file of one DVCLive folder as one run.

    Raises :class:`ImportFormatError` when there is no metrics folder, or (strictly) on a file without a
    ``step`` column or a row that is not a step and a number.
    """
    root = Path(root)
    metrics = _metrics_folder(root)
    if metrics is None:
        raise ImportFormatError(root, "folder", "not a DVCLive folder: no plots/metrics/*.tsv or scalars/*.tsv")
    run = ImportedRun(FORMAT, root, key=str(root), name=meaningful_name(root))
    builder = RunBuilder(run)
    for tsv in sorted(metrics.rglob("*.tsv")):
        name = tsv.relative_to(metrics).with_suffix("").as_posix()
        try:
            _read_metric(tsv, name, builder, problems)
        except ImportFormatError as exc:
            problems.skip(exc, "the file was skipped")
    built = builder.build(canonical)
    if not built.steps:
        raise ImportFormatError(root, "folder", "no values in its metric files")
    return [built]


def _read_metric(tsv: Path, name: str, builder: RunBuilder, problems: Problems) -> None:
    with open_text(tsv) as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None:
            return
        if "step" not in header:
            raise ImportFormatError(tsv, "line 1", f"no step column in {header!r}")
        step_at = header.index("step")
        value_at = next((i for i, h in enumerate(header) if h not in _NOT_VALUES), None)
        if value_at is None:
            raise ImportFormatError(tsv, "line 1", f"no value column in {header!r}")
        time_at = header.index("timestamp") if "timestamp" in header else None
        read: list[tuple[int, float, float]] = []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"line {line}"
            if len(row) <= max(step_at, value_at):
                problems.skip(ImportFormatError(tsv, where, f"{len(row)} fields, the header has {len(header)}"),
                              "the row was skipped")
                continue
            try:
                step = parse_step(row[step_at], tsv, where)
                value = parse_float(row[value_at], tsv, where, header[value_at])
            except ImportFormatError as exc:
                problems.skip(exc, "the row was skipped")
                continue
            # DVCLive's timestamps are milliseconds, which parse_time reads as such
            wall = parse_time(row[time_at]) if time_at is not None and time_at < len(row) else None
            read.append((step, value, wall or 0.0))
    if len(read) > 1 and len({step for step, _, _ in read}) == 1:
        # live.log_metric() without live.next_step(): every row at one step; the rows' order is the run's
        builder.run.notes.append(f"{name}: every value at step {read[0][0]}: the rows' order used as steps")
        read = [(i, value, wall) for i, (_, value, wall) in enumerate(read)]
    for step, value, wall in read:
        builder.add(step, name, value, wall)
