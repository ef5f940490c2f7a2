"""runwatch's records as pandas DataFrames, in the shapes W&B and MLflow users know; and writing them out.

- :func:`runs_frame`: one row per run, as MLflow's ``search_runs``: ``run_id``,
  ``project``, ``status`` (RUNNING, FINISHED, FAILED, KILLED), ``start_time``
  and ``end_time`` (UTC datetimes), ``incidents``, ..., and one
  ``params.<name>`` column per hyperparameter (nested ones flattened with dots);
- :func:`history_frame`: one row per step, one column per metric, with
  ``_step`` and ``_timestamp`` first, as W&B's ``run.history()``;
- :func:`anomalies_frame`: one row per incident (its latest revision).

pandas is imported when a frame is made (``pip install 'runwatch[data]'``);
Parquet output needs pyarrow too.

Examples
--------
>>> from runwatch.v1 import runs_pb2
>>> events = [runs_pb2.MetricEvent(step=0, wall_time=1.0, metrics={"loss": 2.0}),
...           runs_pb2.MetricEvent(step=0, wall_time=1.5, metrics={"val/loss": 2.5}),
...           runs_pb2.MetricEvent(step=1, wall_time=2.0, metrics={"loss": 1.0})]
>>> history_frame(events)
   _step  _timestamp  loss  val/loss
0      0         1.5   2.0       2.5
1      1         2.0   1.0       NaN
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwatch.client.convert import struct_to_dict
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["anomalies_frame", "history_frame", "runs_frame", "write_frame"]

FORMATS = ("csv", "parquet")


def pandas():
    """The pandas module, or an ImportError that says how to get it."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "runwatch's DataFrame API needs pandas: pip install 'runwatch[data]' (or pip install pandas)"
        ) from None
    return pd


def _name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix) if value else ""


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys; lists as JSON text (a cell holds one value).

    >>> flatten({"lr": 0.1, "optim": {"name": "adam", "betas": [0.9, 0.99]}}, "params.")
    {'params.lr': 0.1, 'params.optim.name': 'adam', 'params.optim.betas': '[0.9, 0.99]'}
    """
    out: dict[str, Any] = {}
    for key, v in value.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{key}."))
        elif isinstance(v, list):
            out[f"{prefix}{key}"] = json.dumps(v)
        else:
            out[f"{prefix}{key}"] = v
    return out


def _times(pd, df, columns: Iterable[str]) -> None:
    for c in columns:
        df[c] = pd.to_datetime(df[c].where(df[c] > 0), unit="s", utc=True)


RUN_COLUMNS = [
    "run_id", "project", "status", "kind", "start_time", "end_time", "end_reason", "last_step", "event_count",
    "incidents", "framework", "tags",
]  # fmt: skip


def runs_frame(
    runs: Iterable[service_pb2.RunInfo], incidents: Mapping[str, Mapping[str, int]] | None = None
) -> pd.DataFrame:
    """One row per run (MLflow ``search_runs`` shape); ``incidents``: run id -> {severity: count} adds
    ``incidents.<SEVERITY>`` columns.

    >>> from runwatch.v1 import service_pb2
    >>> info = service_pb2.RunInfo(run_id="r1", project="p", status=2, start_time=1.7e9, anomaly_count=2)
    >>> info.start.hyperparameters.update({"lr": 0.01, "model": {"depth": 4}})
    >>> df = runs_frame([info])
    >>> row = df.iloc[0]
    >>> row.run_id, row.status, int(row.incidents), float(row["params.lr"]), float(row["params.model.depth"])
    ('r1', 'FINISHED', 2, 0.01, 4.0)
    >>> str(row.start_time), str(row.end_time)
    ('2023-11-14 22:13:20+00:00', 'NaT')
    """
    pd = pandas()
    rows = []
    for r in runs:
        row = {
            "run_id": r.run_id,
            "project": r.project,
            "status": _name(runs_pb2.RunStatus, r.status, "RUN_STATUS_"),
            "kind": _name(runs_pb2.RunKind, r.kind, "RUN_KIND_"),
            "start_time": r.start_time,
            "end_time": r.end_time,
            "end_reason": r.end_reason,
            "last_step": r.last_step,
            "event_count": r.event_count,
            "incidents": r.anomaly_count,
            "framework": r.start.framework,
            "tags": ",".join(r.start.tags),
        }
        if incidents is not None:
            for severity, count in incidents.get(r.run_id, {}).items():
                row[f"incidents.{severity}"] = count
        row.update(flatten(struct_to_dict(r.start.hyperparameters), "params."))
        rows.append(row)
    df = pd.DataFrame.from_records(rows, columns=None if rows else RUN_COLUMNS)
    counts = sorted(c for c in df.columns if c.startswith("incidents."))
    params = sorted(c for c in df.columns if c.startswith("params."))
    df = df[RUN_COLUMNS + counts + params]
    df[counts] = df[counts].fillna(0).astype("int64")
    _times(pd, df, ("start_time", "end_time"))
    return df


def history_frame(events: Iterable[runs_pb2.MetricEvent], metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per step (W&B ``run.history()`` shape): ``_step``, ``_timestamp``, then the metrics by name.

    Events that share a step are merged (a later value of a metric wins);
    ``_timestamp`` is the newest wall time of the step, in seconds. A metric
    asked for but never logged is a column of NaN.

    A NaN the run logged and a value it never logged are both NaN here;
    ``df.attrs["logged_nan"]`` (present when the run logged a NaN) tells them
    apart, and :func:`write_frame` writes the first as ``nan`` and the second
    as an empty cell (CSV) or null (Parquet).
    """
    pd = pandas()
    rows: dict[int, dict[str, float]] = {}
    for ev in events:
        row = rows.get(ev.step)
        if row is None:
            row = rows[ev.step] = {"_step": ev.step, "_timestamp": ev.wall_time}
        elif ev.wall_time > row["_timestamp"]:
            row["_timestamp"] = ev.wall_time
        row.update(ev.metrics)
    df = pd.DataFrame.from_records(list(rows.values()), columns=None if rows else ["_step", "_timestamp"])
    names = set(df.columns) - {"_step", "_timestamp"}
    names.update(metrics or ())
    df = df.reindex(columns=["_step", "_timestamp", *sorted(names)])
    df["_step"] = df["_step"].astype("int64")
    df = df.astype({c: "float64" for c in df.columns if c != "_step"})
    logged_nan = {(step, k) for step, row in rows.items() for k, v in row.items() if math.isnan(v)}
    df = df.sort_values("_step", kind="stable").reset_index(drop=True)
    if logged_nan:
        mask = pd.DataFrame(False, index=df.index, columns=df.columns)
        row_of = {step: i for i, step in enumerate(df["_step"].tolist())}
        for step, name in logged_nan:
            mask.iat[row_of[step], df.columns.get_loc(name)] = True
        df.attrs["logged_nan"] = mask
    return df


def concat_histories(frames: list[pd.DataFrame], key: str, values: list[str]) -> pd.DataFrame:
    """Histories of several runs, one after another, with a first column ``key`` (e.g. ``run_id``) naming each.

    Keeps each frame's ``logged_nan`` (see :func:`history_frame`), which ``pd.concat`` drops when the frames' differ.
    """
    pd = pandas()
    if not frames:
        return pd.DataFrame(columns=[key, "_step", "_timestamp"])
    tagged = []
    for df, value in zip(frames, values):
        df = df.copy()
        df.insert(0, key, value)
        tagged.append(df)
    out = pd.concat(tagged, ignore_index=True)
    out.attrs = {}
    masks = [df.attrs.get("logged_nan") for df in frames]
    if any(m is not None for m in masks):
        parts = [
            (m if m is not None else pd.DataFrame(False, index=df.index, columns=df.columns))
            for m, df in zip(masks, frames)
        ]
        out.attrs["logged_nan"] = (
            pd.concat(parts, ignore_index=True).reindex(columns=out.columns).fillna(False).astype(bool)
        )
    return out


def _with_logged_nan(df: pd.DataFrame, fmt: str):
    """``df`` ready to write: a logged NaN (``attrs["logged_nan"]``) as ``nan`` (CSV) or NaN (Parquet), a missing value empty / null.

    Returns a DataFrame for CSV and a ``pyarrow.Table`` for Parquet.
    """
    mask = df.attrs.get("logged_nan")
    if fmt == "parquet":
        import numpy as np
        import pyarrow as pa

        df = _arrow_safe(df)
        table = pa.Table.from_pandas(df, preserve_index=False)
        if mask is None:
            return table
        for name in mask.columns[mask.any()]:
            values = df[name].to_numpy(dtype="float64")
            missing = np.isnan(values) & ~mask[name].to_numpy()
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pa.array(values, mask=missing, type=pa.float64()))
        return table
    if mask is None:
        return df
    df = df.copy()
    for name in mask.columns[mask.any()]:
        col = df[name].astype(object)
        col[mask[name].to_numpy()] = "nan"
        df[name] = col
    return df


ANOMALY_COLUMNS = [
    "id", "run_id", "project", "kind", "severity", "state", "revision", "step", "first_step", "last_step",
    "occurrences", "score", "metric", "metrics", "layer", "detector", "detector_version", "explanation",
    "part_of", "wall_time", "detected_time",
]  # fmt: skip


def anomalies_frame(anomalies: Iterable[anomaly_pb2.Anomaly]) -> pd.DataFrame:
    """One row per incident: kind and severity by name, ``metric`` the primary one, ``metrics`` all (comma-separated).

    >>> from runwatch.v1 import anomaly_pb2 as pb
    >>> a = pb.Anomaly(id="i", run_id="r", kind=pb.ANOMALY_KIND_NONFINITE, severity=pb.SEVERITY_CRITICAL,
    ...                metrics=["loss", "lr"], detected_time=1.7e9)
    >>> [str(v) for v in anomalies_frame([a]).loc[0, ["kind", "severity", "metric", "metrics"]]]
    ['NONFINITE', 'CRITICAL', 'loss', 'loss,lr']
    """
    pd = pandas()
    rows = [
        {
            "id": a.id,
            "run_id": a.run_id,
            "project": a.project,
            "kind": _name(anomaly_pb2.AnomalyKind, a.kind, "ANOMALY_KIND_"),
            "severity": _name(anomaly_pb2.Severity, a.severity, "SEVERITY_"),
            "state": _name(anomaly_pb2.AnomalyState, a.state, "ANOMALY_STATE_"),
            "revision": a.revision,
            "step": a.step,
            "first_step": a.first_step,
            "last_step": a.last_step,
            "occurrences": a.occurrences,
            "score": a.score,
            "metric": a.metrics[0] if a.metrics else "",
            "metrics": ",".join(a.metrics),
            "layer": a.layer,
            "detector": a.detector,
            "detector_version": a.detector_version,
            "explanation": a.explanation,
            "part_of": a.part_of,
            "wall_time": a.wall_time,
            "detected_time": a.detected_time,
        }
        for a in anomalies
    ]
    df = pd.DataFrame.from_records(rows, columns=ANOMALY_COLUMNS)
    _times(pd, df, ("detected_time",))
    return df


def format_of(path: str | Path, given: str | None = None) -> str:
    """``given``, else the format the file name's suffix says (csv by default).

    >>> format_of("runs.parquet"), format_of("runs.csv"), format_of("-"), format_of("x.csv", "parquet")
    ('parquet', 'csv', 'csv', 'parquet')
    """
    if given:
        if given not in FORMATS:
            raise ValueError(f"format: expected csv or parquet, got {given!r}")
        return given
    return "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    # A column mixing types (a hyperparameter that is 0.1 in one run, "auto" in another) has no
    # Parquet type: write it as text. CSV needs no such care.
    pd = pandas()
    mixed = [c for c in df.columns if df[c].dtype == object and len({type(v) for v in df[c] if not pd.isna(v)}) > 1]
    if not mixed:
        return df
    df = df.copy()
    for c in mixed:
        df[c] = [None if pd.isna(v) else str(v) for v in df[c]]
    return df


def write_frame(df: pd.DataFrame, path: str | Path, fmt: str | None = None) -> str:
    """Write ``df`` as CSV or Parquet (``path`` "-" = standard output, CSV only); returns the format used."""
    import sys

    fmt = format_of(path, fmt)
    if fmt == "parquet":
        if str(path) == "-":
            raise ValueError("out: Parquet is binary: give a file name, not '-'")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                "Parquet output needs pyarrow: pip install 'runwatch[data]' (or pip install pyarrow)"
            ) from None
        import pyarrow.parquet as pq

        pq.write_table(_with_logged_nan(df, fmt), path)
    else:
        _with_logged_nan(df, fmt).to_csv(sys.stdout if str(path) == "-" else path, index=False)
    return fmt
