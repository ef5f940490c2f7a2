"""Prometheus view of the Kafka bridge: read from the consumer's counters at scrape time.

A collector (not counters bumped on the hot path) so the consumer thread keeps
its plain integer counters and pays nothing per record for being observable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_COUNTERS = (
    ("records", "Ingest-topic records consumed"),
    ("events", "Metric events consumed from the ingest topic"),
    ("anomalies", "Anomaly records delivered to the anomaly topic by consumer cycles"),
    ("dead_letters", "Records sent to the dead-letter topic"),
    ("checkpoints", "Run-state checkpoints written to the state topic"),
    ("cycles", "Consume-detect-deliver-commit cycles"),
    ("commits", "Offset commits"),
    ("commit_failures", "Offset commits that failed (their records are re-consumed)"),
    ("restored_runs", "Runs restored from the state topic after a partition assignment"),
    ("rebalances", "Partition assignments received"),
    ("errors", "Consumer errors recovered from"),
    ("client_errors", "Errors the consumer's client (librdkafka) reported and retried itself"),
)


class KafkaCollector(Collector):
    """Exports ``runwatch_kafka_*`` metrics of one :class:`~runwatch.service.kafka.bridge.KafkaBridge`."""

    def __init__(self, bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator:
        b = self.bridge
        consumer = b.consumer
        if consumer is not None:
            stats = consumer.stats
            for name, doc in _COUNTERS:
                yield CounterMetricFamily(f"runwatch_kafka_{name}", doc, value=getattr(stats, name))
            age = GaugeMetricFamily(
                "runwatch_kafka_seconds_since_commit",
                "Seconds since the last offset commit (-1 before the first)",
            )
            age.add_metric([], time.perf_counter() - stats.last_commit_at if stats.last_commit_at else -1.0)
            yield age
        recreated = CounterMetricFamily(
            "runwatch_kafka_producer_recreations", "Producers closed and recreated after a failure", labels=["role"]
        )
        for role, producer in (("detector", b.producer), ("front", b.front.producer if b.front else None)):
            if producer is not None:
                recreated.add_metric([role], producer.recreated)
        yield recreated
        yield CounterMetricFamily(
            "runwatch_kafka_lost_sends", "Time-based anomalies the producer failed to deliver", value=b.lost_sends
        )
