"""Protobuf messages as JSON objects, the same as ``json_format.MessageToDict`` makes them, for less.

Anomaly records are JSON by default and the detector writes them on its hot
path. ``json_format`` walks the descriptors again for every value (about 0.4 ms
for an anomaly with its evidence points); here each message type's fields are
turned into converters once. Only what anomaly records are made of is compiled:
strings, integers, doubles, bools, enums, nested and repeated messages. A type
with anything else (maps, bytes, 32-bit floats, well-known types, proto3
``optional`` fields, closed enums) is handed to ``json_format`` unchanged.

Output equals ``MessageToDict(m, preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)``; keys come in field order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from math import isnan

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# (field name, repeated, converter of one value, singular message: printed only when set)
_Plan = tuple[tuple[str, bool, Callable, bool], ...]

_INF = float("inf")


def message_to_json_object(message: Message) -> dict:
    """``message`` as a JSON-ready dict (proto field names, fields without presence always printed).

    Examples
    --------
    >>> from runwatch.v1 import anomaly_pb2
    >>> a = anomaly_pb2.Anomaly(id="x", step=3, score=float("nan"), kind=anomaly_pb2.ANOMALY_KIND_NONFINITE)
    >>> d = message_to_json_object(a)
    >>> d["id"], d["step"], d["score"], d["kind"], d["metrics"]
    ('x', '3', 'NaN', 'ANOMALY_KIND_NONFINITE', [])
    """
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    return _convert(message, plan)


def _convert(message: Message, plan: _Plan) -> dict:
    out = {}
    for name, repeated, convert, has_presence in plan:
        value = getattr(message, name)
        if repeated:
            out[name] = [convert(v) for v in value]
        elif not has_presence or message.HasField(name):
            out[name] = convert(value)
    return out


def _double(value: float):
    # ProtoJSON spells the non-finite values as strings.
    if isnan(value):
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return value


def _same(value):
    return value


@cache
def _plan(descriptor: Descriptor, _open: frozenset = frozenset()) -> _Plan | None:
    """The converters of ``descriptor``'s fields, or None when json_format must do it."""
    if descriptor.full_name.startswith("google.protobuf.") or descriptor in _open:
        return None  # well-known types have their own JSON forms; recursive types are left alone
    plan = []
    for field in descriptor.fields:
        convert = _converter(field, _open | {descriptor})
        if convert is None:
            return None
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if field.has_presence and not is_message:
            return None  # proto3 optional / proto2 fields: printed only when set
        plan.append((field.name, field.is_repeated, convert, is_message))
    return tuple(plan)


def _converter(field: FieldDescriptor, parents: frozenset) -> Callable | None:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            return None
        sub = _plan(field.message_type, parents)
        return None if sub is None else (lambda m: _convert(m, sub))
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return None if field.type == FieldDescriptor.TYPE_BYTES else _same
    if cpp in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return str  # 64-bit integers are JSON strings
    if cpp in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_BOOL):
        return _same
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        if enum.is_closed or any(v.GetOptions().ListFields() for v in enum.values):
            return None  # unknown numbers raise there; value options may rename
        names = {v.number: v.name for v in enum.values}
        return lambda number: names.get(number, number)
    return None  # 32-bit floats (shortest repr) and anything newer
