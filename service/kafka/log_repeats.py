"""Repeated Kafka warnings and errors are logged once per window, then summarised.

With the broker gone, every client (kafka-python's producers and admin client,
librdkafka's consumer, runwatch's own retry loops) reports each failed attempt;
at their back-off that is several lines a second for as long as the outage
lasts. The first record of a kind is logged as it comes; alike ones that
follow within :data:`WINDOW_S` are counted instead, and the first one after
the window carries the count, e.g. ``... (repeated 120 times in the last 60 s)``.
Records are alike when their logger, level and message match once numbers
(ports, node ids, delays, addresses) are blanked.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict

#: Loggers whose repeats are held back: kafka-python's and runwatch's Kafka transport (with librdkafka's,
#: which the consumer creates later, so it is named here).
LOGGERS = ("kafka", "runwatch.kafka", "runwatch.kafka.librdkafka")
WINDOW_S = 60.0
_MAX_KINDS = 512
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


class RepeatFilter(logging.Filter):
    """Passes the first WARNING-or-worse record of each kind per ``window_s``; counts the others."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self.held_back = 0  # records not logged, in all
        # kind -> [window start, held, logger, level, latest message]
        self._kinds: OrderedDict[tuple, list] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        kind = (record.name, record.levelno, _NUMBERS.sub("#", message)[:300])
        now = time.monotonic()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.window_s:
                seen[1] += 1
                seen[4] = message  # the latest, for flush()
                self.held_back += 1
                return False
            self._kinds[kind] = [now, 0, record.name, record.levelno, message]
            self._kinds.move_to_end(kind)
            while len(self._kinds) > _MAX_KINDS:
                self._kinds.popitem(last=False)
        if seen is not None and seen[1]:
            record.msg = f"{message} {_repeated(seen[1], now - seen[0])}"
            record.args = None
        return True

    def flush(self) -> None:
        """Log the count of every kind held back since it was last logged (e.g. once the outage is over)."""
        now = time.monotonic()
        with self._lock:
            due = [(k, v) for k, v in self._kinds.items() if v[1]]
            for k, _ in due:
                del self._kinds[k]
        for _, (start, held, name, level, message) in due:
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                # Past the filter, which would count it as one more repeat.
                logger.callHandlers(
                    logger.makeRecord(
                        name, level, __file__, 0, f"{message} {_repeated(held, now - start)}",
                        None, None,
                    )
                )


def _repeated(n: int, seconds: float) -> str:
    return f"(repeated {n} time{'s' if n > 1 else ''} in the last {seconds:.{0 if seconds >= 10 else 1}f} s)"


REPEATS = RepeatFilter()


def install(repeats: RepeatFilter = REPEATS) -> None:
    """Attach ``repeats`` to the Kafka loggers that exist now (idempotent).

    On the loggers, not on handlers: it works whoever configures the handlers (the CLI,
    an application embedding the server, the tests), and touches no other logger.
    """
    names = [
        name
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and any(name == p or name.startswith(p + ".") for p in LOGGERS)
    ]
    for name in {*names, *LOGGERS}:
        logger = logging.getLogger(name)
        if repeats not in logger.filters:
            logger.addFilter(repeats)
