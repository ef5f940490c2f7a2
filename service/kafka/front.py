"""The gRPC door when Kafka is on: accepted batches go to the ingest topic, one record per run.

Whichever door events come in by, the instance that owns the run's partition
detects on them. A batch is split by run (key = run id; items keep their order,
a run's starts in its first record and its ends in its last), checked for what
needs no run state (run ids, event shape, item checks), produced, and
acknowledged only once the broker has acknowledged every record of it. Checks
that need the run's state (unknown run, steps going back) happen on the owning
instance, whose rejections land in the dead-letter topic.

A batch the broker does not confirm within the delivery timeout raises
:class:`~runwatch.service.unavailable.IngestUnavailable` (gRPC UNAVAILABLE: the
client re-sends it), never a rejection. The producer it was sent by is
discarded with every record still in it, and the later batches of the same
call are refused too, so a re-sent batch never lands behind a later one of its
run. From then until the cluster answers for the ingest topic again, every
batch is refused at once and ``on_writable(False)`` has turned health to
NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.message import DecodeError

from runwatch.service import validation as check
from runwatch.service.kafka import codecs
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.producer import TOO_LARGE, OutRecord, ReliableProducer
from runwatch.service.settings import ServiceSettings
from runwatch.service.unavailable import CURRENT_LANE, IngestUnavailable, Lane
from runwatch.service.wire_check import decode_error
from runwatch.v1 import runs_pb2, service_pb2

log = logging.getLogger("runwatch.kafka")
MAX_VIOLATIONS_REPORTED = 100
_CONTENT_TYPE = [(codecs.CONTENT_TYPE, codecs.protobuf_content_type(codecs.BATCH_TYPE))]


def split_by_run(batch: runs_pb2.EventBatch, max_bytes: int) -> list[tuple[str, runs_pb2.EventBatch]]:
    """One or more ``EventBatch`` per run, each under ``max_bytes`` when serialized, in item order.

    Examples
    --------
    >>> b = runs_pb2.EventBatch()
    >>> _ = b.starts.add(run_id="a"); _ = b.events.add(run_id="b", step=1); _ = b.events.add(run_id="a", step=1)
    >>> [(run, len(x.starts), len(x.events)) for run, x in split_by_run(b, 1 << 20)]
    [('a', 1, 1), ('b', 0, 1)]
    """
    per_run: dict[str, runs_pb2.EventBatch] = {}

    def of(run_id: str) -> runs_pb2.EventBatch:
        found = per_run.get(run_id)
        if found is None:
            found = per_run[run_id] = runs_pb2.EventBatch(sequence=batch.sequence)
        return found

    for x in batch.starts:
        of(x.run_id).starts.append(x)
    for x in batch.events:
        of(x.run_id).events.append(x)
    for x in batch.logs:
        of(x.run_id).logs.append(x)
    for x in batch.ends:
        of(x.run_id).ends.append(x)
    out = []
    for run_id, b in per_run.items():
        size = b.ByteSize()
        if size <= max_bytes or len(b.events) < 2:
            out.append((run_id, b))
            continue
        # Events are spread over records of similar size; starts lead, logs and ends close.
        n = -(-size // max_bytes) + 1
        step = -(-len(b.events) // n)
        chunks = [runs_pb2.EventBatch(sequence=b.sequence) for _ in range(n)]
        chunks[0].starts.extend(b.starts)
        for i in range(n):
            chunks[i].events.extend(b.events[i * step : (i + 1) * step])
        chunks[-1].logs.extend(b.logs)
        chunks[-1].ends.extend(b.ends)
        out.extend((run_id, c) for c in chunks if c.ByteSize())
    return out


class KafkaIngestFront:
    """``ingest(raw) -> IngestAck`` for the gRPC servicer, through the ingest topic."""

    def __init__(
        self,
        settings: ServiceSettings,
        kafka: KafkaSettings,
        producer: ReliableProducer,
        on_writable: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.producer = producer
        # KafkaProducer.send blocks (up to max_block_ms) while metadata is missing or its buffer is full;
        # one worker thread keeps that off the event loop and keeps records in submission order.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runwatch-front-send")
        self._record_limit = kafka.producer_options()["max_request_size"] - 1024  # less room for framing
        #: Called with False when the ingest topic stops taking records, True once it takes them again.
        self.on_writable = on_writable
        self.writable = True
        self.unwritable_since = 0.0
        self.last_error = ""
        self.refused = 0  # batches refused since the topic stopped taking records
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None

    def _check(self, batch: runs_pb2.EventBatch, ack: service_pb2.IngestAck) -> runs_pb2.EventBatch:
        """Drop the items that fail a stateless check (named in ``ack``); returns the kept ones."""
        max_metrics = self.settings.max_metrics_per_event
        kept = runs_pb2.EventBatch(sequence=batch.sequence)

        def reject(where: str, v: tuple[str, str]) -> None:
            ack.rejected += 1
            if len(ack.violations) < MAX_VIOLATIONS_REPORTED:
                ack.violations.add(field=f"{where}.{v[0]}", reason=v[1])

        for name, checker in (("starts", check.check_start), ("logs", check.check_log), ("ends", check.check_end)):
            for i, item in enumerate(getattr(batch, name)):
                v = checker(item)
                if v:
                    reject(f"{name}[{i}]", v)
                else:
                    getattr(kept, name).append(item)
        for i, ev in enumerate(batch.events):
            v = check.check_run_id(ev.run_id) or check.check_event_shape(ev, max_metrics)
            if v:
                reject(f"events[{i}]", v)
            else:
                kept.events.append(ev)
        return kept

    async def ingest(self, raw: bytes) -> service_pb2.IngestAck:
        ack = service_pb2.IngestAck()
        if len(raw) > self.settings.max_batch_bytes:
            ack.rejected = 1
            ack.violations.add(
                field="batch",
                reason=f"{len(raw)} bytes is over the limit of {self.settings.max_batch_bytes} bytes; split it into smaller batches",
            )
            return ack
        try:
            batch = runs_pb2.EventBatch.FromString(raw)
        except DecodeError as exc:
            ack.rejected = 1
            field, reason = decode_error(raw, runs_pb2.EventBatch.DESCRIPTOR, exc)
            ack.violations.add(field=field, reason=reason)
            return ack
        ack.sequence = batch.sequence
        kept = self._check(batch, ack)
        n_items = len(kept.starts) + len(kept.events) + len(kept.logs) + len(kept.ends)
        if not n_items:
            return ack
        topic = self.kafka.ingest_topic
        runs = {x.run_id for x in kept.events} | {x.run_id for x in kept.starts}
        runs.update(x.run_id for x in kept.logs)
        runs.update(x.run_id for x in kept.ends)
        if len(runs) == 1 and not ack.rejected and len(raw) <= self.kafka.max_message_bytes:
            records = [OutRecord(topic, next(iter(runs)).encode(), raw, _CONTENT_TYPE)]  # forwarded as received
            items = [n_items]
        else:
            parts = split_by_run(kept, self.kafka.max_message_bytes)
            records = [OutRecord(topic, run_id.encode(), b.SerializeToString(), _CONTENT_TYPE) for run_id, b in parts]
            items = [len(b.starts) + len(b.events) + len(b.logs) + len(b.ends) for _, b in parts]
        for r in records:
            if len(r.key) + len(r.value) > self._record_limit:
                # Checked before anything is queued: the producer would refuse this record and
                # queue the batch's others, and re-sending cannot make it smaller.
                failed = service_pb2.IngestAck(sequence=batch.sequence, rejected=ack.rejected + n_items)
                failed.violations.extend(ack.violations)
                failed.violations.add(
                    field="batch",
                    reason=f"the items of run {r.key.decode(errors='replace')!r} take {len(r.value)} bytes in one "
                    f"Kafka record, over the limit of {self._record_limit} bytes (--kafka-max-message-bytes); "
                    "send smaller items",
                )
                return failed
        lane = CURRENT_LANE.get() or Lane()
        loop = asyncio.get_running_loop()
        sent, epoch = await loop.run_in_executor(self._sender, self._send, records, lane)
        backstop = self.kafka.delivery_timeout_ms / 1000 + 5  # kafka-python answers by then
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(_as_asyncio(f, loop) for f in sent), return_exceptions=True), backstop
            )
        except TimeoutError:
            outcomes = [TimeoutError(f"no answer from the Kafka client in {backstop:g} s")]
        # A record the topic refuses as too large is a final rejection of its items (re-sending
        # cannot help); any other failure leaves the whole batch to be re-sent.
        error = next((o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, TOO_LARGE)), None)
        try:
            if error is not None:
                self._lost(lane, epoch, f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                lane.outstanding -= 1  # after _lost marked the lane: a later batch cannot slip in between
        for r, n, outcome in zip(records, items, outcomes):
            if isinstance(outcome, BaseException):
                ack.rejected += n
                if len(ack.violations) < MAX_VIOLATIONS_REPORTED:
                    ack.violations.add(
                        field="batch",
                        reason=f"the items of run {r.key.decode(errors='replace')!r} were refused by Kafka topic "
                        f"{topic} as too large ({outcome}); the topic's max.message.bytes must exceed "
                        "--kafka-max-message-bytes",
                    )
            else:
                ack.accepted += n
        return ack

    def _refusal(self) -> str:
        return (
            f"not queued: Kafka topic {self.kafka.ingest_topic} takes no records since "
            f"{time.monotonic() - self.unwritable_since:.0f} s ago ({self.last_error}); re-send it later"
        )

    def _send(self, records: list[OutRecord], lane: Lane) -> tuple[list, int]:
        """On the sender thread: queue ``records`` (all or none of a lane's batches per producer)."""
        with self._lock:
            if lane.failed:
                raise IngestUnavailable(
                    f"not queued: an earlier batch of this stream was lost ({lane.failed}); "
                    "re-send every batch from that one on"
                )
            if not self.writable:
                self.refused += 1
                # The lane's later batches are refused too, even once the topic is back: they
                # would land ahead of this one's re-sent copy.
                lane.failed = lane.failed or "refused while the Kafka topic took no records"
                raise IngestUnavailable(self._refusal())
        try:
            producer, epoch = self.producer.current()
        except Exception as exc:  # noqa: BLE001 - a new producer found no broker to bootstrap from
            self._lost(lane, None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            if lane.outstanding and lane.epoch != epoch:
                lane.failed = "its Kafka producer was replaced after a failure"
                raise IngestUnavailable(
                    f"not queued: an earlier batch of this stream was lost ({lane.failed}); "
                    "re-send every batch from that one on"
                )
            lane.epoch = epoch
            lane.outstanding += 1
        sent = []
        try:
            for r in records:
                sent.append(producer.send(r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition))
        except Exception as exc:  # noqa: BLE001 - metadata timeout, closed producer: the topic is not writable
            try:
                self._lost(lane, epoch, f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    lane.outstanding -= 1
        return sent, epoch

    def _lost(self, lane: Lane, epoch: int | None, error: str) -> None:
        """A batch of ``lane`` sent under producer ``epoch`` was not confirmed: raises IngestUnavailable."""
        with self._lock:
            lane.failed = lane.failed or error
            newly = self.writable
            if newly:
                self.writable = False
                self.unwritable_since = time.monotonic()
                self.refused = 0
            self.last_error = error
        # Its records (and those of every batch sent with them) are dropped with the producer, so
        # none of them lands later behind a re-sent copy.
        self.producer.recreate(f"ingest record not confirmed: {error}", epoch)
        if newly:
            log.warning(
                "Kafka topic %s takes no records (%s): ingest answers UNAVAILABLE (health NOT_SERVING) until it does",
                self.kafka.ingest_topic,
                error,
            )
            self._notify(False)
            self._probe = threading.Thread(target=self._wait_until_writable, name="runwatch-front-probe", daemon=True)
            self._probe.start()
        raise IngestUnavailable(
            f"not confirmed by Kafka topic {self.kafka.ingest_topic} ({error}); re-send it (a copy that did "
            "arrive is dropped as a duplicate)"
        )

    def _wait_until_writable(self) -> None:
        """Probe the cluster with backoff until it serves the ingest topic's metadata again."""
        k = self.kafka
        stopping = self.producer.stopping
        delay = k.reconnect_backoff_ms / 1000
        while not stopping.wait(delay):
            delay = min(delay * 2, k.reconnect_backoff_max_ms / 1000)
            try:
                producer = self.producer.producer  # a new one bootstraps from the cluster first
            except Exception as exc:  # noqa: BLE001 - no broker to bootstrap from: still down
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            try:
                # The producer is new since the failure: this waits for a real metadata answer.
                if not producer.partitions_for(k.ingest_topic):
                    continue
            except Exception as exc:  # noqa: BLE001 - timeouts and closed producers alike: try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            with self._lock:
                self.writable = True
                refused, since = self.refused, self.unwritable_since
            log.info(
                "Kafka topic %s takes records again after %.1f s (%d batch(es) refused meanwhile, to be re-sent)",
                k.ingest_topic,
                time.monotonic() - since,
                refused,
            )
            self._notify(True)
            return

    def _notify(self, writable: bool) -> None:
        if self.on_writable is not None:
            try:
                self.on_writable(writable)
            except Exception:  # health reporting must not break ingest
                log.exception("reporting the ingest topic's state failed")

    def close(self) -> None:
        """Stop the sender thread (pending sends finish first)."""
        self._sender.shutdown(wait=True)


def _as_asyncio(kafka_future, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    fut = loop.create_future()

    def ok(value) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(value))

    def err(exc) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(exc))

    kafka_future.add_callback(ok)
    kafka_future.add_errback(err)
    return fut
