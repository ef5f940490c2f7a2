"""Conversions from friendly Python values to runwatch.v1 messages and enums."""

from __future__ import annotations

import math
import numbers
import operator
import os
import platform
import reprlib
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import struct_pb2

from runwatch.v1 import anomaly_pb2, runs_pb2

__all__ = [
    "MAX_LOG_TEXT_BYTES",
    "MAX_STEP",
    "RUN_ID_PATTERN",
    "default_environment",
    "log_level",
    "metrics_map",
    "new_run_id",
    "require_mapping",
    "run_kind",
    "run_status",
    "severity",
    "step_number",
    "struct_to_dict",
    "to_struct",
    "truncate_text",
    "validate_run_id",
]

# The server's own limits, so the client refuses early exactly what the server would.
from runwatch.service.nesting import MAX_NESTING, too_deep
from runwatch.service.validation import MAX_TEXT_BYTES as MAX_LOG_TEXT_BYTES
from runwatch.service.validation import RUN_ID_PATTERN, check_project

#: The largest step there is: ``MetricEvent.step`` and ``LogLine.step`` are ``int64`` on the wire and in the store.
MAX_STEP = 2**63 - 1


def _enum(value: Any, enum: Any, prefix: str, aliases: Mapping[str, int], what: str) -> int:
    """An enum number from an int, a full or short name (case-insensitive) or an alias."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a name or an int, got {value!r}")
    if isinstance(value, int):
        if value not in enum.values():
            raise ValueError(f"unknown {what} {value}; expected one of {list(enum.values())}")
        return int(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in aliases:
            return aliases[key]
        full = value.strip().upper()
        if not full.startswith(prefix):
            full = prefix + full
        known = enum.keys()
        if full in known:
            return enum.Value(full)
        names = sorted({*aliases, *(k[len(prefix) :].lower() for k in known)})
        raise ValueError(f"unknown {what} {value!r}; expected one of {names}")
    raise TypeError(f"{what} must be a name or an int, got {type(value).__name__}")


def run_kind(value: str | int) -> int:
    """``RunKind`` number from ``"training"``, ``"deployment"`` or an int.

    Examples
    --------
    >>> run_kind("deployment") == runs_pb2.RUN_KIND_DEPLOYMENT
    True
    """
    return _enum(value, runs_pb2.RunKind, "RUN_KIND_", {"train": 1, "serving": 2}, "run kind")


def run_status(value: str | int) -> int:
    """``RunStatus`` number from ``"finished"``, ``"failed"``, ``"killed"`` or an int.

    Examples
    --------
    >>> run_status("failed") == runs_pb2.RUN_STATUS_FAILED
    True
    """
    aliases = {"completed": 2, "success": 2, "ok": 2, "error": 3, "crashed": 3, "stopped": 4, "cancelled": 4}
    return _enum(value, runs_pb2.RunStatus, "RUN_STATUS_", aliases, "run status")


def log_level(value: str | int) -> int:
    """``LogLevel`` number from ``"debug"`` ... ``"critical"``, or an int (also stdlib ``logging`` levels).

    Examples
    --------
    >>> log_level("warn") == log_level(30) == runs_pb2.LOG_LEVEL_WARNING
    True
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10:
        # stdlib logging: DEBUG=10 ... CRITICAL=50
        return min(max(value // 10, 1), 5)
    return _enum(value, runs_pb2.LogLevel, "LOG_LEVEL_", {"warn": 3, "fatal": 5}, "log level")


def severity(value: str | int) -> int:
    """``Severity`` number from ``"info"`` ... ``"critical"``, or an int (0 = everything).

    Examples
    --------
    >>> severity("warning") == anomaly_pb2.SEVERITY_WARNING
    True
    """
    return _enum(value, anomaly_pb2.Severity, "SEVERITY_", {"warn": 2, "": 0, "all": 0}, "severity")


def new_run_id(prefix: str = "run") -> str:
    """A fresh, unique run id.

    Examples
    --------
    >>> rid = new_run_id()
    >>> rid.startswith("run-") and len(rid) == 36 and validate_run_id(rid) == rid
    True
    """
    return f"{prefix}-{uuid.uuid4().hex}"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if the server will accept it, else raise ``ValueError``."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(f"run_id must be 1-128 characters of [A-Za-z0-9._:/@+-], got {run_id!r}")
    return run_id


def validate_project(project: str) -> str:
    """Return ``project`` if the server will accept it as a run's project, else raise ``ValueError`` naming why."""
    if not isinstance(project, str):
        raise TypeError(f"project must be a string, got {type(project).__name__}")
    violation = check_project(project)
    if violation is not None:
        raise ValueError(f"project: {violation[1]}")
    return project


def step_number(value: Any, name: str = "step") -> int:
    """``value`` as a step the server accepts: a whole number from 0 to :data:`MAX_STEP`.

    Ints (numpy and torch integer scalars too) and floats with a whole value (``3.0``, as step
    arithmetic such as ``epoch * steps_per_epoch / 2`` gives) are accepted; anything that would have
    to be rounded or guessed (``2.9``, ``True``, ``"4"``) is refused, naming ``name``.

    Raises
    ------
    TypeError
        When ``value`` is not a number.
    ValueError
        When it is fractional, not finite, negative or beyond a signed 64-bit integer.

    Examples
    --------
    >>> step_number(7), step_number(3.0)
    (7, 3)
    >>> step_number(2.9)
    Traceback (most recent call last):
    ...
    ValueError: step must be a whole number, got 2.9 (float): rounding it would put the data at another step
    >>> step_number(2**64)
    Traceback (most recent call last):
    ...
    ValueError: step must fit in a signed 64-bit integer (at most 9223372036854775807, ...), got 18446744073709551616
    """
    number = _whole_number(value, name)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    if number > MAX_STEP:
        raise ValueError(
            f"{name} must fit in a signed 64-bit integer (at most {MAX_STEP}, the wire format's int64), got {number}"
        )
    return number


def _whole_number(value: Any, name: str) -> int:
    described = f"{reprlib.repr(value)} ({type(value).__name__})"
    # A bool (also numpy's and torch's) converts to 0 or 1, which is never the step that was meant.
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        raise TypeError(f"{name} must be an int, got {described}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an int, got {described}")
    if not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(
            f"{name} must be a whole number, got {described}: rounding it would put the data at another step"
        )
    return int(value)


def require_mapping(value: Any, name: str, example: str) -> Mapping:
    """``value`` when it is a mapping, else a ``TypeError`` naming ``name`` and showing ``example``.

    Examples
    --------
    >>> require_mapping([1, 2], "metrics", "{'loss': 0.5}")
    Traceback (most recent call last):
    ...
    TypeError: metrics must be a mapping such as {'loss': 0.5}, got [1, 2] (list)
    """
    if not isinstance(value, Mapping):
        described = f"{reprlib.repr(value)} ({type(value).__name__})"
        raise TypeError(f"{name} must be a mapping such as {example}, got {described}")
    return value


def _json_like(value: Any) -> Any:
    """Coerce ``value`` into what ``google.protobuf.Struct`` can hold."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_like(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        try:
            return _json_like(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist):
        return _json_like(tolist())
    return str(value)


def to_struct(values: Mapping[str, Any] | None, field: str = "hyperparameters") -> struct_pb2.Struct:
    """A ``Struct`` from a JSON-like mapping; other values (numpy, tensors, objects) are coerced.

    Raises
    ------
    TypeError
        When ``values`` is not a mapping (None is an empty one), naming ``field``.
    ValueError
        When ``values`` nest objects or lists deeper than the server accepts
        (:data:`~runwatch.service.nesting.MAX_NESTING` levels), naming the path.

    Examples
    --------
    >>> s = to_struct({"lr": 1e-3, "layers": (64, 32), "opt": {"name": "adam"}})
    >>> s["lr"], list(s["layers"]), s["opt"]["name"]
    (0.001, [64.0, 32.0], 'adam')
    >>> deep = {"a": {"b": 1}}
    >>> for _ in range(16):
    ...     deep = {"a": deep}
    >>> to_struct(deep)
    Traceback (most recent call last):
    ...
    ValueError: hyperparameters.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nested deeper than 16 levels, the server's limit; flatten deeper settings (e.g. {"a.b": 1})
    """
    s = struct_pb2.Struct()
    if values is not None:
        require_mapping(values, field, "{'lr': 0.001}")
    if values:
        # Checked before and after coercion: raw first so that no depth reaches the recursive
        # coercion, then again for arrays that became nested lists.
        _check_nesting(values, field)
        plain = _json_like(dict(values))
        _check_nesting(plain, field)
        s.update(plain)
    return s


def _check_nesting(values: Any, field: str) -> None:
    v = too_deep(values, field, MAX_NESTING)
    if v:
        raise ValueError(f'{v[0]}: {v[1]}, the server\'s limit; flatten deeper settings (e.g. {{"a.b": 1}})')


def whole_as_int(x: float) -> int | float:
    """``x`` as an ``int`` when it is a whole number a double holds exactly, else unchanged.

    A ``Struct`` keeps every number as a double, so ``batch_size=32`` comes back as
    ``32.0``, which ``range()`` and slicing refuse; a whole number is far more often an
    integer setting (sizes, epochs, seeds) than a float that happened to be whole.

    >>> whole_as_int(32.0), whole_as_int(0.5), whole_as_int(float("inf")), whole_as_int(2.0**60)
    (32, 0.5, inf, 1.152921504606847e+18)
    """
    return int(x) if x.is_integer() and abs(x) <= 2**53 else x


def struct_to_dict(struct: struct_pb2.Struct, number_as: Callable[[float], Any] = whole_as_int) -> dict[str, Any]:
    """A plain dict from a ``Struct``, each number through ``number_as`` (whole numbers as ints by default).

    Not protobuf's ``MessageToDict``: it refuses NaN and infinities, which a run's
    hyperparameters may hold, and one such run would break every listing, export and
    advice that reads it. The dashboard passes a ``number_as`` that writes them as strings.

    Examples
    --------
    >>> struct_to_dict(to_struct({"lr": 0.1, "opt": {"name": "adam"}})) == {"lr": 0.1, "opt": {"name": "adam"}}
    True
    >>> sorted(struct_to_dict(to_struct({"dropout": float("inf"), "betas": [0.9, None], "batch_size": 32})).items())
    [('batch_size', 32), ('betas', [0.9, None]), ('dropout', inf)]
    """
    return {key: _plain(value, number_as) for key, value in struct.fields.items()}


def _plain(value: struct_pb2.Value, number_as: Callable[[float], Any]) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return number_as(value.number_value)
    if kind == "struct_value":
        return struct_to_dict(value.struct_value, number_as)
    if kind == "list_value":
        return [_plain(item, number_as) for item in value.list_value.values]
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None  # null_value, or no kind set (as MessageToDict reads it)


def metrics_map(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metric name to float; accepts ints, bools, numpy and one-element torch values.

    Raises
    ------
    TypeError
        When ``metrics`` is not a mapping, a name is not a string or a value is not a number.

    Examples
    --------
    >>> metrics_map({"loss": 1, "acc": 0.5})
    {'loss': 1.0, 'acc': 0.5}
    """
    out: dict[str, float] = {}
    for name, value in require_mapping(metrics, "metrics", "{'loss': 0.5}").items():
        if not isinstance(name, str):
            raise TypeError(f"metric names must be str, got {name!r}")
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metric {name!r} is not a number: {value!r}") from exc
    return out


def truncate_text(text: str, limit: int = MAX_LOG_TEXT_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def default_environment() -> dict[str, str]:
    """Facts about this process for ``RunStart.environment``."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
