"""Human-readable one-liners and tables for the CLI and the demo."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Mapping

from runwatch.models.fusion import FOLDED_NOTE
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2


def enum_name(enum_type, value: int, prefix: str) -> str:
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def kind_name(kind: int) -> str:
    return enum_name(anomaly_pb2.AnomalyKind, kind, "ANOMALY_KIND_")


def severity_name(severity: int) -> str:
    return enum_name(anomaly_pb2.Severity, severity, "SEVERITY_")


def status_name(status: int) -> str:
    return enum_name(runs_pb2.RunStatus, status, "RUN_STATUS_")


def format_anomaly(a: anomaly_pb2.Anomaly) -> str:
    """``run  step  KIND  SEVERITY  metric[layer]  explanation`` on one line."""
    where = ",".join(a.metrics[:2]) + (f" [{a.layer}]" if a.layer else "")
    rev = f" (rev {a.revision})" if a.revision > 1 else ""
    return (
        f"{a.run_id:<22} step {a.step:>6}  {kind_name(a.kind):<20} {severity_name(a.severity):<8} "
        f"{where:<28} {a.explanation}{rev}"
    )


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def format_runs(runs: list[service_pb2.RunInfo]) -> str:
    header = f"{'run':<28} {'project':<14} {'status':<9} {'steps':>7} {'events':>8} {'anomalies':>9}  started"
    lines = [header]
    for r in runs:
        lines.append(
            f"{r.run_id:<28} {r.project:<14} {status_name(r.status):<9} {r.last_step:>7} {r.event_count:>8} "
            f"{r.anomaly_count:>9}  {_time(r.start_time)}"
        )
    return "\n".join(lines)


def is_folded(a: anomaly_pb2.Anomaly) -> bool:
    """Whether an anomaly is an INFO finding folded under another incident (``part_of``, or its fold note)."""
    return a.severity == anomaly_pb2.SEVERITY_INFO and (bool(a.part_of) or FOLDED_NOTE.search(a.explanation) is not None)


def folded_under(
    a: anomaly_pb2.Anomaly, incidents: Mapping[str, anomaly_pb2.Anomaly] | None = None
) -> tuple[str, str, int] | None:
    """``(part|symptom, root kind, root step)`` of an INFO finding that belongs to another incident, else None.

    The incident is ``a.part_of`` when ``incidents`` (the run's anomalies by id) holds it; anomalies
    stored before that field existed, or whose incident is not at hand, are read from their fold note.
    """
    if a.severity != anomaly_pb2.SEVERITY_INFO:
        return None
    root = incidents.get(a.part_of) if incidents is not None and a.part_of else None
    if root is not None:
        return ("part" if root.kind == a.kind else "symptom", kind_name(root.kind), int(root.first_step))
    m = FOLDED_NOTE.search(a.explanation)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def format_summary(s: service_pb2.RunSummary, max_metrics: int = 30, all_anomalies: bool = False) -> str:
    """A run's status, anomalies and metrics as text.

    INFO findings that fusion attributed to another incident (the other layers of a per-layer
    incident, its symptoms) are counted under it unless ``all_anomalies``: one vanishing-gradient
    incident across 20 layers is one line and a count, not 40 lines.
    """
    r = s.run
    lines = [
        f"run {r.run_id}  project {r.project}  {status_name(r.status)}"
        + (f" ({r.end_reason})" if r.end_reason else ""),
        (
            f"  started {_time(r.start_time)}, last step {r.last_step}, {r.event_count} events, "
            f"{r.anomaly_count} anomalies"
        ),
    ]
    if r.start.architecture.layers:
        layers = ", ".join(f"{l.name}:{l.type}({l.in_size}->{l.out_size})" for l in r.start.architecture.layers[:8])
        lines.append(f"  architecture: {r.start.architecture.total_params} params; {layers}")
    if s.anomalies:
        lines.append("  anomalies:")
        folded: Counter = Counter()
        incidents = {a.id: a for a in s.anomalies}
        for a in s.anomalies:
            under = None if all_anomalies else folded_under(a, incidents)
            if under is None:
                lines.append("    " + format_anomaly(a))
            else:
                folded[(*under, kind_name(a.kind))] += 1
        for (relation, root, step, kind), n in sorted(folded.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
            what = "other layers" if relation == "part" else f"{kind} symptoms"
            lines.append(f"    + {n} {what} (INFO) of the {root} incident at step {step}")
        if folded:
            lines.append("    (--all lists them)")
    if s.metrics:
        lines.append("  metrics:")
        # Run-level metrics (loss, lr, val/loss) before per-layer ones (grad_norm/<layer>, act/mean/<layer>).
        shown = sorted(s.metrics, key=lambda m: (m.name.count("/") - m.name.startswith("val/"), m.name))[:max_metrics]
        width = min(max(28, *(len(m.name) for m in shown)), 60)
        for m in shown:
            nf = f"  nonfinite {m.nonfinite_count}" if m.nonfinite_count else ""
            low, high = (f"{v:<12.6g}" if math.isfinite(v) else f"{'-':<12}" for v in (m.min, m.max))  # no finite value
            lines.append(f"    {m.name:<{width}} n={m.count:<6} last={m.last:<12.6g} min={low} max={high}{nf}")
        if len(s.metrics) > max_metrics:
            lines.append(f"    ... {len(s.metrics) - max_metrics} more")
    return "\n".join(lines)


def _signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}g}"


def format_suggestions(response: service_pb2.SuggestResponse) -> str:
    """Ranked suggestions as text: the diff, the predicted effect, the cost, the evidence."""
    if not response.suggestions:
        return f"run {response.run_id}: no suggestion predicted to improve it within the constraints"
    lines = [f"run {response.run_id}: {len(response.suggestions)} suggestion(s)"]
    for s in response.suggestions:
        e = s.effect
        if not math.isfinite(e.predicted):  # the advisor says why in the evidence ("not enough history ...")
            effect = f"{e.metric} not predicted"
        elif not math.isfinite(e.delta):  # no baseline to compare with (the run diverged)
            effect = f"{e.metric} {e.predicted:.4g} (no baseline +- {e.stddev:.2g})"
        else:
            effect = f"{e.metric} {e.predicted:.4g} ({_signed(e.delta)} +- {e.stddev:.2g})"
        lines.append(f"{s.rank}. {effect}  params {_signed(s.cost.params, 12)}, FLOPs {_signed(s.cost.flops, 12)}")
        lines.extend(f"     {c.description}" for c in s.changes)
        lines.extend(f"     because: {ev}" for ev in s.evidence)
    return "\n".join(lines)
