"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary folder, on a loopback port.

The server binaries are looked up on PATH, then in Debian's
``/usr/lib/postgresql/<version>/bin`` (``apt-get install postgresql``, which
``.ci/run`` does). PostgreSQL refuses to run as root, so when the tests do
(CI, sandboxes), the cluster belongs to ``nobody`` and the commands run
through ``runuser``. Each test gets a fresh database (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

UNPRIVILEGED = "nobody"


def find_bin_dir() -> Path | str:
    """The folder holding ``initdb`` and ``pg_ctl``, or why there is none (a skip reason)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return (
        "PostgreSQL server binaries (initdb, pg_ctl) are neither on PATH nor in /usr/lib/postgresql/*/bin: "
        "apt-get install postgresql (.ci/run does)"
    )


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster; superuser ``runwatch``, trust authentication on loopback only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="runwatch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root: the cluster is nobody's (its folder too).
            runuser = shutil.which("runuser")
            su = ["su", "-s", "/bin/sh", UNPRIVILEGED, "-c"]
            self._as_user = [runuser, "-u", UNPRIVILEGED, "--"] if runuser else su
            shutil.chown(self.root, user=UNPRIVILEGED)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self._as_user and self._as_user[0] == "su":
            cmd = [*self._as_user, " ".join(_quote(a) for a in cmd)]
        else:
            cmd = [*self._as_user, *cmd]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")
        return done

    def start(self, durable: bool = False) -> PostgresServer:
        """initdb and start on a free loopback port; ``durable`` keeps fsync and full-page writes on (benchmarks)."""
        self._run(
            self.bin_dir / "initdb", "-D", self.data, "-U", "runwatch", "-A", "trust", "-E", "UTF8", "--no-sync",
            "--no-instructions",
        )
        for attempt in range(3):  # the free port may be taken between picking and binding it
            self.port = _free_port()
            options = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200"
            if not durable:
                options += " -c fsync=off -c full_page_writes=off"
            try:
                self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options,
                          "start")
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://runwatch@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
