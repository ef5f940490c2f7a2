"""The record shape every importer produces, and the error it raises on bad input."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwatch.client.convert import MAX_STEP
from runwatch.client.names import rename_map

__all__ = ["ImportFormatError", "ImportedRun", "Problems", "RunBuilder", "parse_float", "parse_step"]


class ImportFormatError(ValueError):
    """A file is not what its format says; ``str()`` names the file and the position.

    Attributes
    ----------
    path
        The offending file.
    position
        Where in it, e.g. ``"line 17"`` or ``"record 12 (byte 3456)"``; "" for the whole of it.
    reason
        What is wrong.

    Examples
    --------
    >>> str(ImportFormatError("logs/metrics.csv", "line 3", "column 'step' is not an integer: 'x'"))
    "logs/metrics.csv:line 3: column 'step' is not an integer: 'x'"
    """

    def __init__(self, path: str | Path, position: str, reason: str) -> None:
        self.path = str(path)
        self.position = position
        self.reason = reason
        super().__init__(f"{self.path}:{position}: {reason}" if position else f"{self.path}: {reason}")


class Problems:
    """Where the readers report a malformed entry (a row, a record, a line) and go on, or stop.

    Strict (the default, and ``runwatch replay --strict``): the first problem is
    raised as :class:`ImportFormatError`. Lenient: each is kept in
    :attr:`skipped` with what was left out, and the reader goes on with the
    next entry, so one odd line costs that line only.

    Examples
    --------
    >>> lenient = Problems(strict=False)
    >>> lenient.skip(ImportFormatError("m.csv", "line 7", "6 fields, the header has 5"))
    >>> [str(e) for e in lenient.skipped]
    ['m.csv:line 7: 6 fields, the header has 5; the entry was skipped']
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.skipped: list[ImportFormatError] = []

    def skip(self, error: ImportFormatError, what: str = "the entry was skipped") -> None:
        """Raise ``error`` (strict), or keep it, saying ``what`` was left out, and return (lenient)."""
        if self.strict:
            raise error
        self.skipped.append(ImportFormatError(error.path, error.position, f"{error.reason}; {what}"))


STRICT = Problems()


@dataclass
class ImportedRun:
    """One run read from logs on disk, ready to replay.

    ``steps``, ``wall_times`` and ``metrics`` are parallel lists, strictly
    increasing in step: every value logged at one step is merged into one
    entry (so the stream obeys the server's non-decreasing step rule);
    ``wall_times`` entries are 0.0 where the format has no clock.
    """

    format: str
    source: Path
    key: str
    name: str
    original_id: str = ""
    project: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    start_time: float | None = None
    end_time: float | None = None
    status: str | None = None
    steps: list[int] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: How to show the run (its path below the folder that was searched); ``name`` when unset.
    label: str = ""
    #: Text log lines to send (format ``text``): ``runwatch.client.log_lines.LineFields``, in file order.
    lines: list = field(default_factory=list)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def n_values(self) -> int:
        return sum(len(m) for m in self.metrics)

    @property
    def metric_names(self) -> list[str]:
        return sorted({k for m in self.metrics for k in m})

    def run_id(self, suffix: str = "") -> str:
        """A run id for the server: stable for the same source, so a second replay is recognised.

        ``replay-<format>-<name>-<hash of the source's absolute path and key>``,
        at most 128 characters of the allowed alphabet (the same whatever
        folder the replay started from).
        """
        digest = hashlib.sha1(f"{self.source.resolve()}\0{self.format}\0{self.key}".encode()).hexdigest()[:12]
        folded = unicodedata.normalize("NFKD", self.name).encode("ascii", "ignore").decode()  # é -> e, not _
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("_")[:60] or "run"
        rid = f"replay-{self.format}-{readable}-{digest}"
        if suffix:
            rid = f"{rid}-{suffix}"
        return rid[:128]

    def events(self) -> Iterator[tuple[int, float, dict[str, float]]]:
        return zip(self.steps, self.wall_times, self.metrics)


class RunBuilder:
    """Collects ``(step, wall_time, name, value)`` in any order; :meth:`build` merges and sorts them."""

    def __init__(self, run: ImportedRun) -> None:
        self.run = run
        self._by_step: dict[int, tuple[float, dict[str, float]]] = {}
        self._relogged = 0
        self._last_step: dict[str, int] = {}  # per metric: formats that give one metric at a time start over at each
        self._backwards: dict[str, int] = {}

    def add(self, step: int, name: str, value: float, wall_time: float = 0.0) -> None:
        last = self._last_step.get(name)
        if last is not None and step < last:
            self._backwards[name] = self._backwards.get(name, 0) + 1
        self._last_step[name] = step
        entry = self._by_step.get(step)
        if entry is None:
            self._by_step[step] = (wall_time, {name: value})
            return
        wt, values = entry
        old = values.get(name)
        if old is not None and old != value and not (math.isnan(old) and math.isnan(value)):
            self._relogged += 1
        values[name] = value  # the later value wins
        if wall_time > wt:
            self._by_step[step] = (wall_time, values)

    def add_row(self, step: int, values: dict[str, float], wall_time: float = 0.0) -> None:
        for name, value in values.items():
            self.add(step, name, value, wall_time)

    def build(self, canonical: bool = True) -> ImportedRun:
        run = self.run
        names = {k for _, values in self._by_step.values() for k in values}
        mapping = rename_map(names, canonical)
        run.renamed = {k: v for k, v in mapping.items() if k != v}
        for step in sorted(self._by_step):
            wt, values = self._by_step[step]
            run.steps.append(step)
            run.wall_times.append(wt if math.isfinite(wt) and wt > 0 else 0.0)
            run.metrics.append({mapping[k]: v for k, v in values.items()})
        if self._backwards:
            run.notes.append(
                f"steps went backwards {max(self._backwards.values())} time(s) (a resumed or restarted run): "
                "values were merged by step, the later one kept where a step was logged twice"
            )
        elif self._relogged:
            run.notes.append(f"{self._relogged} value(s) logged again at a step with a different value: the later one kept")
        if run.start_time is None:
            times = [t for t in run.wall_times if t > 0]
            run.start_time = min(times) if times else None
        return run


_INTEGER = re.compile(r"\s*\+?(\d+)(?:\.0*)?\s*")


def parse_step(text: Any, path: Path, position: str, column: str = "step") -> int:
    """An integer step (``"12"``, ``"12.0"``, ``12``) from 0 to 2**63 - 1, read exactly, else :class:`ImportFormatError`.

    A step written as digits is read as an integer, never through a float (which would turn 9007199254740993
    into ...992); a float beyond 2**53 could be any of several integers and is refused.

    >>> from pathlib import Path
    >>> parse_step("9007199254740993", Path("m.csv"), "line 3"), parse_step("12.0", Path("m.csv"), "line 4")
    (9007199254740993, 12)
    >>> try:
    ...     parse_step("9223372036854775808", Path("m.csv"), "line 5")
    ... except ImportFormatError as exc:
    ...     print(exc)
    m.csv:line 5: step must be at most 9223372036854775807 (a signed 64-bit integer), got '9223372036854775808'
    """
    if isinstance(text, bool):
        raise ImportFormatError(path, position, f"{column} is not an integer: {text!r}")
    if isinstance(text, int):
        step = text
    elif isinstance(text, str) and (m := _INTEGER.fullmatch(text)) is not None:
        step = int(m.group(1))
    else:
        try:
            f = float(text)
        except (TypeError, ValueError):
            raise ImportFormatError(path, position, f"{column} is not an integer: {text!r}") from None
        if not math.isfinite(f) or f != int(f) or f < 0:
            raise ImportFormatError(path, position, f"{column} must be a non-negative integer, got {text!r}")
        if f > 2**53:
            raise ImportFormatError(
                path, position, f"{column} {text!r} is a float too large to name one integer: write it as digits"
            )
        step = int(f)
    if step < 0:
        raise ImportFormatError(path, position, f"{column} must be a non-negative integer, got {text!r}")
    if step > MAX_STEP:
        raise ImportFormatError(
            path, position, f"{column} must be at most {MAX_STEP} (a signed 64-bit integer), got {text!r}"
        )
    return step


def parse_float(text: Any, path: Path, position: str, column: str) -> float:
    """A float (``nan``/``inf`` allowed: they are signal), else :class:`ImportFormatError`."""
    if isinstance(text, bool):
        raise ImportFormatError(path, position, f"{column} is not a number: {text!r}")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ImportFormatError(path, position, f"{column} is not a number: {text!r}") from None
