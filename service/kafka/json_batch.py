"""``EventBatch`` records in JSON, checked against the schema so that every problem names its field.

``json_format`` stops at a batch's first problem and words it for programmers
(``invalid literal for int() with base 10: 'abc'``, lowerCamelCase field lists,
``Failed to load JSON: Failed to load JSON: duplicate key step``). Here the
JSON is read first (duplicate keys and bare ``NaN`` refused), then walked
against the message descriptors, so each problem comes out as a proto field
path and a reason: ``events[3].step: 'abc' is not an integer``. Only a batch
without problems is handed to ``json_format`` to build the message, which
then meets no surprise.

Accepted is what ``json_format`` accepts: proto field names or their
lowerCamelCase JSON names, 64-bit integers as numbers or strings, doubles as
numbers or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, enums by
name or number, ``null`` for "not set".

Hyperparameters nested beyond :data:`~runwatch.service.nesting.MAX_NESTING`
are cut just below the limit rather than refused here: the pipeline's RunStart
check then rejects that one start by its path, as it does for protobuf
records, while the rest of the batch goes on (and no parser meets the depth).
"""

from __future__ import annotations

import difflib
import json
import math

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from runwatch.service.nesting import MAX_NESTING, key_path
from runwatch.v1 import runs_pb2

Problem = tuple[str, str]

#: Problems reported per record (the rest are counted).
MAX_PROBLEMS = 100

_F = FieldDescriptor
_INT_RANGES = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1, "int32"),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1, "int64"),
    _F.CPPTYPE_UINT32: (0, 2**32 - 1, "uint32"),
    _F.CPPTYPE_UINT64: (0, 2**64 - 1, "uint64"),
}
_NON_FINITE = ("NaN", "Infinity", "-Infinity")
_JSON_LIKE = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")


class _Object(dict):
    """A JSON object that repeated a key (``duplicate`` names the first one repeated)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Object(obj)
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _bare_constant(name: str):
    raise ValueError(f'bare {name} is not JSON; write it as the string "{name}"')


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if len(repr(value)) <= 30 else "a number"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "...")
    if isinstance(value, dict):
        return "an object"
    return "a list"


def _json_kind(value) -> str:
    """What JSON value ``value`` is, in JSON's words (a top-level document that is no object)."""
    if value is None or isinstance(value, bool):
        return _kind(value)
    if isinstance(value, (int, float)):
        return f"the number {_kind(value)}" if _kind(value) != "a number" else "a number"
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40] + ('...' if len(value) > 40 else ''))}"
    return "an array" if isinstance(value, list) else "an object"


def _utf8(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid UTF-8: lone surrogate {value[exc.start]!r} at character {exc.start}"
    return None


def _integer(value, cpp_type: int) -> str | None:
    """Why ``value`` is not a JSON integer of ``cpp_type``, or None."""
    low, high, name = _INT_RANGES[cpp_type]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{_kind(value)} is not an integer"
    if isinstance(value, float):
        if not value.is_integer():
            return f"{_kind(value)} is not an integer"
        number = int(value)
    elif isinstance(value, str):
        if " " in value:
            return f"{_kind(value)} is not an integer"
        try:
            number = int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                return f"{_kind(value)} is not an integer"
            if not f.is_integer():
                return f"{_kind(value)} is not an integer"
            number = int(f)
    else:
        number = value
    if not low <= number <= high:
        return f"{_kind(value)} is out of range for {name}"
    return None


def _double(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{_kind(value)} is not a number"
    if isinstance(value, str):
        if value in _NON_FINITE:
            return None
        if value != "nan":
            try:
                float(value)
                return None
            except ValueError:
                pass
        return f'{_kind(value)} is not a number (use a number, or "NaN", "Infinity", "-Infinity")'
    if isinstance(value, float) and not math.isfinite(value):
        return f'{_kind(value)} is not a JSON number; write it as the string "NaN", "Infinity" or "-Infinity"'
    return None


def _scalar(field: FieldDescriptor, value) -> str | None:
    """Why ``value`` cannot be ``field``'s (non-message) value, or None."""
    cpp = field.cpp_type
    if cpp in _INT_RANGES:
        return _integer(value, cpp)
    if cpp in (_F.CPPTYPE_DOUBLE, _F.CPPTYPE_FLOAT):
        return _double(value)
    if cpp == _F.CPPTYPE_BOOL:
        return None if isinstance(value, bool) else f"{_kind(value)} is not true or false"
    if cpp == _F.CPPTYPE_STRING:
        if not isinstance(value, str):
            return f"{_kind(value)} is not a string"
        return _utf8(value)
    if cpp == _F.CPPTYPE_ENUM:
        enum = field.enum_type
        if isinstance(value, str):
            if _utf8(value):  # the descriptor's lookup cannot even take it
                return f"{_kind(value)} is not a {enum.name}: {_utf8(value)}"
            if value in enum.values_by_name:
                return None
            names = ", ".join(v.name for v in enum.values)
            return f"{_kind(value)} is not a {enum.name}: use one of {names}"
        if isinstance(value, int) and not isinstance(value, bool):
            return None if -(2**31) <= value < 2**31 else f"{_kind(value)} is out of range for an enum"
        return f"{_kind(value)} is not a {enum.name} name or number"
    return None


def _json_like(value, path: str, problems: list[Problem]) -> None:
    """Check a Struct/Value JSON value (any JSON), iteratively; cut it just below the nesting limit."""
    stack = [(path, value, 1)]
    while stack:
        where, node, level = stack.pop()
        if isinstance(node, str):
            reason = _utf8(node)
            if reason:
                problems.append((where, reason))
            continue
        if isinstance(node, float) and not math.isfinite(node):
            problems.append((where, f"{_kind(node)} is not allowed in a JSON value"))
            continue
        if not isinstance(node, (dict, list)):
            continue
        if isinstance(node, _Object):
            problems.append((where, f"duplicate key {node.duplicate!r}"))
            continue
        if level > MAX_NESTING:
            node.clear()  # the RunStart check names this path; nothing deeper reaches a parser
            continue
        if isinstance(node, dict):
            children = []
            for k, v in node.items():
                reason = _utf8(k)
                if reason:
                    problems.append((where, f"key {reason}"))
                else:
                    children.append((key_path(where, k), v))
        else:
            children = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
        stack.extend((child_path, child, level + 1) for child_path, child in reversed(children))


def _field_names(desc: Descriptor) -> str:
    return ", ".join(f.name for f in desc.fields)


def _unknown(desc: Descriptor, key: str) -> str:
    names = {f.name: f.name for f in desc.fields} | {f.json_name: f.name for f in desc.fields}
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    hint = f'; did you mean "{names[close[0]]}"?' if close else ""
    shown = json.dumps(key[:60] + ("..." if len(key) > 60 else ""))  # quoted, escaped: any key prints
    return f"{desc.full_name} has no field named {shown}{hint} (its fields: {_field_names(desc)})"


def _message(desc: Descriptor, obj, path: str, problems: list[Problem]) -> None:
    """Check the JSON object ``obj`` against ``desc``, appending ``(path, reason)`` for each problem."""
    if not isinstance(obj, dict):
        problems.append((path, f"{_kind(obj)} is not a {desc.name} object"))
        return
    if isinstance(obj, _Object):
        problems.append((path, f"duplicate key {obj.duplicate!r}"))
        return
    by_name = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
    given: dict[str, str] = {}
    for key, value in obj.items():
        field = by_name.get(key)
        if field is None:
            problems.append((key_path(path, key).removeprefix("."), _unknown(desc, key)))
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.name in given:
            problems.append((where, f"given twice (as {given[field.name]!r} and {key!r})"))
            continue
        given[field.name] = key
        if value is None:
            continue  # null: not set
        _field(field, value, where, problems)


def _field(field: FieldDescriptor, value, path: str, problems: list[Problem]) -> None:
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        if not isinstance(value, dict):
            problems.append((path, f"{_kind(value)} is not an object (a map)"))
            return
        if isinstance(value, _Object):
            problems.append((path, f"duplicate key {value.duplicate!r}"))
            return
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        for key, item in value.items():
            where = f"{path}[{key[:40]!r}]"
            reason = _scalar(key_field, key) if key_field.cpp_type == _F.CPPTYPE_STRING else None
            if reason:
                problems.append((where, f"key {reason}"))
                continue
            _value(value_field, item, where, problems)
        return
    if field.is_repeated:
        if not isinstance(value, list):
            problems.append((path, f"{_kind(value)} is not a list"))
            return
        for i, item in enumerate(value):
            if item is None:
                problems.append((f"{path}[{i}]", "null is not allowed in a list"))
                continue
            _value(field, item, f"{path}[{i}]", problems)
        return
    _value(field, value, path, problems)


def _value(field: FieldDescriptor, value, path: str, problems: list[Problem]) -> None:
    """One value of ``field`` (an element, for repeated fields)."""
    sub = field.message_type
    if sub is None:
        reason = _scalar(field, value)
        if reason:
            problems.append((path, reason))
        return
    if sub.full_name in _JSON_LIKE:
        if sub.full_name == "google.protobuf.Struct" and not isinstance(value, dict):
            problems.append((path, f"{_kind(value)} is not an object"))
            return
        if sub.full_name == "google.protobuf.ListValue" and not isinstance(value, list):
            problems.append((path, f"{_kind(value)} is not a list"))
            return
        _json_like(value, path, problems)
        return
    _message(sub, value, path, problems)


def check_batch(doc) -> list[Problem]:
    """Problems of the parsed JSON document ``doc`` as an ``EventBatch``: ``[(field path, reason), ...]``."""
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        expected = 'expected a JSON object {"events": [...]} (a runwatch.v1.EventBatch)'
        return [("value", f"{expected}, got {_json_kind(doc)}")]
    _message(runs_pb2.EventBatch.DESCRIPTOR, doc, "", problems)
    return problems


def decode(text: str) -> runs_pb2.EventBatch | list[Problem]:
    """The JSON ``text`` as an ``EventBatch``, or its problems (at least one), each naming its field.

    Examples
    --------
    >>> decode('{"events": [{"run_id": "r", "step": "abc"}]}')
    [('events[0].step', "'abc' is not an integer")]
    >>> decode('{"events": [{"run_id": "r", "step": 1, "step": 2}]}')
    [('events[0]', "duplicate key 'step'")]
    >>> print(decode('{"events": [{"runId": "r", "stepp": 1}]}')[0][1])
    runwatch.v1.MetricEvent has no field named "stepp"; did you mean "step"? (its fields: run_id, step, ...)
    >>> decode('{"sequence": "7", "events": [{"runId": "r", "step": 2, "metrics": {"loss": "NaN"}}]}').events[0].step
    2
    """
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_bare_constant)
    except RecursionError:
        return [("value", "JSON nested too deeply to read")]
    except ValueError as exc:  # JSONDecodeError says where (line, column); the constant hook says what
        return [("value", f"not valid JSON: {exc}")]
    if isinstance(doc, _Object):
        return [("value", f"duplicate key {doc.duplicate!r}")]
    problems = check_batch(doc)
    if problems:
        return problems
    try:
        return json_format.ParseDict(doc, runs_pb2.EventBatch())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        # Not expected after the checks above; still a named failure rather than an exception.
        return [("value", f"not a valid runwatch.v1.EventBatch: {' '.join(str(exc).split())}")]
