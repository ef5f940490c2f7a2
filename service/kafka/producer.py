"""A producer that delivers a list of records or keeps trying: recreated after failures, bounded backoff."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

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
    #: Sent instead when the broker (or the client's size limit) refuses this record as too large.
    fallback: OutRecord | None = None


#: Errors that re-sending the same record can never fix.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


def discard_producer(producer: KafkaProducer) -> None:
    """Close ``producer`` at once, failing every record it has not delivered (blocks up to ~2 s).

    ``close(timeout=0)`` is not enough: kafka-python first flushes with that timeout, gives
    up with KafkaTimeoutError while records are pending, and leaves its I/O thread running,
    which then delivers records whose callers were told they failed.
    """
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
    try:
        producer.close(timeout=2)
    except Exception:  # closing a broken producer must not stop its replacement
        log.debug("closing a discarded producer failed", exc_info=True)


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
        #: Bumped by every :meth:`recreate`: a record sent under an older epoch went to a discarded producer.
        self.epoch = 0
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._producer = self._create()

    def _create(self) -> KafkaProducer:
        return KafkaProducer(**self.settings.producer_options(self.role), max_block_ms=10_000)

    @property
    def producer(self) -> KafkaProducer:
        return self.current()[0]

    def current(self) -> tuple[KafkaProducer, int]:
        """The producer and its epoch (pass the epoch to :meth:`recreate` after a failure of its records).

        Raises what ``KafkaProducer()`` raises when a new one finds no broker to bootstrap from.
        """
        while True:
            with self._lock:
                if self._producer is not None:
                    return self._producer, self.epoch
                epoch = self.epoch
            # Not under the lock: a new producer bootstraps first, which takes up to 30 s with the
            # broker down, and recreate() must never wait that long (it is called on event loops).
            fresh = self._create()
            with self._lock:
                if self._producer is None and self.epoch == epoch:
                    self._producer = fresh
                    return fresh, epoch
            discard_producer(fresh)  # another thread made one meanwhile

    def recreate(self, reason: str, epoch: int | None = None) -> bool:
        """Drop the current producer: its undelivered records fail at once (callers re-send them).

        With ``epoch``, only if no other caller recreated it since that epoch (many records failing
        together then cost one new producer, not one each). Returns whether it was recreated.
        """
        with self._lock:
            if (epoch is not None and epoch != self.epoch) or self._producer is None:
                return False  # already replaced, or none made yet: nothing was sent by a broken one
            old, self._producer = self._producer, None
            self.recreated += 1
            self.epoch += 1
        log.warning("%s producer recreated after: %s", self.role, reason)
        if old is not None:
            # In the background: the caller may be an event loop, and the close may take a moment.
            threading.Thread(target=discard_producer, args=(old,), name="runwatch-producer-close", daemon=True).start()
        return True

    def send(self, r: OutRecord):
        """Queue one record; returns kafka-python's future. Raises what ``KafkaProducer.send`` raises."""
        return self.producer.send(r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition)

    def deliver(self, records: list[OutRecord]) -> list:
        """Produce ``records`` and wait until all are acknowledged; returns their metadata in order.

        Retries with backoff (``reconnect_backoff_ms`` doubling up to ``reconnect_backoff_max_ms``)
        until delivered; raises :class:`DeliveryStopped` only when the service stops meanwhile.
        Only records not acknowledged are sent again. A record refused as too large is replaced
        by its ``fallback`` (at once, without a new producer); one without a fallback is retried
        like any other failure.
        """
        records = list(records)
        results: list = [None] * len(records)
        todo = list(range(len(records)))
        delay = self.settings.reconnect_backoff_ms / 1000
        while todo:
            if self.stopping.is_set():
                raise DeliveryStopped(f"{len(todo)} record(s) not delivered: stopping")
            failed: list[int] = []
            shrunk = False
            error = ""
            futures = []
            epoch = None
            try:
                producer, epoch = self.current()
                for n, i in enumerate(todo):
                    r = records[i]
                    try:
                        fut = producer.send(r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition)
                        futures.append((i, fut))
                    except Exception as exc:
                        if isinstance(exc, TOO_LARGE) and r.fallback is not None:
                            log.warning("%s: %s; sending its fallback instead", _describe(r), exc)
                            records[i] = r.fallback
                            failed.append(i)
                            shrunk = True
                            continue
                        failed.extend(todo[n:])  # the rest waits, so records of one key stay in order
                        raise
                producer.flush(timeout=self.settings.delivery_timeout_ms / 1000 + 5)
            except Exception as exc:  # noqa: BLE001 - KafkaError, IllegalStateError, timeouts: all mean "try again"
                error = f"{type(exc).__name__}: {exc}"
            for i, fut in futures:
                if fut.succeeded():
                    results[i] = fut.value
                    continue
                failed.append(i)
                exc = fut.exception if fut.is_done else None
                if isinstance(exc, TOO_LARGE) and records[i].fallback is not None:
                    log.warning("%s: %s; sending its fallback instead", _describe(records[i]), exc)
                    records[i] = records[i].fallback
                    shrunk = True
                elif not error:
                    error = f"{type(exc).__name__}: {exc}" if exc is not None else "not acknowledged in time"
            todo = sorted(set(failed))
            if todo and (error or not shrunk):
                self.recreate(f"{len(todo)} of {len(records)} record(s) failed ({error or 'not acknowledged'})", epoch)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_backoff_max_ms / 1000)
        return results

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is pending for up to ``timeout`` seconds, then close (what is left fails)."""
        with self._lock:
            producer, self._producer = self._producer, None
            self.epoch += 1  # a producer being made meanwhile is discarded, not installed
        if producer is not None:
            try:
                producer.flush(timeout=timeout)
            except KafkaError:
                log.debug("producer flush at close failed", exc_info=True)
            discard_producer(producer)


def _describe(r: OutRecord) -> str:
    size = len(r.key or b"") + len(r.value or b"") + sum(len(k) + len(v or b"") for k, v in r.headers)
    return f"a {size}-byte record for topic {r.topic}"


def wait_for_cluster(settings: KafkaSettings) -> None:
    """Fail fast and clearly if no broker answers within ``start_timeout_s``.

    Each probe is given what is left of that time as its own bootstrap and request
    timeouts: kafka-python's defaults (30 s each) would otherwise hold the first probe
    far past a shorter setting before the deadline is even looked at.
    """
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + settings.start_timeout_s
    while True:
        left_ms = max(int((deadline - time.monotonic()) * 1000), 100)
        try:
            KafkaAdminClient(
                **settings.common_options(),
                client_id=f"{settings.client_id}-probe",
                bootstrap_timeout_ms=left_ms,
                request_timeout_ms=min(left_ms, settings.request_timeout_ms),
            ).close()
            return
        except KafkaError as exc:
            if time.monotonic() + 0.5 > deadline:
                raise ConnectionError(
                    f"no Kafka broker answered at {settings.bootstrap} within {settings.start_timeout_s:g} s ({exc})"
                ) from None
            time.sleep(0.5)
