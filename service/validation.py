"""Input checks for ingested items. Each returns ``None`` or ``(field, reason)``.

Field paths are relative to the item (e.g. ``"run_id"``); the pipeline
prefixes them with the item's place in the batch (``"events[3].run_id"``).
"""

from __future__ import annotations

import math
import re

from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor

from runwatch.service.nesting import MAX_NESTING, too_deep
from runwatch.v1 import runs_pb2

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")
METRIC_NAME_PATTERN = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")
MAX_PROJECT_LEN = 128
MAX_TEXT_BYTES = 64 * 1024
MAX_LAYERS = 10_000
MAX_TAGS = 256

Violation = tuple[str, str]
# Enum.values() builds a list on every call: too slow for a check run on every log line.
_LOG_LEVELS = frozenset(runs_pb2.LogLevel.values())


def check_run_id(run_id: str) -> Violation | None:
    if not run_id:
        return ("run_id", "missing: every item needs the run_id of its run")
    if RUN_ID_PATTERN.fullmatch(run_id) is None:
        shown = run_id if len(run_id) <= 40 else run_id[:40] + "..."
        return (
            "run_id",
            f"malformed {shown!r}: use 1-128 characters from letters, digits and . _ : / @ + -",
        )
    return None


#: Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: a name holding one breaks the
#: lines it is printed on (log records, e-mail headers, the CLI's tables).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_project(project: str, field: str = "project") -> Violation | None:
    """A project name: at most 128 characters, no control characters, not blank or padded ("" = ``default``).

    >>> check_project("vision"), check_project("")
    (None, None)
    >>> check_project("p\\nBcc: x@evil.example")
    ('project', "control character '\\\\n' at 1: project names are printed in logs, e-mail subjects and tables")
    >>> check_project(" ")
    ('project', "' ' is blank or starts or ends with whitespace")
    """
    if len(project) > MAX_PROJECT_LEN:
        return (field, f"longer than {MAX_PROJECT_LEN} characters")
    bad = _CONTROL.search(project)
    if bad is not None:
        reason = (
            f"control character {bad.group()!r} at {bad.start()}: project names are printed in logs, e-mail "
            "subjects and tables"
        )
        return (field, reason)
    if project != project.strip():
        shown = project if len(project) <= 40 else project[:40] + "..."
        return (field, f"{shown!r} is blank or starts or ends with whitespace")
    return None


def _check_time(field: str, value: float) -> Violation | None:
    if not math.isfinite(value) or value < 0:
        return (field, f"must be seconds since the Unix epoch (finite, >= 0), got {value!r}")
    return None


def check_start(start: runs_pb2.RunStart) -> Violation | None:
    v = check_run_id(start.run_id)
    if v:
        return v
    v = check_project(start.project)
    if v:
        return v
    if start.kind not in runs_pb2.RunKind.values():
        return ("kind", f"unknown RunKind value {start.kind}")
    v = _check_time("start_time", start.start_time)
    if v:
        return v
    if len(start.architecture.layers) > MAX_LAYERS:
        return ("architecture.layers", f"more than {MAX_LAYERS} layers")
    for i, layer in enumerate(start.architecture.layers):
        if not layer.name:
            return (f"architecture.layers[{i}].name", "missing")
        if layer.param_count < 0 or layer.in_size < 0 or layer.out_size < 0:
            return (f"architecture.layers[{i}]", "sizes and param_count must be >= 0")
    if len(start.tags) > MAX_TAGS:
        return ("tags", f"more than {MAX_TAGS} tags")
    return too_deep(start.hyperparameters, "hyperparameters", MAX_NESTING)


def check_event_shape(event: runs_pb2.MetricEvent, max_metrics: int) -> Violation | None:
    """Checks that need no run state (run_id, step, time, metric count)."""
    if event.step < 0:
        return ("step", f"must be >= 0, got {event.step}")
    n = len(event.metrics)
    if n == 0:
        return ("metrics", "empty: an event must carry at least one metric")
    if n > max_metrics:
        return ("metrics", f"{n} metrics, more than the limit of {max_metrics} per event")
    wt = event.wall_time
    if wt != 0.0 and not (0.0 < wt < math.inf):
        return ("wall_time", f"must be seconds since the Unix epoch (finite, >= 0), got {wt!r}")
    return None


def check_metric_name(name: str) -> Violation | None:
    if METRIC_NAME_PATTERN.fullmatch(name) is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        return (f"metrics[{shown!r}]", "metric names must be 1-256 characters without whitespace or control characters")
    return None


def check_log(line: runs_pb2.LogLine) -> Violation | None:
    v = check_run_id(line.run_id)
    if v:
        return v
    if line.level not in _LOG_LEVELS:
        return ("level", f"unknown LogLevel value {line.level}")
    if len(line.text.encode()) > MAX_TEXT_BYTES:
        return ("text", f"longer than {MAX_TEXT_BYTES} bytes")
    return _check_time("time", line.time)


def check_end(end: runs_pb2.RunEnd) -> Violation | None:
    v = check_run_id(end.run_id)
    if v:
        return v
    if end.status not in runs_pb2.RunStatus.values() or end.status == runs_pb2.RUN_STATUS_RUNNING:
        return ("status", f"must be FINISHED, FAILED or KILLED (or unset = FINISHED), got {end.status}")
    return _check_time("end_time", end.end_time)


UNKNOWN_FIELD = "unknown field: this server's runwatch.v1 schema has no such field"

_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "group", 4: "group end", 5: "32-bit"}
_VARINT = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT32,
           FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SINT32,
           FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM}  # fmt: skip
_FIXED64 = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_FIXED32 = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}
_TYPE_NAMES = {v: k[5:].lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}


def expected_wire(field: FieldDescriptor) -> str:
    """How ``field`` is encoded on the wire, e.g. ``"varint (int64)"``."""
    t = field.type
    kind = "varint" if t in _VARINT else "64-bit" if t in _FIXED64 else "32-bit" if t in _FIXED32 else None
    kind = kind or "length-delimited"
    named = field.message_type or field.enum_type
    name = named.full_name if named is not None else _TYPE_NAMES.get(t, "?")
    return f"{kind} ({name})"


def wrong_wire_type(field: FieldDescriptor, wire_type: int) -> str:
    got = _WIRE_NAMES.get(wire_type, f"wire type {wire_type}")
    return f"wrong wire type: sent as {got}, expected {expected_wire(field)}"


def _own_unknown(message) -> Violation | None:
    """The first field ``message`` itself carries unparsed: one sent with the wrong wire type, else an unknown one.

    A known field sent with another wire type is kept aside by the parser as if it
    were unknown; it is named by its name, since its value is lost.
    """
    found = unknown_fields.UnknownFieldSet(message)
    if not len(found):
        return None
    by_number = message.DESCRIPTOR.fields_by_number
    for entry in found:
        known = by_number.get(entry.field_number)
        if known is not None:
            return (known.name, wrong_wire_type(known, entry.wire_type))
    return (f"<field {found[0].field_number}>", UNKNOWN_FIELD)


def unknown_field_path(message) -> Violation | None:
    """``(path, reason)`` of the first field ``message`` carries that this schema could not read, or None.

    The reason is :data:`UNKNOWN_FIELD` for a field the schema does not define, or
    names the wire type for a defined field sent with another one.
    """
    own = _own_unknown(message)
    if own:
        return own
    for desc, value in message.ListFields():
        if desc.message_type is None:
            continue
        if desc.message_type.GetOptions().map_entry:
            if desc.message_type.fields_by_name["value"].message_type is None:
                continue  # map<K, scalar>: its entries are not messages here
            for key, sub in value.items():
                inner = unknown_field_path(sub)
                if inner:
                    return (f"{desc.name}[{str(key)!r}].{inner[0]}", inner[1])
            continue
        if desc.is_repeated:
            for i, sub in enumerate(value):
                inner = unknown_field_path(sub)
                if inner:
                    return (f"{desc.name}[{i}].{inner[0]}", inner[1])
        else:
            inner = unknown_field_path(value)
            if inner:
                return (f"{desc.name}.{inner[0]}", inner[1])
    return None


def items_with_unknown_fields(
    batch: runs_pb2.EventBatch, lists: tuple[str, ...] = ("starts", "events", "logs", "ends")
) -> tuple[dict[tuple[str, int], Violation], Violation | None]:
    """Items of ``batch`` that carry unread fields: ``{(list, index): (path, reason)}``, plus one on the batch itself.

    Only the item lists named in ``lists`` are searched.

    Examples
    --------
    >>> b = runs_pb2.EventBatch()
    >>> _ = b.ends.add().ParseFromString(runs_pb2.RunEnd(run_id="r").SerializeToString() + b"\\x98\\x06\\x01")
    >>> items_with_unknown_fields(b)
    ({('ends', 0): ('ends[0].<field 99>', "unknown field: this server's runwatch.v1 schema has no such field")}, None)
    >>> items_with_unknown_fields(b, ("starts", "logs"))
    ({}, None)
    >>> _ = b.ends.add().ParseFromString(b"\\x12\\x01x")  # status (an enum) sent as a string
    >>> items_with_unknown_fields(b)[0][("ends", 1)]
    ('ends[1].status', 'wrong wire type: sent as length-delimited, expected varint (runwatch.v1.RunStatus)')
    """
    found: dict[tuple[str, int], Violation] = {}
    for list_name in lists:
        for i, item in enumerate(getattr(batch, list_name)):
            v = unknown_field_path(item)
            if v:
                found[(list_name, i)] = (f"{list_name}[{i}].{v[0]}", v[1])
    return found, _own_unknown(batch)
