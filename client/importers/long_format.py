"""Long-format logs: one value per row, as CSV or JSON Lines (either may be gzipped).

Columns / keys: ``step``, ``metric``, ``value`` (required); ``run_id``
(optional: without it the file is one run); ``wall_time`` (also accepted:
``timestamp``, ``time``; seconds since the epoch, or milliseconds when above
1e11). Other columns whose value is the same on every row of a run (e.g.
``source``) are kept in the run's environment. Example, from the modded-nanogpt
speedrun records::

    source,run_id,step,metric,value
    modded_nanogpt,records/track_1/001.txt,0,val_loss,10.82584
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
    RunBuilder,
    parse_float,
    parse_step,
)
from runwatch.client.importers.util import open_text, strip_gz

__all__ = ["kind_of", "looks_like_csv", "looks_like_jsonl", "read_csv", "read_jsonl"]

_TIME_KEYS = ("wall_time", "timestamp", "time")
_REQUIRED = ("step", "metric", "value")


class _Runs:
    def __init__(self, path: Path, fmt: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.fmt = fmt
        self.builders: dict[str, RunBuilder] = {}
        self.extras: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any], position: str) -> None:
        try:
            self._add(row, position)
        except ImportFormatError as exc:
            self.problems.skip(exc, "the row was skipped")

    def _add(self, row: dict[str, Any], position: str) -> None:
        missing = [k for k in _REQUIRED if row.get(k) in (None, "")]
        if missing:
            raise ImportFormatError(self.path, position, f"missing {', '.join(missing)}")
        step = parse_step(row["step"], self.path, position)
        value = parse_float(row["value"], self.path, position, "value")
        wall = 0.0
        for k in _TIME_KEYS:
            if row.get(k) not in (None, ""):
                wall = parse_float(row[k], self.path, position, k)
                if wall > 1e11:
                    wall /= 1000.0
                break
        run_key = str(row.get("run_id") or "")
        b = self.builders.get(run_key)
        if b is None:
            name = run_key or strip_gz(self.path.name)
            run = ImportedRun(self.fmt, self.path, key=run_key, name=name, original_id=run_key, tags=["long-format"])
            b = self.builders[run_key] = RunBuilder(run)
            self.extras[run_key] = {k: v for k, v in row.items() if k not in (*_REQUIRED, "run_id", *_TIME_KEYS)}
        else:
            extras = self.extras[run_key]
            for k in list(extras):
                if row.get(k) != extras[k]:
                    del extras[k]  # not constant across the run: not an environment fact
        metric = str(row["metric"])
        b.add(step, metric, value, wall)

    def build(self, canonical: bool) -> list[ImportedRun]:
        out = []
        for key, b in self.builders.items():
            run = b.build(canonical)
            run.environment.update({str(k): str(v) for k, v in self.extras[key].items() if v not in (None, "")})
            out.append(run)
        return out


def read_csv(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read a long-format CSV: one run per ``run_id`` (malformed rows go to ``problems``)."""
    path = Path(path)
    runs = _Runs(path, "csv", problems)
    line = 1
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ImportFormatError(path, "line 1", "empty file: expected a header step,metric,value[,run_id,wall_time]")
            header = [h.strip() for h in header]
            missing = [k for k in _REQUIRED if k not in header]
            if missing:
                raise ImportFormatError(path, "line 1", f"header {header[:8]} lacks {', '.join(missing)}")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    problems.skip(
                        ImportFormatError(path, f"line {line}", f"{len(row)} fields, the header has {len(header)}"),
                        "the row was skipped",
                    )
                    continue
                runs.add(dict(zip(header, (c.strip() for c in row))), f"line {line}")
    except csv.Error as exc:
        raise ImportFormatError(path, f"line {line + 1}", f"bad CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, f"after line {line}", f"not UTF-8 text: {exc.reason}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ImportFormatError(path, f"after line {line}", f"bad gzip data: {exc}") from None
    return runs.build(canonical)


def read_jsonl(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read long-format JSON Lines: one object per line, one run per ``run_id`` (bad lines go to ``problems``)."""
    path = Path(path)
    runs = _Runs(path, "jsonl", problems)
    line = 0
    try:
        with open_text(path) as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    problems.skip(
                        ImportFormatError(path, f"line {line} column {exc.colno}", f"invalid JSON: {exc.msg}"),
                        "the line was skipped",
                    )
                    continue
                if not isinstance(row, dict):
                    problems.skip(
                        ImportFormatError(path, f"line {line}", f"expected a JSON object, got {type(row).__name__}"),
                        "the line was skipped",
                    )
                    continue
                runs.add(row, f"line {line}")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, f"line {line + 1}", f"not UTF-8 text: {exc.reason}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ImportFormatError(path, f"after line {line}", f"bad gzip data: {exc}") from None
    if not runs.builders:
        raise ImportFormatError(path, "line 1", "no rows")
    return runs.build(canonical)


def _first_line(path: Path) -> str:
    """The first non-blank line of a (maybe gzipped) text file; "" when there is none or it cannot be read."""
    try:
        with open_text(path) as f:
            return next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError, EOFError, zlib.error):
        return ""


def looks_like_csv(path: Path) -> bool:
    try:
        header = next(csv.reader([_first_line(path)]), [])
    except csv.Error:
        return False
    return set(_REQUIRED) <= {h.strip() for h in header}


def looks_like_jsonl(path: Path) -> bool:
    """JSON Lines whose first object has the long format's ``step``, ``metric`` and ``value``."""
    try:
        first = json.loads(_first_line(path))
    except json.JSONDecodeError:
        return False
    return isinstance(first, dict) and set(_REQUIRED) <= set(first)


def kind_of(path: Path) -> str | None:
    """``"csv"`` or ``"jsonl"`` when ``path``'s first line is that of a long-format file, else None."""
    name = strip_gz(path.name)
    if name.endswith(".csv") and looks_like_csv(path):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")) and looks_like_jsonl(path):
        return "jsonl"
    return None
