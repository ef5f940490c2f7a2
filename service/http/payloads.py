"""The dashboard's JSON: the wire messages (RunInfo, Anomaly, LogLine, Suggestion) as plain dicts.

Every float goes through :func:`number`, so the output is strict JSON (NaN and
infinities, common in a diverging run's evidence, become strings), hyperparameters too
(:func:`struct_dict`).

Examples
--------
>>> from runwatch.v1 import anomaly_pb2
>>> a = anomaly_pb2.Anomaly(id="x", kind=anomaly_pb2.ANOMALY_KIND_NONFINITE, severity=anomaly_pb2.SEVERITY_CRITICAL)
>>> _ = a.evidence.add(metric="loss", step=7, value=float("nan"))
>>> d = anomaly_json(a)
>>> d["kind"], d["severity"], d["evidence"][0]["value"]
('NONFINITE', 'CRITICAL', 'NaN')
>>> health([a])
{'badge': 'critical', 'open': {'NONFINITE': 1}, 'incidents': 1}
>>> from google.protobuf import struct_pb2
>>> hp = struct_pb2.Struct()
>>> hp.update({"dropout": float("inf"), "opt": {"betas": [0.9, float("nan")]}})
>>> struct_dict(hp) == {"dropout": "Infinity", "opt": {"betas": [0.9, "NaN"]}}
True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from google.protobuf import struct_pb2

from runwatch.client.convert import struct_to_dict
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

_BADGES = {0: "healthy", 1: "info", 2: "warning", 3: "error", 4: "critical"}


def number(x: float) -> float | str:
    """``x`` itself when finite, else "NaN", "Infinity" or "-Infinity" (as JavaScript's ``Number()`` reads them)."""
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def struct_dict(struct: struct_pb2.Struct) -> dict:
    """A ``Struct`` (hyperparameters) as strict JSON: numbers through :func:`number`."""
    return struct_to_dict(struct, number_as=number)


def _enum(enum, value: int, prefix: str) -> str:
    """The name of an enum value without its prefix; the number itself for a value this build does not know."""
    return enum.Name(value).removeprefix(prefix) if value in enum.values() else str(value)


def kind_name(kind: int) -> str:
    return _enum(anomaly_pb2.AnomalyKind, kind, "ANOMALY_KIND_")


def severity_name(severity: int) -> str:
    return _enum(anomaly_pb2.Severity, severity, "SEVERITY_")


def anomaly_json(a: anomaly_pb2.Anomaly) -> dict:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "project": a.project or "default",
        "step": a.step,
        "first_step": a.first_step,
        "last_step": a.last_step,
        "wall_time": number(a.wall_time),
        "detected_time": number(a.detected_time),
        "kind": kind_name(a.kind),
        "severity": severity_name(a.severity),
        "level": a.severity,
        "score": number(a.score),
        "metrics": list(a.metrics),
        "layer": a.layer,
        "explanation": a.explanation,
        "detector": a.detector,
        "detector_version": a.detector_version,
        "occurrences": a.occurrences,
        "revision": a.revision,
        "state": _enum(anomaly_pb2.AnomalyState, a.state, "ANOMALY_STATE_"),
        "part_of": a.part_of,
        "evidence": [{"metric": e.metric, "step": e.step, "value": number(e.value)} for e in a.evidence],
    }


def health(anomalies: Iterable[anomaly_pb2.Anomaly]) -> dict:
    """A run's badge (its worst open incident's severity, "healthy" without one) and open incidents by kind."""
    open_ = [a for a in anomalies if a.state != anomaly_pb2.ANOMALY_STATE_RESOLVED]
    worst = max((a.severity for a in open_), default=0)
    by_kind = Counter(kind_name(a.kind) for a in open_)
    return {"badge": _BADGES.get(worst, "critical"), "open": dict(by_kind.most_common()), "incidents": len(open_)}


def step_or_none(step: int) -> int | None:
    """A last step as JSON: None (null) for a run with no step yet, which the store keeps as -1."""
    return step if step >= 0 else None


def run_json(info: service_pb2.RunInfo) -> dict:
    start = info.start
    return {
        "run_id": info.run_id,
        "project": info.project or "default",
        "kind": _enum(runs_pb2.RunKind, info.kind, "RUN_KIND_"),
        "status": _enum(runs_pb2.RunStatus, info.status, "RUN_STATUS_"),
        "start_time": number(info.start_time),
        "end_time": number(info.end_time),
        "end_reason": info.end_reason,
        "last_step": step_or_none(info.last_step),
        "event_count": info.event_count,
        "last_event_time": number(info.last_event_time),
        "anomaly_count": info.anomaly_count,
        "framework": start.framework,
        "tags": list(start.tags),
        "hyperparameters": struct_dict(start.hyperparameters),
    }


def log_json(line: runs_pb2.LogLine) -> dict:
    level = _enum(runs_pb2.LogLevel, line.level, "LOG_LEVEL_")
    return {"time": number(line.time), "step": line.step, "level": level, "text": line.text}


def suggestions_json(response: service_pb2.SuggestResponse) -> dict:
    return {
        "run_id": response.run_id,
        "suggestions": [
            {
                "rank": s.rank,
                "changes": [
                    {
                        "layer": c.layer,
                        "attribute": c.attribute,
                        "before": c.before,
                        "after": c.after,
                        "description": c.description,
                    }
                    for c in s.changes
                ],
                "effect": {
                    "metric": s.effect.metric,
                    "predicted": number(s.effect.predicted),
                    "delta": number(s.effect.delta),
                    "stddev": number(s.effect.stddev),
                },
                "cost": {"params": s.cost.params, "flops": s.cost.flops},
                "evidence": list(s.evidence),
            }
            for s in response.suggestions
        ],
    }
