"""Non-finite metric values (NaN / Inf)."""

from __future__ import annotations

import functools
import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock, reported_indices
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.metric_names import is_score_metric
from runwatch.models.streaks import streak_counts


class NonFiniteConfig(DiagnosticConfig):
    """Which metrics to check.

    Parameters
    ----------
    prefixes
        Metric name prefixes to check; empty checks every metric.
    gradient_prefixes, gradient_persist
        A gradient statistic (``grad_norm``, ``update_ratio``) that is
        non-finite once is INFO: mixed-precision loss scaling produces an
        Inf gradient on purpose, skips that step and lowers its scale. It
        becomes CRITICAL after ``gradient_persist`` non-finite reports in a
        row (the scaler is not recovering). Defaults ``("grad_norm",
        "update_ratio")`` and 3. Every other metric is CRITICAL at once,
        except a score that is NaN.

    A score (mAP, AP, accuracy, F1...: :func:`~runwatch.models.metric_names.is_score_metric`)
    that is NaN is INFO: a score is NaN where it is undefined, not where training broke. COCO's
    evaluation gives the AP of a size range without objects as NaN (detectron2's ``bbox/APs``
    on a dataset of large objects, at every evaluation of a healthy run), and F1 with no
    positives is NaN; a run that does blow up shows it in its losses.
    """

    prefixes: tuple[str, ...] = ()
    gradient_prefixes: tuple[str, ...] = ("grad_norm", "update_ratio")
    gradient_persist: int = Field(default=3, ge=1)


class NonFiniteDiagnostic(Diagnostic):
    """Flags each metric whose value becomes NaN or infinite.

    Follows SageMaker Debugger's ``ExplodingTensor`` rule (any NaN/Inf in a
    monitored tensor) and Lightning's ``EarlyStopping(check_finite=True)``.
    Reports the first and last non-finite value of each metric in a block;
    the alert policy folds them into one incident.

    Examples
    --------
    >>> d = NonFiniteDiagnostic()
    >>> block = MetricBlock.from_rows([1, 2, 3], [0.0] * 3, [{"loss": 0.5}, {"loss": float("inf")}, {"loss": 1.0}])
    >>> [(f.kind.name, f.step, f.explanation) for f in d.observe_block(block)]
    [('NONFINITE', 2, 'loss became +Inf at step 2')]
    >>> grads = MetricBlock.from_rows([4, 5, 6, 7], [0.0] * 4, [{"grad_norm": v} for v in (1.0, float("inf"), 1.2, 1.1)])
    >>> [(f.severity.name, f.step) for f in d.observe_block(grads)]   # one skipped fp16 step
    [('INFO', 5)]
    >>> coco = MetricBlock.from_rows([8], [0.0], [{"bbox/AP": 23.9, "bbox/APs": float("nan")}])  # no small objects
    >>> [(f.severity.name, f.metric) for f in d.observe_block(coco)]
    [('INFO', 'bbox/APs')]
    """

    name = "nonfinite"
    version = "1"
    config_class = NonFiniteConfig
    reference = "SageMaker Debugger ExplodingTensor; Lightning EarlyStopping(check_finite); torch.amp.GradScaler"
    state_attributes = ("_streaks",)

    def __init__(self, config: NonFiniteConfig | None = None) -> None:
        super().__init__(config)
        self._streaks: dict[str, int] = {}  # gradient metric -> non-finite reports in a row so far

    def watches(self, metric: str) -> bool:
        prefixes = self.config.prefixes
        return not prefixes or metric.startswith(prefixes)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        findings = []
        persist = self.config.gradient_persist
        if block.all_finite():  # the common case: only the gradient streaks end
            cfg = self.config
            for metric in _gradient_metrics(tuple(block.columns), cfg.prefixes, cfg.gradient_prefixes):
                self._streaks[metric] = 0
            return findings
        for metric, col in self.select(block):
            values = col.values
            gradient = metric.startswith(self.config.gradient_prefixes)
            # The common case, every value finite, without the per-value streak pass.
            if math.isfinite(values[0]) if len(values) == 1 else np.isfinite(values).all():
                if gradient and len(values):
                    self._streaks[metric] = 0
                continue
            bad = ~np.isfinite(values)
            if gradient:
                streak = streak_counts(bad, self._streaks.get(metric, 0))
                self._streaks[metric] = int(streak[-1]) if len(streak) else self._streaks.get(metric, 0)
            if not bad.any():
                continue
            layer = metric.rsplit("/", 1)[1] if "/" in metric and not metric.startswith("val/") else ""
            reported = reported_indices(bad)
            if gradient:  # where a stretch becomes persistent, the incident escalates
                reported += [(int(i), int(i) - persist + 1) for i in np.flatnonzero(streak == persist)]
            for i, start in sorted(set(reported)):
                value = float(col.values[i])
                what = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
                step = int(col.steps[i])
                explanation = f"{metric} became {what} at step {step}"
                severity = Severity.CRITICAL
                if what == "NaN" and is_score_metric(metric):
                    severity = Severity.INFO
                    explanation += " (a score is NaN where it is undefined: COCO's AP of a size range without objects)"
                elif gradient and streak[i] < persist:
                    severity = Severity.INFO
                    explanation += (f" (mixed-precision loss scaling skips such steps; CRITICAL if {persist} "
                                    "reports in a row are non-finite)")
                elif gradient:
                    explanation += f", non-finite {int(streak[i])} reports in a row"
                findings.append(
                    Finding(
                        AnomalyKind.NONFINITE,
                        severity,
                        score=1e9 if severity is Severity.CRITICAL else float(streak[i]) if gradient else 1.0,
                        step=step,
                        metric=metric,
                        explanation=explanation,
                        layer=layer,
                        wall_time=float(col.wall_times[i]),
                        since=int(col.steps[max(start, 0)]),
                    )
                )
        return _one_incident(findings) if len(findings) > 1 else _keyed(findings)


@functools.lru_cache(maxsize=512)  # a run logs the same names block after block
def _gradient_metrics(names: tuple[str, ...], prefixes: tuple[str, ...], gradient: tuple[str, ...]) -> list[str]:
    """The watched (``prefixes``; none = all) gradient metrics among a block's column names, in name order.

    >>> _gradient_metrics(("loss", "grad_norm/fc1", "grad_norm"), (), ("grad_norm",))
    ['grad_norm', 'grad_norm/fc1']
    """
    return sorted(m for m in names if (not prefixes or m.startswith(prefixes)) and m.startswith(gradient))


# A run whose values turn non-finite is one incident, not one per metric: every CRITICAL finding shares this key.
RUN_KEY = "nonfinite"


def _keyed(findings: list[Finding]) -> list[Finding]:
    for f in findings:
        if f.severity is Severity.CRITICAL:
            f.key = RUN_KEY
    return findings


def _lead_rank(metric: str) -> tuple[int, str]:
    """The metric that names a multi-metric finding: the training loss, then other losses, then the rest."""
    return (0 if metric == "loss" else 1 if "loss" in metric else 2, metric)


def _one_incident(findings: list[Finding]) -> list[Finding]:
    """The findings at a step with a CRITICAL one merged into one (CRITICAL first, then the loss; the others related).

    >>> nan = lambda m: Finding(AnomalyKind.NONFINITE, Severity.CRITICAL, 1e9, 7, m, f"{m} became NaN at step 7")
    >>> [(f.metric, f.related, f.key, f.explanation) for f in _one_incident([nan("grad_norm"), nan("loss")])]
    [('loss', ('grad_norm',), 'nonfinite', 'loss became NaN at step 7; also non-finite there: grad_norm')]
    """
    at_step: dict[int, list[Finding]] = {}
    for f in findings:
        at_step.setdefault(f.step, []).append(f)
    out = []
    for group in at_step.values():
        if len(group) == 1 or all(f.severity is not Severity.CRITICAL for f in group):
            out.extend(group)
            continue
        group.sort(key=lambda f: (f.severity is not Severity.CRITICAL, *_lead_rank(f.metric)))
        lead = group[0]
        others = tuple(f.metric for f in group[1:])
        named = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
        lead.explanation += f"; also non-finite there: {named}"
        lead.related = others
        lead.since = min(f.since for f in group)
        out.append(lead)
    out.sort(key=lambda f: f.step)
    return _keyed(out)
