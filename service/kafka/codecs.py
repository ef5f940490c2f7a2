"""Wire forms on the topics: ingest records in (protobuf or JSON), anomaly records out.

Ingest records carry a ``content-type`` header: ``application/x-protobuf;
messageType=runwatch.v1.EventBatch`` or ``application/json``. Without one, a
value whose first non-blank byte is ``{`` is read as JSON, anything else as
protobuf, so ``kcat -P`` users can type events by hand. A UTF-8 byte-order mark
before the JSON is skipped, and a value that is some other JSON (an array,
``null``, a string, a number) is read as JSON too, so that its dead letter says
what JSON was expected rather than how its bytes fail as protobuf. A value
whose header and bytes disagree (protobuf labelled JSON, JSON labelled
protobuf) is refused naming the header. JSON has the fields of
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


#: What a UTF-8 editor may put before JSON text.
BOM = b"\xef\xbb\xbf"
#: First bytes of JSON values other than an object (JSON's own whitespace skipped).
_JSON_FIRST = frozenset(b'["-0123456789')
_JSON_WORDS = (b"null", b"true", b"false")
#: JSON's whitespace: bytes.lstrip() would also strip \x0b and \x0c, which JSON does not allow.
_JSON_BLANK = b" \t\r\n"


def _json_text(value: bytes) -> bytes:
    """``value`` without a leading byte-order mark and JSON whitespace."""
    return (value[3:] if value[:3] == BOM else value).lstrip(_JSON_BLANK)


def _starts_like_json(text: bytes) -> bool:
    """Whether ``text`` (see :func:`_json_text`) begins the way a JSON value does."""
    return bool(text) and (text[0] == 0x7B or text[0] in _JSON_FIRST or text.startswith(_JSON_WORDS))


def _parses_as_json(value: bytes) -> bool:
    try:
        json.loads(value.decode("utf-8").removeprefix("\ufeff"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def _parses_as_protobuf(value: bytes) -> bool:
    try:
        runs_pb2.EventBatch.FromString(value)
    except (DecodeError, RecursionError):
        return False
    return True


def _protobuf_may_start(value: bytes) -> bool:
    """Whether ``value`` starts like JSON *and* could start an ``EventBatch`` protobuf.

    Only two bytes do both: a newline (0x0a, the tag of ``starts``, whose length byte may
    then be any JSON character) and ``"`` (0x22, the tag of ``ends``). Every other start of
    a JSON value (``{``, ``[``, a digit, ``-``, ``n``, ``t``, ``f``, a byte-order mark,
    other JSON whitespace) is a field number or wire type no ``EventBatch`` has.
    """
    return value[:1] in (b"\n", b'"')


def _sniff(value: bytes) -> str:
    """The format of a record without a content-type header: ``"json"`` or ``"protobuf"``.

    JSON is a value that starts (after a byte-order mark and JSON whitespace) the way a
    JSON value does: ``{``, ``[``, ``"``, a digit, ``-``, ``null``, ``true``, ``false``;
    when a protobuf may start the same way (:func:`_protobuf_may_start`), the bytes decide,
    whichever of the two they parse as.
    """
    if value[:1] == b"{":  # the common case of JSON; 0x7b begins no EventBatch protobuf
        return "json"
    text = _json_text(value)
    if not _starts_like_json(text):
        return "protobuf"
    if not _protobuf_may_start(value) or _parses_as_json(value):
        return "json"
    if _parses_as_protobuf(value):
        return "protobuf"
    return "json" if text[:1] in (b"{", b"[") else "protobuf"


def batch_format(value: bytes | None, headers: Headers | None = None) -> str | DecodeFailure:
    """How :func:`decode_batch` reads an ingest record: ``"protobuf"`` or ``"json"``, or why it cannot.

    Examples
    --------
    >>> batch_format(b"\\x28\\x01"), batch_format(b' {"sequence": 1}')
    ('protobuf', 'json')
    >>> batch_format(b"\\xef\\xbb\\xbf{}"), batch_format(b"null"), batch_format(b"[1]")
    ('json', 'json', 'json')
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
    return _sniff(value)


def decode_batch(value: bytes | None, headers: Headers | None = None) -> runs_pb2.EventBatch | DecodeFailure:
    """An ingest record's value as an ``EventBatch``, or why it is not one.

    A record its content-type header mislabels (protobuf said to be JSON, JSON said to be
    protobuf) is refused naming the header, not by how its bytes fail as the other format.
    """
    fmt = batch_format(value, headers)
    if isinstance(fmt, DecodeFailure):
        return fmt
    declared = header(headers, CONTENT_TYPE)
    if fmt == "json":
        decoded = _decode_json(value)
        mislabelled = declared and isinstance(decoded, DecodeFailure) and not _parses_as_json(value)
        if mislabelled and _parses_as_protobuf(value):
            return _mislabelled(declared, "JSON")
        return decoded
    decoded = _decode_protobuf(value)
    if (
        declared
        and isinstance(decoded, DecodeFailure)
        and _starts_like_json(_json_text(value))
        and (not _protobuf_may_start(value) or _parses_as_json(value))
    ):
        return _mislabelled(declared, "protobuf")
    return decoded


def _mislabelled(declared: str, says: str) -> DecodeFailure:
    """A record whose content-type header names one format (``says``) and whose bytes are the other."""
    if says == "JSON":
        reason = f"it reads as a {BATCH_TYPE} protobuf: label it {PROTOBUF}; messageType={BATCH_TYPE}"
        return DecodeFailure("header content-type", f"says {declared!r}, but the value is not JSON: {reason}")
    return DecodeFailure(
        "header content-type",
        f"says {declared!r}, but the value is JSON, not protobuf: label it {JSON}, or send it without the header",
    )


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
    decoded = json_batch.decode(text.removeprefix("\ufeff"))  # a byte-order mark is no JSON, but says nothing
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
