"""Raw text lines as programs and log shippers write them, read into ``LogLine`` fields.

Shared by every way text comes in: ``runwatch pipe`` (a process's stdout and
stderr), ``run.capture_output()``, ``runwatch replay`` of ``.log`` files and
JSON Lines of log records, and the Kafka logs topic (Fluent Bit, Vector, kcat).

* :func:`guess_level`: the level a line states itself (``INFO``, ``[WARNING]``,
  ``E0412 12:00:00`` glog style, ``"level": "error"``), else a default.
* :func:`parse_time`: seconds since the epoch from a number (seconds, or
  milliseconds / microseconds / nanoseconds by magnitude) or an RFC 3339 /
  ``2024-05-01 12:00:01,234`` string.
* :func:`from_record`: a JSON log record (``{"time": .., "level": .., "text": ..}``,
  Docker's ``{"log": .., "stream": ..}``, Vector's ``{"message": .., "timestamp": ..}``)
  as :class:`LineFields`, or None when it names no text.
* :class:`LineSplitter`: bytes in, whole lines out, the way a terminal shows
  them (a carriage return rewrites the line: a progress bar becomes its last state).

Examples
--------
>>> guess_level("2024-05-01 12:00:01 WARNING torch.distributed: timeout") == runs_pb2.LOG_LEVEL_WARNING
True
>>> f = from_record({"time": "2024-05-01T12:00:00Z", "level": "error", "text": "CUDA out of memory"})
>>> (f.text, f.level == runs_pb2.LOG_LEVEL_ERROR, f.time)
('CUDA out of memory', True, 1714564800.0)
>>> s = LineSplitter(); s.feed(b"epoch 1\\r 50%\\r100%\\nloss=0.5"), s.close()
([b'100%'], [b'loss=0.5'])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from typing import Any

from runwatch.v1 import runs_pb2

__all__ = [
    "MAX_LINE_BYTES",
    "LineFields",
    "LineSplitter",
    "from_record",
    "guess_level",
    "level_number",
    "parse_time",
    "stream_level",
]

#: The server's limit on one line (``LogLine.text``); longer lines are cut (pipe) or refused (Kafka).
MAX_LINE_BYTES = 64 << 10

DEBUG = runs_pb2.LOG_LEVEL_DEBUG
INFO = runs_pb2.LOG_LEVEL_INFO
WARNING = runs_pb2.LOG_LEVEL_WARNING
ERROR = runs_pb2.LOG_LEVEL_ERROR
CRITICAL = runs_pb2.LOG_LEVEL_CRITICAL

_NAMES = {
    "debug": DEBUG, "trace": DEBUG, "verbose": DEBUG, "dbg": DEBUG,
    "info": INFO, "information": INFO, "notice": INFO, "inf": INFO,
    "warn": WARNING, "warning": WARNING, "wrn": WARNING,
    "error": ERROR, "err": ERROR, "severe": ERROR,
    "critical": CRITICAL, "crit": CRITICAL, "fatal": CRITICAL, "emerg": CRITICAL, "emergency": CRITICAL,
    "alert": CRITICAL, "panic": CRITICAL,
}  # fmt: skip
# A level word near the start of a line, upper case as loggers print it (lower-case "error" is prose),
# or a JSON level field; one search for both (most lines have neither).
_LEVEL_WORD = re.compile(
    r'\b(DEBUG|INFO|WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b|"(?i:level|severity|levelname)"\s*:\s*"(\w+)"'
)
# glog / absl: "E0412 12:00:00.123456  1234 file.cc:12] message"
_GLOG = re.compile(r"^([DIWEF])\d{4} \d\d:\d\d:\d\d")
_GLOG_LEVELS = {"D": DEBUG, "I": INFO, "W": WARNING, "E": ERROR, "F": CRITICAL}
# Python's own error output: a traceback's header and its closing "SomeError: message" line.
_PY_ERROR = re.compile(r"^(?:Traceback \(most recent call last\)|[A-Za-z_][\w.]*(?:Error|Exception):)")
_LEVEL_SPAN = 120  # a level word further into the line is part of the message


def level_number(value: Any) -> int | None:
    """``LogLevel`` number of a level name (``"WARN"``, ``"err"``), a syslog severity
    (``"3"``), a stdlib ``logging`` number (``"40"``), or None when it is none of these.

    >>> level_number("Warning") == level_number("30") == runs_pb2.LOG_LEVEL_WARNING
    True
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = int(value)
    else:
        text = str(value).strip().lower()
        found = _NAMES.get(text)
        if found is not None:
            return found
        if not text.isdigit():
            return None
        number = int(text)
    if number >= 10:  # stdlib logging: DEBUG=10 ... CRITICAL=50
        return min(max(number // 10, 1), 5)
    # syslog severities: 0 emerg .. 7 debug
    return {0: CRITICAL, 1: CRITICAL, 2: CRITICAL, 3: ERROR, 4: WARNING, 5: INFO, 6: INFO, 7: DEBUG}.get(number)


def guess_level(text: str, default: int = runs_pb2.LOG_LEVEL_UNSPECIFIED) -> int:
    """The level ``text`` states itself (a level word near its start, glog's letter, a Python
    traceback or exception line: ERROR), else ``default``.

    >>> guess_level("torch.OutOfMemoryError: CUDA out of memory.") == runs_pb2.LOG_LEVEL_ERROR
    True
    >>> guess_level("E0412 10:11:12.000 12 nccl.cc:1] timeout") == runs_pb2.LOG_LEVEL_ERROR
    True
    >>> guess_level("the error rate fell", runs_pb2.LOG_LEVEL_INFO) == runs_pb2.LOG_LEVEL_INFO
    True
    """
    head = text[:_LEVEL_SPAN]
    m = _LEVEL_WORD.search(head)
    if m:
        return _NAMES.get((m.group(1) or m.group(2)).lower(), default)
    m = _GLOG.match(head)
    if m:
        return _GLOG_LEVELS[m.group(1)]
    if _PY_ERROR.match(head):
        return ERROR
    return default


def stream_level(text: str, stream: str) -> int:
    """Level of a line written to ``stream`` (``"stdout"`` or ``"stderr"``) that may state its own.

    A line's own level word wins; otherwise stdout is INFO and stderr WARNING
    (Python's warnings, tracebacks and default logging handler write there; as
    log collectors such as Docker's mark it, the stream itself is a signal).
    """
    return guess_level(text, WARNING if stream == "stderr" else INFO)


_ISO = re.compile(r"^\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\s*(Z|[+-]\d\d:?\d\d|UTC)?\]?")


def _iso(text: str) -> tuple[float, int] | None:
    """(seconds since the epoch, characters used) of an RFC 3339-like time at the start of ``text``."""
    m = _ISO.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or ""
    zone = m.group(8)
    try:
        if zone in ("Z", "UTC"):
            tz = UTC
        elif zone:
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            from datetime import timedelta

            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        else:
            tz = None  # naive: the writer's local time, as Python's logging prints it
        dt = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        return None
    seconds = dt.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    return seconds, m.end()


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from a number or a date-time string; None when it is neither.

    Numbers above 1e11 are taken as milliseconds, above 1e14 microseconds, above 1e17 nanoseconds.

    >>> parse_time(1714564800123), parse_time("2024-05-01T12:00:00.5+00:00")
    (1714564800.123, 1714564800.5)
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            found = _iso(text)
            return found[0] if found is not None else None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    for scale in (1e17, 1e14, 1e11):
        if value > scale:
            return float(value) / (scale / 1e8)
    return float(value)


def leading_time(text: str) -> float | None:
    """The time a line starts with (``2024-05-01 12:00:01,234 INFO ...``), or None.

    >>> leading_time("[2024-05-01T12:00:00Z] step 1") == 1714564800.0
    True
    """
    found = _iso(text)
    return found[0] if found is not None else None


@dataclass(slots=True)
class LineFields:
    """One log line: text, ``LogLevel`` number (0 unknown), time (0 unknown) and step (0 unknown)."""

    text: str
    level: int = runs_pb2.LOG_LEVEL_UNSPECIFIED
    time: float = 0.0
    step: int = 0


_TEXT_KEYS = ("text", "line", "message", "msg", "log")
_LEVEL_KEYS = ("level", "severity", "levelname", "lvl", "log_level")
_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp", "date", "asctime", "created")
_STEP_KEYS = ("step", "global_step")


def from_record(record: dict) -> LineFields | None:
    """A JSON log record as :class:`LineFields`; None when it has no text key.

    Text: ``text``, ``line``, ``message``, ``msg`` or ``log`` (a trailing newline is
    dropped). Level: ``level``, ``severity``, ``levelname``, ``lvl``; else the
    ``stream`` (``stderr``: WARNING) or the text's own level word. Time:
    ``time``, ``timestamp``, ``ts``, ``@timestamp``, ``date``. Step: ``step``.

    Raises
    ------
    ValueError
        A field that is there but unusable (``step: 'x' is not a non-negative integer``).
    """
    text = None
    for key in _TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            text = value
            break
    if text is None:
        return None
    text = text.removesuffix("\n").removesuffix("\r")
    level = None
    for key in _LEVEL_KEYS:
        if key in record and record[key] not in (None, ""):
            level = level_number(record[key])
            if level is None:
                raise ValueError(f"{key}: unknown level {record[key]!r}; use debug, info, warning, error or critical")
            break
    if level is None:
        stream = record.get("stream")
        level = stream_level(text, stream) if isinstance(stream, str) else guess_level(text)
    when = 0.0
    for key in _TIME_KEYS:
        if key in record and record[key] not in (None, ""):
            found = parse_time(record[key])
            if found is None:
                raise ValueError(f"{key}: {record[key]!r} is not a time (seconds since the epoch or RFC 3339)")
            when = found
            break
    step = 0
    for key in _STEP_KEYS:
        if key in record and record[key] not in (None, ""):
            step = parse_step(record[key], key)
            break
    return LineFields(text, level, when, step)


def parse_step(value: Any, name: str = "step") -> int:
    """A non-negative integer step from an int, an integral float or a string; ValueError naming ``name``."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or number != int(number) or number >= 2**63:
        raise ValueError(f"{name}: {value!r} is not a non-negative integer")
    return int(number)


class LineSplitter:
    """Whole lines out of a byte stream, as a terminal would show them.

    ``feed(chunk)`` returns the lines the chunk completed (without their
    newline); ``close()`` the unterminated rest. A carriage return starts the
    line over (a progress bar's redraws leave its last state), and a line
    longer than ``max_bytes`` is cut there, the rest starting a new line, so
    memory stays bounded whatever a program writes.

    A bar that never ends its line (Lightning's, reused across epochs; any
    ``leave=False`` bar) would say nothing until the program's next newline:
    every ``redraw_every`` redraws of an open line, its newest whole redraw is
    returned as a line of its own (0: never), so its values arrive while the
    run goes on.

    >>> s = LineSplitter(redraw_every=2)
    >>> s.feed(b"Epoch 0:  10%|#| 1/10\\rEpoch 0:  20%|#| 2/10\\rEpoch 0:  30%")
    [b'Epoch 0:  20%|#| 2/10']
    >>> s.feed(b"|#| 3/10\\n")
    [b'Epoch 0:  30%|#| 3/10']
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES, redraw_every: int = 50) -> None:
        self.max_bytes = max_bytes
        self.redraw_every = redraw_every
        self._rest = b""
        self._redraws = 0  # carriage returns in the open line since a redraw was last returned

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        out = [_last_redraw(line) for line in lines]
        if self.redraw_every:
            if lines:
                self._redraws = 0
            self._redraws += self._rest.count(b"\r") if lines else chunk.count(b"\r")
            if self._redraws >= self.redraw_every:
                self._redraws = 0
                *whole, partial = self._rest.split(b"\r")
                newest = next((part for part in reversed(whole) if part.strip()), b"")
                if newest:
                    out.append(newest)
                    self._rest = newest + b"\r" + partial  # the redraws before it are gone from the screen too
        while len(self._rest) > self.max_bytes:
            # a carriage return resets what the terminal shows: only what follows the last one counts
            self._rest = _last_redraw(self._rest, keep_empty=True)
            if len(self._rest) <= self.max_bytes:
                break
            out.append(self._rest[: self.max_bytes])
            self._rest = self._rest[self.max_bytes :]
        return out

    def close(self) -> list[bytes]:
        rest, self._rest = self._rest, b""
        line = _last_redraw(rest)
        return [line] if line else []


def _last_redraw(line: bytes, keep_empty: bool = False) -> bytes:
    if line.endswith(b"\r"):
        line = line[:-1]  # a CRLF line ending
    if b"\r" not in line:
        return line
    parts = line.split(b"\r")
    if keep_empty:
        return parts[-1]
    for part in reversed(parts):
        if part.strip():
            return part
    return b""
