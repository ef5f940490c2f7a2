"""Prometheus metrics about runwatch itself: on the dashboard's ``/metrics`` and on ``--metrics-port``.

Both ingest doors report here: the gRPC path (``RunwatchServer.ingest``) and the
Kafka consumer, each once per batch. Names and labels:

- ``runwatch_ingested_items_total{outcome}``: accepted, duplicate, rejected items;
- ``runwatch_rejected_items_total{reason}``: rejections by the field they name,
  indices dropped (``events.step``, ``events.run_id``, ``batch``...);
- ``runwatch_batches_total``, ``runwatch_batch_seconds``: batches and their validate+detect time;
- ``runwatch_anomalies_total{kind,severity}``: anomaly revisions raised;
- ``runwatch_detection_latency_seconds``: batch arrival to an anomaly's publication, per anomaly;
- ``runwatch_store_write_seconds``: a batch's writes, from submission to commit;
- ``runwatch_active_runs``, ``runwatch_watchers``, ``runwatch_dashboard_streams``;
- ``runwatch_alert_deliveries_total{sink}``, ``runwatch_alert_failures_total{sink}``: for the alert channels.

Examples
--------
>>> from prometheus_client import generate_latest
>>> m = ServiceMetrics()
>>> m.observe_batch(3, 0, 1, 0.002, violations=[("events[4].step", "steps must not decrease")])
>>> b"runwatch_rejected_items_total{reason=\\"events.step\\"} 1.0" in generate_latest(m.registry)
True
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runwatch.v1 import anomaly_pb2

_INDEX = re.compile(r"\[[^\]]*\]")
#: Distinct ``reason`` labels kept; rejections naming any further field count as "other" (bounded cardinality).
MAX_REASONS = 64
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


def reason_of(field: str) -> str:
    """The ``reason`` label of a rejection: its field path without indices, at most two parts deep.

    Examples
    --------
    >>> reason_of("events[12].metrics"), reason_of("starts[0].hyperparameters.a.b"), reason_of("")
    ('events.metrics', 'starts.hyperparameters', 'batch')
    """
    path = _INDEX.sub("", field).strip(".")
    return ".".join(path.split(".")[:2]) or "batch"


class ServiceMetrics:
    """Counters updated once per batch (never per event: the hot path stays cheap)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.items = Counter("runwatch_ingested_items", "Ingested items by outcome", ["outcome"], registry=r)
        # Each batch counts its items: the children looked up once, not per batch.
        self._accepted, self._duplicate, self._rejected = (
            self.items.labels(o) for o in ("accepted", "duplicate", "rejected")
        )
        self.rejections = Counter(
            "runwatch_rejected_items", "Rejected items by the field the rejection names", ["reason"], registry=r
        )
        self.batches = Counter("runwatch_batches", "Ingested batches", registry=r)
        self.anomalies = Counter("runwatch_anomalies", "Anomaly revisions raised", ["kind", "severity"], registry=r)
        self.batch_seconds = Histogram(
            "runwatch_batch_seconds", "Time to validate and run detection on one batch", buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.detection_seconds = Histogram(
            "runwatch_detection_latency_seconds",
            "Seconds from a batch's arrival to the publication of an anomaly it raised (one sample per anomaly)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write_seconds = Histogram(
            "runwatch_store_write_seconds",
            "Seconds from submitting a batch's writes to the store until they are committed",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.active_runs = Gauge("runwatch_active_runs", "Runs being watched", registry=r)
        self.watchers = Gauge("runwatch_watchers", "Open WatchAnomalies streams", registry=r)
        self.dashboard_streams = Gauge("runwatch_dashboard_streams", "Open dashboard event streams", registry=r)
        # Incremented by the alert channels (one sample per delivery attempt's outcome).
        self.alert_deliveries = Counter("runwatch_alert_deliveries", "Alerts delivered", ["sink"], registry=r)
        self.alert_failures = Counter(
            "runwatch_alert_failures", "Alerts that could not be delivered (after retries)", ["sink"], registry=r
        )
        self._reasons: set[str] = set()

    def observe_batch(
        self,
        accepted: int,
        duplicates: int,
        rejected: int,
        seconds: float,
        *,
        violations: Iterable = (),
        anomalies: int = 0,
        durable=None,
    ) -> None:
        """Count one batch.

        ``violations`` are the ack's (``IngestAck.violations`` or ``(field, reason)`` pairs);
        rejections beyond those reported count as "unreported". ``anomalies`` raised by the
        batch each add a detection-latency sample of ``seconds``; ``durable`` (the batch's
        store future) times the write when it resolves.
        """
        self.batches.inc()
        if accepted:
            self._accepted.inc(accepted)
        if duplicates:
            self._duplicate.inc(duplicates)
        if rejected:
            self._rejected.inc(rejected)
            self._count_reasons(rejected, violations)
        self.batch_seconds.observe(seconds)
        for _ in range(anomalies):
            self.detection_seconds.observe(seconds)
        if durable is not None:
            submitted = time.perf_counter()  # the pipeline submitted the writes just before returning
            durable.add_done_callback(lambda _: self.store_write_seconds.observe(time.perf_counter() - submitted))

    def _count_reasons(self, rejected: int, violations: Iterable) -> None:
        counted = 0
        for v in violations:
            field = v[0] if isinstance(v, tuple) else v.field
            label = reason_of(field)
            if label not in self._reasons:
                if len(self._reasons) >= MAX_REASONS:
                    label = "other"
                else:
                    self._reasons.add(label)
            self.rejections.labels(label).inc()
            counted += 1
        if rejected > counted:
            self.rejections.labels("unreported").inc(rejected - counted)

    def observe_anomaly(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.anomalies.labels(
            anomaly_pb2.AnomalyKind.Name(anomaly.kind).removeprefix("ANOMALY_KIND_"),
            anomaly_pb2.Severity.Name(anomaly.severity).removeprefix("SEVERITY_"),
        ).inc()

    def count_active_runs(self, count: Callable[[], float]) -> None:
        """Read ``runwatch_active_runs`` from ``count()`` at scrape time (no periodic update needed)."""
        self.active_runs.set_function(count)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
