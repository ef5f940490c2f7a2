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
from runwatch.models.metric_names import canonical_name

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
        header = _header(path)
    except (UnicodeDecodeError, csv.Error):
        header = set()  # the table reader names what is wrong with the file
    skip = held_out_batch_columns(header)
    runs = wide_table.read(
        path, canonical, problems, run=run, indexes=None if _is_pre_1_0(header) else ("step",), skip=skip
    )
    if skip:
        for r in runs:
            r.notes.append(
                f"left out {', '.join(sorted(skip))}: single validation batches, beside the epoch values that are "
                "the held-out metric"
            )
    return runs


def held_out_batch_columns(columns: set[str]) -> set[str]:
    """A held-out metric's per-batch columns (``val_loss_step``) whose epoch column (``val_loss_epoch``) is there too:
    left out.

    ``self.log(..., on_step=True, on_epoch=True)`` in ``validation_step`` writes both. The epoch value is the
    held-out loss; the per-batch ones are single validation batches, and Lightning before 1.6 wrote them at a
    counter of validation batches of its own (0, 1, 2... across every validation), not at the training step:
    read as ``val/loss`` they put a batch of epoch 1 beside training step 253.

    >>> sorted(held_out_batch_columns({"step", "train_loss_step", "train_loss_epoch", "val_loss_step", "val_loss_epoch"}))
    ['val_loss_step']
    """
    return {
        c for c in columns
        if c.endswith("_step") and f"{c[: -len('_step')]}_epoch" in columns and canonical_name(c).startswith(("val/", "test/"))
    }  # fmt: skip


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
