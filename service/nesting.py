"""How deeply JSON-like values (``RunStart.hyperparameters``) may nest, checked and enforced.

Every nested object or list of a ``google.protobuf.Struct`` costs protobuf
about three message levels (struct, map entry, value), and protobuf parsers
refuse messages nested more than 100 levels deep. A run whose hyperparameters
nest about 30 levels is stored fine but cannot be read back inside a
``ListRunsResponse``, which broke every listing that included it. So values
may nest at most :data:`MAX_NESTING` levels: checked at ingest (gRPC and
Kafka alike), by the SDK before it sends, and enforced again on reads of
runs stored before the limit.

Levels count containers: in ``{"lr": 0.1}`` the value sits at level 1, in
``{"opt": {"lr": 0.1}}`` at level 2; a list is a level too. The check walks
iteratively, so no input depth can exhaust Python's stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from google.protobuf import struct_pb2

#: Most levels of objects and lists a hyperparameters value may nest.
MAX_NESTING = 16

#: What a value nested too deeply is replaced with where it must be shown anyway.
CLIPPED = f"<nested deeper than {MAX_NESTING} levels: not shown>"

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")


def _is_mapping(value) -> bool:
    return isinstance(value, (Mapping, struct_pb2.Struct))


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, struct_pb2.ListValue)) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))
    )


def key_path(path: str, key) -> str:
    """``path`` extended by an object key: ``.lr`` for plain keys, ``['odd key']`` otherwise."""
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    shown = key if len(key) <= 40 else key[:40] + "..."
    return f"{path}[{shown!r}]"


def _children(value, path: str):
    if _is_mapping(value):
        return [(key_path(path, k), v) for k, v in value.items()]
    return [(f"{path}[{i}]", v) for i, v in enumerate(value)]


def too_deep(value, path: str, limit: int = MAX_NESTING) -> tuple[str, str] | None:
    """``(field path, reason)`` of the first object or list of ``value`` nested beyond ``limit``, or None.

    ``value`` is a plain JSON-like value (dicts, lists) or a ``Struct``; ``value`` itself is level 1.

    Examples
    --------
    >>> too_deep({"opt": {"lr": 0.1}}, "hyperparameters", limit=2) is None
    True
    >>> too_deep({"opt": {"sched": {"gamma": 0.9}}}, "hyperparameters", limit=2)
    ('hyperparameters.opt.sched', 'nested deeper than 2 levels')
    >>> too_deep({"a": [[1]]}, "hyperparameters", limit=2)
    ('hyperparameters.a[0]', 'nested deeper than 2 levels')
    """
    if not (_is_mapping(value) or _is_list(value)):
        return None
    stack = [(path, value, 1)]
    while stack:
        where, node, level = stack.pop()
        if level > limit:
            return (where, f"nested deeper than {limit} levels")
        children = _children(node, where)
        for child_path, child in reversed(children):  # depth-first in order: the first offender is named
            if _is_mapping(child) or _is_list(child):
                stack.append((child_path, child, level + 1))
    return None


def clip(struct: struct_pb2.Struct, limit: int = MAX_NESTING) -> int:
    """Replace, in place, each object or list of ``struct`` nested beyond ``limit`` by :data:`CLIPPED`.

    Returns how many were replaced.

    Examples
    --------
    >>> s = struct_pb2.Struct()
    >>> s.update({"a": {"b": {"c": 1}}, "lr": 0.1})
    >>> clip(s, limit=2), s["a"]["b"], s["lr"]
    (1, '<nested deeper than 16 levels: not shown>', 0.1)
    """
    replaced = 0
    stack = [(struct, 1)]
    while stack:
        node, level = stack.pop()
        items = list(node.items()) if isinstance(node, struct_pb2.Struct) else list(enumerate(node))
        for key, child in items:
            if isinstance(child, (struct_pb2.Struct, struct_pb2.ListValue)):
                if level + 1 > limit:
                    node[key] = CLIPPED
                    replaced += 1
                else:
                    stack.append((child, level + 1))
    return replaced
