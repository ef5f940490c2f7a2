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
        conn.execute(VERSION_TABLE)
        version = current_version(conn)
        if version > latest:
            raise SchemaTooNewError(
                f"store: {backend.location} has schema version {version}, newer than this runwatch knows "
                f"(up to {latest}): it was migrated by a newer runwatch. Upgrade this instance, or point "
                "--store (or --data-dir) at another database"
            )
        for step in steps[version:]:
            backend.run_script(conn, step.sql)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
        backend.commit(conn)
    except BaseException:
        backend.rollback(conn)
        raise
    return latest
