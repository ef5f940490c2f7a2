"""Deployment health: request latency spikes and error-rate increases."""

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.diagnostics.loss_spike import SpikeDiagnostic
from runwatch.models.findings import AnomalyKind


def metric_or_part(metric: str, base: str) -> bool:
    """Whether ``metric`` is ``base`` or one of its parts (``latency_ms/p99`` of ``latency_ms``)."""
    return metric == base or (metric.startswith(base) and metric[len(base)] == "/")


_INF = float("inf")


class LatencyConfig(DiagnosticConfig):
    """Settings of :class:`LatencyDiagnostic`.

    Parameters
    ----------
    metric
        Latency in milliseconds; ``<metric>/<anything>`` (``latency_ms/p99``)
        is watched too, each with its own baseline. Default ``"latency_ms"``.
    alpha
        EWMA weight of the baseline. Default 0.05.
    warmup
        Values before the first finding (model warm-up, cold caches).
        Default 50.
    z_threshold
        Robust z of a slow value. Default 6.
    patience
        Consecutive slow values. Default 3: a single request stalled by the
        scheduler or a GC pause is not an incident; a run of slow ones is.
    clip_z
        Slow values enter the baseline at ``mean + clip_z * scale``.
        Default 3.
    rel_floor
        Scale floor as a fraction of the baseline. Default 0.1.
    abs_floor_ms
        Scale floor in ms. Default 1.0: with a sub-millisecond baseline a few
        ms of jitter are not a degradation (6 ms above the baseline are).
    """

    metric: str = "latency_ms"
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=50, ge=1)
    z_threshold: float = Field(default=6.0, gt=0.0)
    patience: int = Field(default=3, ge=1)
    clip_z: float = Field(default=3.0, gt=0.0)
    rel_floor: float = Field(default=0.1, ge=0.0)
    abs_floor_ms: float = Field(default=1.0, ge=0.0)


class LatencyDiagnostic(SpikeDiagnostic):
    """Flags request latency far above its robust baseline.

    A robust z-score (EWMA mean / EWMA mean absolute deviation, the
    estimator of the EWMA mean / mean-absolute-deviation estimator of :func:`~runwatch.models.kernels.robust_spike`) of at least
    ``z_threshold`` for ``patience`` consecutive values, with the scale
    floored at ``abs_floor_ms`` and ``rel_floor`` x the baseline, and slow
    values winsorised before they enter the baseline, as in
    :class:`~runwatch.models.diagnostics.loss_spike.LossSpikeDiagnostic`
    (the compiled :func:`~runwatch.models.kernels.robust_spike` kernel).
    This is the static-threshold-free latency SLO alert of the SRE book
    ("Monitoring distributed systems": alert on symptoms, latency) with a
    learned threshold.

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = LatencyDiagnostic()
    >>> rows = [{"latency_ms/p99": 20.0 + (i % 5)} for i in range(100)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(100)), [0.0] * 100, rows))
    []
    >>> fs = d.observe_block(MetricBlock.from_rows([100, 101, 102], [0.0] * 3, [{"latency_ms/p99": 80.0}] * 3))
    >>> [(f.step, f.kind.name, f.metric) for f in fs]
    [(102, 'LATENCY', 'latency_ms/p99')]
    >>> fs[0].explanation
    'latency_ms/p99 = 80 ms is 25.2 robust SDs above its baseline 22.76 ms (scale 2.28) for 3 consecutive values'
    """

    name = "latency"
    version = "1"
    config_class = LatencyConfig
    reference = "Robust (EWMA/MAD) z-score on latency; Google SRE book, 'Monitoring distributed systems'"

    config: LatencyConfig
    kind = AnomalyKind.LATENCY
    unit = " ms"

    def watches(self, metric: str) -> bool:
        return metric_or_part(metric, self.config.metric)

    def spike_params(self) -> tuple:
        cfg = self.config
        return (
            float(cfg.alpha),
            int(cfg.warmup),
            float(cfg.z_threshold),
            float(cfg.clip_z),
            float(cfg.rel_floor),
            float(cfg.abs_floor_ms),
            0.0,
            -_INF,
            int(cfg.patience),
            0.0,
        )


class ErrorRateConfig(DiagnosticConfig):
    """Settings of :class:`ErrorRateDiagnostic`.

    Parameters
    ----------
    metric
        Fraction of failed requests per reporting window (0..1);
        ``<metric>/<anything>`` is watched too. Default ``"error_rate"``.
    alpha
        EWMA weight of the baseline. Default 0.1 (error rates arrive once
        per window, far less often than latencies).
    warmup
        Values before the first finding. Default 5.
    z_threshold
        Robust z. Default 4.
    min_rate
        The rate must also be at least this. Default 0.02 (2 %): one failed
        request in a window of 50-100 is noise, not an incident.
    abs_floor
        Scale floor. Default 0.005, so that from a clean baseline (0 %
        errors, zero spread) the ``min_rate`` of 2 % is also a z of 4.
    clip_z
        High rates enter the baseline at ``mean + clip_z * scale``.
        Default 3.
    patience
        Consecutive windows the rate must stay up. Default 2: at low traffic one failed request among
        the few of one window is a rate of 25 % or 50 %, noise that a second window does not repeat (a
        service at 3 requests a window and 0.3 % errors raised 6-11 CRITICAL findings over three days with
        1; none with 2). The SRE workbook's multi-window alerts ask the same of a short window.
    """

    metric: str = "error_rate"
    alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    warmup: int = Field(default=5, ge=1)
    z_threshold: float = Field(default=4.0, gt=0.0)
    min_rate: float = Field(default=0.02, ge=0.0)
    abs_floor: float = Field(default=0.005, ge=0.0)
    clip_z: float = Field(default=3.0, gt=0.0)
    patience: int = Field(default=2, ge=1)


class ErrorRateDiagnostic(SpikeDiagnostic):
    """Flags an error rate above its baseline and above an absolute minimum.

    Robust z-score against an EWMA / MAD baseline (winsorised, as in
    :class:`~runwatch.models.diagnostics.loss_spike.LossSpikeDiagnostic`;
    the compiled :func:`~runwatch.models.kernels.robust_spike` kernel)
    and an absolute minimum rate, i.e. the "error budget burn" symptom alert
    of the Google SRE workbook with a learned baseline.

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = ErrorRateDiagnostic()
    >>> rows = [{"error_rate": 0.0 if i % 4 else 0.01} for i in range(20)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(20)), [0.0] * 20, rows))
    []
    >>> d.observe_block(MetricBlock.single(20, 0.0, {"error_rate": 0.12}))   # one window: noise at low traffic
    []
    >>> (f,) = d.observe_block(MetricBlock.single(21, 0.0, {"error_rate": 0.12}))   # the second in a row
    >>> f.kind.name, f.severity.name
    ('ERROR_RATE', 'CRITICAL')
    >>> f.explanation
    'error_rate = 0.12 is 16.6 robust SDs above its baseline 0.004708 (scale 0.00694) for 2 consecutive values'
    """

    name = "error_rate"
    version = "1"
    config_class = ErrorRateConfig
    reference = "Robust (EWMA/MAD) z-score with a minimum rate; Google SRE workbook, alerting on SLOs"

    config: ErrorRateConfig
    kind = AnomalyKind.ERROR_RATE

    def watches(self, metric: str) -> bool:
        return metric_or_part(metric, self.config.metric)

    def spike_params(self) -> tuple:
        cfg = self.config
        return (
            float(cfg.alpha),
            int(cfg.warmup),
            float(cfg.z_threshold),
            float(cfg.clip_z),
            0.0,
            float(cfg.abs_floor),
            0.0,
            float(cfg.min_rate),
            int(cfg.patience),
            0.0,
        )
