"""Where serialized protobuf bytes break the rules: a field path and a reason for a parser's ``DecodeError``.

The parser only says what went wrong (``String field had bad UTF-8``,
``Exceeded upb_DecodeOptions_MaxDepth``, ``Wire format was corrupt``). Called
once bytes have failed to parse, :func:`locate` walks them against the
message's descriptors and names the field: ``events[2].run_id: not valid
UTF-8 (byte 0xff at offset 0)``. Values of ``google.protobuf.Struct`` are
named by their keys (``starts[0].hyperparameters.opt.lr``), and nesting beyond
:data:`~runwatch.service.nesting.MAX_NESTING` is named the way the RunStart
check names it.

Pure Python, so it is slow compared to the parser: it runs only on bytes the
parser refused, and stops at the first problem.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from runwatch.service.nesting import MAX_NESTING, key_path

#: Message nesting protobuf parsers accept (upb's default decode depth).
PARSER_DEPTH = 100
MAX_FIELD_NUMBER = 2**29 - 1

_LEN_TYPES = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE}


class _Bad(Exception):
    """A problem at the field numbered ``number`` (0: at a tag, before any field is known)."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(reason)
        self.number = number
        self.reason = reason


def _varint(buf: bytes, pos: int, end: int, number: int, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if pos - start >= 10:
            raise _Bad(number, f"its {what} is a varint longer than 10 bytes")
    raise _Bad(number, f"cut off inside its {what}")


def _skip_group(buf: bytes, pos: int, end: int, number: int, depth: int) -> int:
    """Position after the end-group tag matching a start-group of field ``number``."""
    if depth > PARSER_DEPTH:
        raise _Bad(number, f"groups nested more than {PARSER_DEPTH} deep")
    while pos < end:
        tag, pos = _varint(buf, pos, end, number, "group")
        inner, wt = tag >> 3, tag & 7
        if wt == 4:
            if inner != number:
                raise _Bad(number, f"group ended by the end tag of field {inner}")
            return pos
        pos = _skip(buf, pos, end, inner, wt, depth + 1)
    raise _Bad(number, "group never ended (no end-group tag)")


def _skip(buf: bytes, pos: int, end: int, number: int, wt: int, depth: int) -> int:
    """Position after the value of a field with wire type ``wt`` starting at ``pos``."""
    if number == 0 or number > MAX_FIELD_NUMBER:
        raise _Bad(0, f"field number {number} does not exist (corrupt bytes)")
    if wt == 0:
        return _varint(buf, pos, end, number, "value")[1]
    if wt in (1, 5):
        size = 8 if wt == 1 else 4
        if pos + size > end:
            raise _Bad(number, f"cut off: a {size * 8}-bit value needs {size} bytes, {end - pos} left")
        return pos + size
    if wt == 2:
        size, pos = _varint(buf, pos, end, number, "length")
        if size > end - pos:
            raise _Bad(number, f"length {size} runs past the end of its message ({end - pos} bytes left)")
        return pos + size
    if wt == 3:
        return _skip_group(buf, pos, end, number, depth)
    if wt == 4:
        raise _Bad(number, "end-group tag without a start-group")
    raise _Bad(number, f"wire type {wt} does not exist (corrupt bytes)")


def _fields(buf: bytes, pos: int, end: int, depth: int):
    """``(number, wire type, value start, value end)`` of each field in ``buf[pos:end]``; raises :class:`_Bad`."""
    while pos < end:
        tag, pos = _varint(buf, pos, end, 0, "field tag")
        number, wt = tag >> 3, tag & 7
        stop = _skip(buf, pos, end, number, wt, depth)
        if wt == 2:
            _, pos = _varint(buf, pos, end, number, "length")
        yield number, wt, pos, stop
        pos = stop


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _utf8(buf: bytes, start: int, stop: int) -> str | None:
    try:
        bytes(buf[start:stop]).decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{buf[start + exc.start]:02x} at offset {exc.start} of the string)"
    return None


def _walk(buf: bytes, pos: int, end: int, desc: Descriptor, path: str, depth: int) -> tuple[str, str] | None:
    """First problem of the ``desc`` message in ``buf[pos:end]`` (fields named under ``path``)."""
    if desc.full_name == "google.protobuf.Struct":
        return _walk_struct(buf, pos, end, path, depth, 1)
    if depth > PARSER_DEPTH:
        return (path, f"messages nested more than {PARSER_DEPTH} deep")
    seen: dict[int, int] = {}
    by_number = desc.fields_by_number

    def name_of(number: int) -> str:
        field = by_number.get(number)
        if field is None:
            return _join(path, f"<field {number}>")
        if field.is_repeated and not (field.message_type and field.message_type.GetOptions().map_entry):
            return _join(path, f"{field.name}[{seen.get(number, 0)}]")
        return _join(path, field.name)

    try:
        for number, wt, start, stop in _fields(buf, pos, end, depth):
            field = by_number.get(number)
            where = name_of(number)
            seen[number] = seen.get(number, 0) + 1
            if field is None or wt != 2 or field.type not in _LEN_TYPES:
                continue  # unknown fields and wrong wire types parse (kept aside): not the parser's complaint
            if field.type == FieldDescriptor.TYPE_STRING:
                reason = _utf8(buf, start, stop)
                if reason:
                    return (where, reason)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _walk(buf, start, stop, field.message_type, where, depth + 1)
                if found:
                    return found
    except _Bad as bad:
        return (name_of(bad.number) if bad.number else (path or "batch"), bad.reason)
    return None


def _walk_struct(buf: bytes, pos: int, end: int, path: str, depth: int, level: int) -> tuple[str, str] | None:
    """A ``Struct``: entries of ``fields`` (1), each a key (1) and a ``Value`` (2), named by key."""
    if level > MAX_NESTING:
        return (path, f"nested deeper than {MAX_NESTING} levels")
    try:
        for number, wt, start, stop in _fields(buf, pos, end, depth):
            if number != 1 or wt != 2:
                continue
            key = ""
            values: list[tuple[int, int]] = []  # a field sent twice is parsed twice (merged): each is checked
            for n, w, a, b in _fields(buf, start, stop, depth + 1):
                if n == 1 and w == 2:
                    reason = _utf8(buf, a, b)
                    if reason:
                        return (_join(path, "<key>"), f"key {reason}")
                    key = bytes(buf[a:b]).decode("utf-8")
                elif n == 2 and w == 2:
                    values.append((a, b))
            for a, b in values:
                found = _walk_value(buf, a, b, key_path(path, key), depth + 2, level)
                if found:
                    return found
    except _Bad as bad:
        return (path, bad.reason)
    return None


def _walk_value(buf: bytes, pos: int, end: int, path: str, depth: int, level: int) -> tuple[str, str] | None:
    """A ``Value``: string (3), nested ``Struct`` (5) or ``ListValue`` (6, its ``values`` = 1)."""
    try:
        for number, wt, start, stop in _fields(buf, pos, end, depth):
            if wt != 2:
                continue
            if number == 3:
                reason = _utf8(buf, start, stop)
                if reason:
                    return (path, reason)
            elif number == 5:
                found = _walk_struct(buf, start, stop, path, depth + 1, level + 1)
                if found:
                    return found
            elif number == 6:
                if level + 1 > MAX_NESTING:
                    return (path, f"nested deeper than {MAX_NESTING} levels")
                i = 0
                for n, w, a, b in _fields(buf, start, stop, depth + 1):
                    if n == 1 and w == 2:
                        found = _walk_value(buf, a, b, f"{path}[{i}]", depth + 2, level + 1)
                        if found:
                            return found
                        i += 1
    except _Bad as bad:
        return (path, bad.reason)
    return None


def locate(raw: bytes, descriptor: Descriptor) -> tuple[str, str] | None:
    """``(field path, reason)`` of the first thing in ``raw`` a parser of ``descriptor`` refuses, or None.

    Paths are relative to the message (``"events[2].run_id"``); ``"batch"`` when
    the problem is in the message's own framing.

    Examples
    --------
    >>> from runwatch.v1 import runs_pb2
    >>> ev = runs_pb2.MetricEvent(run_id="r", step=1).SerializeToString().replace(b"\\x01r", b"\\x01\\xff")
    >>> locate(b"\\x12" + bytes([len(ev)]) + ev, runs_pb2.EventBatch.DESCRIPTOR)
    ('events[0].run_id', 'not valid UTF-8 (byte 0xff at offset 0 of the string)')
    >>> locate(b"\\x0a\\xff\\xff\\xff\\xff\\x0f", runs_pb2.EventBatch.DESCRIPTOR)
    ('starts[0]', 'length 4294967295 runs past the end of its message (0 bytes left)')
    """
    buf = bytes(raw)
    return _walk(buf, 0, len(buf), descriptor, "", 1)


def decode_error(raw: bytes, descriptor: Descriptor, error: Exception) -> tuple[str, str]:
    """The ``(field, reason)`` to report for ``raw`` that failed to parse as ``descriptor`` with ``error``.

    The field is where :func:`locate` finds the problem (``"batch"`` if it finds none);
    the reason says the whole message was refused, since nothing of it could be read.
    """
    found = locate(raw, descriptor)
    what = f"not a valid {descriptor.full_name} protobuf"
    if found is None:
        return ("batch", f"{what}: {' '.join(str(error).split())}")
    return (found[0], f"{found[1]}; {what}, so none of it was read")


def without_field(raw: bytes, number: int) -> bytes:
    """The readable top-level fields of ``raw`` (one message's bytes) but those numbered ``number``.

    Reading stops at the first field that breaks the wire format; what came before it is kept.
    """
    buf = bytes(raw)
    kept = []
    pos = 0
    try:
        while pos < len(buf):
            tag, start = _varint(buf, pos, len(buf), 0, "field tag")
            stop = _skip(buf, start, len(buf), tag >> 3, tag & 7, 1)
            if tag >> 3 != number:
                kept.append(buf[pos:stop])
            pos = stop
    except _Bad:
        pass
    return b"".join(kept)
