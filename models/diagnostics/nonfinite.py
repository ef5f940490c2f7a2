"""Non-finite metric values (NaN / Inf)."""

from __future__ import annotations

import math

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
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
    """Flags a metric the first time it becomes NaN or infinite.

    Follows SageMaker Debugger's ``ExplodingTensor`` rule (any NaN/Inf in a
    monitored tensor) and Lightning's ``EarlyStopping(check_finite=True)``.

    Examples
    --------
    >>> d = NonFiniteDiagnostic()
    >>> h = d.handler("loss")
    >>> h(1, 0.0, 0.5) is None
    True
    >>> h(2, 0.0, float("inf")).kind.name
    'NONFINITE'
    """

    name = "nonfinite"
    version = "1"
    config_class = NonFiniteConfig
    reference = "SageMaker Debugger ExplodingTensor; Lightning EarlyStopping(check_finite)"

    def handler(self, metric: str) -> MetricHandler | None:
        prefixes = self.config.prefixes
        if prefixes and not metric.startswith(prefixes):
            return None

        def check(step: int, wall_time: float, value: float) -> Finding | None:
            if value - value == 0.0:  # false only for NaN and +/-Inf
                return None
            what = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
            return Finding(
                AnomalyKind.NONFINITE,
                Severity.CRITICAL,
                score=1e9,
                step=step,
                metric=metric,
                explanation=f"{metric} became {what} at step {step}",
                layer=metric.rsplit("/", 1)[1] if "/" in metric and not metric.startswith("val/") else "",
            )

        return check
