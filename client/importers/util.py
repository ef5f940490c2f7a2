"""File helpers shared by the importers."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


def open_text(path: Path) -> IO[str]:
    """Open a text file for reading, gunzipping ``*.gz``; strict UTF-8 (a BOM is skipped)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def strip_gz(name: str) -> str:
    return name.removesuffix(".gz")
