"""Prometheus metrics about runwatch itself (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runwatch.v1 import anomaly_pb2


class ServiceMetrics:
    """Counters updated once per batch (never per event: the hot path stays cheap)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.items = Counter(
            "runwatch_ingested_items", "Ingested items by outcome", ["outcome"], registry=self.registry
        )
        self.batches = Counter("runwatch_batches", "Ingested batches", registry=self.registry)
        self.anomalies = Counter(
            "runwatch_anomalies", "Anomaly revisions raised", ["kind", "severity"], registry=self.registry
        )
        self.batch_seconds = Histogram(
            "runwatch_batch_seconds",
            "Time to validate and run detection on one batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.active_runs = Gauge("runwatch_active_runs", "Runs being watched", registry=self.registry)
        self.watchers = Gauge("runwatch_watchers", "Open WatchAnomalies streams", registry=self.registry)

    def observe_batch(self, accepted: int, duplicates: int, rejected: int, seconds: float) -> None:
        self.batches.inc()
        if accepted:
            self.items.labels("accepted").inc(accepted)
        if duplicates:
            self.items.labels("duplicate").inc(duplicates)
        if rejected:
            self.items.labels("rejected").inc(rejected)
        self.batch_seconds.observe(seconds)

    def observe_anomaly(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.anomalies.labels(
            anomaly_pb2.AnomalyKind.Name(anomaly.kind).removeprefix("ANOMALY_KIND_"),
            anomaly_pb2.Severity.Name(anomaly.severity).removeprefix("SEVERITY_"),
        ).inc()

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
