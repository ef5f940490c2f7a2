"""Jupyter notebooks: the training output saved in a notebook's cells, replayed as a text log.

Much of the training run on laptops and in Colab or Kaggle leaves no log file: what the loop printed (Keras's
``Epoch 1/10`` lines, a PyTorch loop's ``epoch 3 loss 0.41``, a tqdm bar's last state, the traceback of a
CUDA out-of-memory error) is kept in the notebook's outputs. A notebook is one run whose lines are its code
cells' printed output in cell order (one run per training, when several trainings print steps from the start
again): ``stream`` outputs (stdout and stderr), the plain-text form of results and displays, and errors (their name, value and traceback, terminal colours removed). A progress bar redrawn with
``\\r`` or backspaces keeps its last state, as a terminal shows it. The server reads metrics and failures out of
the lines as it does for any text log (:mod:`runwatch.client.importers.text_log`).

Examples
--------
>>> import json, tempfile
>>> nb = {"cells": [{"cell_type": "code", "source": "model.fit(...)", "outputs": [{"output_type": "stream",
...       "name": "stdout", "text": ["Epoch 1/2\\n", "10/10 [==>...] - loss: 0.9\\r10/10 [=====] - loss: 0.7\\n"]}]}],
...       "nbformat": 4, "nbformat_minor": 5, "metadata": {}}
>>> path = Path(tempfile.mkdtemp()) / "train.ipynb"
>>> _ = path.write_text(json.dumps(nb))
>>> [line.text for line in read(path)[0].lines]
['Epoch 1/2', '10/10 [=====] - loss: 0.7']
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from runwatch.client.importers.base import STRICT, ImportedRun, ImportFormatError, Problems
from runwatch.client.importers.text_log import one_run_per_training
from runwatch.client.importers.util import meaningful_name, open_text, strip_gz
from runwatch.client.log_lines import INFO, MAX_LINE_BYTES, LineFields, guess_level

__all__ = ["FORMAT", "looks_like", "read"]

FORMAT = "notebook"
MAX_BYTES = 256 * 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BACKSPACED = re.compile(r"[^\x08\n]\x08")


def looks_like(path: Path) -> bool:
    """A ``.ipynb`` file (by name; its JSON is checked when read)."""
    return strip_gz(path.name).endswith(".ipynb")


def _text(value: Any) -> str:
    """nbformat keeps multi-line text as one string or a list of lines."""
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _as_shown(raw: str) -> list[str]:
    """The lines a terminal would show for ``raw``: each line's last ``\\r`` segment, backspaces applied.

    >>> _as_shown("a\\rbc\\nxy\\x08z\\n\\n")
    ['bc', 'xz']
    """
    out = []
    for line in _ANSI.sub("", raw).split("\n"):
        if "\r" in line:
            line = next((seg for seg in reversed(line.split("\r")) if seg.strip()), "")
        while "\x08" in line:
            shorter = _BACKSPACED.sub("", line)
            if shorter == line:
                line = line.replace("\x08", "")
                break
            line = shorter
        if line.strip():
            out.append(line)
    return out


def _output_text(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return _text(output.get("text"))
    if kind in ("execute_result", "display_data"):
        data = output.get("data")
        return _text(data.get("text/plain")) if isinstance(data, dict) else ""
    if kind == "error":
        traceback = output.get("traceback")
        lines = [t for t in traceback if isinstance(t, str)] if isinstance(traceback, list) else []
        return "\n".join([*lines, f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]) + "\n"
    return ""


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """One notebook's printed output as one run of text lines (one per training it printed, as for a text log).

    Raises :class:`ImportFormatError` when the file is not a notebook (JSON with a ``cells`` list).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ImportFormatError(path, "file", f"larger than {MAX_BYTES // 2**20} MiB: not read as a notebook")
        with open_text(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, "file", f"not UTF-8 text: {exc.reason}") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list):
        raise ImportFormatError(path, "file", "not a Jupyter notebook: no cells list")
    stem = strip_gz(path.name).removesuffix(".ipynb")
    run = ImportedRun(FORMAT, path, key=str(path), name=meaningful_name(path.parent, leaf=stem, parts=1))
    cut = 0
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs")
        if not isinstance(outputs, list):
            problems.skip(ImportFormatError(path, f"cell {number}", "outputs is not a list"), "the cell was skipped")
            continue
        for output in outputs:
            for text in _as_shown(_output_text(output)) if isinstance(output, dict) else ():
                if len(text.encode()) > MAX_LINE_BYTES:
                    text = text.encode()[:MAX_LINE_BYTES].decode("utf-8", "ignore")
                    cut += 1
                run.lines.append(LineFields(text, guess_level(text, INFO), 0.0))
    if cut:
        run.notes.append(f"{cut} line(s) longer than {MAX_LINE_BYTES} bytes were cut to that length")
    run.notes.append(f"the printed output of {sum(isinstance(c, dict) and c.get('cell_type') == 'code' for c in cells)} "
                     "code cell(s), in cell order" if run.lines else "no printed output in its cells")
    return one_run_per_training(run)
