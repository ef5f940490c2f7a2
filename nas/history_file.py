"""Past runs kept in a JSON file: a prior history for the advisor beside the service's own store.

The format is ``{"format": "runwatch.nas-history/1", "runs": [...]}`` with one
:func:`~runwatch.nas.observations.observation_to_dict` entry per run. The
benchmark corpus exports one (``python -m bench.export_history``) so a fresh
server's advisor starts from 300+ real runs instead of none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from runwatch.nas.history import RunObservation

__all__ = ["HISTORY_FORMAT", "HistoryFileError", "read_history", "write_history"]

HISTORY_FORMAT = "runwatch.nas-history/1"


class HistoryFileError(ValueError):
    """A history file that cannot be used; the message names the path, the entry and the reason."""


def write_history(path: Path, runs: Sequence[RunObservation], source: str = "") -> None:
    """Write ``runs`` to ``path`` (JSON; NaN as null).

    Examples
    --------
    >>> import tempfile
    >>> from runwatch.nas.architecture import Block, Genome
    >>> path = Path(tempfile.mkdtemp()) / "h.json"
    >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
    >>> write_history(path, [RunObservation("r1", g, outcome={"val/loss": 0.5})], source="doctest")
    >>> [(r.run_id, r.genome.params(), r.outcome) for r in read_history(path)]
    [('r1', 178, {'val/loss': 0.5})]
    """
    from runwatch.nas.observations import observation_to_dict

    doc = {"format": HISTORY_FORMAT, "source": source, "runs": [observation_to_dict(r) for r in runs]}
    path.write_text(json.dumps(doc, allow_nan=False, separators=(",", ":")))


def read_history(path: Path) -> list[RunObservation]:
    """The runs of a history file; raises :class:`HistoryFileError` naming what is wrong."""
    from runwatch.nas.observations import observation_from_dict

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise HistoryFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HistoryFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != HISTORY_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise HistoryFileError(f"{path}: format: expected {HISTORY_FORMAT!r}, got {found!r}")
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise HistoryFileError(f"{path}: runs: expected a list of runs")
    out = []
    for i, entry in enumerate(runs):
        try:
            out.append(observation_from_dict(entry))
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryFileError(f"{path}: runs[{i}]: {type(exc).__name__}: {exc}") from None
    return out
