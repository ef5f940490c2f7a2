"""The store's contract, held once for each backend (a SQLite file, a real PostgreSQL database), and its migrations.

Every test taking ``store_location`` runs twice: on SQLite and on a fresh
database of the session's PostgreSQL server (tests/postgres_server.py; skipped,
saying why, where PostgreSQL is not installed).
"""

from __future__ import annotations

import doctest
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runwatch.service import store as store_module
from runwatch.service import store_backends, store_location, store_migrate
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import (
    RunStore,
    append_events_op,
    append_logs_op,
    delete_checkpoints_op,
    end_run_op,
    open_run_op,
    save_anomaly_op,
    save_checkpoint_op,
    save_run_summaries_op,
    save_templates_op,
)
from runwatch.service.store_location import StoreError
from runwatch.service.store_migrate import SchemaTooNewError
from runwatch.v1 import anomaly_pb2, runs_pb2

RUNNING, FINISHED = runs_pb2.RUN_STATUS_RUNNING, runs_pb2.RUN_STATUS_FINISHED


def _anomaly(anomaly_id: str, run_id: str, project: str, revision: int = 1, severity: int = 2, t: float = 1.0):
    return anomaly_pb2.Anomaly(
        id=anomaly_id, run_id=run_id, project=project, detector="loss_spike", kind=1, severity=severity,
        first_step=5, step=5 + revision, revision=revision, detected_time=t, explanation=f"rev {revision}",
    )


def _events(run_id: str, steps: range, wall: float = 1.0) -> bytes:
    b = runs_pb2.EventBatch()
    for s in steps:
        b.events.add(run_id=run_id, step=s, wall_time=wall + s).metrics.update({"loss": 1.0 / (s + 1), "lr": 0.1})
    return b.SerializeToString()


@pytest.fixture
def store(store_location):
    s = RunStore(store_location)
    yield s
    s.close()


def test_runs_are_listed_newest_first_filtered_and_counted(store):
    for i, (project, t) in enumerate([("p", 1.0), ("q", 2.0), ("p", 3.0), ("p", 3.0)]):
        start = runs_pb2.RunStart(run_id=f"r{i}", project=project, start_time=t)
        start.hyperparameters["lr"] = 0.01 * (i + 1)
        store.submit([open_run_op(start, RUNNING)])
    store.submit([end_run_op("r1", FINISHED, 9.0, "completed")])
    store.submit([save_anomaly_op(_anomaly("a1", "r0", "p")), save_anomaly_op(_anomaly("a2", "r0", "p"))])
    store.flush()
    assert [r.run_id for r in store.list_runs()] == ["r3", "r2", "r1", "r0"]  # ties: the later insert first
    assert [r.run_id for r in store.list_runs(project="p", limit=2)] == ["r3", "r2"]
    assert [r.run_id for r in store.list_runs(status=FINISHED)] == ["r1"]
    r0 = store.get_run("r0")
    assert (r0.project, r0.status, r0.anomaly_count, r0.start_time) == ("p", RUNNING, 2, 1.0)
    assert r0.start.hyperparameters["lr"] == pytest.approx(0.01)
    r1 = store.get_run("r1")
    assert (r1.status, r1.end_time, r1.end_reason) == (FINISHED, 9.0, "completed")
    assert store.get_run("nope") is None
    # A re-sent RunStart updates the run in place.
    store.submit([open_run_op(runs_pb2.RunStart(run_id="r0", project="p", start_time=0.5), RUNNING)]).result()
    assert store.get_run("r0").start_time == 0.5 and len(store.list_runs()) == 4


def test_events_are_chunked_counted_and_read_incrementally(store):
    store.open_run(runs_pb2.RunStart(run_id="r", project="p", start_time=1.0))
    store.submit([append_events_op("r", 0, 9, 10, _events("r", range(10)), 11.0)])
    store.submit([append_events_op("r", 10, 19, 10, _events("r", range(10, 20)), 21.0)])
    store.flush()
    info = store.get_run("r")
    assert (info.event_count, info.last_step, info.last_event_time) == (20, 19, 21.0)
    # A late chunk of earlier steps never moves last_step or last_event_time back.
    store.submit([append_events_op("r", 3, 3, 1, _events("r", range(3, 4)), 4.0)]).result()
    info = store.get_run("r")
    assert (info.event_count, info.last_step, info.last_event_time) == (21, 19, 21.0)
    assert [e.step for e in store.events("r")] == [*range(10), 3, *range(10, 20)]  # chunks by their first step
    chunks = store.event_chunks("r")
    assert len(chunks) == 3 and chunks[0][0] < chunks[1][0] < chunks[2][0]
    assert isinstance(chunks[0][1], bytes)
    assert store.event_chunks("r", after=chunks[1][0]) == chunks[2:]
    summaries = {m.name: m for m in store.metric_summaries("r")}
    assert summaries["loss"].count == 21 and summaries["loss"].last_step == 19
    assert summaries["loss"].max == pytest.approx(1.0) and summaries["loss"].min == pytest.approx(1 / 20)


def test_nonfinite_values_and_binary_records_survive_the_round_trip(store):
    b = runs_pb2.EventBatch()
    b.events.add(run_id="r", step=0).metrics.update({"loss": math.nan, "g": math.inf, "z": -0.0})
    store.submit([open_run_op(runs_pb2.RunStart(run_id="r", project="p"), RUNNING)])
    store.submit([append_events_op("r", 0, 0, 1, b.SerializeToString(), 0.0)]).result()
    (ev,) = list(store.events("r"))
    assert math.isnan(ev.metrics["loss"]) and ev.metrics["g"] == math.inf and math.copysign(1, ev.metrics["z"]) < 0
    (s,) = [m for m in store.metric_summaries("r") if m.name == "loss"]
    assert s.nonfinite_count == 1 and math.isnan(s.min)


def test_log_lines_keep_their_order_and_limit(store):
    rows = [
        ("r", 2.0, 2, 7, "second"),
        ("r", 1.0, 3, 5, "first ü 100% ?"),
        ("r", 2.0, 4, 8, "third"),
        ("x", 0.0, 2, 0, "x"),
    ]
    store.submit([append_logs_op(rows)]).result()
    lines = store.log_lines("r")
    assert [(x.text, x.level, x.step) for x in lines] == [("first ü 100% ?", 3, 5), ("second", 2, 7), ("third", 4, 8)]
    assert [x.text for x in store.log_lines("r", limit=1)] == ["first ü 100% ?"]


def test_anomaly_revisions_upsert_and_never_go_back(store):
    store.submit([save_anomaly_op(_anomaly("a", "r1", "p", revision=1, t=1.0))])
    store.submit([save_anomaly_op(_anomaly("b", "r2", "q", revision=1, severity=4, t=2.0))])
    store.submit([save_anomaly_op(_anomaly("a", "r1", "p", revision=3, severity=3, t=3.0))])
    store.submit([save_anomaly_op(_anomaly("a", "r1", "p", revision=2, t=4.0))])  # late: ignored
    store.flush()
    (a,) = store.anomalies(run_id="r1")
    assert (a.revision, a.severity, a.explanation) == (3, 3, "rev 3")
    assert [x.id for x in store.anomalies()] == ["b", "a"]  # by detection time of the kept revision
    assert [x.id for x in store.anomalies(project="q")] == ["b"]
    assert [x.id for x in store.anomalies(min_severity=4)] == ["b"]
    assert [x.id for x in store.latest_anomalies()] == ["a", "b"]
    assert [x.id for x in store.latest_anomalies(projects=["q"])] == ["b"]
    assert store.latest_anomalies(projects=[]) == []
    assert [x.revision for x in store.anomalies_by_id(["b", "missing", "a"])] == [1, 3]


def test_projects_templates_and_checkpoints(store):
    store.submit([open_run_op(runs_pb2.RunStart(run_id="r1", project="p", start_time=5.0), RUNNING)])
    store.submit([open_run_op(runs_pb2.RunStart(run_id="r2", project="p", start_time=1.0), RUNNING)])
    store.submit([open_run_op(runs_pb2.RunStart(run_id="r3", project="a", start_time=2.0), RUNNING)])
    store.submit([append_events_op("r2", 0, 0, 1, _events("r2", range(1)), 8.0), end_run_op("r3", FINISHED, 3, "")])
    store.submit([save_templates_op("p", '{"v": 1}'), save_templates_op("p", '{"v": 2}')])
    store.submit([save_checkpoint_op("r1", '{"c": 1}'), save_checkpoint_op("r2", "{}"), save_checkpoint_op("r1", "{}")])
    store.flush()
    assert [tuple(row) for row in store.projects()] == [("a", 1, 0, 2.0), ("p", 2, 2, 8.0)]
    assert store.template_state("p") == '{"v": 2}' and store.template_state("a") is None
    assert store.run_checkpoint("r1") == "{}"
    store.submit([delete_checkpoints_op(["r1", "r2"])]).result()
    assert store.run_checkpoint("r1") is None and store.run_checkpoint("r2") is None


def test_run_summaries_keep_their_bits_and_their_order(store):
    runs = [np.array([[float(i), math.nan, -0.0], [math.inf, 1e-300, i / 3]]) for i in range(5)]
    store.submit([save_run_summaries_op(f"r{i}", "p", rows) for i, rows in enumerate(runs)])
    store.submit([save_run_summaries_op("r1", "p", runs[4]), save_run_summaries_op("x", "q", runs[0][:1])]).result()
    assert store.count_run_summaries("p") == 5 and store.run_summary_projects() == ["p", "q"]
    got = store.run_summaries("p", first=4, newest=2)  # the newest 2 of the first 4, oldest first
    assert [a.tobytes() for a in got] == [runs[2].tobytes(), runs[3].tobytes()]
    assert [a.shape for a in store.run_summaries("p", first=10, newest=10)] == [(2, 3)] * 5
    assert store.run_summaries("q", 1, 1)[0].shape == (1, 3) and store.run_summaries("none", 5, 5) == []


def test_a_failing_write_rolls_back_its_group_and_the_writer_goes_on(store):
    def boom(conn):
        raise ValueError("bad op")

    store.submit([open_run_op(runs_pb2.RunStart(run_id="kept", project="p"), RUNNING)]).result()
    # Held back so both land in one group: the failure undoes the other one's write too.
    gate = threading.Event()
    store.submit([lambda conn: gate.wait(5)])
    ok = store.submit([open_run_op(runs_pb2.RunStart(run_id="lost", project="p"), RUNNING)])
    bad = store.submit([boom])
    gate.set()
    with pytest.raises(ValueError, match="bad op"):
        bad.result(10)
    with pytest.raises(ValueError):
        ok.result(10)
    assert store.get_run("lost") is None
    store.submit([open_run_op(runs_pb2.RunStart(run_id="after", project="p"), RUNNING)]).result()
    assert {r.run_id for r in store.list_runs()} == {"kept", "after"}


def test_writes_survive_the_database_dropping_the_connection(pg_url):
    """The database ends the store's sessions (a restart, an administrator's pg_terminate_backend): the next group of
    writes is run again on a fresh connection and committed, not refused. Before, it failed with "terminating
    connection due to administrator command", and the SDK dropped the batch (its RunStart with it: the run's events
    were stored, the run never)."""
    import psycopg

    store = RunStore(pg_url)
    try:
        store.open_run(runs_pb2.RunStart(run_id="before", project="p")).result(30)
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchone()[0]
        assert ended >= 1
        store.open_run(runs_pb2.RunStart(run_id="after", project="p")).result(30)
        assert {r.run_id for r in store.list_runs()} == {"before", "after"}
    finally:
        store.close()


def test_reads_do_not_wait_out_a_write_retrying_a_lost_connection(pg_url):
    """While the database is unreachable the writer retries its group (for up to write_retry_s); a read that waits
    for the writer (flush) answers at once from what is committed, instead of waiting the retries out (queries with
    30 s deadlines failed as DEADLINE_EXCEEDED). Once the database is back the write commits."""
    import psycopg

    store = RunStore(pg_url)
    dbname = pg_url.rsplit("/", 1)[1]
    admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
    try:
        store.open_run(runs_pb2.RunStart(run_id="before", project="p")).result(30)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
            try:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
                pending = store.open_run(runs_pb2.RunStart(run_id="during", project="p"))
                deadline = time.monotonic() + 20
                while not store._retrying and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert store._retrying and not pending.done()
                t0 = time.monotonic()
                store.flush(timeout=5)
                assert time.monotonic() - t0 < 1.0
            finally:
                admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        pending.result(60)
        assert {r.run_id for r in store.list_runs()} == {"before", "during"}
    finally:
        store.close()


def test_a_reopened_store_keeps_everything_and_its_version(store_location):
    first = RunStore(store_location)
    start = runs_pb2.RunStart(run_id="r", project="p")
    first.submit([open_run_op(start, RUNNING), save_anomaly_op(_anomaly("a", "r", "p"))])
    first.close()
    again = RunStore(store_location)
    try:
        latest = store_migrate.available(again.backend.name)[-1].version
        assert again.schema_version == latest
        assert again.get_run("r").anomaly_count == 1
        assert again._read("SELECT COUNT(*), MAX(version) FROM schema_version") == [(latest, latest)]
    finally:
        again.close()


def test_a_database_newer_than_the_code_is_refused(store_location):
    RunStore(store_location).close()
    conn = store_backends.backend_for(store_location).connect()
    conn.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)", (999, "future", 0.0))
    if isinstance(store_location, str):
        conn.raw.commit()
    conn.close()
    latest = store_migrate.available(store_backends.backend_for(store_location).name)[-1].version
    with pytest.raises(SchemaTooNewError, match=rf"schema version 999, newer than this runwatch knows \(up to {latest}\)"):
        RunStore(store_location)


def test_a_sqlite_file_from_before_migrations_is_adopted(tmp_path):
    db = tmp_path / "runwatch.db"
    with sqlite3.connect(db) as conn:  # as the store made it before schema_version existed
        conn.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, kind INTEGER NOT NULL, "
            "status INTEGER NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL DEFAULT 0, "
            "end_reason TEXT NOT NULL DEFAULT '', last_step INTEGER NOT NULL DEFAULT -1, "
            "last_event_time REAL NOT NULL DEFAULT 0, event_count INTEGER NOT NULL DEFAULT 0, "
            "start_record BLOB NOT NULL)"
        )
        conn.execute(
            "INSERT INTO runs (run_id, project, kind, status, start_time, start_record) "
            "VALUES ('old', 'p', 1, 1, 1, x'')"
        )
    store = RunStore(db)
    try:
        assert store.schema_version == store_migrate.available("sqlite")[-1].version
        assert store.get_run("old").project == "p"
        assert store.run_checkpoint("old") is None  # the tables added later are there
        assert store.count_run_summaries("p") == 0
    finally:
        store.close()


def test_instances_starting_together_migrate_once(pg_url):
    stores: list[RunStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(RunStore(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors and len(stores) == 4
        latest = store_migrate.available("postgresql")[-1].version
        assert stores[0]._read("SELECT COUNT(*) FROM schema_version") == [(latest,)]
    finally:
        for s in stores:
            s.close()


def test_store_urls_are_checked_and_their_passwords_hidden(postgres_server):
    with pytest.raises(ValueError, match=r"store\n.*expected a postgresql://.*got 'mysql://db/x'"):
        ServiceSettings(store="mysql://db/x")
    with pytest.raises(ValueError, match=r"store\n.*not a URL .*'postgresql://rw:\*\*\*@db:x/r'"):
        ServiceSettings(store="postgresql://rw:pw@db:x/r")
    assert ServiceSettings(store="").store_location == ServiceSettings().db_path
    # A server that is not there: the error names the setting and hides the password.
    url = f"postgresql://runwatch:s3cret@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(StoreError, match=r"^store: cannot connect to postgresql://runwatch:\*\*\*@127") as info:
        RunStore(url)
    assert "s3cret" not in str(info.value)


def test_anomalies_committed_elsewhere_are_followed_and_rollbacks_are_not(pg_url):
    here, there = RunStore(pg_url), RunStore(pg_url)
    got: list[anomaly_pb2.Anomaly] = []
    feed = here.follow_anomalies(got.append)
    try:
        here.submit([save_anomaly_op(_anomaly("mine", "r", "p"))]).result()  # this instance's own: not followed

        def boom(conn):
            raise RuntimeError("undone")

        with pytest.raises(RuntimeError):
            there.submit([save_anomaly_op(_anomaly("undone", "r", "p")), boom]).result()
        there.submit([save_anomaly_op(_anomaly("theirs", "r", "p", revision=1))]).result()
        there.submit([save_anomaly_op(_anomaly("theirs", "r", "p", revision=2))]).result()
        deadline = time.monotonic() + 10
        while ("theirs", 2) not in {(a.id, a.revision) for a in got} and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # room for a duplicate to show up
        ids = [(a.id, a.revision) for a in got]
        assert ("theirs", 2) in ids and len(ids) == len(set(ids))
        assert all(i == "theirs" for i, _ in ids)
    finally:
        there.close()
        here.close()
    assert feed.delivered == len(got)


def test_sqlite_has_no_feed(tmp_path):
    store = RunStore(tmp_path / "runwatch.db")
    try:
        assert store.follow_anomalies(lambda a: None) is None
    finally:
        store.close()


@pytest.mark.parametrize("module", [store_module, store_backends, store_location, store_migrate])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_serve_refuses_a_database_newer_than_it_with_a_clear_message(pg_url, tmp_path):
    RunStore(pg_url).close()
    backend = store_backends.backend_for(pg_url)
    conn = backend.connect()
    conn.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)", (7, "future", 0.0))
    conn.raw.commit()
    conn.close()
    exe = Path(sys.executable).with_name("runwatch")
    env = {**os.environ, "RUNWATCH_STORE": pg_url.replace("runwatch@", "runwatch:pw@")}
    done = subprocess.run(
        [str(exe), "serve", "--port", "0", "--data-dir", str(tmp_path)], capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )
    assert done.returncode != 0
    assert "store: postgresql://runwatch:***@127.0.0.1" in done.stderr and "pw@" not in done.stderr
    latest = store_migrate.available("postgresql")[-1].version
    assert f"has schema version 7, newer than this runwatch knows (up to {latest})" in done.stderr


def _foreign_sql(location, *statements: str) -> None:
    """Run another application's SQL in the store's database (a SQLite file, or a PostgreSQL URL)."""
    if isinstance(location, str):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)
    else:
        location.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(location)
        with conn:
            for sql in statements:
                conn.execute(sql)
        conn.close()


def _create_foreign_runs_table(location) -> None:
    _foreign_sql(location, "CREATE TABLE runs (id INT, foo TEXT)", "INSERT INTO runs VALUES (1, 'theirs')")


def _tables(location) -> set[str]:
    backend = store_backends.backend_for(location)
    conn = backend.connect_reader()
    try:
        return set(backend.tables(conn))
    finally:
        conn.close()


def test_a_database_holding_foreign_tables_is_refused_naming_them(store_location):
    """A database with an unrelated ``runs`` table: before, PostgreSQL failed with a raw DuplicateTable ("relation
    "runs" already exists") and SQLite with "no such column: project"; now a StoreError names the table, and
    nothing is created."""
    _create_foreign_runs_table(store_location)
    with pytest.raises(StoreError, match=r"^store: .* holds tables runwatch did not create: runs \(foo, id\)\. "
                                         r".*empty database"):
        RunStore(store_location)
    assert _tables(store_location) == {"runs"}  # rolled back: no schema_version, no runwatch table

    # Another migration tool's schema_version is not read as runwatch's version either.
    _foreign_sql(store_location, "DROP TABLE runs", "CREATE TABLE schema_version (installed_rank INT, version TEXT)",
                 "INSERT INTO schema_version VALUES (1, '5')")
    with pytest.raises(StoreError, match=r"did not create: schema_version \(installed_rank, version\)"):
        RunStore(store_location)
    assert _tables(store_location) == {"schema_version"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_refuses_a_database_holding_foreign_tables_in_one_line(backend, tmp_path, request):
    if backend == "postgresql":
        location = request.getfixturevalue("pg_url").replace("runwatch@", "runwatch:s3cret@")
        args = ["--store", location]
    else:
        location = tmp_path / "data" / "runwatch.db"
        args = []
    _create_foreign_runs_table(location)
    exe = Path(sys.executable).with_name("runwatch")
    done = subprocess.run(
        [str(exe), "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *args], capture_output=True,
        text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    assert error[0].startswith("error: store: ") and "holds tables runwatch did not create: runs (foo, id)" in error[0]
    if backend == "postgresql":
        assert "postgresql://runwatch:***@127.0.0.1" in error[0]
