"""Where the store lives: the embedded SQLite file, or a PostgreSQL database named by URL.

The ``store`` setting (``--store``, ``RUNWATCH_STORE``) is either unset (SQLite,
``runwatch.db`` in ``data_dir``) or a ``postgresql://`` URL shared by several
instances. This module checks such a URL and hides its password in messages.

Examples
--------
>>> check_store_url("postgresql://rw:secret@db.internal:5432/runwatch")
'postgresql://rw:secret@db.internal:5432/runwatch'
>>> is_postgresql("postgres://db/runwatch"), is_postgresql("/var/lib/runwatch/runwatch.db")
(True, False)
>>> redact("postgresql://rw:secret@db.internal/runwatch?sslmode=require")
'postgresql://rw:***@db.internal/runwatch?sslmode=require'
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


class StoreError(RuntimeError):
    """The store cannot be opened or used as configured; the message names the ``store`` setting."""


def is_postgresql(location: str | Path) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(location, str) and urlsplit(location).scheme.lower() in SCHEMES


def check_store_url(value: str) -> str:
    """``value`` if it is a usable PostgreSQL URL, else a ValueError saying what is wrong with it."""
    shown = redact(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(
            f"expected a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL (or leave it unset for the SQLite "
            f"file in data_dir), got {shown!r}"
        )
    return value


def redact(location: str | Path) -> str:
    """``location`` as it may be logged: a URL's password replaced by ``***``."""
    text = str(location)
    if not is_postgresql(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
