"""The store of runs, metric events, log lines and anomalies: SQLite (WAL) or a shared PostgreSQL database.

Writes go through one background thread that commits whatever has queued up
in one transaction (group commit); callers get a future that resolves once
their writes are durable, so an acknowledgement is never sent for data that
a crash could still lose. Reads use their own connection (SQLite's WAL lets
them run beside the writer; PostgreSQL readers see every instance's commits).

Both databases run the same write operations and queries: the differences
live in :mod:`runwatch.service.store_backends`, the schema in numbered
migrations (:mod:`runwatch.service.store_migrate`).

Metric events are stored in chunks: one row per run per ingested batch,
holding the serialized ``EventBatch`` of that run's events.

A healthy finished run leaves its learned prefix summaries (float64 bytes and
their shape, never pickle) in ``run_summaries``: its project's run-outlier
reference rows (:mod:`runwatch.service.outlier_refit`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from runwatch.service.nesting import clip
from runwatch.service.store_backends import Connection, PostgresBackend, backend_for
from runwatch.service.store_location import StoreError
from runwatch.service.store_migrate import migrate
from runwatch.service.wire_check import without_field
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

__all__ = ["RunStore", "StoreError", "WriteOp"]

WriteOp = Callable[[Connection], None]
_STOP = object()
#: Seconds a group of writes is retried on a fresh connection after the database connection was lost.
WRITE_RETRY_S = 120.0
log = logging.getLogger("runwatch.store")


def _log_lines(run_id: str, rows: Iterable[tuple]) -> list[runs_pb2.LogLine]:
    """``(time, level, step, text)`` rows of a run as LogLine messages."""
    return [runs_pb2.LogLine(run_id=run_id, time=t, level=lv, step=s, text=x) for t, lv, s, x in rows]


class RunStore:
    """Durable state of runwatch: a SQLite file (a path), or a PostgreSQL database (a ``postgresql://`` URL).

    Examples
    --------
    >>> import tempfile
    >>> from runwatch.v1 import runs_pb2
    >>> store = RunStore(Path(tempfile.mkdtemp()) / "runwatch.db")
    >>> store.open_run(runs_pb2.RunStart(run_id="r1", project="p", start_time=1.0)).result()
    >>> store.get_run("r1").project
    'p'
    >>> store.backend.name, store.schema_version
    ('sqlite', 2)
    >>> store.close()

    ``RunStore("postgresql://runwatch@db.internal/runwatch")`` opens a database
    several instances share (``pip install 'runwatch[postgresql]'``).
    """

    def __init__(self, location: Path | str) -> None:
        self.backend = backend_for(location)
        self.path = location
        self._writer_conn = self.backend.connect()
        try:
            self.schema_version = migrate(self.backend, self._writer_conn)
            self._reader = self.backend.connect_reader()
        except BaseException:
            self._writer_conn.close()
            raise
        self._read_lock = threading.Lock()
        self.write_retry_s = WRITE_RETRY_S
        self._retrying = False  # the writer is committing a group again after a lost connection
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="runwatch-store-writer", daemon=True)
        self._closed = False
        self._feeds: list = []
        self._thread.start()

    # -- writes -----------------------------------------------------------------------------

    def submit(self, ops: Iterable[WriteOp]) -> Future:
        """Queue write operations; the future resolves when they are committed."""
        fut: Future = Future()
        if self._closed:
            fut.set_exception(RuntimeError("store is closed"))
            return fut
        self._queue.put((list(ops), fut))
        return fut

    def open_run(self, start: runs_pb2.RunStart, status: int = runs_pb2.RUN_STATUS_RUNNING) -> Future:
        return self.submit([open_run_op(start, status)])

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            pending = [item]
            stop = False
            # Group commit: everything that queued up meanwhile goes into one transaction.
            while len(pending) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                pending.append(nxt)
            error = self._commit_group(pending)
            for _, fut in pending:
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
            if stop:
                break

    def _commit_group(self, pending: list) -> BaseException | None:
        """Commit one group's operations in one transaction; the error that failed it, or None.

        A lost connection (a database restart, an administrator ending the session) is not the group's fault: the
        transaction rolled back with it, so the writer reconnects and runs the group again, for up to
        ``write_retry_s`` seconds. Meanwhile nothing is acknowledged (the streams stop at their in-flight limit
        and SDKs keep the rest in their spools). A batch refused instead could not be re-sent: its events were
        applied, so a re-sent copy would be a duplicate.
        """
        backend = self.backend
        deadline, wait, warned = None, 0.05, False
        while True:
            conn = self._writer_conn
            try:
                backend.begin(conn)
                write_ops(conn, (op for ops, _ in pending for op in ops))
                backend.commit(conn)
                if warned:
                    log.warning("store: writing again after a lost connection")
                self._retrying = False
                return None
            except BaseException as exc:  # report to every waiter; the writer itself keeps going
                backend.rollback(conn)
                if not backend.is_disconnect(exc):
                    self._retrying = False
                    return exc
                now = time.monotonic()
                deadline = now + self.write_retry_s if deadline is None else deadline
                if now >= deadline or self._closed:
                    self._retrying = False
                    self._reconnect_writer()
                    return exc
                if not warned:
                    log.warning("store: connection lost (%s); retrying the write for up to %.0f s", exc, self.write_retry_s)
                    warned = True
                self._retrying = True
                time.sleep(wait)
                wait = min(2 * wait, 2.0)
                self._reconnect_writer()

    def _reconnect_writer(self) -> None:
        # A group that failed past its retries was refused to its callers; the next group gets a fresh connection.
        with contextlib.suppress(Exception):  # it is broken already
            self._writer_conn.close()
        try:
            self._writer_conn = self.backend.connect()
        except StoreError as exc:  # still down: the next group fails on the closed connection and tries again
            log.warning("%s", exc)

    def settled(self) -> Future:
        """A future resolved once everything queued so far is committed, for reads that must see it; resolved at
        once while the writer retries a lost connection, so reads answer from what is committed (or fail on the
        database themselves) instead of waiting out the retries."""
        if self._retrying:
            done: Future = Future()
            done.set_result(None)
            return done
        return self.submit([])

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until everything queued so far is committed (see :meth:`settled`)."""
        self.settled().result(timeout)

    def close(self) -> None:
        if self._closed:
            return
        for feed in self._feeds:
            feed.close()
        self.flush()
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self._writer_conn.close()
        self._reader.close()

    @property
    def shared(self) -> bool:
        """True for a PostgreSQL store, which other instances read and write too."""
        return isinstance(self.backend, PostgresBackend)

    def follow_anomalies(self, deliver: Callable[[anomaly_pb2.Anomaly], None]):
        """Call ``deliver`` (on a thread of its own) with each anomaly revision other instances commit.

        Only a PostgreSQL store is shared: with SQLite there are no other
        instances, and this returns None. Otherwise it returns the
        :class:`~runwatch.service.anomaly_feed.AnomalyFeed` (closed with the store).
        """
        if not isinstance(self.backend, PostgresBackend):
            return None
        from runwatch.service.anomaly_feed import AnomalyFeed

        feed = AnomalyFeed(self.backend, self.anomalies_by_id, deliver)
        self._feeds.append(feed)
        return feed

    # -- reads ------------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, args).fetchall()
            except Exception as exc:
                if not self.backend.is_disconnect(exc):
                    raise
                # A dropped connection (database restart, failover): one fresh try before giving up.
                self._reader.close()
                self._reader = self.backend.connect_reader()
                return self._reader.execute(sql, args).fetchall()

    _RUN_COLUMNS = (
        "r.run_id, r.project, r.kind, r.status, r.start_time, r.end_time, r.end_reason, r.last_step, "
        "r.event_count, r.last_event_time, r.start_record, "
        "(SELECT COUNT(*) FROM anomalies a WHERE a.run_id = r.run_id)"
    )

    @staticmethod
    def _run_info(row: tuple) -> service_pb2.RunInfo:
        info = service_pb2.RunInfo(
            run_id=row[0], project=row[1], kind=row[2], status=row[3], start_time=row[4], end_time=row[5],
            end_reason=row[6], last_step=row[7], event_count=row[8], last_event_time=row[9], anomaly_count=row[11],
        )
        info.start.CopyFrom(readable_start(row[10], row[0], row[1], row[2], row[4]))
        return info

    def get_run(self, run_id: str) -> service_pb2.RunInfo | None:
        rows = self._read(f"SELECT {self._RUN_COLUMNS} FROM runs r WHERE r.run_id = ?", (run_id,))
        return self._run_info(rows[0]) if rows else None

    def list_runs(self, project: str = "", status: int = 0, limit: int = 100) -> list[service_pb2.RunInfo]:
        where, args = [], []
        if project:
            where.append("r.project = ?")
            args.append(project)
        if status:
            where.append("r.status = ?")
            args.append(status)
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.start_time DESC, r.rowid DESC LIMIT ?"
        return [self._run_info(r) for r in self._read(sql, (*args, limit))]

    def anomalies(
        self, run_id: str = "", project: str = "", min_severity: int = 0, limit: int = 10_000
    ) -> list[anomaly_pb2.Anomaly]:
        """Latest revision of each stored incident, oldest first."""
        where, args = ["severity >= ?"], [min_severity]
        if run_id:
            where.append("run_id = ?")
            args.append(run_id)
        if project:
            where.append("project = ?")
            args.append(project)
        sql = f"SELECT record FROM anomalies WHERE {' AND '.join(where)} ORDER BY detected_time, rowid LIMIT ?"
        return [anomaly_pb2.Anomaly.FromString(r[0]) for r in self._read(sql, (*args, limit))]

    def anomalies_by_id(self, ids: list[str]) -> list[anomaly_pb2.Anomaly]:
        """The latest stored revision of each of these anomaly ids (those stored), in ``ids`` order."""
        if not ids:
            return []
        rows = self._read(f"SELECT id, record FROM anomalies WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
        found = {i: anomaly_pb2.Anomaly.FromString(r) for i, r in rows}
        return [found[i] for i in ids if i in found]

    def events(self, run_id: str) -> Iterable[runs_pb2.MetricEvent]:
        """A run's metric events in step order."""
        rows = self._read("SELECT events FROM event_chunks WHERE run_id = ? ORDER BY first_step, rowid", (run_id,))
        for (blob,) in rows:
            yield from runs_pb2.EventBatch.FromString(blob).events

    def log_lines(self, run_id: str, limit: int = 1000) -> list[runs_pb2.LogLine]:
        rows = self._read(
            "SELECT time, level, step, text FROM log_lines WHERE run_id = ? ORDER BY time, rowid LIMIT ?",
            (run_id, limit),
        )
        return _log_lines(run_id, rows)

    def latest_log_lines(self, run_id: str, limit: int = 1000, offset: int = 0) -> list[runs_pb2.LogLine]:
        """A run's ``limit`` newest log lines once its ``offset`` newest are left out, oldest first (a run's end,
        a traceback, is what a reader comes for; :meth:`log_lines` reads from the start)."""
        rows = self._read(
            "SELECT time, level, step, text FROM (SELECT time, level, step, text, rowid FROM log_lines WHERE run_id = ? "
            "ORDER BY time DESC, rowid DESC LIMIT ? OFFSET ?) AS newest ORDER BY time, rowid",
            (run_id, limit, offset),
        )
        return _log_lines(run_id, rows)

    def event_chunks(self, run_id: str, after: int = 0) -> list[tuple[int, bytes]]:
        """A run's stored chunks ``(rowid, serialized EventBatch)`` with rowid above ``after``, in write order.

        Chunks are appended as batches are accepted, so ``after`` = the last rowid
        seen reads only what arrived since (the dashboard's live curves).
        """
        return self._read(
            "SELECT rowid, events FROM event_chunks WHERE run_id = ? AND rowid > ? ORDER BY rowid", (run_id, after)
        )

    def projects(self) -> list[tuple[str, int, int, float]]:
        """Every project as ``(name, runs, running runs, last activity time)``, by name."""
        return self._read(
            "SELECT project, COUNT(*), SUM(CASE WHEN status = ? THEN 1 ELSE 0 END), "
            "MAX(CASE WHEN start_time > last_event_time THEN start_time ELSE last_event_time END) FROM runs "
            "GROUP BY project ORDER BY project",
            (runs_pb2.RUN_STATUS_RUNNING,),
        )

    def latest_anomalies(
        self, limit: int = 200, projects: Iterable[str] | None = None, min_severity: int = 0
    ) -> list[anomaly_pb2.Anomaly]:
        """Latest revision of the ``limit`` most recently raised incidents, newest first (``projects``: only those)."""
        where, args = ["severity >= ?"], [min_severity]
        if projects is not None:
            names = sorted(projects)
            where.append(f"project IN ({','.join('?' * len(names))})" if names else "1 = 0")
            args.extend(names)
        sql = f"SELECT record FROM anomalies WHERE {' AND '.join(where)} ORDER BY detected_time DESC, rowid DESC LIMIT ?"
        return [anomaly_pb2.Anomaly.FromString(r[0]) for r in self._read(sql, (*args, limit))]

    def template_state(self, project: str) -> str | None:
        """A project's log-template miner state (JSON text, see ``runwatch.models.text.templates``), or None."""
        rows = self._read("SELECT state FROM text_templates WHERE project = ?", (project,))
        return rows[0][0] if rows else None

    def run_checkpoint(self, run_id: str) -> str | None:
        """The detector checkpoint of a run evicted from memory (JSON text, see ``DetectionPipeline.snapshot_run``), or None."""
        rows = self._read("SELECT state FROM run_checkpoints WHERE run_id = ?", (run_id,))
        return rows[0][0] if rows else None

    def count_run_summaries(self, project: str) -> int:
        """How many of a project's runs left run-outlier reference rows (:func:`save_run_summaries_op`)."""
        return int(self._read("SELECT COUNT(*) FROM run_summaries WHERE project = ?", (project,))[0][0])

    def run_summaries(self, project: str, first: int, newest: int) -> list[np.ndarray]:
        """The rows of the newest ``newest`` of a project's first ``first`` runs stored, one array per run, oldest first."""
        rows = self._read(
            "SELECT n_rows, n_cols, summaries FROM (SELECT rowid, n_rows, n_cols, summaries FROM run_summaries "
            "WHERE project = ? ORDER BY rowid LIMIT ?) AS firsts ORDER BY rowid DESC LIMIT ?",
            (project, first, newest),
        )
        return [np.frombuffer(blob, dtype="<f8").reshape(n, d).copy() for n, d, blob in reversed(rows)]

    def run_summary_projects(self) -> list[str]:
        """The projects with run-outlier reference rows, by name."""
        return [r[0] for r in self._read("SELECT DISTINCT project FROM run_summaries ORDER BY project")]

    def metric_summaries(self, run_id: str) -> list[service_pb2.MetricSummary]:
        stats: dict[str, service_pb2.MetricSummary] = {}
        for ev in self.events(run_id):
            for name, value in ev.metrics.items():
                s = stats.get(name)
                if s is None:
                    s = stats[name] = service_pb2.MetricSummary(name=name, min=math.inf, max=-math.inf)
                s.count += 1
                s.last = value
                s.last_step = ev.step
                if math.isfinite(value):
                    s.min = min(s.min, value)
                    s.max = max(s.max, value)
                else:
                    s.nonfinite_count += 1
        for s in stats.values():
            if s.count == s.nonfinite_count:
                s.min = s.max = math.nan
        return [stats[k] for k in sorted(stats)]


def readable_start(blob: bytes, run_id: str, project: str, kind: int, start_time: float) -> runs_pb2.RunStart:
    """A stored RunStart as every reader can parse it, even one stored before the nesting limit.

    Hyperparameters nested too deeply for a client to parse inside a response are
    clipped (:func:`runwatch.service.nesting.clip`); a record that does not parse
    at all is rebuilt from the run's columns and whatever else of it parses.
    Either way one odd run no longer fails every listing that includes it.
    """
    start = runs_pb2.RunStart()
    try:
        start.ParseFromString(blob)
    except DecodeError:
        start = runs_pb2.RunStart(run_id=run_id, project=project, kind=kind, start_time=start_time)
        try:
            start.MergeFromString(without_field(blob, runs_pb2.RunStart.HYPERPARAMETERS_FIELD_NUMBER))
        except DecodeError:
            pass
        start.hyperparameters["runwatch"] = "hyperparameters not shown: the stored record cannot be read"
        return start
    clip(start.hyperparameters)
    return start


# -- write operations (run on the writer thread) ------------------------------------------------


def open_run_op(start: runs_pb2.RunStart, status: int) -> WriteOp:
    row = (
        start.run_id, start.project or "default", start.kind or runs_pb2.RUN_KIND_TRAINING, status,
        start.start_time or time.time(), start.SerializeToString(),
    )

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO runs (run_id, project, kind, status, start_time, start_record) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET project = excluded.project, kind = excluded.kind, "
            "start_time = excluded.start_time, start_record = excluded.start_record",
            row,
        )

    return op


_INSERT_CHUNK = "INSERT INTO event_chunks (run_id, first_step, last_step, n_events, events) VALUES (?, ?, ?, ?, ?)"
_COUNT_EVENTS = (
    "UPDATE runs SET event_count = event_count + ?, "
    "last_step = CASE WHEN last_step > ? THEN last_step ELSE ? END, "
    "last_event_time = CASE WHEN last_event_time > ? THEN last_event_time ELSE ? END WHERE run_id = ?"
)


class EventsAppend:
    """A write op storing one chunk of a run's events and counting them on its run.

    Consecutive appends of one commit are written together (:func:`write_ops`): their
    chunks in one ``executemany``, one update per run instead of one per chunk.
    """

    __slots__ = ("blob", "first_step", "last_step", "last_time", "n", "run_id")

    def __init__(self, run_id: str, first_step: int, last_step: int, n: int, blob: bytes, last_time: float) -> None:
        self.run_id, self.first_step, self.last_step = run_id, first_step, last_step
        self.n, self.blob, self.last_time = n, blob, last_time

    def __call__(self, conn: Connection) -> None:
        append_events(conn, [self])


def append_events_op(run_id: str, first_step: int, last_step: int, n: int, blob: bytes, last_time: float) -> WriteOp:
    return EventsAppend(run_id, first_step, last_step, n, blob, last_time)


def append_events(conn: Connection, appends: list[EventsAppend]) -> None:
    """Store the chunks of ``appends`` in order and count them on their runs (one update per run)."""
    conn.executemany(_INSERT_CHUNK, [(a.run_id, a.first_step, a.last_step, a.n, a.blob) for a in appends])
    counts: dict[str, list] = {}
    for a in appends:
        c = counts.get(a.run_id)
        if c is None:
            counts[a.run_id] = [a.n, a.last_step, a.last_time]
        else:
            c[0] += a.n
            c[1] = max(c[1], a.last_step)
            c[2] = max(c[2], a.last_time)
    conn.executemany(_COUNT_EVENTS, [(n, last, last, t, t, run_id) for run_id, (n, last, t) in counts.items()])


def write_ops(conn: Connection, ops: Iterable[WriteOp]) -> None:
    """Run write ops in order; consecutive event appends together (:class:`EventsAppend`)."""
    appends: list[EventsAppend] = []
    for op in ops:
        if type(op) is EventsAppend:
            appends.append(op)
            continue
        if appends:
            append_events(conn, appends)
            appends = []
        op(conn)
    if appends:
        append_events(conn, appends)


def append_logs_op(rows: list[tuple[str, float, int, int, str]]) -> WriteOp:
    def op(conn: Connection) -> None:
        conn.executemany("INSERT INTO log_lines (run_id, time, level, step, text) VALUES (?, ?, ?, ?, ?)", rows)

    return op


def save_templates_op(project: str, state: str) -> WriteOp:
    """Replace a project's log-template miner state (JSON text)."""
    row = (project, state, time.time())

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO text_templates (project, state, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (project) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            row,
        )

    return op


def save_checkpoint_op(run_id: str, state: str) -> WriteOp:
    """Keep the detector checkpoint of a run leaving memory (replacing an older one)."""
    row = (run_id, state, time.time())

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO run_checkpoints (run_id, state, saved) VALUES (?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, saved = excluded.saved",
            row,
        )

    return op


def delete_checkpoints_op(run_ids: list[str]) -> WriteOp:
    """Drop runs' checkpoints (restored into memory, or no longer this instance's to keep)."""
    rows = [(r,) for r in run_ids]

    def op(conn: Connection) -> None:
        conn.executemany("DELETE FROM run_checkpoints WHERE run_id = ?", rows)

    return op


def save_run_summaries_op(run_id: str, project: str, summaries: np.ndarray) -> WriteOp:
    """Keep a healthy finished run's prefix summaries ``[n_rows, n_cols]``, its project's run-outlier reference rows.

    A run is stored once: an end delivered twice keeps its first rows and its place in the project's order.
    """
    rows = np.ascontiguousarray(summaries, dtype="<f8")
    row = (run_id, project, time.time(), rows.shape[0], rows.shape[1], rows.tobytes())

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO run_summaries (run_id, project, saved, n_rows, n_cols, summaries) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO NOTHING",
            row,
        )

    return op


def end_run_op(run_id: str, status: int, end_time: float, reason: str) -> WriteOp:
    def op(conn: Connection) -> None:
        conn.execute(
            "UPDATE runs SET status = ?, end_time = ?, end_reason = ? WHERE run_id = ?",
            (status, end_time, reason, run_id),
        )

    return op


def save_anomaly_op(anomaly: anomaly_pb2.Anomaly) -> WriteOp:
    row = (
        anomaly.id, anomaly.run_id, anomaly.project, anomaly.detector, anomaly.kind, anomaly.severity,
        anomaly.first_step, anomaly.revision, anomaly.detected_time, anomaly.SerializeToString(),
    )

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO anomalies (id, run_id, project, detector, kind, severity, first_step, revision, "
            "detected_time, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, revision = excluded.revision, "
            "detected_time = excluded.detected_time, record = excluded.record "
            "WHERE excluded.revision >= anomalies.revision",
            row,
        )

    return op
