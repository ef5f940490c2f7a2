"""Access tokens: their format, the token file that stores them hashed, and lookup with live reload.

A token reads ``rw_<id>_<secret>``: ``id`` (12 hex digits) names it in the file,
in logs and in ``runwatch tokens list``; ``secret`` is 32 random bytes. The
file keeps each token's id, its SHA-256 hash, its scopes and its projects,
never the token itself. A plain (unsalted, unstretched) hash is enough because
the secret is random and 256 bits long: there is nothing to guess, so checking a
token costs one hash and one dictionary lookup.

The file (JSON, ``runwatch.tokens/1``) is re-read when it changes (its inode,
size or mtime) and on demand (``SIGHUP``); a file that does not parse keeps
the tokens last read and is logged. Several tokens may grant the same project,
so rotation is: create the new token, move clients to it, revoke the old one.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "tokens.json"
>>> token, record = create_token(path, projects=["alpha"], scopes=["ingest", "read"])
>>> token.startswith(f"rw_{record.id}_") and token not in path.read_text()
True
>>> store = TokenStore(path)
>>> p = store.authenticate(f"Bearer {token}")
>>> p.can("ingest"), p.may_access("alpha"), p.may_access("beta")
(True, True, False)
>>> store.authenticate("Bearer rw_000000000000_nope") is None
True
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runwatch.service.validation import check_project

log = logging.getLogger("runwatch.service.auth")

FORMAT = "runwatch.tokens/1"
#: ingest: Ingest/StreamEvents; read: GetRun, ListRuns, WatchAnomalies (and reflection);
#: advise: AdvisorService.Suggest; admin: every scope.
SCOPES = ("ingest", "read", "advise", "admin")
ALL_PROJECTS = "*"
_TOKEN = re.compile(r"rw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_MAX_PROJECT_LEN = 128  # as for RunStart.project


class TokenFileError(ValueError):
    """The token file cannot be read or is not a valid ``runwatch.tokens/1`` file."""


def hash_token(token: str) -> str:
    """Hex SHA-256 of the whole token string (what the file stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRecord(BaseModel):
    """One token as stored: its id, hash, scopes and projects (never the secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{12}$", description="public id, the token's second part")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the whole token")
    scopes: tuple[Literal["ingest", "read", "advise", "admin"], ...] = Field(min_length=1)
    projects: tuple[str, ...] = Field(min_length=1, description="project names, or '*' for every project")
    created: float = Field(default=0.0, ge=0, description="seconds since the Unix epoch")
    description: str = Field(default="", max_length=1000)

    @field_validator("projects")
    @classmethod
    def _check_projects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or len(name) > _MAX_PROJECT_LEN:
                raise ValueError(
                    f"project names are 1-{_MAX_PROJECT_LEN} characters ('default' for the default project), "
                    f"got {name!r}"
                )
            if name != ALL_PROJECTS and "*" in name:
                # Alert routes take patterns; a token's projects are exact names, so 'vis*' would grant nothing.
                raise ValueError(
                    f"{name!r}: a token names its projects exactly (no patterns); '*' alone means every project"
                )
            violation = check_project(name)
            if violation is not None:
                raise ValueError(f"{name!r}: {violation[1]}")
        return value


class TokenFile(BaseModel):
    """The token file: ``{"format": "runwatch.tokens/1", "tokens": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["runwatch.tokens/1"] = FORMAT
    tokens: list[TokenRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> TokenFile:
        seen: set[str] = set()
        for i, t in enumerate(self.tokens):
            if t.id in seen:
                raise ValueError(f"tokens[{i}].id: {t.id!r} appears twice")
            seen.add(t.id)
        return self


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call acts for: the token's id, scopes and projects.

    Examples
    --------
    >>> p = Principal("0123456789ab", frozenset({"read"}), frozenset({"alpha"}))
    >>> p.can("read"), p.can("ingest"), p.may_access("alpha"), p.may_access("")
    (True, False, True, False)
    >>> ANYONE.can("admin"), ANYONE.may_access("beta")
    (True, True)
    """

    token_id: str
    scopes: frozenset[str]
    projects: frozenset[str]

    @property
    def all_projects(self) -> bool:
        return ALL_PROJECTS in self.projects

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def may_access(self, project: str) -> bool:
        """Whether the token covers ``project`` ("" is the project "default", as for RunStart)."""
        return self.all_projects or (project or "default") in self.projects

    def describe(self) -> str:
        return f"token {self.token_id!r}" if self.token_id else "this caller"


#: The caller when authentication is off: every scope, every project.
ANYONE = Principal("", frozenset(SCOPES), frozenset({ALL_PROJECTS}))


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def read_token_file(path: Path) -> TokenFile:
    """Read and check a token file; a missing file is an empty one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return TokenFile()
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not text.strip():
        return TokenFile()  # e.g. made with `install -m 640 /dev/null tokens.json`
    try:
        return TokenFile.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:5])
        raise TokenFileError(f"token file {path}: {problems}") from None


def write_token_file(path: Path, content: TokenFile) -> None:
    """Replace the file atomically (the server sees all or nothing), keeping its mode and group.

    A new file is readable by its owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        before = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(content.model_dump(mode="json"), indent=2) + "\n")
        os.chmod(tmp, before.st_mode & 0o777 if before is not None else 0o600)
        if before is not None and before.st_gid != os.getegid():
            with contextlib.suppress(PermissionError):  # e.g. root:runwatch 640, so the service can read it
                os.chown(tmp, -1, before.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_token(
    path: Path, *, projects: Iterable[str], scopes: Iterable[str], description: str = ""
) -> tuple[str, TokenRecord]:
    """Add a new token to the file at ``path`` (created if missing); returns ``(token, record)``.

    The token itself is returned once and stored nowhere.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.json"
    >>> token, rec = create_token(path, projects=["*"], scopes=["read"], description="dashboard")
    >>> [t.id for t in read_token_file(path).tokens] == [rec.id]
    True
    """
    content = read_token_file(path)
    taken = {t.id for t in content.tokens}
    while (token_id := secrets.token_hex(6)) in taken:
        pass
    token = f"rw_{token_id}_{secrets.token_urlsafe(32)}"
    try:
        record = TokenRecord(
            id=token_id,
            sha256=hash_token(token),
            scopes=tuple(dict.fromkeys(scopes)),
            projects=tuple(dict.fromkeys(projects)),
            created=round(time.time(), 3),
            description=description,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TokenFileError(problems) from None
    content.tokens.append(record)
    write_token_file(path, content)
    return token, record


def revoke_token(path: Path, token_id: str) -> TokenRecord:
    """Remove the token ``token_id`` (or the id of a full token) from the file; returns its record."""
    parsed = parse_token(token_id)
    wanted = parsed[0] if parsed else token_id
    content = read_token_file(path)
    kept = [t for t in content.tokens if t.id != wanted]
    if len(kept) == len(content.tokens):
        raise TokenFileError(f"token id: no token {wanted!r} in {path}")
    (removed,) = [t for t in content.tokens if t.id == wanted]
    write_token_file(path, TokenFile(tokens=kept))
    return removed


class TokenStore:
    """The tokens of one file, re-read whenever the file changes; thread-safe.

    Parameters
    ----------
    path
        The token file. It must parse when the store is created (a typo must
        not start a server that refuses everyone); later bad versions are
        logged and the tokens last read stay in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._by_id: dict[str, TokenRecord] = {}
        self._principals: dict[str, Principal] = {}
        self._bad_stamp: tuple[int, int, int] | None = None
        self._load(self._file_stamp(), strict=True)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self, stamp, strict: bool = False) -> None:
        try:
            content = read_token_file(self.path)
        except TokenFileError as exc:
            if strict:
                raise
            if stamp != self._bad_stamp:  # once per bad version, not once per call
                self._bad_stamp = stamp
                log.error("%s; keeping the %d token(s) read before", exc, len(self._by_id))
            return
        if stamp is None and not strict:
            log.error("token file %s is gone; keeping the %d token(s) read before", self.path, len(self._by_id))
            self._stamp = None
            return
        if stamp is not None and os.stat(self.path).st_mode & 0o022:
            log.warning(
                "token file %s is writable by others: whoever can write it can grant themselves access", self.path
            )
        self._by_id = {t.id: t for t in content.tokens}
        self._principals = {
            t.id: Principal(t.id, frozenset(t.scopes), frozenset(t.projects)) for t in content.tokens
        }
        self._stamp = stamp
        self._bad_stamp = None
        log.info("token file %s: %d token(s) in force", self.path, len(self._by_id))

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed since the last read (or always, with ``force``)."""
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return
        with self._lock:
            if force or stamp != self._stamp:
                self._load(stamp)

    @property
    def token_ids(self) -> list[str]:
        return list(self._by_id)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``authorization`` metadata value (``Bearer rw_...``), or None."""
        self.refresh()
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        parsed = parse_token(token.strip())
        if parsed is None:
            return None
        record = self._by_id.get(parsed[0])
        if record is None or not hmac.compare_digest(record.sha256, hash_token(token.strip())):
            return None
        return self._principals[record.id]

    def still_valid(self, principal: Principal) -> bool:
        """Whether ``principal`` is still what its token grants (not revoked nor changed since)."""
        self.refresh()
        return principal is ANYONE or self._principals.get(principal.token_id) == principal
