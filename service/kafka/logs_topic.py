"""The Kafka logs topic (``--kafka-logs-topic``): raw text lines, one per record, as log shippers write them.

A record is one line of a run's output, the way Fluent Bit, Vector or
``kcat -P`` produce it:

* key: the run id (UTF-8; records without one cannot be placed);
* value: the line as UTF-8 text (one trailing newline is dropped). A value
  that is a JSON object naming its text (``{"log": .., "stream": ..}``,
  ``{"message": .., "timestamp": ..}``, ``{"time", "level", "text"}``: the
  shippers' default JSON encodings) is read as that record's fields;
* headers, all optional (names case-insensitive): ``level`` (``info``,
  ``WARN``, ``err``, a syslog or ``logging`` number), ``time`` (seconds or
  milliseconds since the epoch, or RFC 3339), ``source`` or ``stream``
  (``stderr`` makes WARNING the default level, as for ``runwatch pipe``),
  ``project`` (of a run these lines open) and ``step``.

Example, with kcat (``-K`` splits key and line at a tab)::

    printf 'run-42\\titeration 100/1000 | lm loss: 2.34 | grad norm: 1.2\\n' |
        kcat -b HOST:9092 -P -t runwatch.logs -K '\\t' -H level=info -X partitioner=murmur2_random

Each line becomes a ``LogLine`` of its run, applied through the same
pipeline path, cycle, dead letters, checkpoints and offset commits as the
ingest topic. A run the lines name that this instance does not know is
opened as if by ``--auto-create-runs`` (project ``default`` unless the
``project`` header says otherwise; a later ``RunStart`` from the SDK fills it
in). A record that cannot be used (no key, an invalid run id, a value that
is not UTF-8, a line over 64 KiB, a bad header) is a dead letter whose
reason names the part and the problem; the records after it go on.

The topic has as many partitions as the ingest topic, and partition *p* of
both is read by one instance (librdkafka's range assignment puts equal
partition numbers together), which holds the state of the runs keyed to *p*
by the murmur2 hash (Java's, kafka-python's; librdkafka's
``partitioner=murmur2_random``). A shipper that hashes differently (librdkafka's
default CRC32 ``consistent_random``, Fluent Bit's and Vector's default) puts a
run's lines on another partition: such a record is produced again to its
run's partition (header ``runwatch-forwarded-from``, delivered before the
offset is committed) and analysed there, in the order it came. Setting the
shipper's partitioner to murmur2 saves that hop.

Delivery is at least once, as for the ingest topic: after a crash the lines
of the cycle that was not committed are read again, and stored again (lines,
unlike metric events, carry nothing to recognise a repeat by).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kafka.partitioner.default import murmur2

from runwatch.client.log_lines import MAX_LINE_BYTES, from_record, guess_level, level_number, parse_step, parse_time
from runwatch.service import validation as check
from runwatch.service.kafka.codecs import DecodeFailure
from runwatch.v1 import runs_pb2

#: Header a forwarded record carries: ``<partition>@<offset>`` of the record it copies.
FORWARDED_FROM = "runwatch-forwarded-from"
_HEADERS = ("level", "time", "source", "stream", "project", "step")
_OWNERS_CACHED = 100_000


@dataclass(slots=True)
class Line:
    """One usable record: the run, its ``LogLine``, and the ``project`` header ("" when absent)."""

    run_id: str
    line: runs_pb2.LogLine
    project: str


def _headers(headers) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for key, value in headers or ():
        name = key.lower()
        if name in _HEADERS:
            found[name] = value or b""
    return found


def _text(value: bytes, what: str) -> str | DecodeFailure:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure(what, f"not UTF-8: byte 0x{value[exc.start]:02x} at offset {exc.start}")


_run_ids: dict[bytes, str | DecodeFailure] = {}


def _run_id(key: bytes) -> str | DecodeFailure:
    """The run id a record key names (checked once per key: a run's lines all carry the same one)."""
    found = _run_ids.get(key)
    if found is None:
        found = _text(key, "key")
        if not isinstance(found, DecodeFailure):
            v = check.check_run_id(found)
            if v:
                found = DecodeFailure("key", f"run id {found[:80]!r}: {v[1]}")
        if len(_run_ids) >= _OWNERS_CACHED:
            _run_ids.clear()
        _run_ids[key] = found
    return found


def decode_line(rec, max_line_bytes: int = MAX_LINE_BYTES) -> Line | DecodeFailure:
    """A logs-topic record (key, value, headers) as a :class:`Line`, or why it cannot be one.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> got = decode_line(R(key=b"run-1", value=b"lm loss: 2.3\\n", headers=[("level", b"WARN")], timestamp=-1))
    >>> got.run_id, got.line.text, got.line.level == runs_pb2.LOG_LEVEL_WARNING
    ('run-1', 'lm loss: 2.3', True)
    >>> decode_line(R(key=None, value=b"x", headers=[], timestamp=-1)).field
    'key'
    """
    if not rec.key:
        return DecodeFailure("key", "no run id: key each record with the id of the run the line belongs to")
    run_id = _run_id(rec.key)
    if isinstance(run_id, DecodeFailure):
        return run_id
    value = rec.value or b""
    if value.endswith(b"\n"):
        value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
    if len(value) > max_line_bytes:
        return DecodeFailure("value", f"{len(value)} bytes is over the limit of {max_line_bytes} bytes for one line")
    text = _text(value, "value")
    if isinstance(text, DecodeFailure):
        return text
    if not rec.headers and not text.lstrip().startswith("{"):
        # The common record: a bare line. Every field is already checked (no check_log needed).
        level = guess_level(text, runs_pb2.LOG_LEVEL_INFO)
        when = rec.timestamp / 1000.0 if rec.timestamp > 0 else 0.0
        return Line(run_id, runs_pb2.LogLine(run_id=run_id, text=text, level=level, time=when), "")
    found = _headers(rec.headers)
    line = runs_pb2.LogLine(run_id=run_id, text=text)
    stream = ""
    for name in ("source", "stream"):
        if name in found:
            stream = found[name].decode("utf-8", "replace").strip().lower()
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            try:
                fields = from_record(obj)
            except ValueError as exc:
                return DecodeFailure("value", str(exc))
            if fields is not None:
                line.text, line.level, line.time, line.step = fields.text, fields.level, fields.time, fields.step
    if "level" in found:
        level = level_number(found["level"].decode("utf-8", "replace"))
        if level is None:
            return DecodeFailure(
                "header level", f"unknown level {found['level'][:40]!r}; use debug, info, warning, error or critical"
            )
        line.level = level
    elif not line.level:
        default = runs_pb2.LOG_LEVEL_WARNING if stream == "stderr" else runs_pb2.LOG_LEVEL_INFO
        line.level = guess_level(line.text, default)
    if "time" in found:
        when = parse_time(found["time"].decode("utf-8", "replace"))
        if when is None:
            return DecodeFailure(
                "header time", f"{found['time'][:40]!r} is not a time (seconds since the epoch or RFC 3339)"
            )
        line.time = when
    elif not line.time and rec.timestamp > 0:
        line.time = rec.timestamp / 1000.0  # the record's own time: when the shipper read the line
    if "step" in found:
        try:
            line.step = parse_step(found["step"].decode("utf-8", "replace"))
        except ValueError as exc:
            return DecodeFailure("header step", str(exc).removeprefix("step: "))
    v = check.check_log(line)
    if v:
        return DecodeFailure("value" if v[0] == "text" else v[0], v[1])
    project = found.get("project", b"").decode("utf-8", "replace").strip()
    if project:
        v = check.check_start(runs_pb2.RunStart(run_id=run_id, project=project))
        if v:
            return DecodeFailure("header project", f"{project[:80]!r}: {v[1]}")
    return Line(run_id, line, project)


class Owners:
    """Partition of a run id by murmur2 (Java's default partitioner, kafka-python's, the gRPC door's)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _OWNERS_CACHED:
                self._cache.clear()
            found = self._cache[key] = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        return found


def forwarded(headers) -> bool:
    return any(k == FORWARDED_FROM for k, _ in headers or ())
