"""JSON-safe encoding of detector state, for checkpoints that move between instances.

Only plain data is encoded: numbers, strings, lists, tuples, string-keyed
dicts, numpy arrays (base64 of their bytes, dtype from a whitelist) and
:class:`~runwatch.models.diagnostics.loss_spike.MetricTable`. Decoding never
unpickles or imports anything, so a checkpoint from an untrusted topic can at
worst be rejected.

Examples
--------
>>> import numpy as np
>>> state = {"mean": 1.5, "window": np.array([1.0, np.nan]), "rows": ("a", 2)}
>>> back = decode(json.loads(json.dumps(encode(state))))
>>> back["mean"], back["rows"], back["window"].tolist()[0]
(1.5, ('a', 2), 1.0)
"""

from __future__ import annotations

import base64
import json  # noqa: F401  (used by the example)
import math
from typing import Any

import numpy as np

_DTYPES = {"<f8": np.float64, "<i8": np.int64, "|b1": np.bool_, "<f4": np.float32, "<i4": np.int32}


class SnapshotError(ValueError):
    """A checkpoint that cannot be decoded; the message names the offending place."""


def _table_type():
    from runwatch.models.diagnostics.loss_spike import MetricTable

    return MetricTable


def with_default(snapshot: dict, attribute: str, value: Any) -> dict:
    """A diagnostic's :meth:`~runwatch.models.base.Diagnostic.state_dict` from before it kept ``attribute``,
    with ``value`` for it (what a fresh diagnostic holds, or what stands for the unknown past).

    Examples
    --------
    >>> old = {"name": "d", "state": {"_a": 1}}
    >>> decode(with_default(old, "_b", {"seen": 0})["state"]["_b"])
    {'seen': 0}
    >>> with_default({"name": "d", "state": {"_b": 2}}, "_b", 0)["state"]   # kept: unchanged
    {'_b': 2}
    """
    state = snapshot.get("state")
    if not isinstance(state, dict) or attribute in state:
        return snapshot
    return {**snapshot, "state": {**state, attribute: encode(value)}}


def encode(value: Any) -> Any:
    """Turn detector state into JSON-compatible data."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.str not in _DTYPES:
            raise TypeError(f"cannot checkpoint arrays of dtype {arr.dtype}")
        return {"nd": arr.dtype.str, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("cannot checkpoint a dict with non-string keys")
        return {"dict": {k: encode(v) for k, v in value.items()}}
    if isinstance(value, _table_type()):
        return {"table": {"init": encode(value.init), "rows": value.rows, "labels": value.labels, "state": encode(value.state)}}
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def decode(data: Any, where: str = "state") -> Any:
    """Inverse of :func:`encode`; raises :class:`SnapshotError` naming the bad place."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, dict) or len(data) not in (1, 3):
        raise SnapshotError(f"{where}: unexpected value {str(data)[:60]!r}")
    if "float" in data:
        text = data["float"]
        if text not in ("nan", "inf", "-inf"):
            raise SnapshotError(f"{where}: bad float {text!r}")
        return float(text)
    if "nd" in data:
        dtype = _DTYPES.get(data.get("nd"))
        if dtype is None:
            raise SnapshotError(f"{where}: unsupported dtype {data.get('nd')!r}")
        try:
            raw = base64.b64decode(data["b64"], validate=True)
            return np.frombuffer(raw, dtype=dtype).reshape(data["shape"]).copy()
        except (KeyError, ValueError, TypeError) as exc:
            raise SnapshotError(f"{where}: bad array: {exc}") from None
    if "tuple" in data:
        return tuple(decode(v, f"{where}[{i}]") for i, v in enumerate(data["tuple"]))
    if "dict" in data:
        return {str(k): decode(v, f"{where}.{k}") for k, v in data["dict"].items()}
    if "table" in data:
        t = data["table"]
        table = _table_type()(decode(t["init"], f"{where}.init"))
        table.rows = {str(k): int(v) for k, v in t["rows"].items()}
        table.labels = [str(x) for x in t["labels"]]
        table.state = decode(t["state"], f"{where}.state")
        if table.state.ndim != 2 or len(table.state) != len(table.labels):
            raise SnapshotError(f"{where}: table state does not match its rows")
        return table
    raise SnapshotError(f"{where}: unexpected value {str(data)[:60]!r}")
