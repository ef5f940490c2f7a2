"""File helpers shared by the importers."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO


def open_text(path: Path) -> IO[str]:
    """Open a text file for reading, gunzipping ``*.gz``; strict UTF-8 (a BOM is skipped)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def strip_gz(name: str) -> str:
    return name.removesuffix(".gz")


# Folder names that say what a folder holds, not which run it is.
_GENERIC = frozenset(
    (
        "output", "outputs", "out", "result", "results", "checkpoint", "checkpoints", "ckpt", "ckpts",
        "log", "logs", "run", "runs", "tmp", "temp", "save", "saved", "saves", "saved_models", "artifacts",
        "model", "models", "final", "best", "last", "latest", "trainer_state", "tb_logs", "tensorboard",
        "train", "training", "lightning_logs", "work_dirs", "work_dir", "vis_data",
    )
)  # fmt: skip
_NUMBERED = re.compile(r"^(?:checkpoint|ckpt|step|global_step|epoch|iter|iteration)[-_]?\d+$", re.IGNORECASE)


def is_generic(part: str) -> bool:
    """Whether a folder name is one a tool gives every run (``output``, ``checkpoint-500``).

    >>> is_generic("results"), is_generic("checkpoint-1200"), is_generic("bert-base-lr3e-5")
    (True, True, False)
    """
    return not part or part.startswith(".") or part.lower() in _GENERIC or bool(_NUMBERED.match(part))


def _telling_folders(folder: Path) -> Iterator[str]:
    """The names of ``folder`` and the folders above it that tell a run apart, innermost first.

    A numbered folder holding the run (``checkpoint-500``) is one of them: it tells apart the
    checkpoints of one training folder; numbered folders further up are passed over, like the other
    generic ones.
    """
    path = folder.absolute()
    if _NUMBERED.match(path.name):
        yield path.name
    for p in [path, *path.parents]:
        if p.name and not is_generic(p.name):
            yield p.name


def meaningful_name(folder: Path, leaf: str = "", parts: int = 2) -> str:
    """A run's name from the folders that tell it apart: ``<repo-or-parent>/<run folder>``.

    Generic folders (``output``, ``results``, ``lightning_logs``: see :func:`is_generic`)
    are passed over; the name is the ``parts`` nearest others, outermost first (the run's own
    ``checkpoint-500`` counts: see :func:`_telling_folders`), then ``leaf`` (e.g. a log file's
    stem) when given. It depends on the absolute path only, so the same file gets the same name
    (and run id) from wherever a replay starts.

    >>> meaningful_name(Path("/data/owner+repo/lightning_logs/version_1"))
    'owner+repo/version_1'
    >>> meaningful_name(Path("/data/owner+repo/results/checkpoint-500"))
    'owner+repo/checkpoint-500'
    >>> meaningful_name(Path("/data/owner+repo/output"), leaf="train", parts=1)
    'owner+repo/train'
    """
    found = list(islice(_telling_folders(folder), parts))
    name = "/".join(reversed(found))
    if leaf:
        name = f"{name}/{leaf}" if name else leaf
    return name or folder.name or "run"
