"""The CLI's text for advisor answers: no "nan" where the advisor has no number to give."""

from __future__ import annotations

import math

from runwatch.service.formatting import format_suggestions
from runwatch.v1 import service_pb2


def _response(predicted: float, delta: float, stddev: float) -> service_pb2.SuggestResponse:
    s = service_pb2.Suggestion(rank=1, evidence=["not enough history to predict val/loss (n=2 ...)"])
    s.effect.metric, s.effect.predicted, s.effect.delta, s.effect.stddev = "val/loss", predicted, delta, stddev
    s.changes.add(description="learning rate lr 0.0001 -> 0.001 (10x higher)")
    return service_pb2.SuggestResponse(run_id="r", suggestions=[s])


def test_an_unpredicted_effect_says_so_instead_of_printing_nan() -> None:
    text = format_suggestions(_response(math.nan, math.nan, math.nan))
    assert "1. val/loss not predicted  params" in text and "nan" not in text.split("because")[0]
    no_baseline = format_suggestions(_response(0.31, math.nan, 0.05))  # a diverged run: nothing to subtract from
    assert "1. val/loss 0.31 (no baseline +- 0.05)" in no_baseline
    assert "1. val/loss 0.31 (-0.02 +- 0.05)" in format_suggestions(_response(0.31, -0.02, 0.05))


def test_a_metric_with_no_finite_value_shows_no_min_or_max() -> None:
    from runwatch.service.formatting import format_summary

    s = service_pb2.RunSummary()
    s.run.run_id = "r"
    s.metrics.add(name="loss", count=1, last=math.inf, min=math.nan, max=math.nan, nonfinite_count=1)
    line = next(x for x in format_summary(s).splitlines() if "loss" in x)
    assert "min=-" in line and "max=-" in line and "nan" not in line and "nonfinite 1" in line


def test_findings_folded_into_an_incident_are_counted_under_it_unless_all_is_asked() -> None:
    from runwatch.service.formatting import format_summary
    from runwatch.v1 import anomaly_pb2

    s = service_pb2.RunSummary()
    s.run.run_id = "r"
    root = s.anomalies.add(run_id="r", step=91, kind=anomaly_pb2.ANOMALY_KIND_VANISHING_GRADIENT,
                           severity=anomaly_pb2.SEVERITY_ERROR, explanation="layer0 grad norm 0")
    for i in range(3):
        s.anomalies.add(run_id="r", step=91, kind=root.kind, severity=anomaly_pb2.SEVERITY_INFO,
                        explanation=f"layer{i + 1} grad norm 0 [INFO: part of the VANISHING_GRADIENT incident at step 91 (l0)]")
    s.anomalies.add(run_id="r", step=181, kind=anomaly_pb2.ANOMALY_KIND_UPDATE_RATIO, severity=anomaly_pb2.SEVERITY_INFO,
                    explanation="not updated [INFO: symptom of the VANISHING_GRADIENT incident at step 91]")
    for name in ("grad_norm/classifier", "act/mean/classifier", "val/loss", "loss"):
        s.metrics.add(name=name, count=1, last=1.0, min=1.0, max=1.0)
    text = format_summary(s)
    assert "layer0 grad norm 0" in text and "layer1" not in text
    assert "+ 3 other layers (INFO) of the VANISHING_GRADIENT incident at step 91" in text
    assert "+ 1 UPDATE_RATIO symptoms (INFO) of the VANISHING_GRADIENT incident at step 91" in text
    listed = [line.split()[0] for line in text.split("  metrics:\n")[1].splitlines()]
    assert listed == ["loss", "val/loss", "grad_norm/classifier", "act/mean/classifier"]  # the run's own first
    everything = format_summary(s, all_anomalies=True)
    assert all(f"layer{i} grad norm 0" in everything for i in range(4)) and "other layers" not in everything


def test_part_of_groups_findings_under_their_incident_by_id() -> None:
    from runwatch.service.formatting import folded_under, format_summary
    from runwatch.v1 import anomaly_pb2

    s = service_pb2.RunSummary()
    s.run.run_id = "r"
    root = s.anomalies.add(id="root", run_id="r", step=95, first_step=91, kind=anomaly_pb2.ANOMALY_KIND_VANISHING_GRADIENT,
                           severity=anomaly_pb2.SEVERITY_ERROR, explanation="layer0 grad norm 0")
    for i in range(2):  # the explanation's fold note is not what groups them: part_of is
        s.anomalies.add(id=f"l{i}", run_id="r", step=91, kind=root.kind, severity=anomaly_pb2.SEVERITY_INFO,
                        explanation=f"layer{i + 1} grad norm 0", part_of="root")
    s.anomalies.add(id="u", run_id="r", step=120, kind=anomaly_pb2.ANOMALY_KIND_UPDATE_RATIO,
                    severity=anomaly_pb2.SEVERITY_INFO, explanation="not updated", part_of="root")
    text = format_summary(s)
    assert "+ 2 other layers (INFO) of the VANISHING_GRADIENT incident at step 91" in text
    assert "+ 1 UPDATE_RATIO symptoms (INFO) of the VANISHING_GRADIENT incident at step 91" in text
    assert "layer1" not in text and "layer0 grad norm 0" in text
    alone = anomaly_pb2.Anomaly(id="x", severity=anomaly_pb2.SEVERITY_INFO, explanation="a spike", part_of="gone")
    assert folded_under(alone, {a.id: a for a in s.anomalies}) is None  # its incident unknown and no note: shown


def test_watch_hides_what_is_folded_by_part_of_or_by_its_note() -> None:
    from runwatch.service.formatting import is_folded
    from runwatch.v1 import anomaly_pb2

    info, warning = anomaly_pb2.SEVERITY_INFO, anomaly_pb2.SEVERITY_WARNING
    assert is_folded(anomaly_pb2.Anomaly(severity=info, part_of="root", explanation="layer 3 grad norm 0"))
    assert is_folded(anomaly_pb2.Anomaly(severity=info, explanation="x [INFO: symptom of the NONFINITE incident at step 4]"))
    assert not is_folded(anomaly_pb2.Anomaly(severity=info, explanation="a spike [INFO: below 32 robust SDs]"))
    assert not is_folded(anomaly_pb2.Anomaly(severity=warning, part_of="root"))  # an alert is never hidden
