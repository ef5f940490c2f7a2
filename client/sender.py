"""Background delivery of telemetry over one ``IngestService.StreamEvents`` stream.

:class:`BatchSender` owns a bounded queue that callers append to without ever
touching the network, and a daemon thread that cuts the queue into
``EventBatch`` messages (every ``max_batch_items`` items or ``flush_interval``
seconds, whichever comes first), writes them to a single bidirectional stream
and matches the server's ``IngestAck`` replies by sequence number.

Delivery is at-least-once: a batch stays *un-acked* until its ack arrives. If
the stream breaks, the sender reconnects with bounded exponential backoff and
re-sends every un-acked batch with its original sequence number; the server
drops exact duplicates and counts them in ``IngestAck.duplicates``. When the
queue is full the oldest metric event or log line is dropped (never a
``RunStart``/``RunEnd`` while others remain) and counted.

A disk spool, when added, belongs where batches are formed and acked
(``_form_batch`` / ``_on_ack``): persist a batch when it enters ``_unacked``,
delete it on ack, reload un-acked batches at start.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

__all__ = ["BatchSender", "SenderStats", "START", "EVENT", "LOG", "END"]

logger = logging.getLogger("runwatch.client")

START, EVENT, LOG, END = 0, 1, 2, 3
_CONTROL = (START, END)

# Stream failures that re-sending the same batch cannot fix.
_POISON_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE}
)
_POISON_ATTEMPTS = 3


@dataclass(frozen=True)
class SenderStats:
    """Snapshot of a sender's counters (items are starts, events, log lines and ends).

    Attributes
    ----------
    enqueued
        Items handed to the sender.
    sent
        Items written to the stream the first time.
    resent
        Items written again after a reconnect.
    acked
        Items the server acknowledged as accepted (duplicates included).
    duplicates
        Of ``acked``, items the server recognised as re-sent duplicates.
    rejected
        Items the server rejected; see :attr:`BatchSender.violations`.
    dropped
        Items given up client-side: queue overflow, a batch the server kept
        refusing, or still undelivered at close.
    queued
        Items waiting in the queue now.
    unacked
        Items sent and waiting for their ack now.
    batches_sent, batches_acked
        Batches written the first time / acknowledged.
    reconnects
        Streams opened after the first.
    connected
        Whether a stream is open now.
    last_error
        The most recent stream error, ``""`` if none.
    """

    enqueued: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    queued: int = 0
    unacked: int = 0
    batches_sent: int = 0
    batches_acked: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str = ""

    @property
    def pending(self) -> int:
        """Items not yet acknowledged (queued or in flight)."""
        return self.queued + self.unacked


@dataclass
class _Pending:
    batch: runs_pb2.EventBatch
    size: int
    first_id: int
    sent: bool = False
    failures: int = 0


class _Stream:
    """One ``StreamEvents`` call: a request queue feeding it and a thread reading acks."""

    def __init__(self, stub: service_pb2_grpc.IngestServiceStub, generation: int) -> None:
        self.generation = generation
        self.requests: queue.SimpleQueue[runs_pb2.EventBatch | None] = queue.SimpleQueue()
        # Sequences written to this stream and not yet acknowledged, in write order.
        self.outstanding: deque[int] = deque()
        self.broken = False
        self.got_ack = False
        self.error: grpc.RpcError | None = None
        self.call = stub.StreamEvents(self._iter_requests())
        self.reader: threading.Thread | None = None

    def _iter_requests(self) -> Iterator[runs_pb2.EventBatch]:
        while True:
            batch = self.requests.get()
            if batch is None:
                return
            yield batch

    def write(self, batch: runs_pb2.EventBatch) -> None:
        self.outstanding.append(batch.sequence)
        self.requests.put(batch)

    def match(self, sequence: int) -> int | None:
        """The sequence an ack answers: its own if known, else the oldest outstanding one.

        The server acks every batch in order, but cannot echo the sequence of a
        batch it could not decode.
        """
        if sequence in self.outstanding:
            self.outstanding.remove(sequence)
            return sequence
        return self.outstanding.popleft() if self.outstanding else None

    def end(self) -> None:
        """Half-close: no more batches (also unblocks gRPC's request-consuming thread)."""
        self.requests.put(None)


class BatchSender:
    """Queues telemetry items and delivers them in batches over one gRPC stream.

    Parameters
    ----------
    channel
        Channel to the runwatch server.
    max_queue
        Most items waiting to be batched; beyond it the oldest event or log
        line is dropped.
    max_batch_items, max_batch_bytes
        Limits of one ``EventBatch``.
    flush_interval
        Longest time, in seconds, an item waits before its batch is sent.
    max_inflight
        Most un-acked batches; while reached, items wait in the queue.
    backoff_initial, backoff_max
        Reconnect delay bounds in seconds (doubling, with jitter).

    Examples
    --------
    >>> import grpc
    >>> sender = BatchSender(grpc.insecure_channel("127.0.0.1:1"))  # nothing listens there
    >>> sender.put(EVENT, runs_pb2.MetricEvent(run_id="r", step=0, metrics={"loss": 1.0}))
    >>> sender.flush(timeout=0.2)
    False
    >>> sender.stats().pending
    1
    >>> sender.close(timeout=0)
    False
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        max_queue: int = 10_000,
        max_batch_items: int = 256,
        max_batch_bytes: int = 1 << 20,
        flush_interval: float = 0.05,
        max_inflight: int = 32,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        if max_queue < 1 or max_batch_items < 1 or max_inflight < 1:
            raise ValueError("max_queue, max_batch_items and max_inflight must be >= 1")
        self._stub = service_pb2_grpc.IngestServiceStub(channel)
        self.max_queue = max_queue
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.max_inflight = max_inflight
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

        self._cond = threading.Condition(threading.Lock())
        # (item id, kind, message, enqueue time); ids grow by one per item.
        self._queue: deque[tuple[int, int, Any, float]] = deque()
        self._unacked: OrderedDict[int, _Pending] = OrderedDict()
        self._next_id = 1
        self._next_seq = 1
        self._flushing = 0
        self._closing = False
        self._stream: _Stream | None = None
        self._generation = 0
        self._counts = dict.fromkeys(
            ("enqueued", "sent", "resent", "acked", "duplicates", "rejected", "dropped"), 0
        ) | {"batches_sent": 0, "batches_acked": 0, "reconnects": 0}
        self._last_error = ""
        self._failing = False
        self._last_reject_log = 0.0
        #: Recent rejections as (batch sequence, field path, reason), newest last.
        self.violations: deque[tuple[int, str, str]] = deque(maxlen=100)
        self._thread = threading.Thread(target=self._run, name="runwatch-sender", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------

    def put(self, kind: int, message: Any) -> None:
        """Queue one item; never blocks on the network.

        ``kind`` is :data:`START`, :data:`EVENT`, :data:`LOG` or :data:`END`
        and ``message`` the matching ``runwatch.v1`` message.
        """
        with self._cond:
            if self._closing:
                raise RuntimeError("sender is closed")
            if len(self._queue) >= self.max_queue:
                self._drop_oldest()
            was_empty = not self._queue
            self._queue.append((self._next_id, kind, message, time.monotonic()))
            self._next_id += 1
            self._counts["enqueued"] += 1
            # Wake the sender only when its plan changes: a batch timer starts or a batch is full.
            if was_empty or len(self._queue) == self.max_batch_items:
                self._cond.notify_all()

    def _drop_oldest(self) -> None:
        for i, item in enumerate(self._queue):
            if item[1] not in _CONTROL:
                del self._queue[i]
                break
        else:
            self._queue.popleft()
        self._counts["dropped"] += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far now and wait until the server acknowledged it.

        Parameters
        ----------
        timeout
            Seconds to wait; None waits indefinitely.

        Returns
        -------
        bool
            True when every item queued before the call was acknowledged (or
            dropped); False on timeout.
        """
        with self._cond:
            target = self._next_id - 1
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done_through(target), timeout)
            finally:
                self._flushing -= 1

    def _done_through(self, item_id: int) -> bool:
        if self._queue and self._queue[0][0] <= item_id:
            return False
        if self._unacked and next(iter(self._unacked.values())).first_id <= item_id:
            return False
        return True

    def stats(self) -> SenderStats:
        """Current counters."""
        with self._cond:
            return SenderStats(
                **self._counts,
                queued=len(self._queue),
                unacked=sum(p.size for p in self._unacked.values()),
                connected=self._stream is not None and not self._stream.broken,
                last_error=self._last_error,
            )

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush (up to ``timeout`` seconds), then end the stream and stop the thread.

        Items still undelivered are counted as dropped. Returns whether the
        flush completed. Idempotent.
        """
        with self._cond:
            if self._closing:
                return not self._queue and not self._unacked
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        return flushed

    @property
    def closed(self) -> bool:
        return self._closing

    # -- sender thread -------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial
        while True:
            with self._cond:
                action = self._wait_for_work()
                if action == "stop":
                    stream = self._stream
                    lost = len(self._queue) + sum(p.size for p in self._unacked.values())
                    self._counts["dropped"] += lost
                    self._queue.clear()
                    self._unacked.clear()
                    self._cond.notify_all()
                    break
                stream = self._stream
                if action == "send":
                    pending = self._form_batch()
                    if pending is not None:
                        pending.sent = True
                        self._counts["sent"] += pending.size
                        self._counts["batches_sent"] += 1
                        # under the lock: the ack reader matches acks against stream.outstanding
                        stream.write(pending.batch)
                    continue
            # action == "connect": outside the lock, it may take a while
            if stream is not None:
                if stream.got_ack:
                    backoff = self.backoff_initial
                self._retire(stream)
                with self._cond:
                    if self._cond.wait_for(lambda: self._closing, timeout=_jitter(backoff)):
                        continue
                backoff = min(backoff * 2, self.backoff_max)
            self._connect()
        if stream is not None:
            self._retire(stream, graceful=True)

    def _wait_for_work(self) -> str:
        """Block until there is something to do: ``"send"``, ``"connect"`` or ``"stop"``."""
        while True:
            if self._closing:
                return "stop"
            has_work = bool(self._queue) or bool(self._unacked)
            if has_work and (self._stream is None or self._stream.broken):
                return "connect"
            timeout = None
            if self._queue and len(self._unacked) < self.max_inflight:
                age = time.monotonic() - self._queue[0][3]
                if len(self._queue) >= self.max_batch_items or self._flushing or age >= self.flush_interval:
                    return "send"
                timeout = self.flush_interval - age
            self._cond.wait(timeout)

    def _form_batch(self) -> _Pending | None:
        """Move up to a batch's worth of items from the queue to ``_unacked``."""
        if not self._queue:
            return None
        batch = runs_pb2.EventBatch(sequence=self._next_seq)
        fields = (batch.starts, batch.events, batch.logs, batch.ends)
        first_id = self._queue[0][0]
        size = nbytes = 0
        while self._queue and size < self.max_batch_items:
            item_id, kind, message, _ = self._queue[0]
            item_bytes = message.ByteSize()
            if size and nbytes + item_bytes > self.max_batch_bytes:
                break
            self._queue.popleft()
            fields[kind].append(message)
            size += 1
            nbytes += item_bytes
            if kind == END:
                # The server applies ends after everything else in a batch; cutting here
                # keeps a later re-open of the same run id in order.
                break
        pending = _Pending(batch, size, first_id)
        self._unacked[self._next_seq] = pending
        self._next_seq += 1
        return pending

    def _connect(self) -> None:
        with self._cond:
            self._generation += 1
            if self._generation > 1:
                self._counts["reconnects"] += 1
            try:
                stream = _Stream(self._stub, self._generation)
            except Exception as exc:  # a closed channel raises here
                self._last_error = repr(exc)
                logger.warning("runwatch: cannot open stream: %s", exc)
                self._closing = True
                self._cond.notify_all()
                return
            self._stream = stream
            for pending in self._unacked.values():
                stream.write(pending.batch)
                if pending.sent:
                    self._counts["resent"] += pending.size
                else:
                    pending.sent = True
                    self._counts["sent"] += pending.size
                    self._counts["batches_sent"] += 1
        stream.reader = threading.Thread(
            target=self._read_acks, args=(stream,), name="runwatch-acks", daemon=True
        )
        stream.reader.start()

    def _read_acks(self, stream: _Stream) -> None:
        error: grpc.RpcError | None = None
        try:
            for ack in stream.call:
                self._on_ack(stream, ack)
        except grpc.RpcError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a broken stream must never kill delivery
            logger.exception("runwatch: unexpected error reading acks")
            self._last_error = repr(exc)
        with self._cond:
            stream.broken = True
            stream.error = error
            if error is not None:
                code = error.code() if hasattr(error, "code") else None
                detail = error.details() if hasattr(error, "details") else str(error)
                self._last_error = f"{getattr(code, 'name', code)}: {detail}"
                if not self._closing:
                    # One warning per outage; the retries that follow are debug noise.
                    log = logger.debug if self._failing else logger.warning
                    log("runwatch: stream to the server failed (%s); retrying in the background", self._last_error)
                    self._failing = True
                self._note_failure(stream, code)
            self._cond.notify_all()
        stream.end()

    def _note_failure(self, stream: _Stream, code: grpc.StatusCode | None) -> None:
        """Give up on the oldest batch when the server keeps failing the stream because of it."""
        if stream.got_ack or code not in _POISON_CODES or not self._unacked:
            return
        seq, pending = next(iter(self._unacked.items()))
        pending.failures += 1
        if pending.failures >= _POISON_ATTEMPTS:
            del self._unacked[seq]
            self._counts["dropped"] += pending.size
            logger.error(
                "runwatch: dropped batch %d (%d items) after %d stream failures: %s",
                seq,
                pending.size,
                pending.failures,
                self._last_error,
            )

    def _on_ack(self, stream: _Stream, ack: service_pb2.IngestAck) -> None:
        with self._cond:
            stream.got_ack = True
            if self._failing:
                self._failing = False
                logger.info("runwatch: stream to the server re-established")
            seq = stream.match(ack.sequence)
            pending = self._unacked.pop(seq, None) if seq is not None else None
            if pending is None:
                return  # an ack for a batch already acknowledged on an earlier stream
            c = self._counts
            c["acked"] += ack.accepted + ack.duplicates
            c["duplicates"] += ack.duplicates
            c["rejected"] += ack.rejected
            c["batches_acked"] += 1
            for v in ack.violations:
                self.violations.append((seq, v.field, v.reason))
            if ack.rejected:
                now = time.monotonic()
                if now - self._last_reject_log >= 10.0:
                    self._last_reject_log = now
                    first = ack.violations[0] if ack.violations else None
                    logger.warning(
                        "runwatch: server rejected %d item(s) of batch %d%s (%d rejected so far)",
                        ack.rejected,
                        seq,
                        f", e.g. {first.field}: {first.reason}" if first else "",
                        c["rejected"],
                    )
            for warning in ack.warnings:
                logger.info("runwatch: %s", warning)
            self._cond.notify_all()

    def _retire(self, stream: _Stream, graceful: bool = False) -> None:
        """Stop using ``stream``: half-close it, give its reader a moment, then cancel."""
        stream.end()
        reader = stream.reader
        if graceful and reader is not None:
            reader.join(timeout=2.0)
        stream.call.cancel()
        if reader is not None:
            reader.join(timeout=2.0)
        with self._cond:
            if self._stream is stream:
                self._stream = None


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)
