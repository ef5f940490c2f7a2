"""PyTorch Lightning ``CSVLogger`` output: ``metrics.csv`` (wide; one column per metric, blanks where not logged).

Every row has a ``step`` column; other columns are metrics (``epoch``
included). ``hparams.yaml`` beside the file, when present, gives the
hyperparameters. Rows with the same step are merged. The table itself is read
by :mod:`runwatch.client.importers.wide_table`.
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
    return wide_table.read(path, canonical, problems, run=run, indexes=("step",))


def looks_like(path: Path) -> bool:
    """A CSV whose header has a ``step`` column but not the long format's ``metric``/``value``."""
    try:
        with open_text(path) as f:
            header = next(csv.reader(io.StringIO(f.readline())), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    cols = {h.strip() for h in header}
    return "step" in cols and not {"metric", "value"} <= cols
