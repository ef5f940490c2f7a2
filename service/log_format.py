"""How ``runwatch serve`` writes its logs: readable text, or one JSON object per line (``--log-format json``).

A JSON line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger`` and ``message``, then every ``extra=`` field the call passed,
and ``exception`` (the formatted traceback) when there is one. Values JSON
cannot hold are written as their ``str()``.

Examples
--------
>>> import json, logging
>>> record = logging.LogRecord("runwatch.service", logging.WARNING, __file__, 1, "run %s stalled", ("r1",), None)
>>> record.run_id = "r1"
>>> doc = json.loads(JsonFormatter().format(record))
>>> doc["level"], doc["logger"], doc["message"], doc["run_id"]
('WARNING', 'runwatch.service', 'run r1 stalled', 'r1')
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: whatever else a record carries came from extra=.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Send every log record (and Python warnings) to stderr in ``fmt``, replacing earlier handlers.

    Examples
    --------
    >>> configure_logging("WARNING", "json")
    >>> isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    True
    >>> configure_logging("WARNING", "text")
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format: expected text or json, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
