"""PyTorch Lightning ``CSVLogger`` output: ``metrics.csv`` (wide; one column per metric, blanks where not logged).

Every row has a ``step`` column; other columns are metrics (``epoch``
included). ``hparams.yaml`` beside the file, when present, gives the
hyperparameters. Rows with the same step are merged. The table itself is read
by :mod:`runwatch.client.importers.wide_table`.

Lightning before 1.0 (its ``TestTubeLogger``) wrote no ``step``: each row carries ``epoch`` and a
``created_at`` time stamp. Such a file is read by its epoch (rows of one epoch merged), with
``created_at`` as the wall clock.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from runwatch.client.importers import wide_table
from runwatch.client.importers._yaml import load_flat
from runwatch.client.importers.base import STRICT, ImportedRun, Problems
from runwatch.client.importers.util import meaningful_name, open_text

__all__ = ["read"]

FORMAT = "lightning"


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read one ``metrics.csv`` as one run (malformed rows go to ``problems``)."""
    path = Path(path)
    run = ImportedRun(FORMAT, path, key=str(path), name=meaningful_name(path.parent), tags=["lightning"])
    hp = path.parent / "hparams.yaml"
    if hp.is_file():
        run.hyperparameters = load_flat(hp)
    try:
        pre_1_0 = _is_pre_1_0(_header(path))
    except (UnicodeDecodeError, csv.Error):
        pre_1_0 = False  # the table reader names what is wrong with the file
    return wide_table.read(path, canonical, problems, run=run, indexes=None if pre_1_0 else ("step",))


def _header(path: Path) -> set[str]:
    """The column names of the file's first line."""
    with open_text(path) as f:
        return {h.strip() for h in next(csv.reader(io.StringIO(f.readline())), [])}


def _is_pre_1_0(cols: set[str]) -> bool:
    return "step" not in cols and {"epoch", "created_at"} <= cols


def looks_like(path: Path) -> bool:
    """A CSV whose header has a ``step`` column (or, before Lightning 1.0, ``epoch`` and ``created_at``) but not
    the long format's ``metric``/``value``."""
    try:
        cols = _header(path)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return ("step" in cols or _is_pre_1_0(cols)) and not {"metric", "value"} <= cols
