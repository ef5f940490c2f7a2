"""PyTorch Lightning ``CSVLogger`` output: ``metrics.csv`` (wide; one column per metric, blanks where not logged).

Every row has a ``step`` column; other columns are metrics (``epoch``
included). ``hparams.yaml`` beside the file, when present, gives the
hyperparameters. Rows with the same step are merged.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from runwatch.client.importers._yaml import load_flat
from runwatch.client.importers.base import (
    STRICT,
    ImportedRun,
    ImportFormatError,
    Problems,
    RunBuilder,
    parse_float,
    parse_step,
)
from runwatch.client.importers.util import open_text

__all__ = ["read"]

FORMAT = "lightning"


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read one ``metrics.csv`` as one run (malformed rows go to ``problems``)."""
    path = Path(path)
    name = f"{path.parent.parent.name}/{path.parent.name}" if path.parent.parent.name else path.parent.name
    run = ImportedRun(FORMAT, path, key=str(path), name=name, tags=["lightning"])
    hp = path.parent / "hparams.yaml"
    if hp.is_file():
        run.hyperparameters = load_flat(hp)
    builder = RunBuilder(run)
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFormatError(path, "line 1", "empty file: expected a header with a 'step' column") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFormatError(path, "line 1", f"not CSV text: {exc}") from None
        header = [h.strip() for h in header]
        if "step" not in header:
            raise ImportFormatError(path, "line 1", f"no 'step' column in the header {header[:8]}")
        step_col = header.index("step")
        metric_cols = [(i, h) for i, h in enumerate(header) if i != step_col and h]
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                try:
                    if len(row) != len(header):
                        raise ImportFormatError(path, f"line {line}", f"{len(row)} fields, the header has {len(header)}")
                    step = parse_step(row[step_col].strip(), path, f"line {line}")
                    values = {}
                    for i, name in metric_cols:
                        cell = row[i].strip()
                        if cell:
                            values[name] = parse_float(cell, path, f"line {line}", f"column {name!r}")
                except ImportFormatError as exc:
                    problems.skip(exc, "the row was skipped")
                    continue
                builder.add_row(step, values)
        except csv.Error as exc:
            raise ImportFormatError(path, f"line {reader.line_num}", f"bad CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ImportFormatError(path, f"after line {line}", f"not UTF-8 text: {exc.reason}") from None
    return [builder.build(canonical)]


def looks_like(path: Path) -> bool:
    """A CSV whose header has a ``step`` column but not the long format's ``metric``/``value``."""
    try:
        with open_text(path) as f:
            header = next(csv.reader(io.StringIO(f.readline())), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    cols = {h.strip() for h in header}
    return "step" in cols and not {"metric", "value"} <= cols
