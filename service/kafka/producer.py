"""A producer that delivers a list of records or keeps trying: recreated after failures, bounded backoff."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from runwatch.service.kafka.config import KafkaSettings

log = logging.getLogger("runwatch.kafka")


@dataclass(slots=True)
class OutRecord:
    """One record to produce; ``partition`` None lets the key choose it (murmur2, as Java clients do)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


class DeliveryStopped(RuntimeError):
    """Delivery was abandoned because the service is stopping."""


class ReliableProducer:
    """Wraps one ``KafkaProducer``.

    :meth:`deliver` returns only when the broker acknowledged every record (per
    the ``acks`` setting), retrying the failed ones. After any failed delivery
    the producer is closed and a fresh one made: an idempotent producer whose
    broker lost its state (a restart, a fenced producer id) can never recover,
    and a new producer costs little next to a failure.
    """

    def __init__(self, settings: KafkaSettings, role: str, stopping: threading.Event | None = None) -> None:
        self.settings = settings
        self.role = role
        self.stopping = stopping or threading.Event()
        self.recreated = 0
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._producer = self._create()

    def _create(self) -> KafkaProducer:
        return KafkaProducer(**self.settings.producer_options(self.role), max_block_ms=10_000)

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = self._create()
            return self._producer

    def recreate(self, reason: str) -> None:
        """Drop the current producer (unsent records are lost; callers re-send them)."""
        with self._lock:
            old, self._producer = self._producer, None
            self.recreated += 1
        log.warning("%s producer recreated after: %s", self.role, reason)
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception:  # closing a broken producer must not stop its replacement
                log.debug("closing the old producer failed", exc_info=True)

    def send(self, r: OutRecord):
        """Queue one record; returns kafka-python's future. Raises what ``KafkaProducer.send`` raises."""
        return self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition)

    def deliver(self, records: list[OutRecord]) -> list:
        """Produce ``records`` and wait until all are acknowledged; returns their metadata in order.

        Retries with backoff (``reconnect_backoff_ms`` doubling up to ``reconnect_backoff_max_ms``)
        until delivered; raises :class:`DeliveryStopped` only when the service stops meanwhile.
        """
        results: list = [None] * len(records)
        todo = list(range(len(records)))
        delay = self.settings.reconnect_backoff_ms / 1000
        while todo:
            if self.stopping.is_set():
                raise DeliveryStopped(f"{len(todo)} record(s) not delivered: stopping")
            failed: list[int] = []
            error = ""
            futures = []
            try:
                producer = self.producer
                for i in todo:
                    r = records[i]
                    futures.append(
                        (i, producer.send(r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition))
                    )
                producer.flush(timeout=self.settings.delivery_timeout_ms / 1000 + 5)
            except Exception as exc:  # noqa: BLE001 - KafkaError, IllegalStateError, timeouts: all mean "try again"
                error = f"{type(exc).__name__}: {exc}"
            done = {i for i, _ in futures}
            failed = [i for i in todo if i not in done]
            for i, fut in futures:
                if fut.succeeded():
                    results[i] = fut.value
                else:
                    failed.append(i)
                    if not error:
                        exc = fut.exception if fut.is_done else None
                        error = f"{type(exc).__name__}: {exc}" if exc is not None else "not acknowledged in time"
            todo = sorted(failed)
            if todo:
                self.recreate(f"{len(todo)} of {len(records)} record(s) failed ({error})")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_backoff_max_ms / 1000)
        return results

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout)
            except KafkaError:
                log.debug("producer close failed", exc_info=True)


def wait_for_cluster(settings: KafkaSettings) -> None:
    """Fail fast and clearly if no broker answers within ``start_timeout_s``."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + settings.start_timeout_s
    while True:
        try:
            KafkaAdminClient(**settings.common_options(), client_id=f"{settings.client_id}-probe").close()
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"no Kafka broker answered at {settings.bootstrap} within {settings.start_timeout_s:g} s ({exc})"
                ) from None
            time.sleep(0.5)
