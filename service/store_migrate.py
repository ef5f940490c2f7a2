"""Versioned schema migrations: numbered SQL files per backend, applied in order, recorded in ``schema_version``.

``service/store_migrations/<backend>/NNNN_name.sql`` holds each step; a store
opened by :class:`~runwatch.service.store.RunStore` applies the ones its
database lacks, all in one transaction (instances starting together on one
PostgreSQL database wait for each other, so each step runs once). A database
whose version is above the newest file here was written by a newer runwatch,
and is refused rather than misread.

A SQLite file from before migrations (its tables made by ``CREATE TABLE IF NOT
EXISTS``, no ``schema_version``) is at version 0, and ``0001`` finds its tables
in place.

A database holding tables of another application under the names runwatch
uses (``runs``, ``schema_version``, ...) is refused before anything is
changed, naming them (:class:`ForeignTablesError`): runwatch wants a database
of its own.

Examples
--------
>>> [(m.version, m.name) for m in available("sqlite")][:1]
[(1, 'initial')]
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from runwatch.service.store_backends import MIGRATIONS, Backend, Connection
from runwatch.service.store_location import StoreError

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer runwatch than this one."""


class ForeignTablesError(StoreError):
    """The database holds tables runwatch did not create under names its migrations use."""


_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\((.*?)\);", re.IGNORECASE | re.DOTALL)
_NOT_COLUMNS = {"PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT", "EXCLUDE"}


def created_tables(steps: list[Migration]) -> dict[str, tuple[bool, set[str]]]:
    """The tables ``steps`` create: name -> (created only if missing, its column names).

    Examples
    --------
    >>> sql = "CREATE TABLE IF NOT EXISTS t (a INT, b NUMERIC(9, 2), PRIMARY KEY (a));"
    >>> tables = created_tables([Migration(1, "x", sql)])
    >>> tables["t"][0], sorted(tables["t"][1])
    (True, ['a', 'b'])
    """
    found = {}
    for step in steps:
        for m in _CREATE_TABLE.finditer(step.sql):
            columns, depth, part = [], 0, ""
            for ch in m.group(3) + ",":
                depth += (ch == "(") - (ch == ")")
                if ch == "," and depth == 0:
                    columns.append(part.split()[0] if part.split() else "")
                    part = ""
                else:
                    part += ch
            found[m.group(2).lower()] = (
                bool(m.group(1)),
                {c.lower() for c in columns if c and c.upper() not in _NOT_COLUMNS},
            )
    return found


def foreign_tables(existing: dict[str, set[str]], pending: list[Migration]) -> list[str]:
    """The tables of ``existing`` (name -> columns) that are not runwatch's, yet the ``pending`` steps create.

    A table a step creates unconditionally must not exist yet; one it creates only if missing (a SQLite file
    from before migrations) must have at least the columns runwatch gives it. ``schema_version`` must have
    runwatch's columns. Each is shown with its columns.

    Examples
    --------
    >>> sql = Migration(1, "x", "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT);")
    >>> foreign_tables({"runs": {"id", "foo"}, "mine": {"x"}}, [sql])
    ['runs (foo, id)']
    """
    existing = {name.lower(): {c.lower() for c in cols} for name, cols in existing.items()}
    wanted = {"schema_version": (True, {"version", "name", "applied"}), **created_tables(pending)}
    clash = [
        name
        for name, (if_missing, columns) in wanted.items()
        if name in existing and not (if_missing and columns <= existing[name])
    ]
    return [f"{name} ({', '.join(sorted(existing[name])) or 'no columns'})" for name in clash]


def available(backend_name: str) -> list[Migration]:
    """The migrations shipped for a backend, by version (numbers must run 1, 2, 3, ... without gaps)."""
    folder = MIGRATIONS / backend_name
    found = []
    for path in sorted(folder.glob("*.sql")):
        m = _FILE.match(path.name)
        if m is None:
            raise StoreError(f"store: migration file {path} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"store: migrations in {folder} must be numbered 0001, 0002, ... without gaps")
    return found


def current_version(conn: Connection) -> int:
    """The highest version recorded in ``schema_version`` (the table must exist)."""
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchall()[0][0])


def migrate(backend: Backend, conn: Connection) -> int:
    """Bring the database to the newest schema this code knows; returns that version.

    Raises :class:`SchemaTooNewError` when the database is ahead of the code.
    """
    steps = available(backend.name)
    latest = steps[-1].version if steps else 0
    backend.begin(conn)
    try:
        backend.lock_schema(conn)
        existing = backend.tables(conn)
        if foreign := foreign_tables(existing, []):  # a schema_version of another tool: its versions mean nothing here
            raise _foreign(backend, foreign)
        conn.execute(VERSION_TABLE)
        version = current_version(conn)
        if version > latest:
            raise SchemaTooNewError(
                f"store: {backend.location} has schema version {version}, newer than this runwatch knows "
                f"(up to {latest}): it was migrated by a newer runwatch. Upgrade this instance, or point "
                "--store (or --data-dir) at another database"
            )
        if foreign := foreign_tables(existing, steps[version:]):
            raise _foreign(backend, foreign)
        for step in steps[version:]:
            try:
                backend.run_script(conn, step.sql)
            except Exception as exc:
                if not backend.is_database_error(exc):
                    raise
                # e.g. no right to create tables, or an index or function of another application by a runwatch name
                raise StoreError(
                    f"store: {backend.location}: migration {step.version:04d}_{step.name} failed: "
                    f"{type(exc).__name__}: {str(exc).strip()}"
                ) from None
            conn.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
        backend.commit(conn)
    except BaseException:
        backend.rollback(conn)
        raise
    return latest


def _foreign(backend: Backend, tables: list[str]) -> ForeignTablesError:
    return ForeignTablesError(
        f"store: {backend.location} holds tables runwatch did not create: {'; '.join(tables)}. runwatch keeps its "
        "tables in a database of its own: point --store (or --data-dir) at an empty database "
        "(runwatch created nothing there)"
    )
