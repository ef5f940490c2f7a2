"""The two databases under :class:`~runwatch.service.store.RunStore`: one dialect layer, one set of queries.

The store's SQL is written once, in the subset SQLite and PostgreSQL share
(``?`` placeholders, ``INSERT ... ON CONFLICT``, ``CASE`` rather than two-argument
``max``). A backend supplies what differs: how to connect, how a transaction
starts and ends, how a migration script runs, how placeholders are spelt.
PostgreSQL tables carry an identity column named ``rowid``, so ordering by
insertion reads the same in both.

Examples
--------
>>> import tempfile
>>> backend = backend_for(Path(tempfile.mkdtemp()) / "runwatch.db")
>>> backend.name
'sqlite'
>>> conn = backend.connect()
>>> conn.execute("SELECT 1 + ?", (1,)).fetchall()
[(2,)]
>>> conn.close()
>>> pg_sql("SELECT run_id FROM runs WHERE project = ? AND run_id LIKE 'a%'")
"SELECT run_id FROM runs WHERE project = %s AND run_id LIKE 'a%%'"
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from runwatch.service.store_location import StoreError, is_postgresql, redact

MIGRATIONS = Path(__file__).resolve().parent / "store_migrations"


class Connection(Protocol):
    """What write operations and readers use of a connection (``sqlite3.Connection`` has it as is)."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A database kind: connections, transactions and migration scripts."""

    name: str  # the folder of its migrations under service/store_migrations/
    location: str  # for messages, password hidden

    def connect(self) -> Connection: ...

    def connect_reader(self) -> Connection: ...

    def begin(self, conn: Connection) -> None: ...

    def commit(self, conn: Connection) -> None: ...

    def rollback(self, conn: Connection) -> None: ...

    def lock_schema(self, conn: Connection) -> None: ...

    def run_script(self, conn: Connection, script: str) -> None: ...

    def is_disconnect(self, exc: BaseException) -> bool: ...

    def is_database_error(self, exc: BaseException) -> bool: ...

    def tables(self, conn: Connection) -> dict[str, set[str]]: ...


def backend_for(location: str | Path) -> Backend:
    """The backend of a store location: a ``postgresql://`` URL, else a SQLite file path."""
    if is_postgresql(location):
        return PostgresBackend(str(location))
    return SqliteBackend(Path(location))


def store_unavailable(backend: Backend, exc: BaseException) -> str | None:
    """What a query answers when ``exc`` says the database cannot be reached, else None (another error).

    A store that cannot (re)connect raises :class:`StoreError`, a connection lost mid-query the driver's
    own error: either way the answer is "store unavailable: ...", the password hidden, and the caller says
    so (gRPC UNAVAILABLE, HTTP 503) rather than reporting an internal error.

    Examples
    --------
    >>> import tempfile
    >>> backend = backend_for(Path(tempfile.mkdtemp()) / "runwatch.db")
    >>> store_unavailable(backend, StoreError("store: cannot connect to postgresql://rw:***@db/rw: refused"))
    'store unavailable: cannot connect to postgresql://rw:***@db/rw: refused'
    >>> libpq = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection refused'
    >>> store_unavailable(backend, StoreError(f"store: cannot connect to postgresql://rw:***@db/rw: {libpq}"))
    'store unavailable: cannot connect to postgresql://rw:***@db/rw: Connection refused'
    >>> store_unavailable(backend, ValueError("a bug")) is None
    True
    """
    if isinstance(exc, StoreError):
        detail = str(exc).removeprefix("store: ")
    elif backend.is_disconnect(exc):
        detail = str(exc).strip() or type(exc).__name__
    else:
        return None
    first = detail.splitlines()[0] if detail else detail
    # libpq's 'connection failed: connection to server at "HOST", port N failed: FATAL:  why': the URL names both
    first = re.sub(r'connection failed: connection to server at "[^"]*", port \d+ failed: (?:FATAL:\s+)?', "", first)
    return f"store unavailable: {first}"


# -- SQLite ------------------------------------------------------------------------------------------


class SqliteBackend:
    """One SQLite file in WAL mode; the writer and each reader have their own connection."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.location = str(path)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Event chunks are blobs of tens of KB: 16 KiB pages halve the overflow pages SQLite writes for
        # them (measured: ~45% less writer CPU per 60 KB blob). Takes effect only when the file is created.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes; only an OS crash can lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    connect_reader = connect

    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def lock_schema(self, conn: sqlite3.Connection) -> None:
        pass  # BEGIN IMMEDIATE already holds the file's write lock

    def run_script(self, conn: sqlite3.Connection, script: str) -> None:
        # executescript() would COMMIT first: statements run one by one to stay in the caller's transaction.
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                conn.execute(statement)
                statement = ""
        if statement.strip():
            raise StoreError(f"store: migration script ends inside a statement: {statement.strip()[:80]!r}")

    def is_disconnect(self, exc: BaseException) -> bool:
        return False

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def tables(self, conn: sqlite3.Connection) -> dict[str, set[str]]:
        """The file's tables and views, each with its column names."""
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
            ).fetchall()
        ]
        return {n: {r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (n,)).fetchall()} for n in names}


# -- PostgreSQL --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """``sql`` with SQLite's ``?`` placeholders as psycopg's ``%s`` (and literal ``%`` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the store's ``?``-placeholder SQL."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(pg_sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        with self.raw.cursor() as cur:
            cur.executemany(pg_sql(sql), rows)

    def close(self) -> None:
        self.raw.close()

    @property
    def backend_pid(self) -> int:
        return self.raw.info.backend_pid


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "store: a postgresql:// store needs psycopg, which is not installed: pip install 'runwatch[postgresql]'"
        ) from None
    return psycopg


class PostgresBackend:
    """A PostgreSQL database shared by several instances (psycopg 3).

    The writer connection runs one transaction per group commit; readers use
    autocommit, so every query sees what any instance committed before it.
    ``writer_pids`` are the server processes of this instance's writer
    connections: notifications they caused are this instance's own anomalies.
    """

    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = redact(url)
        self.writer_pids: set[int] = set()
        self._lock = threading.Lock()

    def _open(self, autocommit: bool, purpose: str) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.connect(
                self.url, autocommit=autocommit, application_name=f"runwatch {purpose}", connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StoreError(f"store: cannot connect to {self.location}: {str(exc).strip()}") from None

    def connect(self) -> PgConnection:
        conn = PgConnection(self._open(False, "writer"))
        with self._lock:
            self.writer_pids.add(conn.backend_pid)
        return conn

    def connect_reader(self) -> PgConnection:
        return PgConnection(self._open(True, "reader"))

    def connect_listener(self) -> Any:
        """A raw autocommit connection for LISTEN (see :mod:`runwatch.service.anomaly_feed`)."""
        return self._open(True, "listener")

    def begin(self, conn: PgConnection) -> None:
        pass  # psycopg opens the transaction with the first statement

    def commit(self, conn: PgConnection) -> None:
        conn.raw.commit()

    def rollback(self, conn: PgConnection) -> None:
        try:
            conn.raw.rollback()
        except _psycopg().Error:
            pass

    def lock_schema(self, conn: PgConnection) -> None:
        # Instances starting together: one migrates, the others wait and then find it done.
        conn.execute("SELECT pg_advisory_xact_lock(?)", (0x72756E77,))

    def run_script(self, conn: PgConnection, script: str) -> None:
        conn.raw.execute(script)  # no parameters: psycopg sends the statements as one simple query

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, _psycopg().OperationalError)

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, _psycopg().Error)

    def tables(self, conn: PgConnection) -> dict[str, set[str]]:
        """The tables and views of the schema runwatch creates its own in (the first of the search path)."""
        rows = conn.execute(
            "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        ).fetchall()
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(table, set()).update([column] if column else [])
        return found

    def own_pid(self, pid: int) -> bool:
        with self._lock:
            return pid in self.writer_pids
