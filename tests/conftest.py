"""Shared fixtures: a real runwatch server on a free loopback port."""

from __future__ import annotations

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
