"""Shared fixtures: a real runwatch server on a free loopback port."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import grpc
import pytest

from runwatch.models.registry import SuiteConfig
from runwatch.service.background import BackgroundServer
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import service_pb2_grpc


class Stubs:
    """Synchronous stubs for every runwatch service on one channel."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.ingest = service_pb2_grpc.IngestServiceStub(self.channel)
        self.watch = service_pb2_grpc.WatchServiceStub(self.channel)
        self.runs = service_pb2_grpc.RunServiceStub(self.channel)
        self.advisor = service_pb2_grpc.AdvisorServiceStub(self.channel)

    def raw_stream(self):
        """StreamEvents taking raw bytes, to send what a well-behaved client never would."""
        from runwatch.v1 import service_pb2

        return self.channel.stream_stream(
            "/runwatch.v1.IngestService/StreamEvents",
            request_serializer=None,
            response_deserializer=service_pb2.IngestAck.FromString,
        )


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Leave the root logger as the test found it.

    ``runwatch serve`` invoked in-process (typer's CliRunner) installs a stderr handler on the root logger, and
    that stderr is the runner's captured stream, closed once the command returns: a warning any later test logs
    (an SDK stream to a closed port) then failed with "--- Logging error --- I/O operation on closed file".
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def start_server(tmp_path):
    """Start a real server; ``start_server(**settings)`` returns ``(BackgroundServer, Stubs)``."""
    started: list[tuple[BackgroundServer, Stubs]] = []

    def start(**overrides):
        overrides.setdefault("port", 0)
        overrides.setdefault("data_dir", tmp_path / "data")
        diagnostics = overrides.pop("enabled", None)
        if diagnostics is not None:
            overrides["diagnostics"] = SuiteConfig(enabled=diagnostics)
        srv = BackgroundServer(ServiceSettings(**overrides)).start()
        stubs = Stubs(srv.target)
        started.append((srv, stubs))
        return srv, stubs

    yield start
    for srv, stubs in started:
        stubs.channel.close()
        if srv.server is not None:
            srv.stop()


@pytest.fixture
def server(start_server):
    return start_server()


# -- PostgreSQL (the shared store): one real server for the session, a fresh database per test --------

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (tests/postgres_server.py); skips, saying why, without its binaries or psycopg."""
    from postgres_server import PostgresServer, find_bin_dir

    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -c constraints.txt -e '.[dev]' brings it)")
    bin_dir = find_bin_dir()
    if isinstance(bin_dir, str):
        pytest.skip(bin_dir)
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a store lives, once per backend: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "store" / "runwatch.db"
    return request.getfixturevalue("pg_url")
