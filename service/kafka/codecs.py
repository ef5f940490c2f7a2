"""Wire forms on the topics: ingest records in (protobuf or JSON), anomaly records out.

Ingest records carry a ``content-type`` header: ``application/x-protobuf;
messageType=runwatch.v1.EventBatch`` or ``application/json``. Without one, a
value whose first non-blank byte is ``{`` is read as JSON, anything else as
protobuf, so ``kcat -P`` users can type events by hand. JSON has the fields of
``EventBatch`` (proto names such as ``run_id`` or their lowerCamelCase JSON
names; NaN and Infinity as the strings ``"NaN"``, ``"Infinity"``).

Decoding never raises: a bad record becomes a :class:`DecodeFailure` naming
the field and the reason (``events[3].step: 'abc' is not an integer``), which
the consumer turns into a dead letter. JSON is checked by
:mod:`~runwatch.service.kafka.json_batch`, protobuf located by
:mod:`~runwatch.service.wire_check`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from runwatch.service.kafka import json_batch
from runwatch.service.kafka.proto_json import message_to_json_object
from runwatch.service.wire_check import decode_error
from runwatch.v1 import anomaly_pb2, runs_pb2

CONTENT_TYPE = "content-type"
SCHEMA = "runwatch-schema"
SCHEMA_VERSION = "runwatch-schema-version"
ANOMALY_ID = "runwatch-anomaly-id"
ANOMALY_REVISION = "runwatch-anomaly-revision"
#: Major version of the anomaly record layout; bumped only on a breaking change of its fields.
ANOMALY_SCHEMA_VERSION = "1"

BATCH_TYPE = runs_pb2.EventBatch.DESCRIPTOR.full_name
ANOMALY_TYPE = anomaly_pb2.Anomaly.DESCRIPTOR.full_name
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a record is not an ``EventBatch``: ``field`` is where, ``reason`` says what."""

    field: str
    reason: str


def header(headers: Headers | None, name: str) -> str | None:
    """Value of the last header called ``name`` (case-insensitive), decoded as UTF-8."""
    found = None
    name = name.lower()
    for key, value in headers or ():
        if key.lower() == name:
            found = (value or b"").decode("utf-8", "replace")
    return found


def protobuf_content_type(message_type: str) -> bytes:
    return f"{PROTOBUF}; messageType={message_type}".encode()


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    kind, *params = (p.strip() for p in value.split(";"))
    options = {}
    for p in params:
        k, _, v = p.partition("=")
        options[k.strip().lower()] = v.strip().strip('"')
    return kind.lower(), options


def batch_format(value: bytes | None, headers: Headers | None = None) -> str | DecodeFailure:
    """How :func:`decode_batch` reads an ingest record: ``"protobuf"`` or ``"json"``, or why it cannot.

    Examples
    --------
    >>> batch_format(b"\\x28\\x01"), batch_format(b' {"sequence": 1}')
    ('protobuf', 'json')
    >>> batch_format(b"x", [("content-type", b"text/csv")]).field
    'header content-type'
    """
    if not value:
        return DecodeFailure("value", "empty record: expected an EventBatch as protobuf or JSON")
    declared = header(headers, CONTENT_TYPE)
    if declared:
        kind, options = _parse_content_type(declared)
        if kind in ("application/json", "text/json"):
            return "json"
        if kind in (PROTOBUF, "application/protobuf", "application/vnd.google.protobuf", "application/octet-stream"):
            message_type = options.get("messagetype", BATCH_TYPE)
            if message_type != BATCH_TYPE:
                return DecodeFailure(
                    "header content-type", f"messageType {message_type!r} is not accepted here; send {BATCH_TYPE}"
                )
            return "protobuf"
        return DecodeFailure("header content-type", f"unsupported content type {declared!r}; use {PROTOBUF} or {JSON}")
    return "json" if value.lstrip()[:1] == b"{" else "protobuf"


def decode_batch(value: bytes | None, headers: Headers | None = None) -> runs_pb2.EventBatch | DecodeFailure:
    """An ingest record's value as an ``EventBatch``, or why it is not one."""
    fmt = batch_format(value, headers)
    if isinstance(fmt, DecodeFailure):
        return fmt
    return _decode_json(value) if fmt == "json" else _decode_protobuf(value)


def _decode_protobuf(value: bytes) -> runs_pb2.EventBatch | DecodeFailure:
    try:
        return runs_pb2.EventBatch.FromString(value)
    except DecodeError as exc:
        return DecodeFailure(*decode_error(value, runs_pb2.EventBatch.DESCRIPTOR, exc))


def _decode_json(value: bytes) -> runs_pb2.EventBatch | DecodeFailure:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure("value", f"JSON must be UTF-8: byte 0x{value[exc.start]:02x} at offset {exc.start} is not")
    decoded = json_batch.decode(text)
    if isinstance(decoded, runs_pb2.EventBatch):
        return decoded
    field, reason = decoded[0]
    if len(decoded) > 1:
        reason += f" (and {len(decoded) - 1} more problem(s) in this record)"
    return DecodeFailure(field, reason)


def encode_batch(batch: runs_pb2.EventBatch) -> tuple[bytes, Headers]:
    """An ``EventBatch`` as an ingest record value with its content-type header."""
    return batch.SerializeToString(), [(CONTENT_TYPE, protobuf_content_type(BATCH_TYPE))]


def encode_anomaly(anomaly: anomaly_pb2.Anomaly, fmt: str = "json") -> tuple[bytes, Headers]:
    """An anomaly record: JSON (proto field names) by default, protobuf on request; headers say which."""
    headers: Headers = [
        (SCHEMA, ANOMALY_TYPE.encode()),
        (SCHEMA_VERSION, ANOMALY_SCHEMA_VERSION.encode()),
        (ANOMALY_ID, anomaly.id.encode()),
        (ANOMALY_REVISION, str(anomaly.revision).encode()),
    ]
    if fmt == "protobuf":
        return anomaly.SerializeToString(), [(CONTENT_TYPE, protobuf_content_type(ANOMALY_TYPE)), *headers]
    doc = message_to_json_object(anomaly)
    return json.dumps(doc, separators=(",", ":")).encode(), [(CONTENT_TYPE, JSON.encode()), *headers]


def decode_anomaly(value: bytes, headers: Headers | None = None) -> anomaly_pb2.Anomaly:
    """Inverse of :func:`encode_anomaly` (for tests and consumers written in Python)."""
    declared = header(headers, CONTENT_TYPE) or ""
    if declared.startswith(PROTOBUF):
        return anomaly_pb2.Anomaly.FromString(value)
    return json_format.Parse(value.decode("utf-8"), anomaly_pb2.Anomaly())
