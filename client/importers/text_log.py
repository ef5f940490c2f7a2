"""Text logs: a training script's output saved to a file, or JSON Lines of log records.

A plain-text log (``train.log``, ``slurm-1234.out``, ``stdout.txt``;
Megatron/DeepSpeed iteration lines, epoch summaries, tracebacks) is one run
(one per training, when a script printed several trainings to one file, each
starting its steps again: :mod:`runwatch.models.text.trainings`) whose lines
are replayed as they are: the server's text pipeline reads the
metrics out of iteration and epoch lines and looks for failure signatures,
so nothing is parsed here beyond what a line says about itself (a leading
time stamp, a level word). A JSON Lines file of log records
(``{"time": .., "level": .., "text": ..}``, ``{"line": ..}``, Docker's
``{"log": .., "stream": ..}``, Vector's ``{"message": .., "timestamp": ..}``:
see :func:`runwatch.client.log_lines.from_record`) is read the same way.

A line that is not UTF-8, or a record without text, is a malformed entry
(skipped with a warning when read leniently); blank lines are left out and
lines over the server's 64 KiB limit are cut. A line without a time stamp
takes the one before it (the run's start time before any), and times never
go back, so the server, which lists lines by time, keeps them in file order. A ``.log`` that is a table
(a header with a step or epoch column, then rows of numbers separated by tabs or
commas, as some scripts and Keras' ``CSVLogger`` write them; see
:mod:`~runwatch.client.importers.wide_table`) is read as that table's metrics
instead. The run is named after the
file (``<folder>/<file stem>``), and a time stamp in the file name
(``2025-02-16 07:46:25.961894.log``) or on its first line is its start time.

Examples
--------
>>> run, = read(Path("logs/2025-02-16 07:46:25.961894.log"))  # doctest: +SKIP
>>> run.lines[0].text, run.start_time                           # doctest: +SKIP
('use_experimental: True', 1739691985.961894)
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from runwatch.client.importers import wide_table
from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
)
from runwatch.client.importers.util import meaningful_name, strip_gz
from runwatch.client.log_lines import (
    INFO,
    MAX_LINE_BYTES,
    LineFields,
    from_record,
    guess_level,
    leading_time,
)

__all__ = ["TEXT_SUFFIXES", "looks_like_records", "looks_like_text", "one_run_per_training", "read"]

FORMAT = "text"
#: File names read as text logs when a folder is searched, and whatever their content when named directly.
TEXT_SUFFIXES = (".log", ".txt", ".out", ".err")
_SNIFF_BYTES = 8192


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _head(path: Path) -> bytes:
    try:
        with _open_binary(path) as f:
            return f.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def looks_like_text(path: Path) -> bool:
    """Whether the file starts as UTF-8 text (no NUL bytes; a character cut at the sniff's end is fine)."""
    head = _head(path)
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and len(head) == _SNIFF_BYTES
    return True


def looks_like_records(path: Path) -> bool:
    """Whether a JSON Lines file holds log records (its first object has a text key and no ``metric``)."""
    for raw in _head(path).splitlines():
        if not raw.strip():
            continue
        try:
            first = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(first, dict) or "metric" in first:
            return False
        try:
            return from_record(first) is not None
        except ValueError:
            return True  # a record with text, one of whose fields is bad: the reader names it
    return False


def _start_time(stem: str) -> float | None:
    return leading_time(stem)


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read one text log or JSON Lines file of log records: one run per training it holds (bad lines go to ``problems``).

    ``canonical`` has no effect: metric names come from the server's reading of the lines.
    """
    path = Path(path)
    name = strip_gz(path.name)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    run = ImportedRun(FORMAT, path, key=str(path), name=meaningful_name(path.parent, leaf=stem, parts=1))
    records = name.endswith((".jsonl", ".ndjson"))
    sep = None if records or path.suffix == ".gz" else wide_table.sniff_text(_head(path).decode("utf-8", "replace"))
    if sep is not None:
        (table,) = wide_table.read(path, canonical, problems, run=run, sep=sep)
        metrics = sorted({k for m in table.metrics for k in m})
        table.notes.append(f"read as a table of metrics ({', '.join(metrics)[:80]} by step)")
        return [table]
    cut = 0
    line_no = 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                if b"\r" in raw:
                    raw = raw.rsplit(b"\r", 1)[-1] or raw  # a progress bar's redraws: its last state
                if not raw.strip():
                    continue
                where = f"line {line_no}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    reason = f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                    problems.skip(ImportFormatError(path, where, reason), "the line was skipped")
                    continue
                if records:
                    fields = _record(text, path, where, problems)
                    if fields is None:
                        continue
                else:
                    fields = LineFields(text, guess_level(text, INFO), leading_time(text) or 0.0)
                if len(fields.text.encode()) > MAX_LINE_BYTES:
                    fields.text = fields.text.encode()[:MAX_LINE_BYTES].decode("utf-8", "ignore")
                    cut += 1
                run.lines.append(fields)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        problems.skip(
            ImportFormatError(path, f"after line {line_no}", f"bad gzip data: {exc}"),
            "the rest of the file was skipped",
        )
    if cut:
        run.notes.append(f"{cut} line(s) longer than {MAX_LINE_BYTES} bytes were cut to that length")
    if not run.lines:
        run.notes.append("no text lines")
    run.start_time = _start_time(stem) or next((x.time for x in run.lines if x.time > 0), None)
    # A line without a clock takes the last time seen (the run's start before any): the server
    # lists a run's lines by time, so they stay in file order.
    last = run.start_time or 0.0
    for x in run.lines:
        x.time = last = max(x.time, last)
    return one_run_per_training(run)


def one_run_per_training(run: ImportedRun) -> list[ImportedRun]:
    """``run`` cut where its lines start another training (:func:`~runwatch.models.text.trainings.training_starts`).

    The first training keeps the run's name; the k-th is ``<name>-k``, a run of its own.
    """
    from runwatch.models.text.trainings import training_starts

    starts = training_starts([x.text for x in run.lines])
    if len(starts) == 1:
        return [run]
    bounds = [*starts, len(run.lines)]
    runs = []
    for k, (lo, hi) in enumerate(pairwise(bounds), start=1):
        part = replace(run, lines=run.lines[lo:hi], notes=list(run.notes))
        if k > 1:
            part.key, part.name = f"{run.key}#{k}", f"{run.name}-{k}"
            part.label = f"{run.label}-{k}" if run.label else ""
            part.start_time = part.lines[0].time or run.start_time
        part.notes.append(f"training {k} of {len(starts)} in the file (each starts its steps again)")
        runs.append(part)
    return runs


def _record(text: str, path: Path, where: str, problems: Problems) -> LineFields | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.skip(
            ImportFormatError(path, f"{where} column {exc.colno}", f"invalid JSON: {exc.msg}"), "the line was skipped"
        )
        return None
    if not isinstance(obj, dict):
        problems.skip(
            ImportFormatError(path, where, f"expected a JSON object, got {type(obj).__name__}"), "the line was skipped"
        )
        return None
    try:
        fields = from_record(obj)
    except ValueError as exc:
        problems.skip(ImportFormatError(path, where, str(exc)), "the line was skipped")
        return None
    if fields is None:
        reason = f"no text: expected one of text, line, message, msg, log (keys: {', '.join(list(obj)[:8])})"
        problems.skip(ImportFormatError(path, where, reason), "the line was skipped")
    return fields
