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
