"""The detection pipeline: validate a batch, update run state, detect, persist, publish.

Everything here runs on the service's event loop, one batch at a time; the
only blocking work (SQLite) happens on the store's writer thread.

Events for a run with no RunStart are rejected (``events[i].run_id: unknown
run``) unless ``auto_create_runs`` is on, in which case the run is opened
implicitly (project "default") and a later RunStart fills in its metadata.
Steps follow W&B's rule: per run they never decrease. An event at the run's
current step that repeats metric names already logged for that step, or a
step seen in the recent past, is a re-sent duplicate: dropped and counted,
not an error. Any other step below the current one is rejected.

Most batches pass every check. Their events are read column by column (from
the received bytes by a compiled reader, service/event_scan.py, when they are
in the plain encoding, else from the parsed message, service/event_columns.py),
checked run by run with array operations, and applied at once, without
Python work per event; a batch of events only is then never parsed at all.
A batch with any event to reject or drop goes item by item, which names
each one; both paths leave the same state, store and acknowledgement.

The server applies the batches its streams delivered meanwhile as one group
(:meth:`DetectionPipeline.begin_group` / :meth:`~DetectionPipeline.end_group`):
one commit for all of them, and each run's events of the group detected in one
block, which raises the alerts the batches one by one would (detection does not
depend on how a run's events are split into blocks). No batch is acknowledged
before the group's commit. With ``detection_hold_s`` set (the default), a busy
server may leave a run's few events of one group to the next group's detection
call (:meth:`DetectionPipeline.end_group`'s ``hold``): acknowledged as before,
their anomalies come that much later, for one call instead of two. Only events
close to the ones the run's detectors last saw wait (service/hold_screen.py): a
spike or a NaN is detected with its own group.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import math
import re
import time
from array import array
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from runwatch.models.alerting import Alert
from runwatch.models.block import MetricBlock
from runwatch.models.monitor import RunMonitor
from runwatch.models.registry import DiagnosticSuite
from runwatch.models.run_end import run_end_finding
from runwatch.models.snapshot import SnapshotError
from runwatch.service import store as store_ops
from runwatch.service import validation as check
from runwatch.service.event_columns import RunEvents, group_by_run, read_run, sequence_size
from runwatch.service.event_scan import ScannedBatch, scan_batch
from runwatch.service.formatting import status_name
from runwatch.service.hold_screen import ValueBands
from runwatch.service.run_starts import implicit_start, looks_implicit, merge_start, resume_start
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore, WriteOp
from runwatch.service.text_logs import LogTextAnalysis
from runwatch.service.wire_check import decode_error
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

log = logging.getLogger("runwatch.service")

SNAPSHOT_FORMAT = "runwatch.run-state/1"
MAX_VIOLATIONS_REPORTED = 100
MAX_ENDED_REMEMBERED = 10_000
RECENT_BATCHES = 256
REPLAY_BLOCK = 500  # events per block when a resumed run's detectors read its stored history
# A checkpoint takes ~2 ms: a thousand runs going quiet at once are evicted over several ticks, not in one pause.
EVICTIONS_PER_CALL = 256


UNKNOWN_RUN = re.compile(r"unknown run '(.*)': send its RunStart first$")
"""The reason of :func:`unknown_run`; group 1 is the run id (the Kafka consumer warns about such runs)."""


def unknown_run(run_id: str) -> tuple[str, str]:
    """The violation of an item naming a run this service has no RunStart of.

    >>> UNKNOWN_RUN.match(unknown_run("r-1")[1]).group(1)
    'r-1'
    """
    return "run_id", f"unknown run {run_id!r}: send its RunStart first"


class StepRanges:
    """The ``(first, last)`` steps of a run's last ``maxlen`` accepted batches, oldest first.

    A deque of pairs in one array: about 4 KiB per run once full, where tuples of
    Python ints took 32 KiB once full (a run's memory must not grow with its length).

    Examples
    --------
    >>> r = StepRanges(maxlen=2)
    >>> r.append((0, 9)); r.append((10, 19)); r.append((20, 29))
    >>> list(r), r.covers(5), r.covers(15)
    ([(10, 19), (20, 29)], False, True)
    """

    __slots__ = ("_next", "_pairs", "maxlen")

    def __init__(self, maxlen: int = RECENT_BATCHES) -> None:
        self._pairs = array("q")
        self._next = 0  # once full: where the oldest pair starts, overwritten next
        self.maxlen = maxlen

    def append(self, pair: tuple[int, int]) -> None:
        a = self._pairs
        if len(a) < 2 * self.maxlen:
            a.extend(pair)
        else:
            i = self._next
            a[i], a[i + 1] = pair
            self._next = (i + 2) % len(a)

    def covers(self, step: int) -> bool:
        a = self._pairs
        return any(a[i] <= step <= a[i + 1] for i in range(0, len(a), 2))

    def clear(self) -> None:
        self._pairs = array("q")
        self._next = 0

    def __len__(self) -> int:
        return len(self._pairs) // 2

    def __iter__(self):
        a = self._pairs
        order = list(range(self._next, len(a), 2)) + list(range(0, self._next, 2))
        return iter([(a[i], a[i + 1]) for i in order])


@dataclass(slots=True)
class RunState:
    """In-memory state of one run (bounded: detector windows are fixed-size)."""

    run_id: str
    project: str
    status: int
    monitor: RunMonitor | None
    last_step: int = -1
    last_received: float = 0.0
    start: bytes = b""  # the serialized RunStart, carried in checkpoints
    last_names: tuple | frozenset = ()
    valid_names: set = field(default_factory=set)
    recent: StepRanges = field(default_factory=StepRanges)
    implicit: bool = False  # opened by its events: its first RunStart replaces the placeholder record
    resumed_through: int = -1  # resumed after it ended: steps up to here were stored before, re-sends are duplicates
    text: object = None  # the run's TextMonitor, made on its first log line (service/text_logs.py)
    touched: float = 0.0  # when it was opened or restored here (time.time()): idle and LRU count from it too
    bands: ValueBands | None = None  # the hold's screen: what its last held-mode detection saw (not run state)

    def remember_steps(self, first: int, last: int) -> None:
        """Record the step range of an accepted batch (to recognise re-sent batches)."""
        self.recent.append((first, last))

    def seen_recently(self, step: int) -> bool:
        return self.recent.covers(step)


@dataclass(slots=True)
class _RunGroup:
    """Accepted events of one run within one batch."""

    state: RunState
    events: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    wall_times: list = field(default_factory=list)
    names: list = field(default_factory=list)
    values: list = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    """What one batch produced: its acknowledgement, anomalies, and the commit to await."""

    ack: service_pb2.IngestAck
    anomalies: list[anomaly_pb2.Anomaly]
    durable: object  # concurrent.futures.Future resolved when the batch's writes are committed
    run_ids: frozenset[str] = frozenset()  # every run id the batch's items name, accepted or not ("" included)
    exhausted: str = ""  # "field: reason" when a limit refused the whole batch (nothing applied): re-send it later


@dataclass(slots=True)
class _Deferred:
    """One run's accepted events of a group whose detection waits for :meth:`DetectionPipeline.end_group`."""

    state: RunState
    # (steps, wall_times, layouts, batch), in arrival order; batch: the index of its result in the group,
    # or a _HeldBatch for a batch of an earlier group whose detection was held
    parts: list = field(default_factory=list)
    screened: int = 0  # parts the hold's screen passed already


@dataclass(slots=True)
class _HeldBatch:
    """A batch of an earlier group, acknowledged, with events whose detection was held (``end_group(hold=True)``)."""

    result: BatchResult
    arrival: float
    parts_left: int = 0  # its runs' parts not detected yet: its detection latency counts when the last one is


@dataclass(slots=True)
class _Group:
    """Batches ingested between :meth:`DetectionPipeline.begin_group` and :meth:`~DetectionPipeline.end_group`."""

    ops: list = field(default_factory=list)  # every batch's writes, in order: one commit for the group
    results: list = field(default_factory=list)  # (BatchResult, arrival) per batch, in order
    pending: dict = field(default_factory=dict)  # run id -> _Deferred


def merged_block(parts: list) -> MetricBlock:
    """One block of a run's consecutive parts ``(steps, wall_times, layouts, ...)``; layouts as for
    :meth:`MetricBlock.from_layouts`. Equal layouts of several parts become one (what one batch of all
    the events would give).

    Examples
    --------
    >>> one = (np.array([1, 2]), np.zeros(2), [(("loss",), None, np.array([[0.5], [0.4]]))])
    >>> two = (np.array([3]), np.zeros(1), [(("loss", "val/loss"), None, np.array([[0.3, 0.6]]))])
    >>> b = merged_block([one, two])
    >>> b.columns["loss"].values.tolist(), b.columns["val/loss"].steps.tolist()
    ([0.5, 0.4, 0.3], [3])
    """
    if len(parts) == 1:
        steps, wall, layouts = parts[0][:3]
        return MetricBlock.from_layouts(steps, wall, layouts)
    by_names: dict[tuple, tuple[list, list]] = {}
    offset = 0
    for part in parts:
        steps, _, layouts = part[:3]
        n = len(steps)
        for names, rows, values in layouts:
            at = np.arange(offset, offset + n) if rows is None else np.asarray(rows) + offset
            got = by_names.get(names)
            if got is None:
                by_names[names] = ([at], [values])
            else:
                got[0].append(at)
                got[1].append(values)
        offset += n
    total = offset
    layouts = []
    for names, (rows, values) in by_names.items():
        rows = rows[0] if len(rows) == 1 else np.concatenate(rows)
        values = values[0] if len(values) == 1 else np.concatenate(values)
        layouts.append((names, None if len(rows) == total else rows, values))
    return MetricBlock.from_layouts(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), layouts
    )


class _AckBuilder:
    __slots__ = ("ack",)

    def __init__(self, sequence: int) -> None:
        self.ack = service_pb2.IngestAck(sequence=sequence)

    def reject(self, where: str, violation: tuple[str, str]) -> None:
        self.ack.rejected += 1
        if len(self.ack.violations) < MAX_VIOLATIONS_REPORTED:
            field_path, reason = violation
            self.ack.violations.add(field=f"{where}.{field_path}" if where else field_path, reason=reason)


class DetectionPipeline:
    """Turns ingested batches into stored telemetry and published anomalies.

    Parameters
    ----------
    settings
        Service settings (limits, diagnostics, policy).
    store
        Where runs, events and anomalies are persisted.
    publish
        Called with each anomaly revision as soon as it is raised.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        store: RunStore,
        publish: Callable[[anomaly_pb2.Anomaly], None] = lambda a: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publish = publish
        # Refits each project's run-outlier detector from its healthy finished runs (started by the server).
        self.refitter = None
        if "learned" in settings.diagnostics.enabled:  # as the suite, import the learned detector only when on
            from runwatch.service.outlier_refit import ProjectRefitter

            self.refitter = ProjectRefitter.for_settings(settings, store)
        self.suite = DiagnosticSuite(settings.diagnostics, self.refitter.models if self.refitter else None)
        self.runs: dict[str, RunState] = {}
        # Ended runs leave `runs`; a bounded memory of them answers late events without a store
        # read (and without racing the store write of their end).
        self.ended: OrderedDict[str, RunState] = OrderedDict()
        # Seconds from a batch's arrival to the end of its detection (every batch), and to the
        # publication of each anomaly it raised: the benchmark's latency figures.
        self.batch_latencies: deque[float] = deque(maxlen=100_000)
        self.emission_latencies: deque[float] = deque(maxlen=100_000)
        self.counters = {"accepted": 0, "duplicates": 0, "rejected": 0, "anomalies": 0, "batches": 0}
        # Evicted runs (see evict_run): checkpoints whose store write may not be committed yet, and
        # when an evicted run's idle timer could next raise something (a stall), to restore it then.
        self._evicting: dict[str, tuple[bytes, Future]] = {}
        self._wake: dict[str, float] = {}
        self.evictions = 0
        self.restores = 0
        self.refused_batches = 0
        # With Kafka a refusal could only be dead-lettered: there, max_active_runs eviction bounds memory.
        self.project_cap = 0 if settings.kafka.enabled else settings.max_active_runs_per_project
        self.text = LogTextAnalysis(store, settings.text)
        self._group: _Group | None = None  # set between begin_group and end_group
        self._held: dict[str, _Deferred] = {}  # run id -> events end_group(hold=True) left for the next group
        self.holds = 0  # times a run's events were left for the next group (the benchmark's count)

    # -- run lookup ---------------------------------------------------------------------------

    def _state(self, run_id: str) -> RunState | None:
        state = self.runs.get(run_id) or self.ended.get(run_id)
        if state is not None:
            return state
        pending = self._evicting.get(run_id)
        if pending is not None:  # evicted, its checkpoint maybe not committed yet
            return self._restore_evicted(run_id, pending[0], moved=False)
        info = self.store.get_run(run_id)  # a run opened before a restart, or evicted
        if info is None:
            return None
        running = info.status == runs_pb2.RUN_STATUS_RUNNING
        if running:
            blob = self.store.run_checkpoint(run_id)
            # Another instance sharing the store may have written it (a handoff).
            if blob is not None and (state := self._restore_evicted(run_id, blob.encode(), moved=True)) is not None:
                return state
        state = RunState(
            run_id,
            info.project,
            info.status,
            self._monitor(run_id, info.project) if running else None,
            last_step=info.last_step,
            start=info.start.SerializeToString(),
            implicit=looks_implicit(info.start),
            touched=time.time(),
        )
        if running:
            self.runs[run_id] = state
        else:
            self._remember_ended(state)
        return state

    def _monitor(self, run_id: str, project: str, moved: bool = False) -> RunMonitor:
        """A fresh monitor of a run of ``project``; ``moved``: the run comes from another instance."""
        if self.refitter is not None:
            self.refitter.seen(project, moved)
        return self.suite.monitor(run_id, project)

    def _remember_ended(self, state: RunState) -> None:
        self.runs.pop(state.run_id, None)
        self.ended[state.run_id] = state
        self.ended.move_to_end(state.run_id)
        while len(self.ended) > MAX_ENDED_REMEMBERED:
            self.ended.popitem(last=False)

    # -- groups: several batches, one detection per run and one commit ----------------------------

    def begin_group(self) -> None:
        """Start a group: the batches ingested until :meth:`end_group` share one commit.

        Events of batches taken at once (the plain events-only path) are detected at
        :meth:`end_group`, each run's events of the whole group in one block: detection
        does not depend on how a run's events are split into blocks (the detectors'
        contract), so the alerts are those the batches one by one would raise, at a
        fraction of the per-call cost for small batches. A batch that needs the
        item-by-item path has the deferred events detected before it. The results'
        ``durable`` is set by :meth:`end_group`: acknowledge none before that.
        """
        if self._group is not None:
            raise RuntimeError("begin_group: a group is already open")
        self._group = _Group(pending=self._held)  # runs held by the last group are detected with this one
        self._held = {}

    def end_group(self, hold: bool = False) -> Future:
        """Detect the group's deferred events, submit its writes in one commit, publish; returns the commit's future.

        Every batch's ``BatchResult.durable`` becomes that future (its writes, and the
        anomalies its events raised, are in that commit).

        ``hold`` (the server under load, more batches coming): a run with fewer than
        ``settings.detection_hold_events`` events deferred, the oldest of them younger
        than ``settings.detection_hold_s``, is detected with the next group instead (or
        by :meth:`flush_held`): one call for both groups' events raises the same alerts
        for a fraction of the cost. Its writes are in this commit all the same; its
        anomalies are stored and published when it is detected.
        """
        group, self._group = self._group, None
        if group is None:
            raise RuntimeError("end_group: no group is open")
        held: set[int] = set()
        hold = hold and self.settings.detection_hold_s > 0
        try:
            if group.pending:
                if hold:
                    held = self._hold(group)
                self._detect_deferred(group, learn_bands=hold)
        finally:
            durable = self.store.submit(group.ops)
            done = time.perf_counter()
            for i, (result, arrival) in enumerate(group.results):
                result.durable = durable
                if i in held:
                    continue  # its latencies count when its held runs are detected
                self.batch_latencies.append(done - arrival)
                if result.anomalies:
                    self.emission_latencies.extend([done - arrival] * len(result.anomalies))
            if len(self.runs) > self.settings.max_active_runs:
                self._evict_least_recent()
        return durable

    def flush_held(self) -> None:
        """Detect now the events :meth:`end_group` held for the next group (their anomalies: stored, published)."""
        if self._held and self._group is None:
            self.begin_group()
            self.end_group()

    @property
    def holding(self) -> bool:
        """Whether some runs' events wait for the next group's detection (see :meth:`end_group`)."""
        return bool(self._held)

    def _hold(self, group: _Group) -> set[int]:
        """Move the group's young, small deferred runs to ``self._held``; the indexes of batches they leave undetected."""
        now = time.perf_counter()
        max_age, max_events = self.settings.detection_hold_s, self.settings.detection_hold_events
        held: dict[int, _HeldBatch] = {}
        for run_id, deferred in list(group.pending.items()):
            parts = deferred.parts
            first = parts[0][3]
            oldest = group.results[first][1] if isinstance(first, int) else first.arrival
            if now - oldest >= max_age or sum(len(p[0]) for p in parts) >= max_events:
                continue
            bands = deferred.state.bands
            if bands is None or not all(bands.admits(p[2]) for p in parts[deferred.screened :]):
                continue  # a value unlike those last detected (a spike, a NaN, new names): detected now
            deferred.screened = len(parts)
            del group.pending[run_id]
            self._held[run_id] = deferred
            self.holds += 1
            for j, part in enumerate(parts):
                ref = part[3]
                if isinstance(ref, int):
                    batch = held.get(ref)
                    if batch is None:
                        batch = held[ref] = _HeldBatch(*group.results[ref])
                    batch.parts_left += 1
                    parts[j] = (*part[:3], batch)
        return set(held)

    def _detect_deferred(self, group: _Group, learn_bands: bool = False) -> None:
        """Run detection on each run's deferred events (one block per run); their anomalies join their batches.

        ``learn_bands``: remember what each run's detectors saw, for the hold's screen of its next events.
        """
        pending, group.pending = group.pending, {}
        now = time.time()
        for run_id, deferred in pending.items():
            state = deferred.state
            parts = deferred.parts
            alerts = state.monitor.observe_block(merged_block(parts))
            if learn_bands:
                if max(len(part[0]) for part in parts) >= self.settings.detection_hold_events:
                    state.bands = None  # batches as large as a hold waits for: not held, no screen to keep
                else:
                    if state.bands is None:
                        state.bands = ValueBands(self.settings.detection_hold_margin)
                    state.bands.learn([layout for part in parts for layout in part[2]])
            if alerts:
                last_steps = [int(part[0][-1]) for part in parts]
            for alert in alerts:
                anomaly = to_anomaly(alert, run_id, state.project, now)
                # The batch that carried the finding's step (its latency and its count).
                k = next((j for j, last in enumerate(last_steps) if alert.finding.step <= last), len(parts) - 1)
                ref = parts[k][3]
                if isinstance(ref, int):
                    group.results[ref][0].anomalies.append(anomaly)
                else:  # an earlier group's batch, acknowledged already
                    ref.result.anomalies.append(anomaly)
                    self.emission_latencies.append(time.perf_counter() - ref.arrival)
                group.ops.append(store_ops.save_anomaly_op(anomaly))
                self.counters["anomalies"] += 1
                self.publish(anomaly)
            for part in parts:
                ref = part[3]
                if not isinstance(ref, int):
                    ref.parts_left -= 1
                    if ref.parts_left == 0:
                        self.batch_latencies.append(time.perf_counter() - ref.arrival)

    # -- ingest -------------------------------------------------------------------------------

    def ingest_bytes(self, raw: bytes, arrival: float | None = None) -> BatchResult:
        """Decode and ingest one serialized ``EventBatch``; bad bytes become a rejection, not an exception."""
        arrival = time.perf_counter() if arrival is None else arrival
        if len(raw) > self.settings.max_batch_bytes:
            ack = _AckBuilder(0)
            ack.reject(
                "",
                (
                    "batch",
                    (
                        f"{len(raw)} bytes is over the limit of {self.settings.max_batch_bytes} bytes; "
                        "split it into smaller batches"
                    ),
                ),
            )
            return self._finish(ack, [], [])
        scanned = scan_batch(raw)
        if scanned is not None and not scanned.other_items:
            result = self._ingest_scanned(scanned, raw, arrival)
            if result is not None:
                return result
        try:
            batch = runs_pb2.EventBatch.FromString(raw)
        except DecodeError as exc:
            ack = _AckBuilder(0)
            ack.reject("", decode_error(raw, runs_pb2.EventBatch.DESCRIPTOR, exc))
            return self._finish(ack, [], [])
        return self._ingest(batch, arrival, len(raw), raw, scanned)

    def ingest_events_bytes(self, raw: bytes, arrival: float | None = None) -> BatchResult | None:
        """Apply a serialized ``EventBatch`` of events only, read straight from its bytes, if it needs nothing more.

        That is: its runs are open here, every event is accepted as it is, and the bytes
        are in the plain encoding (see :mod:`runwatch.service.event_scan`). Otherwise,
        and without compiled kernels, returns None having changed nothing: parse the
        batch and call :meth:`ingest`. The size limit is the caller's to check.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> from runwatch.service.store import RunStore
        >>> settings = ServiceSettings(data_dir=Path(tempfile.mkdtemp()))
        >>> pipeline = DetectionPipeline(settings, RunStore(settings.db_path))
        >>> b = runs_pb2.EventBatch(sequence=1)
        >>> b.events.add(run_id="r1", step=0).metrics["loss"] = 2.3
        >>> pipeline.ingest_events_bytes(b.SerializeToString()) is None  # r1 has no RunStart yet
        True
        >>> _ = b.starts.add(run_id="r1", project="p")
        >>> pipeline.ingest(b).ack.accepted
        2
        >>> b = runs_pb2.EventBatch(sequence=2)
        >>> b.events.add(run_id="r1", step=1).metrics["loss"] = 2.2
        >>> result = pipeline.ingest_events_bytes(b.SerializeToString())
        >>> result is None or (result.ack.sequence, result.ack.accepted) == (2, 1)  # None: RUNWATCH_JIT=0
        True
        >>> pipeline.store.close()
        """
        scanned = scan_batch(raw)
        if scanned is None or scanned.other_items:
            return None
        return self._ingest_scanned(scanned, raw, time.perf_counter() if arrival is None else arrival)

    def _ingest_scanned(self, scanned: ScannedBatch, raw: bytes, arrival: float) -> BatchResult | None:
        """:meth:`ingest_events_bytes` on a batch already read from its bytes."""
        reads = self._open_runs(scanned.runs)
        if reads is None:
            return None
        plans = self._plans(reads)
        if plans is None:
            return None
        now = time.time()
        ack = _AckBuilder(scanned.sequence)
        ops: list[WriteOp] = []
        anomalies: list[anomaly_pb2.Anomaly] = []
        parsed: list[runs_pb2.EventBatch] = []

        def events():
            # Parsed only to write a filled-in wall time into events stored apart from the batch.
            if not parsed:
                parsed.append(runs_pb2.EventBatch.FromString(raw))
            return parsed[0].events

        self._accept(
            reads, plans, events, raw, len(reads) == 1, now, ack, ops, anomalies, defer=self._group is not None
        )
        return self._complete(ack, ops, anomalies, frozenset(run.run_id for run in scanned.runs), arrival)

    def ingest(
        self, batch: runs_pb2.EventBatch, arrival: float | None = None, raw_size: int = -1, raw: bytes | None = None
    ) -> BatchResult:
        """Apply one batch: starts, then events, then logs, then ends.

        ``raw`` (optional) is the batch as received, ``raw_size`` its length: with them,
        unknown fields are found and a batch of one run's events is stored as received.
        """
        return self._ingest(batch, arrival, raw_size, raw, scan_batch(raw) if raw is not None else None)

    def _ingest(
        self,
        batch: runs_pb2.EventBatch,
        arrival: float | None,
        raw_size: int,
        raw: bytes | None,
        scanned: ScannedBatch | None,
    ) -> BatchResult:
        arrival = time.perf_counter() if arrival is None else arrival
        if self._group is not None and self._group.pending:
            # Item by item, a batch may end, restore or evict runs and report text findings: the
            # events deferred before it are detected first, as if each batch had been on its own.
            self._detect_deferred(self._group)
        now = time.time()
        ack = _AckBuilder(batch.sequence)
        ops: list[WriteOp] = []
        anomalies: list[anomaly_pb2.Anomaly] = []

        bad_items: dict[tuple[str, int], tuple[str, str]] = {}
        only_events = not (batch.starts or batch.logs or batch.ends)
        if scanned is not None and scanned.n_events != len(batch.events):
            scanned = None  # not these bytes' batch
        # A batch of events for open runs is read column by column up front (reading changes nothing).
        reads = self._read_open_runs(batch, scanned) if only_events and batch.events else None
        top: tuple[str, str] | None = None
        if scanned is not None:
            # Read from its bytes, the batch's own fields and its events were all recognised:
            # only its starts, logs and ends can carry unknown fields, and each is searched.
            if not only_events:
                bad_items, top = check.items_with_unknown_fields(batch, ("starts", "logs", "ends"))
                if bad_items:
                    batch.DiscardUnknownFields()
        else:
            # Unknown fields are dropped on parsing but counted in the received size: a batch whose
            # size is what its known fields take has none. The column reads give that size without
            # serializing the batch again (ByteSize() does).
            if raw_size < 0:
                raw_size = batch.ByteSize()
            if reads is None or sum(r.wire_size() for _, r in reads) + sequence_size(batch.sequence) != raw_size:
                batch.DiscardUnknownFields()
                known_size = batch.ByteSize()
            else:
                known_size = raw_size
            if known_size != raw_size and raw is not None:
                # Sizes differ only when unknown fields were dropped (rare): find them on a fresh parse.
                bad_items, top = check.items_with_unknown_fields(runs_pb2.EventBatch.FromString(raw))
        if top and (top[1] != check.UNKNOWN_FIELD or not self.settings.allow_unknown_fields):
            unknown = top[1] == check.UNKNOWN_FIELD
            warning = f"batch: unknown field {top[0]} ignored" if unknown else f"batch.{top[0]}: {top[1]}; ignored"
            ack.ack.warnings.append(warning)
        if self.settings.allow_unknown_fields:
            # A field sent with the wrong wire type lost its value: rejected even so.
            for path, reason in bad_items.values():
                if reason == check.UNKNOWN_FIELD:
                    ack.ack.warnings.append(f"{path}: unknown field ignored")
            bad_items = {k: v for k, v in bad_items.items() if v[1] != check.UNKNOWN_FIELD}

        if self.project_cap and (batch.starts or (batch.events and reads is None and self.settings.auto_create_runs)):
            refusal = self._over_project_cap(batch)
            if refusal is not None:
                return self._refuse(ack, batch, refusal)

        for i, start in enumerate(batch.starts):
            where = f"starts[{i}]"
            if ("starts", i) in bad_items:
                ack.reject("", bad_items[("starts", i)])
                continue
            self._apply_start(start, where, now, ack, ops)

        if batch.events and (
            bad_items
            or not self._apply_events_at_once(batch, reads, scanned, only_events, now, ack, ops, anomalies, raw)
        ):
            self._apply_events(batch, bad_items, now, ack, ops, anomalies, raw)

        log_rows = []
        texts: dict[str, tuple[RunState, list]] = {}  # each run's accepted lines, for text analysis
        for i, line in enumerate(batch.logs):
            where = f"logs[{i}]"
            if ("logs", i) in bad_items:
                ack.reject("", bad_items[("logs", i)])
                continue
            v = check.check_log(line)
            if v:
                ack.reject(where, v)
                continue
            state = self._state(line.run_id)
            if state is None:
                ack.reject(where, unknown_run(line.run_id))
                continue
            log_rows.append((line.run_id, line.time or now, line.level, line.step, line.text))
            # A run that prints is alive: its lines count for the stall check like its events (a text-only run,
            # `runwatch pipe` or the logs topic, that hangs is flagged STALLED like one that stops sending metrics).
            state.touched = state.last_received = now
            texts.setdefault(line.run_id, (state, []))[1].append((line.text, line.step))
            ack.ack.accepted += 1
        if log_rows:
            ops.append(store_ops.append_logs_op(log_rows))
        for state, items in texts.values():
            alerts, read = self.text.analyse(state, items, now)
            for alert in alerts:
                anomalies.append(to_anomaly(alert, state.run_id, state.project, now))
            if read:
                ops.append(_read_events_op(state.run_id, read, now))

        for i, end in enumerate(batch.ends):
            where = f"ends[{i}]"
            if ("ends", i) in bad_items:
                ack.reject("", bad_items[("ends", i)])
                continue
            self._apply_end(end, where, now, ack, ops, anomalies)

        if reads is not None:
            run_ids = frozenset(state.run_id for state, _ in reads)
        elif scanned is not None:
            run_ids = frozenset(run.run_id for run in scanned.runs)
        else:
            run_ids = frozenset([ev.run_id for ev in batch.events])
        if not only_events:
            run_ids = run_ids.union(
                [x.run_id for x in batch.starts], [x.run_id for x in batch.logs], [x.run_id for x in batch.ends]
            )
        return self._complete(ack, ops, anomalies, run_ids, arrival)

    def _complete(
        self, ack: _AckBuilder, ops: list[WriteOp], anomalies: list, run_ids: frozenset[str], arrival: float
    ) -> BatchResult:
        """Store the batch's anomalies with its writes, submit them, publish the anomalies."""
        for a in anomalies:
            ops.append(store_ops.save_anomaly_op(a))
        result = self._finish(ack, ops, anomalies, run_ids, arrival)
        for a in anomalies:
            self.publish(a)
        if self._group is not None:
            return result  # its latency counts to the group's end (end_group)
        done = time.perf_counter() - arrival
        self.batch_latencies.append(done)
        if anomalies:
            self.emission_latencies.extend([done] * len(anomalies))
        return result

    def _finish(
        self,
        ack: _AckBuilder,
        ops: list[WriteOp],
        anomalies: list,
        run_ids: frozenset[str] = frozenset(),
        arrival: float | None = None,
    ) -> BatchResult:
        c = self.counters
        c["batches"] += 1
        c["accepted"] += ack.ack.accepted
        c["duplicates"] += ack.ack.duplicates
        c["rejected"] += ack.ack.rejected
        c["anomalies"] += len(anomalies)
        group = self._group
        if group is not None:
            # Committed with the whole group (end_group gives every batch the group's future).
            result = BatchResult(ack.ack, anomalies, None, run_ids)
            group.ops.extend(ops)
            group.results.append((result, time.perf_counter() if arrival is None else arrival))
            return result
        result = BatchResult(ack.ack, anomalies, self.store.submit(ops), run_ids)
        if len(self.runs) > self.settings.max_active_runs:
            self._evict_least_recent()
        return result

    def _apply_start(self, start, where, now, ack, ops) -> None:
        v = check.check_start(start)
        if v:
            ack.reject(where, v)
            return
        state = self._state(start.run_id)
        if state is not None and start.resume and not state.implicit:
            self._resume(state, start, where, ack, ops)
            return
        if state is not None and state.status != runs_pb2.RUN_STATUS_RUNNING:
            ack.reject(
                where,
                (
                    "run_id",
                    (
                        f"run {start.run_id!r} already ended ({runs_pb2.RunStatus.Name(state.status)}); use a new "
                        "run_id, or resume it (RunStart.resume; the SDK's init(..., resume=True))"
                    ),
                ),
            )
            return
        if state is not None:
            # See service/run_starts.py: a repeat is a duplicate, a completion is applied, a conflict rejected.
            merged, v = merge_start(runs_pb2.RunStart.FromString(state.start), start, state.implicit)
            if v:
                field_name, reason = v
                if field_name == "start_time" or field_name.startswith("environment"):  # what a restart changes
                    reason += "; a restarted process continues a run with RunStart.resume"
                ack.reject(where, (field_name, reason))
            elif merged is None:
                ack.ack.duplicates += 1
            else:
                if merged.project != state.project:
                    state.monitor.bind(self.suite.context(merged.project))
                    if self.refitter is not None:
                        self.refitter.seen(merged.project)
                state.project = merged.project
                state.start = merged.SerializeToString()
                state.implicit = False
                ops.append(store_ops.open_run_op(merged, runs_pb2.RUN_STATUS_RUNNING))
                ack.ack.accepted += 1
            return
        if not start.start_time:
            start.start_time = now
        if not start.project:
            start.project = "default"
        start.resume = False  # a run resumed before it existed is simply opened
        self.runs[start.run_id] = RunState(
            start.run_id,
            start.project,
            runs_pb2.RUN_STATUS_RUNNING,
            self._monitor(start.run_id, start.project),
            start=start.SerializeToString(),
            touched=now,
        )
        ack.ack.accepted += 1
        ops.append(store_ops.open_run_op(start, runs_pb2.RUN_STATUS_RUNNING))

    def _resume(self, state: RunState, start, where: str, ack: _AckBuilder, ops: list) -> None:
        """Continue a run under a resumed RunStart (see ``RunStart.resume``): reopen it if it ended."""
        merged, v, kept = resume_start(runs_pb2.RunStart.FromString(state.start), start)
        if v:
            ack.reject(where, v)
            return
        if kept:
            ack.ack.warnings.append(
                f"run {start.run_id!r} resumed with the recorded {', '.join(kept[:5])}"
                + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
                + ": a run's start record is written once"
            )
        if merged is not None:
            state.start = merged.SerializeToString()
            ops.append(store_ops.open_run_op(merged, runs_pb2.RUN_STATUS_RUNNING))
        if state.status == runs_pb2.RUN_STATUS_RUNNING:
            if merged is None:
                ack.ack.duplicates += 1  # a re-send, or a restart of a run that never ended: nothing to do
            else:
                ack.ack.accepted += 1
            return
        self.ended.pop(state.run_id, None)
        state.status = runs_pb2.RUN_STATUS_RUNNING
        state.monitor = self._replayed_monitor(state)
        state.resumed_through = state.last_step
        state.touched = time.time()
        self.runs[state.run_id] = state
        ops.append(store_ops.end_run_op(state.run_id, runs_pb2.RUN_STATUS_RUNNING, 0.0, ""))
        ack.ack.accepted += 1

    def _replayed_monitor(self, state: RunState) -> RunMonitor:
        """A monitor of the run that has seen its stored history (its alerts were raised then: not again)."""
        monitor = self._monitor(state.run_id, state.project)
        steps, walls, names, values = [], [], [], []

        def observe() -> None:
            monitor.observe_block(MetricBlock.from_values(steps, walls, names, values))
            for part in (steps, walls, names, values):
                part.clear()

        for ev in self.store.events(state.run_id):
            steps.append(ev.step)
            walls.append(ev.wall_time)
            names.append(tuple(ev.metrics.keys()))
            values.append(tuple(ev.metrics.values()))
            if len(steps) >= REPLAY_BLOCK:
                observe()
        if steps:
            observe()
        return monitor

    def _open_implicit(self, run_id: str, now: float, ack: _AckBuilder, ops: list) -> RunState:
        start = implicit_start(run_id, now)
        state = RunState(
            run_id,
            "default",
            runs_pb2.RUN_STATUS_RUNNING,
            self._monitor(run_id, "default"),
            start=start.SerializeToString(),
            implicit=True,
            touched=now,
        )
        self.runs[run_id] = state
        ops.append(store_ops.open_run_op(start, runs_pb2.RUN_STATUS_RUNNING))
        ack.ack.warnings.append(f"run {run_id!r} had no RunStart: opened implicitly in project 'default'")
        return state

    # -- events: the whole batch at once ----------------------------------------------------------

    def _open_runs(self, runs: list[RunEvents]) -> list[tuple[RunState, RunEvents]] | None:
        """Each run's events with its state, or None if one of the runs is not open in memory."""
        states = [self.runs.get(run.run_id) for run in runs]
        if any(state is None or state.monitor is None for state in states):
            return None  # unknown, ended or not loaded yet: the item-by-item path knows what to do
        return list(zip(states, runs))

    def _read_open_runs(
        self, batch: runs_pb2.EventBatch, scanned: ScannedBatch | None
    ) -> list[tuple[RunState, RunEvents]] | None:
        """The batch's events read by run (from ``scanned`` when given), or None if a run is not open."""
        if scanned is not None:
            return self._open_runs(scanned.runs)
        by_run = group_by_run(batch.events)
        states = [self.runs.get(run_id) for run_id in by_run]
        if any(state is None or state.monitor is None for state in states):
            return None
        return [
            (state, read_run(state.run_id, evs, positions)) for state, (positions, evs) in zip(states, by_run.values())
        ]

    def _names_after(self, state: RunState, run: RunEvents) -> tuple | frozenset | None:
        """``state.last_names`` after every event of ``run`` is accepted, or None if one would not be.

        Mirrors the item-by-item checks (event shape, metric names, steps never decreasing,
        a repeated step logging new names only) for a batch where all of them pass; any
        event that would be rejected or dropped as a duplicate sends the batch down the
        item-by-item path, which names it. Changes nothing.
        """
        steps = run.steps
        first = int(steps[0])
        if first < 0 or first < state.last_step or first <= state.resumed_through:
            return None
        if len(steps) == 1:  # one event (the array checks below cost more than it does)
            return self._names_after_one(state, run.layouts[0].names, first, float(run.wall_times[0]))
        ahead = np.diff(steps)
        if (ahead < 0).any():
            return None
        wall = run.wall_times
        if not ((wall >= 0.0) & (wall < math.inf)).all():  # NaN fails both
            return None
        max_metrics = self.settings.max_metrics_per_event
        valid = state.valid_names
        for layout in run.layouts:
            names = layout.names
            if not 0 < len(names) <= max_metrics:
                return None
            if names not in valid and any(map(check.check_metric_name, names)):
                return None
        repeats = ahead == 0
        if first != state.last_step and not repeats.any():
            return run.layouts[-1].names if len(run.layouts) == 1 else run.names_of(len(run) - 1)
        # Events sharing a step (training then validation metrics, say) must log different names.
        ids = run.layout_ids()
        tied = np.concatenate(([first == state.last_step], repeats))
        logged: set = set()
        previous = -2
        for i in np.flatnonzero(tied).tolist():
            if i != previous + 1:  # a new stretch of one step: it began with the event before
                logged = set(state.last_names) if i == 0 else set(run.names_of(i - 1, ids))
            names = run.names_of(i, ids)
            if not logged.isdisjoint(names):
                return None
            logged.update(names)
            previous = i
        return frozenset(logged) if tied[-1] else run.names_of(len(run) - 1, ids)

    def _names_after_one(self, state: RunState, names: tuple, step: int, wall: float) -> tuple | frozenset | None:
        """:meth:`_names_after` of a run's one event (``step`` is not below the run's last)."""
        if not (0.0 <= wall < math.inf):  # NaN fails too
            return None
        if not 0 < len(names) <= self.settings.max_metrics_per_event:
            return None
        if names not in state.valid_names and any(map(check.check_metric_name, names)):
            return None
        if step != state.last_step:
            return names
        logged = set(state.last_names)  # the same step again: it must log other names
        if not logged.isdisjoint(names):
            return None
        logged.update(names)
        return frozenset(logged)

    def _plans(self, reads: list[tuple[RunState, RunEvents]]) -> list | None:
        """Per run, ``last_names`` after its events are accepted; None if any event needs the item-by-item path."""
        plans = []
        for state, run in reads:
            names = self._names_after(state, run)
            if names is None:
                return None
            plans.append(names)
        return plans

    def _apply_events_at_once(self, batch, reads, scanned, only_events, now, ack, ops, anomalies, raw) -> bool:
        """Accept every event of ``batch`` with per-run column work, if each one passes; else change nothing.

        Returns False when the batch needs the item-by-item path (an unknown or ended run,
        or an event that would be rejected or dropped as a duplicate).
        """
        if reads is None:
            if only_events:
                return False  # read before: a run was not open, and nothing in this batch opens one
            reads = self._read_open_runs(batch, scanned)  # this batch's starts may have opened its runs
            if reads is None:
                return False
        plans = self._plans(reads)
        if plans is None:
            return False
        store_raw = raw is not None and only_events and len(reads) == 1
        self._accept(reads, plans, lambda: batch.events, raw, store_raw, now, ack, ops, anomalies)
        return True

    def _accept(self, reads, plans, events, raw, store_raw, now, ack, ops, anomalies, defer=False) -> None:
        """Accept every event of ``reads``: update run state, detect, write.

        ``events()`` gives the batch's event messages (needed only to fill in a wall time
        of events stored apart from the batch); ``store_raw`` says ``raw`` is exactly the
        one run's events. With ``defer`` (in a group), detection waits for :meth:`end_group`.
        """
        for (state, run), last_names in zip(reads, plans):
            steps = run.steps
            wall = run.wall_times
            valid = state.valid_names
            for layout in run.layouts:
                if layout.names not in valid:
                    if len(valid) > 1024:  # bound the cache for runs whose names keep changing
                        valid.clear()
                    valid.add(layout.names)
            first, last = int(steps[0]), int(steps[-1])
            state.last_step = last
            state.last_names = last_names
            unset = np.flatnonzero(wall == 0.0)
            if len(unset):
                wall[unset] = now
            state.last_received = now
            state.remember_steps(first, last)
            layouts = [(lay.names, lay.rows, lay.values) for lay in run.layouts]
            if defer:
                deferred = self._group.pending.get(state.run_id)
                if deferred is None:
                    deferred = self._group.pending[state.run_id] = _Deferred(state)
                deferred.parts.append((steps, wall, layouts, len(self._group.results)))
            else:
                block = MetricBlock.from_layouts(steps, wall, layouts)
                for alert in state.monitor.observe_block(block):
                    anomalies.append(to_anomaly(alert, state.run_id, state.project, now))
            if store_raw:
                blob = raw  # the batch is exactly this run's events: store it as received
            else:
                # This run's events as received, when they were located there and no wall time was filled in.
                blob = run.wire(raw) if raw is not None and not len(unset) else None
                if blob is None:
                    messages = run.messages(events())
                    for i in unset.tolist():
                        messages[i].wall_time = now
                    chunk = runs_pb2.EventBatch()
                    chunk.events.extend(messages)
                    chunk.DiscardUnknownFields()
                    blob = chunk.SerializeToString()
            ops.append(store_ops.append_events_op(state.run_id, first, last, len(run), blob, float(wall[-1])))
            ack.ack.accepted += len(run)

    # -- events: item by item (batches with rejected or duplicate events) -----------------------

    def _apply_events(self, batch, bad_items, now, ack, ops, anomalies, raw) -> None:
        max_metrics = self.settings.max_metrics_per_event
        auto_create = self.settings.auto_create_runs
        groups: dict[str, _RunGroup] = {}
        all_accepted = True
        runs = self.runs
        prev_names: tuple[str, ...] = ()
        accepted = 0
        unknown: set[str] = set()  # run ids this batch already looked up in the store in vain
        for i, ev in enumerate(batch.events):
            if bad_items and ("events", i) in bad_items:
                ack.reject("", bad_items[("events", i)])
                all_accepted = False
                continue
            run_id = ev.run_id
            group = groups.get(run_id)
            if group is None:
                state = runs.get(run_id)
                if state is None:
                    v = check.check_run_id(run_id)
                    if v:
                        ack.reject(f"events[{i}]", v)
                        all_accepted = False
                        continue
                    state = None if run_id in unknown else self._state(run_id)
                    if state is None:
                        if not auto_create:
                            unknown.add(run_id)
                            ack.reject(f"events[{i}]", unknown_run(run_id))
                            all_accepted = False
                            continue
                        state = self._open_implicit(run_id, now, ack, ops)
                if state.monitor is None:
                    ack.reject(
                        f"events[{i}]",
                        ("run_id", f"run {run_id!r} already ended ({runs_pb2.RunStatus.Name(state.status)})"),
                    )
                    all_accepted = False
                    continue
                group = groups[run_id] = _RunGroup(state)
            state = group.state
            metrics = ev.metrics
            step = ev.step
            wall_time = ev.wall_time
            n = len(metrics)
            if step < 0 or n == 0 or n > max_metrics or not (0.0 <= wall_time < math.inf):
                ack.reject(f"events[{i}]", check.check_event_shape(ev, max_metrics))
                all_accepted = False
                continue
            # Events of a run nearly always repeat the previous event's names: if the sizes match
            # and every previous name is present, the name sets are equal and tuple(metrics) is skipped.
            values = None
            if n == len(prev_names):
                # .get, not [...]: indexing a protobuf map inserts a missing key (no KeyError).
                values = list(map(metrics.get, prev_names))
                if None in values:
                    values = None
                else:
                    names = prev_names
            if values is None:
                names = tuple(metrics)
                values = list(map(metrics.__getitem__, names))
            if names not in state.valid_names:
                v = next(filter(None, map(check.check_metric_name, names)), None)
                if v:
                    ack.reject(f"events[{i}]", v)
                    all_accepted = False
                    continue
                if len(state.valid_names) > 1024:  # bound the cache for runs whose names keep changing
                    state.valid_names.clear()
                state.valid_names.add(names)
            prev_names = names
            if step <= state.last_step:
                if step <= state.resumed_through:  # stored before the run was resumed
                    ack.ack.duplicates += 1
                    all_accepted = False
                    continue
                if step == state.last_step:
                    logged = state.last_names
                    repeated = [k for k in names if k in logged]
                    if len(repeated) == len(names):
                        ack.ack.duplicates += 1
                        all_accepted = False
                        continue
                    if repeated:
                        ack.reject(
                            f"events[{i}]",
                            (
                                "metrics",
                                f"step {step} already has {', '.join(repeated[:5])}; a step logs each metric once",
                            ),
                        )
                        all_accepted = False
                        continue
                    state.last_names = frozenset(logged).union(names)
                elif state.seen_recently(step):
                    ack.ack.duplicates += 1
                    all_accepted = False
                    continue
                else:
                    ack.reject(
                        f"events[{i}]",
                        (
                            "step",
                            f"step {step} is before the run's last step {state.last_step}; steps must not decrease",
                        ),
                    )
                    all_accepted = False
                    continue
            else:
                state.last_step = step
                state.last_names = names
            if wall_time == 0.0:
                ev.wall_time = wall_time = now
            group.events.append(ev)
            group.steps.append(step)
            group.wall_times.append(wall_time)
            group.names.append(names)
            group.values.append(values)
            accepted += 1
        ack.ack.accepted += accepted

        only_events = not (batch.starts or batch.logs or batch.ends)
        for run_id, group in groups.items():
            events = group.events
            if not events:
                continue
            state = group.state
            state.last_received = now
            state.remember_steps(group.steps[0], group.steps[-1])
            block = MetricBlock.from_values(group.steps, group.wall_times, group.names, group.values)
            for alert in state.monitor.observe_block(block):
                anomalies.append(to_anomaly(alert, run_id, state.project, now))
            if all_accepted and only_events and len(groups) == 1 and raw is not None:
                blob = raw  # the batch is exactly this run's events: store it as received
            else:
                chunk = runs_pb2.EventBatch()
                chunk.events.extend(events)
                chunk.DiscardUnknownFields()
                blob = chunk.SerializeToString()
            ops.append(
                store_ops.append_events_op(
                    run_id, events[0].step, events[-1].step, len(events), blob, events[-1].wall_time
                )
            )

    def _apply_end(self, end, where, now, ack, ops, anomalies) -> None:
        v = check.check_end(end)
        if v:
            ack.reject(where, v)
            return
        state = self._state(end.run_id)
        if state is None:
            ack.reject(where, unknown_run(end.run_id))
            return
        status = end.status or runs_pb2.RUN_STATUS_FINISHED
        if state.status != runs_pb2.RUN_STATUS_RUNNING:
            ack.ack.duplicates += 1
            return
        state.status = status
        # What the run's text still held back (a progress bar's last state) is final now: read it before the end.
        alerts, read = self.text.end(state, now)
        anomalies.extend(to_anomaly(a, end.run_id, state.project, now) for a in alerts)
        if read:
            ops.append(_read_events_op(end.run_id, read, now))
        if status == runs_pb2.RUN_STATUS_FINISHED and state.monitor is not None:
            for alert in state.monitor.end(now):
                anomalies.append(to_anomaly(alert, end.run_id, state.project, now))
        elif state.monitor is not None:
            worst = max(state.monitor.severities.values(), default=0)
            ended = run_end_finding(status_name(status).lower(), end.reason, _last_step_told(state), worst)
            for alert in state.monitor.report([ended] if ended is not None else [], now):
                anomalies.append(to_anomaly(alert, end.run_id, state.project, now))
        if self.refitter is not None and state.monitor is not None:
            self.refitter.run_ended(state.project, end.run_id, status == runs_pb2.RUN_STATUS_FINISHED, state.monitor)
        state.monitor = None  # frees detector state; the run's history stays in the store
        state.text = None
        state.recent.clear()
        state.valid_names.clear()
        self._remember_ended(state)
        ops.append(store_ops.end_run_op(end.run_id, status, end.end_time or now, end.reason))
        ack.ack.accepted += 1

    # -- checkpoints (a run moving between instances) -------------------------------------------

    def snapshot_run(self, run_id: str) -> bytes | None:
        """JSON bytes of a running run's full detection state, or None if it is not running here.

        A run evicted from memory (:meth:`evict_run`) answers with its checkpoint, as it stands.
        """
        if run_id in self._held:
            self.flush_held()  # a checkpoint holds detector state that has seen every accepted event
        state = self.runs.get(run_id)
        if state is None or state.monitor is None:
            pending = self._evicting.get(run_id)
            if pending is not None:
                return pending[0]
            if run_id in self.ended:
                return None
            blob = self.store.run_checkpoint(run_id)
            return blob.encode() if blob is not None else None
        doc = {
            "format": SNAPSHOT_FORMAT,
            "run_id": run_id,
            "project": state.project,
            "last_step": state.last_step,
            # Wall clock (instances share it): a run that went quiet just before moving is still timed.
            "last_received": state.last_received,
            "start": base64.b64encode(state.start).decode(),
            "last_names": sorted(state.last_names),
            "recent": [list(r) for r in state.recent],
            "resumed_through": state.resumed_through,
            "monitor": state.monitor.state_dict(),
            "text": self.text.snapshot(state),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def restore_run(self, blob: bytes, moved: bool = True) -> str:
        """Install a :meth:`snapshot_run` checkpoint (replacing this instance's state of the run).

        ``moved``: the checkpoint may come from another instance (its project's refitted model is
        looked up in the store again); False for this instance's own evictions.

        Raises :class:`~runwatch.models.snapshot.SnapshotError` naming what is wrong with a bad
        checkpoint. Diagnostics whose configuration differs here start fresh (logged).
        """
        try:
            doc = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SnapshotError(f"checkpoint is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"format: expected {SNAPSHOT_FORMAT!r}, got {str(doc)[:40] if not isinstance(doc, dict) else doc.get('format')!r}"
            )
        run_id = doc.get("run_id")
        if not isinstance(run_id, str) or check.check_run_id(run_id):
            raise SnapshotError(f"run_id: invalid {run_id!r}")
        try:
            project = str(doc["project"])
            monitor = self._monitor(run_id, project, moved)
            misfits = monitor.load_state_dict(doc["monitor"])
            start = runs_pb2.RunStart.FromString(base64.b64decode(doc["start"], validate=True))
            state = RunState(
                run_id,
                project,
                runs_pb2.RUN_STATUS_RUNNING,
                monitor,
                start=start.SerializeToString(),
                implicit=looks_implicit(start),
            )
            state.last_step = int(doc["last_step"])
            state.last_received = float(doc.get("last_received", 0.0))  # absent in checkpoints before it was kept
            state.touched = time.time()
            state.last_names = tuple(str(n) for n in doc["last_names"])
            for first, last in doc["recent"]:
                state.remember_steps(int(first), int(last))
            state.resumed_through = int(doc.get("resumed_through", -1))  # absent before runs could be resumed
            if not self.text.restore(state, doc.get("text")):  # absent in checkpoints before text analysis
                misfits.append("log_text")
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, DecodeError) as exc:
            raise SnapshotError(f"checkpoint of {run_id!r}: {type(exc).__name__}: {exc}") from None
        if start.run_id == run_id and self.store.get_run(run_id) is None:
            self.store.submit([store_ops.open_run_op(start, runs_pb2.RUN_STATUS_RUNNING)])
        if misfits:
            log.warning("run %s: restored without the state of %s (their configuration differs here)", run_id, misfits)
        self.ended.pop(run_id, None)
        self.runs[run_id] = state
        # This state supersedes any checkpoint of the run this instance kept when it evicted it.
        self._wake.pop(run_id, None)
        self._evicting.pop(run_id, None)
        self.store.submit([store_ops.delete_checkpoints_op([run_id])])
        return run_id

    # -- bounded memory: idle and least recently active runs leave memory for the store -----------

    def evict_run(self, run_id: str, now: float | None = None) -> bool:
        """Checkpoint a running run to the store and drop it from memory; its next item restores it.

        Detection continues after the restore exactly as if the run had stayed (the
        checkpoint is :meth:`snapshot_run`'s). If its idle timer could still raise
        something (a stall, or its escalation), the run is restored for that moment by
        :meth:`tick`. Returns False when the run is not running in memory here.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> settings = ServiceSettings(data_dir=Path(tempfile.mkdtemp()))
        >>> pipeline = DetectionPipeline(settings, RunStore(settings.db_path))
        >>> b = runs_pb2.EventBatch(sequence=1)
        >>> _ = b.starts.add(run_id="r1", project="p")
        >>> b.events.add(run_id="r1", step=0).metrics["loss"] = 2.3
        >>> pipeline.ingest(b).ack.accepted
        2
        >>> pipeline.evict_run("r1"), "r1" in pipeline.runs
        (True, False)
        >>> b = runs_pb2.EventBatch(sequence=2)
        >>> b.events.add(run_id="r1", step=1).metrics["loss"] = 2.2
        >>> pipeline.ingest(b).ack.accepted, pipeline.runs["r1"].last_step  # restored, then applied
        (1, 1)
        >>> pipeline.store.close()
        """
        blob = self.snapshot_run(run_id) if run_id in self.runs else None
        if blob is None:
            return False
        now = time.time() if now is None else now
        state = self.runs.pop(run_id)
        due = state.monitor.next_idle_due(now, state.last_received) if state.last_received else None
        if due is not None:
            self._wake[run_id] = due
        self._evicting[run_id] = (blob, self.store.submit([store_ops.save_checkpoint_op(run_id, blob.decode())]))
        self.evictions += 1
        return True

    def evict_idle(self, now: float | None = None, at_most: int = EVICTIONS_PER_CALL) -> int:
        """Evict runs that sent nothing for ``settings.idle_evict_s`` (``at_most`` of them); returns how many."""
        now = time.time() if now is None else now
        self._settle_evictions()
        cutoff = now - self.settings.idle_evict_s
        idle = [
            run_id
            for run_id, state in self.runs.items()
            if state.monitor is not None and max(state.last_received, state.touched) <= cutoff
        ][:at_most]
        for run_id in idle:
            self.evict_run(run_id, now)
        return len(idle)

    def checkpoint_all(self, deadline: float = float("inf")) -> int:
        """Evict every running run (a shutdown: a restart restores each on its next item); stops at ``deadline`` (time.monotonic())."""
        n = 0
        for run_id in list(self.runs):
            if time.monotonic() >= deadline:
                break
            n += self.evict_run(run_id)
        return n

    def forget_runs(self, run_ids) -> None:
        """Drop runs from memory and, with a store of this instance's own, their checkpoints (their partition moved)."""
        gone = []
        for run_id in run_ids:
            self.runs.pop(run_id, None)
            self.ended.pop(run_id, None)
            self._held.pop(run_id, None)
            self._wake.pop(run_id, None)
            self._evicting.pop(run_id, None)
            gone.append(run_id)
        # A shared store's checkpoints are how the runs' new owner restores an evicted run: keep them.
        if gone and not self.store.shared:
            self.store.submit([store_ops.delete_checkpoints_op(gone)])

    @property
    def evicted_waiting(self) -> int:
        """Evicted runs whose idle timer is still due to be checked (restored for it by :meth:`tick`)."""
        return len(self._wake)

    def _evict_least_recent(self) -> None:
        over = len(self.runs) - self.settings.max_active_runs
        if over <= 0:
            return
        oldest = heapq.nsmallest(over, self.runs.values(), key=lambda s: max(s.last_received, s.touched))
        for state in oldest:
            self.evict_run(state.run_id)

    def _settle_evictions(self) -> None:
        """Forget in-memory copies of checkpoints once committed (a failed write keeps its copy)."""
        for run_id, (_, fut) in list(self._evicting.items()):
            if fut.done():
                if fut.exception() is None:
                    del self._evicting[run_id]
                else:
                    log.error("run %s: checkpoint not stored (%s); kept in memory", run_id, fut.exception())

    def _restore_evicted(self, run_id: str, blob: bytes, moved: bool) -> RunState | None:
        try:
            self.restore_run(blob, moved)
        except SnapshotError as exc:
            log.error("run %s: its checkpoint is unusable (%s); detection restarts from scratch", run_id, exc)
            self._evicting.pop(run_id, None)
            self._wake.pop(run_id, None)
            self.store.submit([store_ops.delete_checkpoints_op([run_id])])
            return None
        self.restores += 1
        return self.runs[run_id]

    # -- bounded memory: a project's runs -----------------------------------------------------------

    def _over_project_cap(self, batch: runs_pb2.EventBatch) -> tuple[str, str] | None:
        """``(field, reason)`` if the batch would open more runs in a project than ``max_active_runs_per_project``."""
        cap = self.project_cap
        new: dict[str, list[tuple[str, str]]] = {}
        seen: set[str] = set()

        def is_new(run_id: str) -> bool:
            if run_id in seen or run_id in self.runs or run_id in self.ended or run_id in self._evicting:
                return False
            seen.add(run_id)
            return not check.check_run_id(run_id) and self.store.get_run(run_id) is None

        for i, start in enumerate(batch.starts):
            if is_new(start.run_id):
                new.setdefault(start.project or "default", []).append((f"starts[{i}].project", start.run_id))
        if self.settings.auto_create_runs and batch.events:
            for i, ev in enumerate(batch.events):
                if is_new(ev.run_id):
                    new.setdefault("default", []).append((f"events[{i}].run_id", ev.run_id))
        if not new:
            return None
        active = Counter(s.project for s in self.runs.values() if s.monitor is not None)
        for project, opening in new.items():
            room = max(cap - active[project], 0)
            if len(opening) > room:
                where, run_id = opening[room]
                return where, (
                    f"project {project!r} has {active[project]} active runs, the limit (max_active_runs_per_project="
                    f"{cap}); run {run_id!r} can open once some of them end or send nothing for idle_evict_s "
                    f"({self.settings.idle_evict_s:g} s): re-send this batch later"
                )
        return None

    def _refuse(self, ack: _AckBuilder, batch: runs_pb2.EventBatch, refusal: tuple[str, str]) -> BatchResult:
        """The result of a batch a limit refused whole: nothing applied, to be re-sent (RESOURCE_EXHAUSTED)."""
        ack.reject("", refusal)
        ack.ack.rejected = len(batch.starts) + len(batch.events) + len(batch.logs) + len(batch.ends)
        self.refused_batches += 1
        run_ids = frozenset(x.run_id for items in (batch.starts, batch.events, batch.logs, batch.ends) for x in items)
        return BatchResult(ack.ack, [], self.store.submit([]), run_ids, exhausted=f"{refusal[0]}: {refusal[1]}")

    # -- time-based checks --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[anomaly_pb2.Anomaly]:
        """Run time-based diagnostics (stalled runs) for every running run.

        Evicted runs whose idle timer is due (see :meth:`evict_run`) are restored first and checked too.
        """
        self.flush_held()  # a quiet run's last events are detected before its idle timer is checked
        now = time.time() if now is None else now
        if self._wake:
            for run_id in [r for r, due in self._wake.items() if now > due]:
                del self._wake[run_id]
                self._state(run_id)  # restored: checked below like any run, evicted again when still idle
        out = []
        ops = []
        quiet_since = now - self.settings.text_hold_s
        for state in self.runs.values():
            if state.monitor is None or state.last_received == 0.0:
                continue
            if state.text is not None and state.last_received <= quiet_since and state.text.holds_back:
                # No RunEnd comes from a log shipper: a bar's last values are final once its text goes quiet.
                alerts, read = self.text.end(state, now)
                out.extend(to_anomaly(a, state.run_id, state.project, now) for a in alerts)
                if read:
                    ops.append(_read_events_op(state.run_id, read, now))
            for alert in state.monitor.idle(now, state.last_received):
                out.append(to_anomaly(alert, state.run_id, state.project, now))
        if ops:
            self.store.submit(ops)
        if out:
            self.store.submit([store_ops.save_anomaly_op(a) for a in out])
            self.counters["anomalies"] += len(out)
            for a in out:
                self.publish(a)
        return out


def to_anomaly(alert: Alert, run_id: str, project: str, detected_time: float) -> anomaly_pb2.Anomaly:
    """Wire form of an alert."""
    f = alert.finding
    a = anomaly_pb2.Anomaly(
        id=alert.incident_id,
        run_id=run_id,
        project=project,
        step=f.step,
        wall_time=f.wall_time,
        detected_time=detected_time,
        kind=int(f.kind),
        severity=int(f.severity),
        score=f.score,
        metrics=f.metrics,
        layer=f.layer,
        explanation=f.explanation,
        detector=f.detector,
        detector_version=f.detector_version,
        first_step=alert.first_step,
        last_step=alert.last_step,
        occurrences=alert.occurrences,
        revision=alert.revision,
        state=int(alert.state),
        part_of=alert.part_of,
    )
    for metric, step, value in f.evidence:
        a.evidence.add(metric=metric, step=step, value=value)
    if f.lines:
        a.log_lines.extend(f.lines)
    return a


def _last_step_told(state: RunState) -> int:
    """The run's last step as anything told it: its events, and the metrics and steps read from its log lines
    (a text-only run, ``runwatch pipe``, has no events of its own)."""
    steps = [state.last_step]
    if state.monitor is not None:
        steps.append(state.monitor.last_step)
    if state.text is not None:
        steps.append(state.text.step)
    return max(steps)


def _read_events_op(run_id: str, events: list[tuple[int, dict[str, float]]], now: float) -> WriteOp:
    """The metric events read from a run's text lines, stored as its metric history (charts, export, show)."""
    chunk = runs_pb2.EventBatch()
    for step, metrics in events:
        chunk.events.add(run_id=run_id, step=step, wall_time=now).metrics.update(metrics)
    return store_ops.append_events_op(run_id, events[0][0], events[-1][0], len(events), chunk.SerializeToString(), now)
