"""The detector consumer: ingest topic -> pipeline -> anomaly topic, committing only what is delivered.

One thread per instance polls the ingest topic in a consumer group, through
librdkafka (confluent-kafka): its own threads fetch ahead while the event loop
detects, so reading the topic and detecting overlap. Records are handled in
cycles (the slices of up to ``commit_interval_ms``, ended early when the topic
has nothing more or a rebalance begins):

1. on the server's event loop, every record is decoded and ingested (one
   record = one ``EventBatch``); records that cannot be used become dead
   letters; at the end of the cycle the checkpoint of every run the cycle
   touched is taken. Records reach the loop in slices (half a cycle's worth at
   the recent cost per record, 32 to 4,096 records); a slice is one pipeline
   group: one store commit, and each run's events of the slice detected as one
   block (the detectors raise the same alerts however a run's events are split
   into blocks, so which instance, and which slicing, sees them does not
   matter). Consecutive small records of events only (what a producer sending a
   record per step writes) are applied as one batch when every event passes as
   it is; otherwise record by record, each with its own dead letter;
2. anomalies and dead letters are produced and acknowledged by the broker;
3. then the checkpoints (anomalies first: a checkpoint never runs ahead of an
   anomaly it implies);
4. the store's writes of the cycle are awaited, and only then are the offsets
   committed.

Steps 2-3 and the wait of step 4 only wait on the broker and the store, so
they run on a second thread while the event loop detects the next cycle; the
consumer thread commits once they are done. One cycle at most is in flight:
the next one is handed over only after the previous one is committed, so
commits stay in order and a failed delivery is never overtaken. A rebalance,
a stop or an error settles the cycle in flight first.

A crash anywhere before step 4 re-delivers the cycle's records (at least
once): anomalies may repeat with the same id and revision, none is lost.
On a rebalance the instance keeps the runs of the partitions it keeps, drops
those of partitions it lost, and restores those of new partitions from their
checkpoints before it sees any of their records.

With ``logs_topic`` set, the same consumer also reads the logs topic (raw
text lines; see :mod:`~runwatch.service.kafka.logs_topic`) in the same
cycles: its partition *p* belongs with ingest partition *p*, and its records
are applied, dead-lettered, checkpointed and committed by the same rules.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from runwatch.service.kafka import codecs, logs_topic
from runwatch.service.kafka.checkpoints import CheckpointStore
from runwatch.service.kafka.config import KafkaSettings
from runwatch.service.kafka.dead_letters import dead_letter
from runwatch.service.kafka.producer import DeliveryStopped, OutRecord, ReliableProducer
from runwatch.service.pipeline import UNKNOWN_RUN, BatchResult
from runwatch.v1 import anomaly_pb2, runs_pb2

log = logging.getLogger("runwatch.kafka")
_MAX_WARNED_RUNS = 4096

#: While a subscribed topic is missing from the assignment, the consumer looks it up this often (seconds).
TOPIC_CHECK_S = 10.0
#: Records handed to the event loop at a time (one hop each; a cycle may end after any slice), at least:
#: a slice takes as many more as half a cycle (``commit_interval_ms``) fits at the recent cost per
#: record, up to MAX_RECORDS_PER_SLICE. A slice is one pipeline group (one store commit, and each run's events of the
#: slice detected as one block), so small records come many to a slice.
RECORDS_PER_SLICE = 32
MAX_RECORDS_PER_SLICE = 4096
#: Consecutive small protobuf records of events only (one partition) are applied as one batch: their
#: bytes joined, each record's ``sequence`` left out, up to CHUNK_BYTES and CHUNK_KEYS record keys. A
#: chunk any of whose events needs more than the compiled read (a RunStart, a duplicate, a value to
#: reject) is tried again in halves, down to record by record, as if it had never been tried.
CHUNK_RECORD_BYTES = 16 << 10
CHUNK_BYTES = 1 << 20
CHUNK_KEYS = 32
#: A chunk that is not applied as one batch is split in halves, each tried again, down to this many records.
CHUNK_SPLIT_BELOW = 4
#: ... of the logs topic: one line is little work, and each run's lines of a slice are one batch
#: (detection on the metrics read from them costs per batch as much as per line).
LOG_RECORDS_PER_SLICE = 256


class InRecord(NamedTuple):
    """One ingest record, read off its librdkafka message once (a tuple: cheap to make, per record)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch; -1 when the record has none
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @classmethod
    def of(cls, msg: Message) -> InRecord:
        fields = (msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), msg.headers())
        return _new_record(cls, fields if fields[6] is not None else (*fields[:6], []))


_new_record = tuple.__new__


@dataclass(slots=True)
class Cycle:
    """What one poll produced, in delivery order."""

    anomalies: list[OutRecord] = field(default_factory=list)
    dead_letters: list[OutRecord] = field(default_factory=list)
    checkpoints: list[OutRecord] = field(default_factory=list)
    durable: list = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    touched: dict[int, set[str]] = field(default_factory=dict)  # ingest partition -> run ids
    forwarded: list[OutRecord] = field(default_factory=list)  # logs-topic records sent to their run's partition
    events: int = 0
    lines: int = 0  # log lines accepted from the logs topic
    started: float = field(default_factory=time.perf_counter)


@dataclass
class ConsumerStats:
    records: int = 0
    events: int = 0
    anomalies: int = 0
    dead_letters: int = 0
    checkpoints: int = 0
    cycles: int = 0
    commits: int = 0
    commit_failures: int = 0
    restored_runs: int = 0
    log_records: int = 0  # records read from the logs topic
    log_lines: int = 0  # ... accepted as log lines (delivered cycles)
    forwarded: int = 0  # ... produced again to their run's partition
    rebalances: int = 0
    errors: int = 0
    client_errors: int = 0  # errors librdkafka reported (it retries them itself)
    first_assigned_at: float = 0.0  # time.perf_counter() of the first partition assignment
    assignment_done_at: float = 0.0  # ... and once its runs were restored (fetching starts)
    first_record_at: float = 0.0  # time.perf_counter() of the first polled record
    last_commit_at: float = 0.0


class DetectorConsumer:
    """Feeds the ingest topic to a :class:`~runwatch.service.server.RunwatchServer`'s pipeline.

    ``on_loop(fn, *args)`` runs ``fn`` on the server's event loop and returns its result
    (the pipeline is used from that loop only).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        server,
        loop: asyncio.AbstractEventLoop,
        producer: ReliableProducer,
        stopping: threading.Event,
        partitions: int = 0,
    ) -> None:
        self.settings = settings
        # The ingest topic's partition count: a logs-topic record belongs on its run's partition.
        self._owners = logs_topic.Owners(partitions) if settings.logs_topic and partitions else None
        self.server = server
        self.pipeline = server.pipeline
        self.loop = loop
        self.producer = producer
        self.stopping = stopping
        self.checkpoints = CheckpointStore(settings, producer)
        self.stats = ConsumerStats()
        self.owned: set[int] = set()
        self.runs_of: dict[int, set[str]] = defaultdict(set)  # ingest partition -> run ids seen there
        self.ready = threading.Event()  # set once the first assignment is restored
        self._thread = threading.Thread(target=self._main, name="runwatch-kafka-consumer", daemon=True)
        self._consumer: Consumer | None = None
        self._cycle: Cycle | None = None
        self._in_flight: Future | None = None  # the delivery and commit of the previous cycle
        self._delivery = ThreadPoolExecutor(1, thread_name_prefix="runwatch-kafka-delivery")
        self._draining = threading.Event()
        self._per_record = 0.0  # seconds per ingest record of the recent slices (event-loop hop included)
        self._formats: dict[tuple, str | codecs.DecodeFailure] = {}  # record headers -> batch format
        # Subscribed topics missing from the assignment (see _check_topics): watched while so, awaited once
        # known not to exist (their return rejoins the group), and those a rejoin was already made for.
        self._watched: set[str] = set()
        self._awaited: set[str] = set()
        self._rejoined_for: set[str] = set()
        self._next_topic_check = 0.0
        self._unknown_runs: OrderedDict[str, None] = OrderedDict()  # run ids already warned about (bounded)

    def _warn_unknown_runs(self, violations: list[tuple[str, str]]) -> None:
        """Warn once per run whose records go to the dead-letter topic because no RunStart of it was seen.

        A producer sends the RunStart first, so this means it never reached the topic or was lost from it
        (retention, a truncated or recreated topic, a broker that lost its data); every later record of the
        run is dead-lettered too, which the DLQ alone would not make anyone notice.
        """
        for _, reason in violations:
            match = UNKNOWN_RUN.match(reason)
            if match is None or match.group(1) in self._unknown_runs:
                continue
            self._unknown_runs[match.group(1)] = None
            if len(self._unknown_runs) > _MAX_WARNED_RUNS:
                self._unknown_runs.popitem(last=False)
            log.warning(
                "records of run %s go to the dead-letter topic %s: no RunStart of it reached this consumer "
                "(it was never produced, or lost: topic retention, a recreated topic, a broker that lost its "
                "data); re-send its RunStart, or run with --auto-create-runs to open such runs implicitly",
                match.group(1), self.settings.dlq_topic,
            )

    # -- thread plumbing ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish and commit the cycle in hand, leave the group; force the stop after ``timeout``."""
        self._draining.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stopping.set()
            self._thread.join(10)

    def _on_loop(self, fn: Callable, *args):
        async def call():
            return fn(*args)

        fut = asyncio.run_coroutine_threadsafe(call(), self.loop)
        while True:
            try:
                return fut.result(timeout=1.0)
            except TimeoutError:
                if self.stopping.is_set() or self.loop.is_closed():
                    fut.cancel()
                    raise DeliveryStopped("event loop gone") from None

    def _main(self) -> None:
        delay = self.settings.reconnect_backoff_ms / 1000
        while not (self.stopping.is_set() or self._draining.is_set()):
            try:
                if self._watched and self._consumer is not None and time.monotonic() >= self._next_topic_check:
                    self._check_topics()  # may close the consumer, for a new one
                if self._consumer is None:
                    self._consumer = self._create_consumer()
                if self._in_flight is not None and self._in_flight.done():
                    self._settle()
                # consume() waits for a full batch; poll() returns the first record as soon as it is there.
                first = self._consumer.poll(0 if self._cycle else 0.01 if self._in_flight else 0.2)
                messages = [] if first is None else self._read_queued(first)
                # A poll may bring far more than one cycle's worth (librdkafka prefetches): it is
                # detected a slice at a time, so a cycle ends close to commit_interval_ms.
                interval = self.settings.commit_interval_ms / 1000
                for piece in self._slices(messages):
                    records = self._records(piece)
                    if records:
                        if not self.stats.first_record_at:
                            self.stats.first_record_at = time.perf_counter()
                        t0 = time.perf_counter()
                        self._cycle = self._on_loop(self._process, records, self._cycle or Cycle())
                        if records[0].topic != self.settings.logs_topic:
                            per = (time.perf_counter() - t0) / len(records)
                            self._per_record = per if not self._per_record else (self._per_record + per) / 2
                    if self._cycle and time.perf_counter() - self._cycle.started >= interval:
                        self._finish_cycle()
                if self._cycle and not messages:
                    self._finish_cycle()
                if messages:  # records came: the cluster is back (an empty poll proves nothing)
                    delay = self.settings.reconnect_backoff_ms / 1000
            except DeliveryStopped:
                break
            except Exception:  # a broker outage or a bug costs a retry, never the consumer
                self.stats.errors += 1
                log.exception("kafka consumer cycle failed; retrying in %.1f s", delay)
                self._reset_consumer()
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_backoff_max_ms / 1000)
        if not self.stopping.is_set():
            try:
                self._finish_cycle(wait=True)
            except Exception:  # logged; the records are re-delivered
                log.exception("the last cycle was not committed; its records will be re-delivered")
        self._reset_consumer()
        self._delivery.shutdown(wait=False)

    def _read_queued(self, first: Message) -> list[Message]:
        """``first`` and what librdkafka has queued behind it (``max_poll_records`` per call), enough for a slice."""
        per_call = self.settings.max_poll_records
        want = max(per_call, self._slice_size())
        messages = [first]
        while len(messages) < want:
            n = min(per_call, want - len(messages))
            more = self._consumer.consume(n, 0)  # consume() with a timeout would wait for a full batch
            messages.extend(more)
            if len(more) < n:
                break
        return messages

    def _slice_size(self) -> int:
        """Ingest records for the next slice: half a cycle's worth at the recent cost per record."""
        if not self._per_record:
            return RECORDS_PER_SLICE
        # Half a cycle's time: a cycle (ended by the slice that reaches commit_interval_ms) takes two or three.
        half = self.settings.commit_interval_ms / 2000
        return max(RECORDS_PER_SLICE, min(MAX_RECORDS_PER_SLICE, int(half / self._per_record)))

    def _slices(self, messages: list[Message]):
        """A poll's messages in slices: the ingest topic's as they came, then the logs topic's, larger.

        A generator: each ingest slice is sized (:meth:`_slice_size`) when it is taken, after the previous one ran.
        """
        logs = self.settings.logs_topic
        lines = [m for m in messages if m.topic() == logs] if logs else []
        if lines:
            messages = [m for m in messages if m.topic() != logs]
        i = 0
        while i < len(messages):
            n = self._slice_size()
            yield messages[i : i + n]
            i += n
        for i in range(0, len(lines), LOG_RECORDS_PER_SLICE):
            yield lines[i : i + LOG_RECORDS_PER_SLICE]

    def _create_consumer(self) -> Consumer:
        consumer = Consumer(
            {
                **self.settings.consumer_config(),
                "logger": logging.getLogger("runwatch.kafka.librdkafka"),
                "error_cb": self._client_error,
            }
        )
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _client_error(self, err: KafkaError) -> None:
        self.stats.client_errors += 1
        log.warning("kafka client: %s", err)

    def _records(self, messages: list[Message]) -> list[InRecord]:
        records = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    self.stats.client_errors += 1
                    log.warning("kafka consume: %s", err)
                continue
            records.append(InRecord.of(msg))
        return records

    @property
    def _topics(self) -> list[str]:
        """The subscribed topics: the ingest topic, then the logs topic when set."""
        return [self.settings.ingest_topic, *([self.settings.logs_topic] if self.settings.logs_topic else [])]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", describe_partitions(partitions, self._topics))
        self._finish_cycle(wait=True)  # commit while the offsets are still ours

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self.stats.first_assigned_at:
            self.stats.first_assigned_at = time.perf_counter()
        # Partition p of the logs topic carries the lines of ingest partition p's runs: one set of runs.
        topics = self._topics
        lacking = unassigned(partitions, topics)
        for topic, missing in lacking.items():
            held = describe_partitions([tp for tp in partitions if tp.topic != topic], topics)
            log.warning(
                "topic %s: partitions %s not assigned with %s: the topic does not exist now (or has fewer "
                "partitions), so its records there are not read; it is looked up every %g s, and the consumer "
                "rejoins the group once it is back",
                topic, missing, held, TOPIC_CHECK_S,
            )  # fmt: skip
        self._watch(partitions, lacking)
        detail = describe_partitions(partitions, topics) if partitions else ""
        self._assigned({tp.partition for tp in partitions if tp.topic in topics}, detail)
        if not self.stats.assignment_done_at:
            self.stats.assignment_done_at = time.perf_counter()

    def _watch(self, partitions: list[TopicPartition], lacking: dict[str, list[int]]) -> None:
        """After an assignment: which subscribed topics to look up until they are assigned (:meth:`_check_topics`)."""
        assigned = {tp.topic for tp in partitions}
        self._rejoined_for -= assigned
        # Not one partition of it assigned: the topic did not exist when the group assigned them.
        entirely = {t for t in lacking if t not in assigned}
        self._awaited = (self._awaited | entirely) - assigned - self._rejoined_for
        # Nothing assigned: more instances than partitions, or no topic there; only a topic seen missing counts.
        self._watched = set(self._topics) if not partitions else set(lacking)
        self._next_topic_check = time.monotonic() + TOPIC_CHECK_S

    def _check_topics(self) -> None:
        """Look up the watched topics; start a new consumer when one that did not exist does again.

        librdkafka does not assign a subscribed topic that was missing at an assignment once it
        is back (seen when a broker that lost its topics had them recreated one by one: the logs
        topic stayed unassigned until another instance joined the group), even when asked to
        rejoin: its metadata of the recreated topic stays stale. A new consumer reads it afresh.
        At most once per absence of a topic (a topic that exists and is still not assigned, such
        as one with fewer partitions than the ingest topic, does not start one consumer after another).
        """
        self._next_topic_check = time.monotonic() + TOPIC_CHECK_S
        try:
            # All topics: asking for one by name may have the broker create it (as Tansu does).
            found = self._consumer.list_topics(timeout=3).topics
        except KafkaException as exc:
            log.debug("looking up topics %s failed: %s", sorted(self._watched), exc)
            return
        present = {t for t in self._watched if t in found and found[t].error is None and found[t].partitions}
        for topic in sorted(self._watched - present - self._awaited):
            log.warning(
                "topic %s does not exist: its records are not read until it does again; the consumer "
                "rejoins the group then", topic,
            )  # fmt: skip
        self._awaited |= self._watched - present
        self._rejoined_for -= self._watched - present
        back = sorted(self._awaited & present)
        if back:
            log.info(
                "topic(s) %s exist again (%s partitions): starting a new consumer to be assigned their partitions",
                ", ".join(back), ", ".join(str(len(found[t].partitions)) for t in back),
            )  # fmt: skip
            self._rejoined_for |= set(back)
            self._finish_cycle(wait=True)  # commit what was read; the runs are restored at the next assignment
            self._reset_consumer()

    def _reset_consumer(self) -> None:
        self._cycle = None  # not committed: its records are re-delivered
        try:
            self._settle()  # the cycle in flight was complete: let it commit
        except Exception:  # its records are re-delivered
            log.warning("the cycle in flight was not committed; its records will be re-delivered", exc_info=True)
        consumer, self._consumer = self._consumer, None
        # The next consumer's assignment says what to watch (_rejoined_for is kept: one new consumer per absence).
        self._watched.clear()
        self._awaited.clear()
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.debug("closing the consumer failed", exc_info=True)
        # Uncommitted records will be re-delivered, possibly to another instance: drop our runs,
        # the next assignment restores them from their checkpoints.
        lost, self.owned = self.owned, set()
        if lost and not self.loop.is_closed():
            try:
                self._on_loop(self._forget, lost)
            except DeliveryStopped:
                pass

    # -- one cycle ------------------------------------------------------------------------------

    def _finish_cycle(self, wait: bool = False) -> None:
        """Close the open cycle: take its checkpoints, then hand it to the delivery thread.

        Waits for the previous cycle's commit first (raising what failed there), and with
        ``wait`` for this one's too.
        """
        cycle = self._cycle
        if cycle is not None:
            cycle.checkpoints = self._on_loop(self._checkpoints, cycle)
            self._settle()
            self._cycle = None
            self.stats.cycles += 1
            self._in_flight = self._delivery.submit(self._deliver, cycle)
        if wait:
            self._settle()

    def _settle(self) -> None:
        """Wait for the cycle in flight to be delivered, then commit it; raises what failed in delivery."""
        fut, self._in_flight = self._in_flight, None
        while fut is not None:
            try:
                self._commit(fut.result(timeout=1.0))
                return
            except TimeoutError:
                if self.stopping.is_set():
                    raise DeliveryStopped("stopping with a cycle in flight") from None

    def _deliver(self, cycle: Cycle) -> Cycle:
        """On the delivery thread: anomalies and dead letters, then checkpoints, then the store's writes."""
        if cycle.anomalies or cycle.dead_letters or cycle.forwarded:
            self.producer.deliver(cycle.anomalies + cycle.dead_letters + cycle.forwarded)
        if cycle.checkpoints:
            self.producer.deliver(cycle.checkpoints)
        for fut in cycle.durable:
            try:
                fut.result(timeout=60)
            except Exception:  # the local store is a cache of the cluster's data; Kafka stays authoritative
                log.exception("store write failed; offsets are committed anyway (the anomalies are delivered)")
        self.stats.anomalies += len(cycle.anomalies)
        self.stats.dead_letters += len(cycle.dead_letters)
        self.stats.checkpoints += len(cycle.checkpoints)
        self.stats.events += cycle.events
        self.stats.log_lines += cycle.lines
        self.stats.forwarded += len(cycle.forwarded)
        return cycle

    def _commit(self, cycle: Cycle) -> None:
        # On the consumer thread: librdkafka answers a commit from another thread only at the next poll.
        try:
            committed = self._consumer.commit(
                offsets=[TopicPartition(topic, part, off) for (topic, part), off in cycle.offsets.items()],
                asynchronous=False,
            )
            failed = [tp for tp in committed or () if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
            self.stats.commits += 1
            self.stats.last_commit_at = time.perf_counter()
        except KafkaException as exc:
            # The group moved on (a rebalance): these records go to the partition's next owner,
            # which finds our checkpoints and treats what we already did as duplicates.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (%s); the records will be re-delivered", exc)

    def _process(self, records: list[InRecord], cycle: Cycle) -> Cycle:
        """Runs on the event loop: decode, ingest, collect anomalies and dead letters into ``cycle``.

        The ingest records are one pipeline group (:meth:`DetectionPipeline.begin_group`): their
        writes are one store commit, and each run's events of the slice are detected as one block
        (the alerts are those of the records one by one, the detectors' contract). Small
        events-only records of a partition are applied as one batch (see CHUNK_BYTES).
        """
        s = self.settings
        server = self.server
        lines = [rec for rec in records if rec.topic == s.logs_topic] if s.logs_topic else []
        if lines:
            records = [rec for rec in records if rec.topic != s.logs_topic]
        server.kafka_cycle_open = True
        try:
            if lines:
                self._process_lines(lines, cycle)
            if records:
                self._process_records(records, cycle)
        finally:
            server.kafka_cycle_open = False
        return cycle

    def _process_records(self, records: list[InRecord], cycle: Cycle) -> None:
        """Ingest records in pipeline groups; then each result's acknowledgement, anomalies and touched runs.

        One group for the slice, cut wherever the runs in memory exceed ``max_active_runs``: a
        group evicts only at its end, so memory stays bounded as when each record was its own batch.
        """
        s = self.settings
        pipeline = self.pipeline
        limit = pipeline.settings.max_active_runs
        applied: list[tuple[BatchResult, int, InRecord, float]] = []  # (result, events, first record, arrival)
        groups: list[tuple[int, object, float]] = []  # (end of its results in applied, commit future, end time)
        by_partition: dict[tuple[str, int], list[InRecord]] = {}
        for rec in records:
            part = by_partition.get((rec.topic, rec.partition))
            if part is None:
                part = by_partition[(rec.topic, rec.partition)] = []
            part.append(rec)
        self.stats.records += len(records)

        def cut_if_over() -> None:
            if len(pipeline.runs) > limit:
                groups.append((len(applied), pipeline.end_group(), time.perf_counter()))
                pipeline.begin_group()

        def apply_record(rec: InRecord) -> None:
            self._apply_record(rec, cycle, applied)
            cut_if_over()

        def apply_chunk(chunk: list[tuple[InRecord, bytes]]) -> None:
            if self._apply_chunk(chunk, cycle, applied):
                cut_if_over()
                return
            if len(chunk) <= CHUNK_SPLIT_BELOW:
                for rec, _ in chunk:
                    apply_record(rec)
                return
            # Nothing was applied: halves in order, so one bad record costs about its neighbours only.
            half = len(chunk) // 2
            apply_chunk(chunk[:half])
            apply_chunk(chunk[half:])

        pipeline.begin_group()
        try:
            for (topic, part), recs in by_partition.items():
                cycle.offsets[(topic, part)] = recs[-1].offset + 1
                chunk: list[tuple[InRecord, bytes]] = []
                chunk_bytes = 0
                keys: set = set()
                for rec in recs:
                    body = self._events_only(rec)
                    if body is not None:
                        if chunk and (
                            chunk_bytes + len(body) > CHUNK_BYTES or (rec.key not in keys and len(keys) >= CHUNK_KEYS)
                        ):
                            apply_chunk(chunk)
                            chunk, chunk_bytes, keys = [], 0, set()
                        chunk.append((rec, body))
                        chunk_bytes += len(body)
                        keys.add(rec.key)
                        continue
                    if chunk:
                        apply_chunk(chunk)
                        chunk, chunk_bytes, keys = [], 0, set()
                    apply_record(rec)
                if chunk:
                    apply_chunk(chunk)
        finally:
            # The deferred detection adds its anomalies to the results.
            groups.append((len(applied), pipeline.end_group(), time.perf_counter()))
        metrics = self.server.metrics
        touched = cycle.touched
        fmt = s.anomaly_format
        begin = 0
        for end, durable, done in groups:
            if end > begin:
                cycle.durable.append(durable)
            for result, n_events, rec, t0 in applied[begin:end]:
                ack = result.ack
                metrics.observe_batch(
                    ack.accepted, ack.duplicates, ack.rejected, done - t0,
                    violations=ack.violations, anomalies=len(result.anomalies), durable=durable,
                )  # fmt: skip
                cycle.events += n_events
                if ack.rejected:  # a record applied on its own (a chunk is applied only when every event passes)
                    violations = [(v.field, v.reason) for v in ack.violations]
                    self._warn_unknown_runs(violations)
                    cycle.dead_letters.append(
                        dead_letter(
                            s.dlq_topic,
                            rec,
                            "partial" if ack.accepted else "rejected",
                            violations,
                            ack.accepted,
                            max_bytes=s.max_message_bytes,
                        )
                    )
                for a in result.anomalies:
                    cycle.anomalies.append(anomaly_record(s.anomaly_topic, a, fmt))
                part = rec.partition
                runs = touched.get(part)
                if runs is None:
                    runs = touched[part] = set()
                run_ids = result.run_ids - {""}  # every run the record names, accepted or not
                runs.update(run_ids)
                self.runs_of[part].update(run_ids)
            begin = end

    def _format(self, rec: InRecord) -> str | codecs.DecodeFailure:
        """:func:`codecs.batch_format` of ``rec``; with a content-type header, remembered per set of headers."""
        headers = rec.headers
        if not headers or not rec.value:
            return codecs.batch_format(rec.value, headers)
        key = tuple(headers)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = codecs.batch_format(rec.value, headers)
            # With a declared content type the answer does not depend on the value.
            if len(self._formats) < 256 and codecs.header(headers, codecs.CONTENT_TYPE):
                self._formats[key] = fmt
        return fmt

    def _events_only(self, rec: InRecord) -> bytes | None:
        """A small protobuf record of events only: its bytes without ``sequence``; else None (applied on its own)."""
        value = rec.value
        if not value or len(value) > CHUNK_RECORD_BYTES or len(value) > self.server.settings.max_batch_bytes:
            return None
        if self._format(rec) != "protobuf":
            return None
        return events_without_sequence(value)

    def _apply_chunk(self, chunk: list[tuple[InRecord, bytes]], cycle: Cycle, applied: list) -> bool:
        """Apply the records of ``chunk`` as one batch if every event passes as it is; False: nothing was
        applied, apply them one by one."""
        if len(chunk) == 1:
            return False
        t0 = time.perf_counter()
        try:
            result = self.pipeline.ingest_events_bytes(b"".join([body for _, body in chunk]), t0)
        except Exception:  # a bug must cost these records (kept in the DLQ), never the consumer
            first, last = chunk[0][0], chunk[-1][0]
            log.exception(
                "ingest failed on records %s-%d@%d..%d", first.topic, first.partition, first.offset, last.offset
            )
            s = self.settings
            reason = [("value", "internal error while processing this record (logged by the server)")]
            cycle.dead_letters.extend(
                dead_letter(s.dlq_topic, rec, "internal", reason, max_bytes=s.max_message_bytes) for rec, _ in chunk
            )
            return True
        if result is None:  # something needs more than the compiled read: nothing was applied
            return False
        applied.append((result, result.ack.accepted, chunk[0][0], t0))
        return True

    def _apply_record(self, rec: InRecord, cycle: Cycle, applied: list) -> None:
        """Apply one record on its own; what cannot be used becomes a dead letter."""
        s = self.settings
        max_bytes = self.server.settings.max_batch_bytes
        size = len(rec.value or b"")
        if size > max_bytes:
            cycle.dead_letters.append(
                dead_letter(
                    s.dlq_topic,
                    rec,
                    "undecodable",
                    [("value", f"{size} bytes is over the limit of {max_bytes} bytes")],
                    max_bytes=s.max_message_bytes,
                )
            )
            return
        fmt = self._format(rec)
        if isinstance(fmt, codecs.DecodeFailure):
            cycle.dead_letters.append(
                dead_letter(s.dlq_topic, rec, "undecodable", [(fmt.field, fmt.reason)], max_bytes=s.max_message_bytes)
            )
            return
        t0 = time.perf_counter()
        try:
            ingested = self._ingest(rec, fmt, t0)
        except Exception:  # a bug must cost one record (kept in the DLQ), never the consumer
            log.exception("ingest failed on record %s-%d@%d", rec.topic, rec.partition, rec.offset)
            cycle.dead_letters.append(
                dead_letter(
                    s.dlq_topic,
                    rec,
                    "internal",
                    [("value", "internal error while processing this record (logged by the server)")],
                    max_bytes=s.max_message_bytes,
                )
            )
            return
        if isinstance(ingested, codecs.DecodeFailure):
            cycle.dead_letters.append(
                dead_letter(
                    s.dlq_topic, rec, "undecodable", [(ingested.field, ingested.reason)], max_bytes=s.max_message_bytes
                )
            )
            return
        result, n_events = ingested
        applied.append((result, n_events, rec, t0))

    def _process_lines(self, records: list[InRecord], cycle: Cycle) -> None:
        """Runs on the event loop: logs-topic records, as one ``EventBatch`` of log lines per run."""
        s = self.settings
        server = self.server
        pipeline = self.pipeline
        groups: dict[str, tuple[list, list[InRecord], str]] = {}  # run id -> (lines, records, project header)
        for rec in records:
            part = rec.partition
            cycle.offsets[(rec.topic, part)] = rec.offset + 1
            self.stats.records += 1
            self.stats.log_records += 1
            try:
                decoded = logs_topic.decode_line(rec)
            except Exception:  # a bug must cost one record (kept in the DLQ), never the consumer
                log.exception("decoding log record %s-%d@%d failed", rec.topic, part, rec.offset)
                decoded = codecs.DecodeFailure("value", "internal error while decoding this record (logged by the server)")
            if isinstance(decoded, codecs.DecodeFailure):
                cycle.dead_letters.append(
                    dead_letter(s.dlq_topic, rec, "undecodable", [(decoded.field, decoded.reason)], max_bytes=s.max_message_bytes)
                )
                continue
            if not decoded.line.text.strip():
                continue  # an empty line says nothing: not a dead letter either
            owner = self._owners(rec.key) if self._owners is not None else part
            if owner != part and not logs_topic.forwarded(rec.headers):
                headers = [(k, v if v is not None else b"") for k, v in rec.headers or []]
                headers.append((logs_topic.FORWARDED_FROM, f"{part}@{rec.offset}".encode()))
                cycle.forwarded.append(OutRecord(s.logs_topic, rec.key, rec.value, headers, owner))
                continue
            group = groups.get(decoded.run_id)
            if group is None:
                group = groups[decoded.run_id] = ([], [], decoded.project)
            group[0].append(decoded.line)
            group[1].append(rec)
        for run_id, (lines, recs, project) in groups.items():
            t0 = time.perf_counter()
            batch = runs_pb2.EventBatch()
            placeholder = False
            if pipeline._state(run_id) is None:  # the pipeline's own lookup: memory, ended runs, then the store
                # Lines arrive without a RunStart: the run is opened as --auto-create-runs opens one.
                batch.starts.add(run_id=run_id, project=project or "default", start_time=lines[0].time or time.time())
                placeholder = not project
            batch.logs.extend(lines)
            try:
                result = pipeline.ingest(batch, t0)
            except Exception:  # a bug must cost these records (kept in the DLQ), never the consumer
                log.exception("ingest of %d log line(s) of run %s failed", len(lines), run_id)
                reason = [("value", "internal error while processing this record (logged by the server)")]
                cycle.dead_letters.extend(
                    dead_letter(s.dlq_topic, rec, "internal", reason, max_bytes=s.max_message_bytes) for rec in recs
                )
                continue
            if placeholder and run_id in pipeline.runs:
                pipeline.runs[run_id].implicit = True  # its first real RunStart replaces the placeholder
            ack = result.ack
            server.metrics.observe_batch(
                ack.accepted, ack.duplicates, ack.rejected, time.perf_counter() - t0,
                violations=ack.violations, anomalies=len(result.anomalies), durable=result.durable,
            )  # fmt: skip
            cycle.lines += len(lines)
            cycle.durable.append(result.durable)
            if ack.rejected:
                by_record: dict[int, list[tuple[str, str]]] = {}
                for v in ack.violations:
                    where, _, rest = v.field.partition("].")
                    if where.startswith("logs["):
                        by_record.setdefault(int(where[5:]), []).append((rest, v.reason))
                    else:
                        log.warning("log lines of run %s: %s: %s", run_id, v.field, v.reason)
                for i, violations in by_record.items():
                    self._warn_unknown_runs(violations)
                    cycle.dead_letters.append(
                        dead_letter(s.dlq_topic, recs[i], "rejected", violations, max_bytes=s.max_message_bytes)
                    )
            for a in result.anomalies:
                cycle.anomalies.append(anomaly_record(s.anomaly_topic, a, s.anomaly_format))
            part = recs[0].partition
            cycle.touched.setdefault(part, set()).add(run_id)
            self.runs_of[part].add(run_id)

    def _ingest(self, rec, fmt: str, t0: float) -> tuple[BatchResult, int] | codecs.DecodeFailure:
        """Ingest one record (its value read as ``fmt``); the result and how many events the record held."""
        if fmt == "protobuf":
            # A record of events for open runs, all accepted as they are, is read straight from its bytes.
            result = self.pipeline.ingest_events_bytes(rec.value, t0)
            if result is not None:
                return result, result.ack.accepted
        decoded = codecs.decode_batch(rec.value, rec.headers)
        if isinstance(decoded, codecs.DecodeFailure):
            return decoded
        is_proto = fmt == "protobuf"
        result = self.pipeline.ingest(
            decoded, t0, raw_size=len(rec.value) if is_proto else -1, raw=rec.value if is_proto else None
        )
        return result, len(decoded.events)

    def _checkpoints(self, cycle: Cycle) -> list[OutRecord]:
        out = []
        for part, runs in cycle.touched.items():
            for run_id in runs:
                out.append(self.checkpoints.record(part, run_id, self.pipeline.snapshot_run(run_id)))
        return out

    # -- rebalances -----------------------------------------------------------------------------

    def _assigned(self, partitions: set[int], detail: str = "") -> None:
        self.stats.rebalances += 1
        lost = self.owned - partitions
        new = partitions - self.owned
        log.info(
            "assigned partitions %s%s (new %s, lost %s)",
            sorted(partitions), f": {detail}" if detail else "", sorted(new), sorted(lost),
        )  # fmt: skip
        if lost or new:
            self._on_loop(self._forget, lost | new)
        delay = self.settings.reconnect_backoff_ms / 1000
        while new and not self.stopping.is_set():
            try:
                found = self.checkpoints.load(sorted(new))
                break
            except Exception as exc:  # noqa: BLE001 - no records of these partitions may be processed without their state
                log.warning("restoring run state of partitions %s failed (%s); retrying", sorted(new), exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_backoff_max_ms / 1000)
        else:
            found = {}
        if self.stopping.is_set():
            raise DeliveryStopped("stopping during a rebalance")
        restored = self._on_loop(self._restore, found)
        self.stats.restored_runs += restored
        self.owned = set(partitions)
        self.ready.set()
        if new:
            log.info("restored %d run(s) of partitions %s", restored, sorted(new))

    def _forget(self, partitions: set[int]) -> None:
        # Evicted runs too: their local checkpoints give way to the state topic's.
        for part in partitions:
            self.pipeline.forget_runs(self.runs_of.pop(part, ()))

    def _restore(self, found: dict[int, dict[str, bytes]]) -> int:
        from runwatch.models.snapshot import SnapshotError

        n = 0
        for part, blobs in found.items():
            for run_id, blob in blobs.items():
                try:
                    self.pipeline.restore_run(blob)
                except SnapshotError as exc:
                    log.error("checkpoint of run %s (state partition %d) unusable: %s", run_id, part, exc)
                    continue
                self.runs_of[part].add(run_id)
                n += 1
        return n


def describe_partitions(partitions, order: list[str] | tuple[str, ...] = ()) -> str:
    """Topic-partitions as ``topic[p,q] other[p]``: the topics of ``order`` first, in that order.

    Examples
    --------
    >>> describe_partitions([TopicPartition("sw.logs", 3), TopicPartition("sw.events", 3),
    ...                      TopicPartition("sw.events", 2), TopicPartition("sw.logs", 2)], ["sw.events", "sw.logs"])
    'sw.events[2,3] sw.logs[2,3]'
    >>> describe_partitions([])
    'none'
    """
    by_topic: dict[str, set[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, set()).add(tp.partition)
    if not by_topic:
        return "none"
    topics = [t for t in order if t in by_topic] + sorted(set(by_topic) - set(order))
    return " ".join(f"{t}[{','.join(map(str, sorted(by_topic[t])))}]" for t in topics)


def unassigned(partitions, topics: list[str]) -> dict[str, list[int]]:
    """Per subscribed topic, the partitions an assignment holds of the other topics but not of it.

    The ingest and logs topics have one partition count, and partition *p* of both belongs to
    one instance: a topic missing from an assignment that holds *p* of the other was not there
    (or had fewer partitions) when the group last assigned them.

    Examples
    --------
    >>> unassigned([TopicPartition("ev", 2), TopicPartition("ev", 3), TopicPartition("logs", 3)], ["ev", "logs"])
    {'logs': [2]}
    >>> unassigned([TopicPartition("ev", 2)], ["ev"]), unassigned([], ["ev", "logs"])
    ({}, {})
    """
    held: dict[str, set[int]] = {t: set() for t in topics}
    for tp in partitions:
        if tp.topic in held:
            held[tp.topic].add(tp.partition)
    every = set().union(*held.values())
    return {t: sorted(every - parts) for t, parts in held.items() if every - parts}


def events_without_sequence(value: bytes) -> bytes | None:
    """A serialized ``EventBatch`` holding only events: its bytes without the ``sequence`` field; else None.

    Concatenated, such values are one ``EventBatch`` of all their events (a repeated
    ``sequence`` would not be the plain encoding :mod:`~runwatch.service.event_scan` reads).
    None for anything but events (tag 0x12) and one ``sequence`` (tag 0x28) at the top
    level, a truncated field, or no events.

    Examples
    --------
    >>> b = runs_pb2.EventBatch(sequence=300)
    >>> b.events.add(run_id="r", step=1).metrics["loss"] = 0.5
    >>> body = events_without_sequence(b.SerializeToString())
    >>> runs_pb2.EventBatch.FromString(body * 2).events[1].step, runs_pb2.EventBatch.FromString(body).sequence
    (1, 0)
    >>> _ = b.starts.add(run_id="r"); events_without_sequence(b.SerializeToString()) is None
    True
    """
    n = len(value)
    pos = 0
    cut = None
    events = False
    while pos < n:
        tag = value[pos]
        start = pos
        pos += 1
        size = shift = 0
        while True:  # a varint: the length of an events field, or the sequence itself
            if pos >= n or shift > 63:
                return None
            byte = value[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        if tag == 0x12:
            pos += size
            if pos > n:
                return None
            events = True
        elif tag == 0x28 and cut is None:
            cut = (start, pos)
        else:
            return None
    if not events:
        return None
    return value if cut is None else value[: cut[0]] + value[cut[1] :]


def anomaly_record(topic: str, anomaly: anomaly_pb2.Anomaly, fmt: str) -> OutRecord:
    value, headers = codecs.encode_anomaly(anomaly, fmt)
    return OutRecord(topic, anomaly.run_id.encode(), value, headers)
