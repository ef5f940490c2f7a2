"""A run's own output as log lines: ``sys.stdout`` / ``sys.stderr`` teed, Python ``logging`` handled.

:meth:`Run.capture_output` puts a tee in front of ``sys.stdout`` and
``sys.stderr``: everything written still reaches the terminal (or file) as it
did, first and unchanged, and each complete line also becomes a log line of
the run (level: the line's own level word, else INFO for stdout and WARNING
for stderr; a progress bar redrawn with ``\\r`` counts once, in its last
state). :meth:`Run.capture_logging` adds a :class:`RunLogHandler` to a logger:
each record becomes log lines with its level (a traceback: one line each).
Captured lines, like every ``run.log_text`` without a step, carry the run's
current step (``run.current_step``: the latest step logged).

Capturing ``logging`` changes nothing the program sees: a record that met no
handler of the program's own still reaches Python's last-resort handler (its
WARNING and ERROR lines on stderr, as without the capture), and a
``logging.basicConfig(...)`` called after the capture started still installs
the program's console handler and level (it does nothing when the root logger
already has a handler, which the capture's would otherwise be).

Sending never blocks the program and never raises into it: lines join the
client's queue (dropped oldest-first with a count when the server is away
and the queue is full, see ``stats().dropped``); a failure to send is
swallowed, and runwatch's own log records are never captured (no loops).

Examples
--------
>>> with run.capture_output():                       # doctest: +SKIP
...     print("epoch 1 | loss 0.52")                 # on the terminal, and a log line of the run
>>> handle = run.capture_logging(level=logging.INFO)  # doctest: +SKIP
>>> logging.getLogger("train").warning("grad overflow, skipping step")  # doctest: +SKIP
>>> handle.stop()                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Self

from runwatch.client.log_lines import LineSplitter, stream_level

__all__ = ["LoggingCapture", "OutputCapture", "RunLogHandler"]

# Set while this thread sends a captured line: whatever that writes or logs is not captured again.
_sending = threading.local()


def _send(run: Any, text: str, level: int) -> None:
    if getattr(_sending, "active", False):
        return
    _sending.active = True
    try:
        run.log_text(text, level=level)
    except Exception:  # noqa: BLE001, S110 - a finished run or a closed client: capturing must never break the program
        pass
    finally:
        _sending.active = False


class _Tee:
    """A text stream that writes to ``original`` first, then hands complete lines to the run."""

    def __init__(self, original: Any, run: Any, name: str) -> None:
        self._original = original
        self._run = run
        self._name = name
        self._splitter = LineSplitter()
        self._lock = threading.Lock()
        self.active = True

    def write(self, text: str) -> int:
        written = self._original.write(text)
        if self.active and text and not getattr(_sending, "active", False):
            try:
                with self._lock:
                    lines = self._splitter.feed(text.encode("utf-8", "replace"))
                for raw in lines:
                    if raw.strip():
                        line = raw.decode("utf-8", "replace")
                        _send(self._run, line, stream_level(line, self._name))
            except Exception:  # noqa: BLE001, S110 - the program's write already happened; the copy is best effort
                pass
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def finish(self) -> None:
        """Send what is left of an unterminated last line, and stop copying."""
        with self._lock:
            rest = self._splitter.close()
        self.active = False
        for raw in rest:
            if raw.strip():
                line = raw.decode("utf-8", "replace")
                _send(self._run, line, stream_level(line, self._name))

    def __getattr__(self, name: str) -> Any:
        # encoding, fileno, isatty, buffer, ...: the stream the program had
        return getattr(self._original, name)


class OutputCapture:
    """Tees ``sys.stdout`` / ``sys.stderr`` into a run's log lines; ``start()``/``stop()`` or ``with``.

    Only writes through ``sys.stdout`` / ``sys.stderr`` are seen (``print``,
    logging's stream handlers created while capturing, tqdm); output written
    straight to file descriptors 1 and 2 (C extensions, child processes) is
    not: for that, run the program under ``runwatch pipe``.
    """

    def __init__(self, run: Any, stdout: bool = True, stderr: bool = True) -> None:
        self.run = run
        self.streams = [name for name, on in (("stdout", stdout), ("stderr", stderr)) if on]
        self._tees: dict[str, _Tee] = {}

    def start(self) -> Self:
        for name in self.streams:
            if name not in self._tees:
                tee = _Tee(getattr(sys, name), self.run, name)
                self._tees[name] = tee
                setattr(sys, name, tee)
        return self

    def stop(self) -> None:
        """Put the streams back (those still ours: a later replacement is left alone)."""
        for name, tee in list(self._tees.items()):
            tee.finish()
            if getattr(sys, name) is tee:
                setattr(sys, name, tee._original)
            del self._tees[name]

    @property
    def running(self) -> bool:
        return bool(self._tees)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RunLogHandler(logging.Handler):
    """A ``logging.Handler`` that sends each record to a run as log lines, with the record's level.

    A record of several lines (an exception's traceback) becomes one log line
    per line, so the server sees a traceback as it would in a log file.

    Examples
    --------
    >>> logging.getLogger().addHandler(RunLogHandler(run))  # doctest: +SKIP
    """

    def __init__(self, run: Any, level: int = logging.NOTSET, fmt: str | None = "%(name)s: %(message)s") -> None:
        super().__init__(logging.NOTSET)  # every record comes in, for the last-resort check; ``level`` gates sending
        self.capture_level = level
        self.run = run
        if fmt is not None:
            self.setFormatter(logging.Formatter(fmt))
        self.addFilter(lambda record: not record.name.startswith(("runwatch", "grpc")))

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:
        _as_without_capture(record)
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_sending, "active", False) or record.levelno < self.capture_level:
            return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - as logging does: a bad record never raises into the program
            self.handleError(record)
            return
        for line in text.splitlines():
            if line.strip():
                _send(self.run, line, record.levelno)


def _program_handles(name: str) -> bool:
    """Whether a record of logger ``name`` meets a handler that is not a capture on its way up (``propagate``
    followed as ``Logger.callHandlers`` does)."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(not isinstance(h, RunLogHandler) for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


def _as_without_capture(record: logging.LogRecord) -> None:
    """Give ``record`` to Python's last-resort handler when only captures handle it: without them, logging would."""
    last_resort = logging.lastResort
    if last_resort is not None and record.levelno >= last_resort.level and not _program_handles(record.name):
        last_resort.handle(record)


_basic_config = logging.basicConfig


def _basic_config_around_captures(**kwargs: Any) -> None:
    """``logging.basicConfig`` as if no capture were attached: it configures only a root logger with no handler."""
    root = logging.getLogger()
    captures = [h for h in root.handlers if isinstance(h, RunLogHandler)]
    for handler in captures:
        root.removeHandler(handler)
    try:
        _basic_config(**kwargs)
    finally:
        for handler in captures:
            root.addHandler(handler)


class LoggingCapture:
    """A :class:`RunLogHandler` attached to a logger; ``stop()`` (or ``with``) detaches it."""

    def __init__(self, run: Any, logger: logging.Logger | str | None = None, level: int = logging.INFO) -> None:
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        self.handler = RunLogHandler(run, level)

    def start(self) -> Self:
        logging.basicConfig = _basic_config_around_captures  # same behaviour without captures; see the module docs
        if self.handler not in self.logger.handlers:
            self.logger.addHandler(self.handler)
        return self

    def stop(self) -> None:
        self.logger.removeHandler(self.handler)

    @property
    def running(self) -> bool:
        return self.handler in self.logger.handlers

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
