"""Marked sections of a results file: a benchmark rewrites its own table and leaves the rest byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", re.S)


def replace_marked(text: str, marker: str, body: str) -> str:
    """``text`` with the block between ``<!-- MARKER:begin -->`` and ``<!-- MARKER:end -->`` set to ``body``.

    The block is appended when ``text`` has none.

    Examples
    --------
    >>> t = replace_marked("# Results\\n", "scale", "old")
    >>> print(replace_marked(t, "scale", "new"))
    # Results
    <BLANKLINE>
    <!-- scale:begin -->
    new
    <!-- scale:end -->
    <BLANKLINE>
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    lo, hi = text.find(begin), text.find(end)
    if lo >= 0 and hi > lo:
        return text[:lo] + block + text[hi + len(end) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_marked(path: str | Path, marker: str, body: str) -> None:
    """Rewrite the ``marker`` block of the file at ``path`` (see :func:`replace_marked`)."""
    path = Path(path)
    path.write_text(replace_marked(path.read_text() if path.exists() else "", marker, body))


def with_kept_sections(text: str, previous: str) -> str:
    """``text`` (a results file written from scratch) with every marked block of ``previous`` it lacks appended.

    So a benchmark that rewrites the whole file keeps the tables other benchmarks wrote into it.

    Examples
    --------
    >>> old = "# Old\\n<!-- scale:begin -->\\nkeep\\n<!-- scale:end -->\\n"
    >>> with_kept_sections("# New\\n", old)
    '# New\\n\\n<!-- scale:begin -->\\nkeep\\n<!-- scale:end -->\\n'
    >>> with_kept_sections("# New\\n", "# Old\\n")
    '# New\\n'
    """
    for block in _BLOCK.finditer(previous):
        if f"<!-- {block.group(1)}:begin -->" not in text:
            text = text.rstrip("\n") + "\n\n" + block.group(0) + "\n"
    return text
