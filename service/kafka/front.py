"""The gRPC door when Kafka is on: accepted batches go to the ingest topic, one record per run.

Whichever door events come in by, the instance that owns the run's partition
detects on them. A batch is split by run (key = run id; items keep their order,
a run's starts in its first record and its ends in its last), checked for what
needs no run state (run ids, event shape, item checks), produced, and
acknowledged only once the broker has acknowledged every record of it. Checks
that need the run's state (unknown run, steps going back) happen on the owning
instance, whose rejections land in the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.message import DecodeError

from runwatch.service import validation as check
from runwatch.service.kafka import codecs
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.producer import OutRecord, ReliableProducer
from runwatch.service.settings import ServiceSettings
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

    def __init__(self, settings: ServiceSettings, kafka: KafkaSettings, producer: ReliableProducer) -> None:
        self.settings = settings
        self.kafka = kafka
        self.producer = producer
        # KafkaProducer.send blocks (up to max_block_ms) while metadata is missing or its buffer is full;
        # one worker thread keeps that off the event loop and keeps records in submission order.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runwatch-front-send")

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
            ack.violations.add(field="batch", reason=f"not a valid runwatch.v1.EventBatch protobuf: {exc}")
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
        else:
            records = [
                OutRecord(topic, run_id.encode(), b.SerializeToString(), _CONTENT_TYPE)
                for run_id, b in split_by_run(kept, self.kafka.max_message_bytes)
            ]
        loop = asyncio.get_running_loop()
        try:
            sent = await loop.run_in_executor(self._sender, lambda: [self.producer.send(r) for r in records])
            await asyncio.gather(*(_as_asyncio(f, loop) for f in sent))
        except Exception as exc:  # noqa: BLE001 - any failure means: not queued, re-send
            self.producer.recreate(f"ingest record not queued: {exc}")
            failed = service_pb2.IngestAck(sequence=batch.sequence, rejected=ack.rejected + n_items)
            failed.violations.extend(ack.violations)
            failed.violations.add(field="batch", reason=f"not queued to Kafka topic {topic}: {exc}; re-send it")
            return failed
        ack.accepted = n_items
        return ack


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
