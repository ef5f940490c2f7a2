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
        pre_1_0 = _is_pre_1_0(_header(path))
    except (UnicodeDecodeError, csv.Error):
        pre_1_0 = False  # the table reader names what is wrong with the file
    runs = wide_table.read(path, canonical, problems, run=run, indexes=None if pre_1_0 else ("step",))
    for r in runs:
        _drop_held_out_batch_values(r)
    return runs


def _drop_held_out_batch_values(run: ImportedRun) -> None:
    """Drop a held-out metric's per-batch values (``val_loss_step``) where its epoch value (``val_loss_epoch``) is
    logged too.

    ``self.log(..., on_step=True, on_epoch=True)`` in ``validation_step`` writes both. The epoch value is the
    held-out loss; the per-batch ones are single validation batches, and Lightning before 1.6 wrote them at a
    counter of validation batches of its own (0, 1, 2... across every validation), not at the training step:
    read as ``val/loss`` they put a batch of epoch 1 beside training step 253.

    >>> r = ImportedRun("lightning", Path("m.csv"), "k", "n", steps=[0, 49, 195], wall_times=[0.0] * 3,
    ...                 metrics=[{"val_loss_step": 2.6}, {"loss": 1.8}, {"val/loss": 1.57}],
    ...                 renamed={"val_loss_epoch": "val/loss", "train_loss_step": "loss"})
    >>> _drop_held_out_batch_values(r); r.steps, r.metrics
    ([49, 195], [{'loss': 1.8}, {'val/loss': 1.57}])
    """
    source = {v: k for k, v in run.renamed.items()}
    names = {n for m in run.metrics for n in m}
    logged = {source.get(n, n) for n in names}
    dropped = {
        n for n in names
        if (s := source.get(n, n)).endswith("_step") and f"{s[: -len('_step')]}_epoch" in logged
        and canonical_name(s).startswith(("val/", "test/"))
    }  # fmt: skip
    if not dropped:
        return
    kept = [
        (step, wt, {k: v for k, v in m.items() if k not in dropped})
        for step, wt, m in zip(run.steps, run.wall_times, run.metrics)
    ]
    kept = [row for row in kept if row[2]]
    run.steps, run.wall_times, run.metrics = [r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept]
    run.notes.append(
        f"left out {', '.join(sorted(source.get(n, n) for n in dropped))}: single validation batches, "
        "beside the epoch values that are the held-out metric"
    )


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
