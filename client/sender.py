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

With a :class:`~runwatch.client.spool.Spool` the sender works differently
behind the same API: the thread cuts the queue into batches on the same size
and age rules *whether or not a stream is open* and appends each to the spool
(a bounded folder of segment files), then sends spooled batches, oldest
first, while fewer than ``max_inflight`` are waiting for their ack, and
deletes each from the spool once acknowledged. So the in-memory queue stays
short while the service is down, nothing is lost to a service restart, and
batches still unsent when the client closes (or the process dies) stay on
disk for the next client using the same spool folder. A full spool drops its
oldest batches (keeping their ``RunStart``/``RunEnd`` items), counts them and
warns once; see :mod:`runwatch.client.spool`.
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

from runwatch.client.spool import DROPPED, Spool, SpoolRecord
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

__all__ = ["END", "EVENT", "LOG", "START", "BatchSender", "SenderStats"]

logger = logging.getLogger("runwatch.client")

START, EVENT, LOG, END = 0, 1, 2, 3
_CONTROL = (START, END)

# Stream failures that re-sending the same batch cannot fix. RESOURCE_EXHAUSTED is not one: the
# server answers it when a limit is reached (streams, runs of a project), and the same batches are
# accepted once there is room; they stay queued (or spooled) and are re-sent with back-off.
_POISON_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
_POISON_ATTEMPTS = 3


def _is_poison(code: grpc.StatusCode | None, detail: str) -> bool:
    # gRPC's own message-size refusal also says RESOURCE_EXHAUSTED: that batch never fits.
    return code in _POISON_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail)


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
        Of ``acked``, items the server already had and did not store again:
        batches re-sent after a reconnect (or left in a spool by an earlier
        client) whose first copy had arrived. The SDK sends nothing else the
        server counts so (an unchanged ``RunStart``, a metric event repeating
        its step's names), so a run whose stream never broke shows 0.
    rejected
        Items the server rejected; see :attr:`BatchSender.violations`.
    dropped
        Items given up client-side: queue or spool overflow, a batch the
        server kept refusing, or (without a spool) still undelivered at close.
    queued
        Items waiting in the queue now.
    unacked
        Items in batches not yet acknowledged now: in flight, or waiting in
        the spool.
    spooled
        Of ``unacked``, items waiting in the spool to be sent (0 without a spool).
    spool_bytes
        Bytes of unacknowledged batches in the spool.
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
    spooled: int = 0
    spool_bytes: int = 0
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
    record: SpoolRecord | None = None


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
        Longest time, in seconds, an item waits before its batch is formed
        (and sent, or spooled).
    max_inflight
        Most un-acked batches on the stream; while reached, items wait in the
        queue (or the spool).
    backoff_initial, backoff_max
        Reconnect delay bounds in seconds (doubling, with jitter).
    spool
        Keep batches in this on-disk spool until acknowledged (see the module
        docstring); the sender closes it.

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
        spool: Spool | None = None,
        target: str = "",
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
        self.spool = spool
        self.target = target  # for hints in warnings only ("" = none)

        self._cond = threading.Condition(threading.Lock())
        # (item id, kind, message, enqueue time); ids grow by one per item.
        self._queue: deque[tuple[int, int, Any, float]] = deque()
        self._unacked: OrderedDict[int, _Pending] = OrderedDict()
        self._next_id = 1
        self._next_seq = 1
        self._flushing = 0
        self._closing = False
        self._close_deadline: float | None = None  # time.monotonic() by which close() must return
        self._stream: _Stream | None = None
        self._generation = 0
        self._next_connect_at = 0.0
        self._backoff = backoff_initial
        # items taken from the queue and not yet in the spool: (first id, count)
        self._spilling: tuple[int, int] | None = None
        self._counts = dict.fromkeys(
            ("enqueued", "sent", "resent", "acked", "duplicates", "rejected", "dropped"), 0
        ) | {"batches_sent": 0, "batches_acked": 0, "reconnects": 0}
        self._last_error = ""
        self._failing = False
        self._denied = False  # the last stream failed on the client's credentials (UNAUTHENTICATED, PERMISSION_DENIED)
        self._last_reject_log = 0.0
        self._warned_full = False
        self._warned_spool_error = False
        #: Recent rejections as (batch sequence, field path, reason), newest last.
        self.violations: deque[tuple[int, str, str]] = deque(maxlen=100)
        self._thread = threading.Thread(target=self._run, name="runwatch-sender", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------

    def put(self, kind: int, message: Any) -> None:
        """Queue one item; never blocks on the network (nor on the disk).

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
        self._warn_full("queue", f"{self.max_queue} items")

    def _warn_full(self, what: str, bound: str) -> None:
        if self._warned_full:
            return
        self._warned_full = True
        logger.warning(
            "runwatch: the %s is full (%s) while the server is slow or unreachable; dropping the oldest "
            "events (RunStart/RunEnd are kept). This is reported once; stats().dropped counts them.",
            what,
            bound,
        )

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until the queue is at most half full (for bulk senders such as replay, not training loops).

        Returns False on timeout or when the sender is closing.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._queue) <= self.max_queue // 2 or self._closing, timeout)
            return ok and not self._closing

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
            dropped); False on timeout, or at once when the server refuses the
            client's credentials (a missing, unknown or revoked token).
        """
        with self._cond:
            target = self._next_id - 1
            self._flushing += 1
            if self._stream is None:
                self._next_connect_at = 0.0  # someone waits: try the server now, not after the backoff
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._done_through(target) or self._denied, timeout)
                return self._done_through(target)
            finally:
                self._flushing -= 1

    def _done_through(self, item_id: int) -> bool:
        if self._queue and self._queue[0][0] <= item_id:
            return False
        if self._spilling is not None and self._spilling[0] <= item_id:
            return False
        if self._unacked and next(iter(self._unacked.values())).first_id <= item_id:
            return False
        if self.spool is not None:
            oldest = self.spool.oldest_pending_id()
            if oldest is not None and oldest <= item_id:
                return False
        return True

    def stats(self) -> SenderStats:
        """Current counters."""
        with self._cond:
            queued = len(self._queue) + (self._spilling[1] if self._spilling else 0)
            if self.spool is None:
                unacked = sum(p.size for p in self._unacked.values())
                spooled = spool_bytes = 0
            else:
                unacked = self.spool.pending_items
                in_flight = sum(p.size for p in self._unacked.values())
                spooled = max(unacked - in_flight, 0)
                spool_bytes = self.spool.pending_bytes
            return SenderStats(
                **self._counts,
                queued=queued,
                unacked=unacked,
                spooled=spooled,
                spool_bytes=spool_bytes,
                connected=self._stream is not None and not self._stream.broken,
                last_error=self._last_error,
            )

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush (up to ``timeout`` seconds), then end the stream and stop the thread.

        Without a spool, items still undelivered are counted as dropped; with
        one, they stay in the spool for the next client that uses its folder.
        Returns whether the flush completed. Idempotent.
        """
        with self._cond:
            if self._closing:
                return not self._queue and not self._unacked
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._close_deadline = deadline
            self._cond.notify_all()
        # The thread spills what is queued (disk) and ends the stream; it waits for the server's last
        # acks only until the deadline (_retire), so this join is short even when the server hangs.
        self._thread.join(timeout=10.0)
        return flushed

    @property
    def closed(self) -> bool:
        return self._closing

    # -- sender thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self.spool is not None:
                try:
                    self.spool.close()
                except OSError as exc:
                    logger.warning("runwatch: closing the spool failed: %s", exc)

    def _loop(self) -> None:
        while True:
            spill: list[tuple[int, int, Any, float]] = []
            with self._cond:
                action = self._wait_for_work()
                stream = self._stream
                if action == "stop":
                    if self.spool is None:
                        lost = len(self._queue) + sum(p.size for p in self._unacked.values())
                        self._counts["dropped"] += lost
                        self._unacked.clear()
                    else:
                        spill = list(self._queue)  # written to the spool below, for the next client
                    self._queue.clear()
                    self._cond.notify_all()
                    break
                if action == "send" and self.spool is None:
                    pending = self._form_batch()
                    if pending is not None:
                        pending.sent = True
                        self._counts["sent"] += pending.size
                        self._counts["batches_sent"] += 1
                        # under the lock: the ack reader matches acks against stream.outstanding
                        stream.write(pending.batch)
                        self._cond.notify_all()
                    continue
                if action == "spill":
                    spill = self._take_batch_items()
                    if spill:
                        self._spilling = (spill[0][0], len(spill))
            # Disk and network work happens outside the lock.
            if action == "spill":
                if spill:
                    self._spill(spill)
            elif action == "send":
                self._send_from_spool()
            elif action == "retire":
                if stream.got_ack:
                    self._backoff = self.backoff_initial
                self._retire(stream)
                with self._cond:
                    self._next_connect_at = time.monotonic() + _jitter(self._backoff)
                    self._backoff = min(self._backoff * 2, self.backoff_max)
            elif action == "connect":
                self._connect()
        while spill:
            chunk, spill = spill[: self.max_batch_items], spill[self.max_batch_items :]
            with self._cond:
                self._spilling = (chunk[0][0], len(chunk))
            self._spill(chunk)
        if stream is not None:
            self._retire(stream, graceful=True)

    def _wait_for_work(self) -> str:
        """Block until there is something to do.

        Returns ``"stop"``, ``"spill"`` (spool mode: cut a batch into the
        spool), ``"send"``, ``"retire"`` (the stream broke) or ``"connect"``.
        """
        spool = self.spool
        while True:
            if self._closing:
                return "stop"
            now = time.monotonic()
            timeout: float | None = None
            age = now - self._queue[0][3] if self._queue else 0.0
            due = bool(self._queue) and (
                len(self._queue) >= self.max_batch_items or bool(self._flushing) or age >= self.flush_interval
            )
            if spool is not None and self._queue:
                if due:
                    return "spill"
                timeout = self.flush_interval - age
            if spool is None:
                has_work = bool(self._queue) or bool(self._unacked)
            else:
                has_work = bool(self._queue) or bool(self._unacked) or spool.pending_items > 0
            stream = self._stream
            if stream is not None and stream.broken:
                return "retire"
            if has_work and stream is None:
                wait = self._next_connect_at - now
                if wait <= 0:
                    return "connect"
                timeout = wait if timeout is None else min(timeout, wait)
            elif stream is not None and len(self._unacked) < self.max_inflight:
                if spool is not None:
                    if spool.has_unsent():
                        return "send"
                elif self._queue:
                    if due:
                        return "send"
                    timeout = self.flush_interval - age
            self._cond.wait(timeout)

    def _take_batch_items(self) -> list[tuple[int, int, Any, float]]:
        """Pop up to a batch's worth of items from the queue (same cuts as :meth:`_form_batch`)."""
        items = []
        nbytes = 0
        while self._queue and len(items) < self.max_batch_items:
            item = self._queue[0]
            item_bytes = item[2].ByteSize()
            if items and nbytes + item_bytes > self.max_batch_bytes:
                break
            self._queue.popleft()
            items.append(item)
            nbytes += item_bytes
            if item[1] == END:
                break
        self._cond.notify_all()  # room in the queue (wait_for_room)
        return items

    def _spill(self, items: list[tuple[int, int, Any, float]]) -> None:
        """Append one batch of ``items`` to the spool (sender thread, outside the lock)."""
        batch = runs_pb2.EventBatch()
        fields = (batch.starts, batch.events, batch.logs, batch.ends)
        for _, kind, message, _ in items:
            fields[kind].append(message)
        control = bool(batch.starts or batch.ends)
        dropped: list[SpoolRecord] = []
        before = self.spool.dropped_items
        error = None
        try:
            dropped = self.spool.append(
                batch.SerializeToString(), items=len(items), control=control, first_id=items[0][0], batch=batch
            )
        except (OSError, RuntimeError) as exc:
            error = exc
        with self._cond:
            self._spilling = None
            if error is not None:
                self._counts["dropped"] += len(items)
                if not self._warned_spool_error:
                    self._warned_spool_error = True
                    logger.warning("runwatch: cannot write to the spool (%s); dropping events that cannot be kept", error)
            else:
                lost = self.spool.dropped_items - before
                if lost:
                    self._counts["dropped"] += lost
                    self._warn_full("spool", f"{self.spool.max_bytes} bytes in {self.spool.root}")
                if dropped:
                    gone = {id(r) for r in dropped}
                    for seq in [s for s, p in self._unacked.items() if p.record is not None and id(p.record) in gone]:
                        del self._unacked[seq]
            self._cond.notify_all()

    def _send_from_spool(self) -> None:
        rec = self.spool.take_next()
        if rec is None:
            return
        try:
            batch = self.spool.load(rec)
        except Exception as exc:  # noqa: BLE001 - an unreadable record is skipped, not fatal
            logger.warning("runwatch: cannot read a spooled batch (%s); dropping it", exc)
            self.spool.discard(rec)
            with self._cond:
                self._counts["dropped"] += rec.items
                self._cond.notify_all()
            return
        with self._cond:
            if rec.state == DROPPED:
                return
            batch.sequence = self._next_seq
            pending = _Pending(batch, rec.items, rec.first_id, record=rec)
            self._unacked[self._next_seq] = pending
            self._next_seq += 1
            stream = self._stream
            if stream is not None and not stream.broken:
                pending.sent = True
                self._counts["sent"] += pending.size
                self._counts["batches_sent"] += 1
                stream.write(batch)
            # else: written when the next stream opens (_connect re-sends _unacked)

    def _form_batch(self) -> _Pending | None:
        """Move up to a batch's worth of items from the queue to ``_unacked`` (no spool)."""
        if not self._queue:
            return None
        items = self._take_batch_items()
        batch = runs_pb2.EventBatch(sequence=self._next_seq)
        fields = (batch.starts, batch.events, batch.logs, batch.ends)
        for _, kind, message, _ in items:
            fields[kind].append(message)
        pending = _Pending(batch, len(items), items[0][0])
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
            except Exception as exc:  # noqa: BLE001 - a closed channel raises here
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
        except Exception as exc:
            logger.exception("runwatch: unexpected error reading acks")
            self._last_error = repr(exc)
        discard = None
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
                    hint = ""
                    if self.target and code == grpc.StatusCode.UNAVAILABLE:
                        from runwatch.client.connection import unavailable_hint

                        hint = unavailable_hint(self.target, detail or "")
                    log("runwatch: stream to the server failed (%s%s); retrying in the background", self._last_error, hint)
                    self._failing = True
                discard = self._note_failure(stream, code, detail or "")
                # The server refuses this client's credentials: a flush need not wait out its timeout for acks that
                # cannot come (the stream is still retried, as a token file the server re-reads may change).
                self._denied = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            self._cond.notify_all()
        if discard is not None and self.spool is not None:
            self.spool.discard(discard)
            with self._cond:
                self._cond.notify_all()
        stream.end()

    def _note_failure(self, stream: _Stream, code: grpc.StatusCode | None, detail: str = "") -> SpoolRecord | None:
        """Give up on the oldest batch when the server keeps failing the stream because of it.

        Returns the spool record to discard, if any.
        """
        if stream.got_ack or not _is_poison(code, detail) or not self._unacked:
            return None
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
            return pending.record
        return None

    def _on_ack(self, stream: _Stream, ack: service_pb2.IngestAck) -> None:
        with self._cond:
            stream.got_ack = True
            self._denied = False
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
            if pending.record is None:
                self._cond.notify_all()
                return
        # The spool's bookkeeping writes a small file: outside the lock. Until it is done the
        # record still counts as pending, so flush() cannot return early.
        self.spool.ack(pending.record)
        with self._cond:
            self._cond.notify_all()

    def _retire(self, stream: _Stream, graceful: bool = False) -> None:
        """Stop using ``stream``: half-close it, give its reader a moment, then cancel."""
        stream.end()
        reader = stream.reader
        if graceful and reader is not None:
            wait = 2.0  # for the last acks; within close()'s timeout (a hung server never answers)
            if self._close_deadline is not None:
                wait = min(wait, max(self._close_deadline - time.monotonic(), 0.0))
            reader.join(timeout=wait)
        stream.call.cancel()
        if reader is not None:
            reader.join(timeout=2.0)
        with self._cond:
            if self._stream is stream:
                self._stream = None


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)
