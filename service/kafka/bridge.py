"""Kafka wiring of one :class:`~runwatch.service.server.RunwatchServer`: topics, front, consumer, producers."""

from __future__ import annotations

import asyncio
import logging
import threading

from grpc_health.v1 import health_pb2
from kafka.errors import KafkaError

from runwatch.service.kafka import log_repeats
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.consumer import DetectorConsumer, anomaly_record
from runwatch.service.kafka.front import KafkaIngestFront
from runwatch.service.kafka.metrics import KafkaCollector
from runwatch.service.kafka.producer import ReliableProducer, wait_for_cluster
from runwatch.service.kafka.topics import ensure_topics
from runwatch.v1 import anomaly_pb2, service_pb2

log = logging.getLogger("runwatch.kafka")


class KafkaBridge:
    """Started and stopped by the server; ``ingest`` replaces the in-process path of the gRPC door."""

    def __init__(self, server) -> None:
        self.server = server
        self.settings: KafkaSettings = server.settings.kafka
        self.stopping = threading.Event()
        self.producer: ReliableProducer | None = None
        self.front: KafkaIngestFront | None = None
        self.consumer: DetectorConsumer | None = None
        self.partitions = 0
        self.lost_sends = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        k = self.settings
        log_repeats.install()
        self.loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(wait_for_cluster, k)
            self.partitions = await asyncio.to_thread(ensure_topics, k)
            self.producer = await asyncio.to_thread(ReliableProducer, k, "detector", self.stopping)
            front_producer = await asyncio.to_thread(ReliableProducer, k, "front", self.stopping)
        except KafkaError as exc:
            raise ConnectionError(f"Kafka at {k.bootstrap}: {exc}") from None
        self.front = KafkaIngestFront(self.server.settings, k, front_producer, on_writable=self._ingest_writable)
        self.server.metrics.registry.register(KafkaCollector(self))
        if k.consume:
            self.consumer = DetectorConsumer(
                k, self.server, asyncio.get_running_loop(), self.producer, self.stopping, partitions=self.partitions
            )
            self.consumer.start()
        log.info(
            "kafka: %s, ingest %s (%d partitions), anomalies %s, group %s%s",
            k.bootstrap, k.ingest_topic, self.partitions, k.anomaly_topic, k.group,
            f", log lines {k.logs_topic}" if k.logs_topic else "",
        )

    def _ingest_writable(self, writable: bool) -> None:
        """Health follows the ingest topic: NOT_SERVING while it takes no records (any thread)."""
        status = health_pb2.HealthCheckResponse.SERVING if writable else health_pb2.HealthCheckResponse.NOT_SERVING
        if writable:
            log_repeats.REPEATS.flush()  # the outage's held-back counts, now that it is over

        async def report() -> None:
            for name in ("", "runwatch.v1.IngestService"):
                await self.server.health.set(name, status)

        if not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(report(), self.loop)

    async def ingest(self, raw: bytes) -> service_pb2.IngestAck:
        return await self.front.ingest(raw)

    def on_anomaly(self, anomaly: anomaly_pb2.Anomaly) -> None:
        """Anomalies raised outside a consumer cycle (time-based checks): sent without blocking."""
        if self.server.kafka_cycle_open or self.producer is None:
            return  # the cycle delivers its own anomalies before committing
        try:
            fut = self.producer.send(anomaly_record(self.settings.anomaly_topic, anomaly, self.settings.anomaly_format))
            fut.add_errback(self._lost)
        except Exception as exc:  # noqa: BLE001 - a lost time-based anomaly is logged, never raised
            self._lost(exc)

    def _lost(self, exc) -> None:
        self.lost_sends += 1
        log.warning("a time-based anomaly was not delivered to Kafka: %s", exc)

    async def stop(self, timeout: float = 30.0) -> None:
        """Commit the cycle in hand and leave the group (forced after ``timeout`` s), then close the producers."""
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop, timeout)
        self.stopping.set()
        if self.front is not None:
            await asyncio.to_thread(self.front.close)
        for producer in (self.producer, self.front.producer if self.front else None):
            if producer is not None:
                await asyncio.to_thread(producer.close)
