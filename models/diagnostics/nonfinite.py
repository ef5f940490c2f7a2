"""Non-finite metric values (NaN / Inf)."""

from __future__ import annotations

import math

import numpy as np

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock, reported_indices
from runwatch.models.findings import AnomalyKind, Finding, Severity


class NonFiniteConfig(DiagnosticConfig):
    """Which metrics to check.

    Parameters
    ----------
    prefixes
        Metric name prefixes to check; empty checks every metric.
    """

    prefixes: tuple[str, ...] = ()


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
    """

    name = "nonfinite"
    version = "1"
    config_class = NonFiniteConfig
    reference = "SageMaker Debugger ExplodingTensor; Lightning EarlyStopping(check_finite)"

    def watches(self, metric: str) -> bool:
        prefixes = self.config.prefixes
        return not prefixes or metric.startswith(prefixes)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        findings = []
        for metric, col in self.select(block):
            finite = np.isfinite(col.values)
            if finite.all():
                continue
            layer = metric.rsplit("/", 1)[1] if "/" in metric and not metric.startswith("val/") else ""
            for i, start in reported_indices(~finite):
                value = float(col.values[i])
                what = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
                step = int(col.steps[i])
                findings.append(
                    Finding(
                        AnomalyKind.NONFINITE,
                        Severity.CRITICAL,
                        score=1e9,
                        step=step,
                        metric=metric,
                        explanation=f"{metric} became {what} at step {step}",
                        layer=layer,
                        wall_time=float(col.wall_times[i]),
                        since=int(col.steps[start]),
                    )
                )
        return findings
