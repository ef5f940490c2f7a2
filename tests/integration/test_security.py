"""TLS, mutual TLS and per-project tokens over real gRPC on loopback, with certificates made here.

Every refusal is checked twice: the caller gets the right status, and nothing
else changed (the legitimate clients' runs on the same server are intact).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError
from typer.testing import CliRunner

from runwatch.client import RunwatchClient
from runwatch.client.connection import make_channel
from runwatch.service.cli import app
from runwatch.service.settings import ServiceSettings
from runwatch.service.tokens import create_token, revoke_token
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


# -- certificates ------------------------------------------------------------------------------------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path, *objects) -> str:
    data = b""
    for obj in objects:
        if isinstance(obj, x509.Certificate):
            data += obj.public_bytes(serialization.Encoding.PEM)
        else:
            data += obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate (localhost, 127.0.0.1), a client certificate, and one from another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_ca_key = _key(), _key()
    ca = _cert("runwatch test CA", ca_key, None, None, ca=True)
    other_ca = _cert("someone else's CA", other_ca_key, None, None, ca=True)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _cert("localhost", server_key, ca.subject, ca_key, server=True)
    client = _cert("trainer-1", client_key, ca.subject, ca_key)
    stranger = _cert("stranger", stranger_key, other_ca.subject, other_ca_key)
    return {
        "ca": _write(d / "ca.pem", ca),
        "server_cert": _write(d / "server.pem", server),
        "server_key": _write(d / "server.key", server_key),
        "client_cert": _write(d / "client.pem", client),
        "client_key": _write(d / "client.key", client_key),
        "stranger_cert": _write(d / "stranger.pem", stranger),
        "stranger_key": _write(d / "stranger.key", stranger_key),
        "other_key": _write(d / "other.key", _key()),
    }


def _tls_target(srv) -> str:
    return f"https://localhost:{srv.port}"


def _list_runs(channel, timeout: float = 5.0, **request) -> list:
    stub = service_pb2_grpc.RunServiceStub(channel)
    return list(stub.ListRuns(service_pb2.ListRunsRequest(**request), timeout=timeout).runs)


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


def _log_run(client: RunwatchClient, run_id: str, project: str, steps: int, nan_at: int | None = None) -> None:
    run = client.start_run(run_id=run_id, project=project, hyperparameters={"lr": 0.1}, tags=["team"])
    for i in range(steps):
        run.log({"loss": math.nan if nan_at is not None and i >= nan_at else 1.0 / (i + 1)}, step=i)
    assert client.flush(timeout=20)


# -- TLS and mutual TLS ---------------------------------------------------------------------------


def test_tls_serves_tls_clients_and_refuses_plaintext(start_server, pki):
    srv, _ = start_server(tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    target = _tls_target(srv)
    with RunwatchClient(target, ca_file=pki["ca"], token="", flush_on_exit=False) as client:
        _log_run(client, "tls-1", "alpha", steps=5)
        assert client.stats().acked == 6 and client.stats().rejected == 0
    with make_channel(target, ca_file=pki["ca"], token="") as channel:
        (info,) = _list_runs(channel)
        assert (info.run_id, info.event_count) == ("tls-1", 5)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    # A plaintext client gets no answer from a TLS port, and one that does not trust the CA neither.
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as plain:
        assert _code(lambda: _list_runs(plain, timeout=3)) == grpc.StatusCode.UNAVAILABLE
    with make_channel(target, ca_file=pki["stranger_cert"], token="") as untrusting:
        assert _code(lambda: _list_runs(untrusting, timeout=3)) == grpc.StatusCode.UNAVAILABLE
    with make_channel(target, ca_file=pki["ca"], token="") as channel:
        (info,) = _list_runs(channel)
        assert info.event_count == 5  # nothing changed by the refused clients


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    return reply


def test_the_https_dashboard_redirects_plain_http_instead_of_an_empty_reply(start_server, pki):
    srv, _ = start_server(tls_cert=pki["server_cert"], tls_key=pki["server_key"], http_port=0)
    port = srv.server.http_port
    trusting = ssl.create_default_context(cafile=pki["ca"])
    with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=trusting, timeout=10) as page:
        assert page.status == 200 and page.read().startswith(b"ok")
    plain = _raw_http(port, b"GET /runs?project=a HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % port)
    assert plain.startswith(b"HTTP/1.1 301 ") and f"Location: https://localhost:{port}/runs?project=a".encode() in plain
    assert _raw_http(port, b"\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # not HTTP either: no redirect
    with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=trusting, timeout=10) as page:
        assert page.status == 200  # TLS clients are served as before
    with pytest.raises(urllib.error.URLError):  # and a client that does not trust the certificate is refused
        urllib.request.urlopen(f"https://localhost:{port}/healthz", context=ssl.create_default_context(), timeout=10)


def test_the_https_dashboard_with_client_certificates_serves_only_clients_of_its_ca(start_server, pki):
    srv, _ = start_server(
        tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"], http_port=0,
    )
    url = f"https://localhost:{srv.server.http_port}/healthz"
    ours = ssl.create_default_context(cafile=pki["ca"])
    ours.load_cert_chain(pki["client_cert"], pki["client_key"])
    with urllib.request.urlopen(url, context=ours, timeout=10) as page:
        assert page.status == 200
    for cert, key in ((None, None), (pki["stranger_cert"], pki["stranger_key"])):
        theirs = ssl.create_default_context(cafile=pki["ca"])
        if cert:
            theirs.load_cert_chain(cert, key)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, context=theirs, timeout=10).read()
    with urllib.request.urlopen(url, context=ours, timeout=10) as page:
        assert page.status == 200  # refused handshakes leave the listener serving


def test_mtls_refuses_clients_without_a_certificate_of_its_ca(start_server, pki):
    srv, _ = start_server(tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"])
    target = _tls_target(srv)
    with RunwatchClient(
        target, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"], token="",
        flush_on_exit=False,
    ) as client:  # fmt: skip
        _log_run(client, "mtls-1", "alpha", steps=4)
    no_cert = make_channel(target, ca_file=pki["ca"], token="")
    strange = make_channel(
        target, ca_file=pki["ca"], cert_file=pki["stranger_cert"], key_file=pki["stranger_key"], token=""
    )
    for channel in (no_cert, strange):
        with channel:
            assert _code(lambda: _list_runs(channel, timeout=3)) == grpc.StatusCode.UNAVAILABLE
            stub = service_pb2_grpc.IngestServiceStub(channel)
            batch = runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="mtls-1", status=runs_pb2.RUN_STATUS_KILLED)])
            assert _code(lambda: stub.Ingest(batch, timeout=3)) == grpc.StatusCode.UNAVAILABLE
    mine = {"ca_file": pki["ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"], "token": ""}
    with make_channel(target, **mine) as ok:
        (info,) = _list_runs(ok)
        assert (info.status, info.event_count) == (runs_pb2.RUN_STATUS_RUNNING, 4)
    # The CLI says what may be missing: gRPC reports a refused client certificate only as "Socket closed".
    refused = CliRunner().invoke(
        app, ["runs", "--target", target, "--ca-file", str(pki["ca"])], env={"RUNWATCH_TOKEN": ""}
    )
    assert refused.exit_code == 2 and "no runwatch server at" in refused.output
    assert "wants a client certificate (mutual TLS)" in " ".join(refused.output.split())


def test_tls_settings_are_checked_and_name_the_field(tmp_path, pki):
    with pytest.raises(ValidationError, match="tls_key: needed with tls_cert"):
        ServiceSettings(data_dir=tmp_path, tls_cert=pki["server_cert"])
    with pytest.raises(ValidationError, match="tls_client_ca: needs tls_cert"):
        ServiceSettings(data_dir=tmp_path, tls_client_ca=pki["ca"])
    with pytest.raises(ValidationError, match="no such file"):
        ServiceSettings(data_dir=tmp_path, tls_cert=tmp_path / "nope.pem", tls_key=pki["server_key"])
    from runwatch.service.server import RunwatchServer
    from runwatch.service.tls import TLSConfigError
    import asyncio

    mismatched = ServiceSettings(data_dir=tmp_path, port=0, tls_cert=pki["server_cert"], tls_key=pki["other_key"])
    with pytest.raises(TLSConfigError, match="tls_key: .* does not match tls_cert"):
        asyncio.run(RunwatchServer(mismatched).start())


def test_a_non_loopback_bind_needs_tls_and_authentication_or_allow_insecure(tmp_path, pki):
    expected = "host: '0.0.0.0' is not a loopback address.*without TLS and without authentication"
    with pytest.raises(ValidationError, match=expected):
        ServiceSettings(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ValidationError, match="without authentication"):
        ServiceSettings(data_dir=tmp_path, host="0.0.0.0", tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    tokens = tmp_path / "tokens.json"
    create_token(tokens, projects=["*"], scopes=["read"])
    with pytest.raises(ValidationError, match="without TLS"):
        ServiceSettings(data_dir=tmp_path, host="0.0.0.0", auth_tokens=tokens)
    ServiceSettings(data_dir=tmp_path, host="0.0.0.0", allow_insecure=True)
    tls = {"tls_cert": pki["server_cert"], "tls_key": pki["server_key"]}
    ServiceSettings(data_dir=tmp_path, host="::", auth_tokens=tokens, **tls)
    ServiceSettings(data_dir=tmp_path, host="10.0.0.5", tls_client_ca=pki["ca"], **tls)
    ServiceSettings(data_dir=tmp_path, host="localhost")  # loopback needs nothing, as before
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "host: '0.0.0.0' is not a loopback address" in result.output and "--allow-insecure" in result.output


# -- tokens ---------------------------------------------------------------------------------------


@pytest.fixture
def secured(start_server, tmp_path):
    """A server with tokens (plaintext loopback: TLS is tested above) and the tokens of two teams."""
    path = tmp_path / "tokens.json"
    tokens = {
        "alpha": create_token(path, projects=["alpha"], scopes=["ingest", "read"])[0],
        "beta": create_token(path, projects=["beta"], scopes=["ingest", "read", "advise"])[0],
        "alpha_read": create_token(path, projects=["alpha"], scopes=["read"])[0],
        "admin": create_token(path, projects=["*"], scopes=["admin"])[0],
    }
    srv, _ = start_server(auth_tokens=path)
    return srv, tokens, path


def _channel(srv, token: str | None) -> grpc.Channel:
    return make_channel(srv.target, token=token or "")


def _snapshot(srv, admin: str) -> dict:
    """Every run as the store has it, and its events and anomalies (read with the admin token)."""
    with _channel(srv, admin) as channel:
        stub = service_pb2_grpc.RunServiceStub(channel)
        out = {}
        for info in _list_runs(channel):
            summary = stub.GetRun(service_pb2.GetRunRequest(run_id=info.run_id), timeout=10)
            out[info.run_id] = (summary.run.SerializeToString(deterministic=True), len(summary.anomalies))
        return out


def _two_teams(srv, tokens) -> None:
    with RunwatchClient(srv.target, token=tokens["alpha"], flush_on_exit=False) as a:
        _log_run(a, "a-1", "alpha", steps=20, nan_at=15)
        assert a.stats().rejected == 0
    with RunwatchClient(srv.target, token=tokens["beta"], flush_on_exit=False) as b:
        _log_run(b, "b-1", "beta", steps=20, nan_at=10)
        assert b.stats().rejected == 0


def test_missing_or_unknown_tokens_are_unauthenticated_and_change_nothing(secured):
    srv, tokens, _ = secured
    _two_teams(srv, tokens)
    before = _snapshot(srv, tokens["admin"])
    end_b1 = runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="b-1", status=runs_pb2.RUN_STATUS_KILLED, reason="x")])
    forged = "rw_" + tokens["alpha"].split("_")[1] + "_" + "A" * 43  # a real id, a wrong secret
    for token in (None, "garbage", "rw_000000000000_" + "x" * 43, forged):
        with _channel(srv, token) as channel:
            ingest = service_pb2_grpc.IngestServiceStub(channel)
            assert _code(lambda: ingest.Ingest(end_b1, timeout=5)) == UNAUTHENTICATED
            assert _code(lambda: list(ingest.StreamEvents(iter([end_b1]), timeout=5))) == UNAUTHENTICATED
            assert _code(lambda: _list_runs(channel)) == UNAUTHENTICATED
            watch = service_pb2_grpc.WatchServiceStub(channel)
            assert _code(lambda: next(watch.WatchAnomalies(service_pb2.WatchRequest(), timeout=5))) == UNAUTHENTICATED
            # Health stays open to load balancers.
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    with _channel(srv, None) as channel:
        detail = _rpc_error(lambda: _list_runs(channel)).details()
        assert "authorization: Bearer" in detail
    assert _snapshot(srv, tokens["admin"]) == before


def _rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_a_token_without_the_scope_is_permission_denied_and_changes_nothing(secured):
    srv, tokens, _ = secured
    _two_teams(srv, tokens)
    before = _snapshot(srv, tokens["admin"])
    more = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="a-1", step=50, metrics={"loss": 0.1})])
    with _channel(srv, tokens["alpha_read"]) as channel:
        ingest = service_pb2_grpc.IngestServiceStub(channel)
        err = _rpc_error(lambda: ingest.Ingest(more, timeout=5))
        assert err.code() == PERMISSION_DENIED and "'ingest' scope" in err.details()
        assert _code(lambda: list(ingest.StreamEvents(iter([more]), timeout=5))) == PERMISSION_DENIED
        advisor = service_pb2_grpc.AdvisorServiceStub(channel)
        assert _code(lambda: advisor.Suggest(service_pb2.SuggestRequest(run_id="a-1"), timeout=5)) == PERMISSION_DENIED
        assert [r.run_id for r in _list_runs(channel)] == ["a-1"]  # what it may do, it still can
    assert _snapshot(srv, tokens["admin"]) == before


def test_a_token_for_another_project_is_refused_and_loses_nothing_else(secured):
    srv, tokens, _ = secured
    _two_teams(srv, tokens)
    before = _snapshot(srv, tokens["admin"])
    with _channel(srv, tokens["alpha"]) as channel:
        ingest = service_pb2_grpc.IngestServiceStub(channel)
        runs = service_pb2_grpc.RunServiceStub(channel)
        watch = service_pb2_grpc.WatchServiceStub(channel)
        attacks = [
            runs_pb2.EventBatch(
                ends=[runs_pb2.RunEnd(run_id="b-1", status=runs_pb2.RUN_STATUS_KILLED, reason="ended by someone else")]
            ),
            runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="b-1", step=30, metrics={"loss": 9.0})]),
            runs_pb2.EventBatch(logs=[runs_pb2.LogLine(run_id="b-1", text="injected")]),
            runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="b-1", project="alpha")]),  # take the run over
            runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="b-2", project="beta")]),  # open one in beta
        ]
        for batch in attacks:
            err = _rpc_error(lambda: ingest.Ingest(batch, timeout=5))
            assert err.code() == PERMISSION_DENIED and "does not grant" in err.details()
            # Another team's run is named, its project is not (a RunStart naming beta says beta).
            assert ("'beta'" in err.details()) == (bool(batch.starts) and batch.starts[0].run_id == "b-2")
        # On a stream, a batch mixing both teams' runs: alpha's items go through, beta's are refused
        # one by one with their own paths, and the stream goes on.
        mixed = runs_pb2.EventBatch(sequence=7)
        mixed.events.add(run_id="a-1", step=20, metrics={"loss": 0.5})
        mixed.events.add(run_id="b-1", step=20, metrics={"loss": 9.0})
        mixed.events.add(run_id="a-1", step=21, metrics={"loss": 0.4, "bad name": 1.0})
        mixed.ends.add(run_id="b-1", status=runs_pb2.RUN_STATUS_KILLED)
        after = runs_pb2.EventBatch(sequence=8)
        after.events.add(run_id="a-1", step=22, metrics={"loss": 0.3})
        acks = list(ingest.StreamEvents(iter([mixed, after]), timeout=10))
        assert [(a.sequence, a.accepted, a.rejected) for a in acks] == [(7, 1, 3), (8, 1, 0)]
        paths = [v.field for v in acks[0].violations]
        assert paths[:2] == ["events[1].run_id", "ends[0].run_id"]
        assert paths[2].startswith("events[2].metrics")  # the pipeline's own rejection, with the path as sent
        assert all(v.reason.startswith("PERMISSION_DENIED") for v in acks[0].violations[:2])
        # Reads: beta is invisible in listings and refused when named.
        assert _code(lambda: runs.GetRun(service_pb2.GetRunRequest(run_id="b-1"), timeout=5)) == PERMISSION_DENIED
        assert [r.run_id for r in _list_runs(channel)] == ["a-1"]
        assert _code(lambda: _list_runs(channel, project="beta")) == PERMISSION_DENIED
        for request in (service_pb2.WatchRequest(project="beta"), service_pb2.WatchRequest(run_id="b-1")):
            assert _code(lambda: next(watch.WatchAnomalies(request, timeout=5))) == PERMISSION_DENIED
        history = watch.WatchAnomalies(service_pb2.WatchRequest(include_history=True), timeout=2)
        seen = []
        with pytest.raises(grpc.RpcError):  # the deadline ends the watch
            for anomaly in history:
                seen.append(anomaly)
        assert seen and {a.project for a in seen} == {"alpha"}
    with _channel(srv, tokens["beta"]) as channel:
        advisor = service_pb2_grpc.AdvisorServiceStub(channel)
        request = service_pb2.SuggestRequest(run_id="a-1")
        assert _code(lambda: advisor.Suggest(request, timeout=5)) == PERMISSION_DENIED
    now = _snapshot(srv, tokens["admin"])
    assert now["b-1"] == before["b-1"] and "b-2" not in now  # beta's run untouched, none opened for it
    with _channel(srv, tokens["admin"]) as channel:
        a1 = service_pb2_grpc.RunServiceStub(channel).GetRun(service_pb2.GetRunRequest(run_id="a-1"), timeout=5)
        b1 = service_pb2_grpc.RunServiceStub(channel).GetRun(service_pb2.GetRunRequest(run_id="b-1"), timeout=5)
    assert (a1.run.event_count, a1.run.last_step) == (22, 22)  # 20 + the 2 accepted on the stream
    assert (b1.run.project, b1.run.status, b1.run.event_count) == ("beta", runs_pb2.RUN_STATUS_RUNNING, 20)
    assert b1.run.start.hyperparameters["lr"] == 0.1 and list(b1.run.start.tags) == ["team"]


def test_sdk_with_a_refused_token_does_not_wait_out_its_flush_timeout(secured):
    """A missing or unknown token is refused by the server at once; finish() says so (False) without waiting out
    its timeout for acknowledgements that cannot come (it blocked the whole 10 s before)."""
    import time

    import runwatch.client as rw

    srv, _, _ = secured
    for token in ("", "rw_0123456789ab_" + "x" * 43):
        run = rw.init(project="alpha", run_id="refused", target=srv.target, token=token, spool_dir=False,
                      capture_env=False, system_metrics=False, flush_on_exit=False)  # fmt: skip
        run.log({"loss": 1.0})
        t0 = time.monotonic()
        assert run.finish(timeout=10) is False
        assert time.monotonic() - t0 < 5.0, token


def test_sdk_with_a_token_of_another_project_keeps_its_own_runs(secured):
    srv, tokens, _ = secured
    with RunwatchClient(srv.target, token=tokens["alpha"], flush_on_exit=False) as client:
        _log_run(client, "a-mixed", "alpha", steps=5)
        _log_run(client, "b-mixed", "beta", steps=5)
        stats = client.stats()
        assert stats.rejected == 6 and stats.acked == 6  # beta's start and events refused, alpha's all kept
        assert any("PERMISSION_DENIED" in reason for _, _, reason in client.violations)
    with _channel(srv, tokens["admin"]) as channel:
        assert [(r.run_id, r.event_count) for r in _list_runs(channel)] == [("a-mixed", 5)]


def test_reflection_needs_a_read_token(secured):
    srv, tokens, _ = secured
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with _channel(srv, None) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        assert _code(lambda: next(stub.ServerReflectionInfo(iter([request]), timeout=5))) == UNAUTHENTICATED
    with _channel(srv, tokens["alpha_read"]) as channel:
        reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=5))
        assert "runwatch.v1.IngestService" in {s.name for s in reply.list_services_response.service}


# -- rotation and storage -------------------------------------------------------------------------


def test_tokens_rotate_without_a_restart(secured):
    srv, tokens, path = secured
    old = tokens["alpha"]
    new, _ = create_token(path, projects=["alpha"], scopes=["ingest", "read"], description="rotated")
    with _channel(srv, old) as o, _channel(srv, new) as n:
        assert _list_runs(o) == _list_runs(n) == []  # both work side by side
        # A stream opened with the old token...
        requests: list = []
        more = threading.Event()

        def feed():
            b = runs_pb2.EventBatch(sequence=1, starts=[runs_pb2.RunStart(run_id="rot-1", project="alpha")])
            yield b
            more.wait(10)
            b = runs_pb2.EventBatch(sequence=2)
            b.events.add(run_id="rot-1", step=0, metrics={"loss": 1.0})
            yield b

        call = service_pb2_grpc.IngestServiceStub(o).StreamEvents(feed(), timeout=10)
        requests.append(next(call))
        assert requests[0].accepted == 1
        revoke_token(path, old)  # ... and the old token revoked: no restart, no signal
        assert _code(lambda: _list_runs(o)) == UNAUTHENTICATED
        more.set()
        err = _rpc_error(lambda: next(call))
        assert err.code() == UNAUTHENTICATED and "revoked" in err.details()
        assert [r.run_id for r in _list_runs(n)] == ["rot-1"]
    # A broken file does not lock everyone out: the tokens read before stay in force.
    path.write_text("{not json")
    with _channel(srv, new) as n:
        assert len(_list_runs(n)) == 1
    # SIGHUP forces a re-read (the serve command wires it to this).
    revoke_path_text = {"format": "runwatch.tokens/1", "tokens": []}
    path.write_text(json.dumps(revoke_path_text))
    srv.call(_reload(srv))
    with _channel(srv, new) as n:
        assert _code(lambda: _list_runs(n)) == UNAUTHENTICATED


async def _reload(srv) -> None:
    srv.server.reload_tokens()


def test_the_token_file_holds_hashes_only(tmp_path):
    path = tmp_path / "tokens.json"
    token, record = create_token(path, projects=["alpha", "beta"], scopes=["ingest"], description="ci")
    text = path.read_text()
    _, token_id, secret = token.split("_", 2)
    assert secret not in text and token not in text and token_id in text
    assert json.loads(text)["tokens"][0]["sha256"] == record.sha256 and len(record.sha256) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_tokens_cli_create_list_revoke_and_client_commands(secured, tmp_path):
    srv, tokens, path = secured
    runner = CliRunner()
    made = runner.invoke(app, ["tokens", "create", "--file", str(path), "--project", "alpha", "--scope", "read"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("rw_") and token not in path.read_text()
    listed = runner.invoke(app, ["tokens", "list", "--file", str(path)])
    token_id = token.split("_")[1]
    assert listed.exit_code == 0 and token_id in listed.stdout and token not in listed.stdout
    with RunwatchClient(srv.target, token=tokens["alpha"], flush_on_exit=False) as client:
        _log_run(client, "cli-a", "alpha", steps=3)
    shown = runner.invoke(app, ["runs", "--target", srv.target, "--token", token])
    assert shown.exit_code == 0 and "cli-a" in shown.stdout
    refused = runner.invoke(app, ["runs", "--target", srv.target], env={"RUNWATCH_TOKEN": ""})
    assert refused.exit_code == 2 and "UNAUTHENTICATED" in refused.output
    from_env = runner.invoke(app, ["show", "cli-a", "--target", srv.target], env={"RUNWATCH_TOKEN": token})
    assert from_env.exit_code == 0 and "cli-a" in from_env.stdout
    bad_scope = runner.invoke(app, ["tokens", "create", "--file", str(path), "--project", "a", "--scope", "write"])
    assert bad_scope.exit_code == 2 and "--scope: unknown scope 'write'" in bad_scope.output
    gone = runner.invoke(app, ["tokens", "revoke", token_id, "--file", str(path)])
    assert gone.exit_code == 0 and token_id not in runner.invoke(app, ["tokens", "list", "--file", str(path)]).stdout
    again = runner.invoke(app, ["runs", "--target", srv.target, "--token", token])
    assert again.exit_code == 2 and "UNAUTHENTICATED" in again.output


def test_plain_targets_are_unchanged_and_tls_files_need_https(server, tmp_path):
    srv, _ = server
    with RunwatchClient(srv.target, flush_on_exit=False) as client:  # no token, no TLS: as before
        _log_run(client, "plain-1", "default", steps=2)
    with pytest.raises(ValueError, match="ca_file: given, but target .* is plaintext; write it as https://"):
        RunwatchClient(srv.target, ca_file=tmp_path / "ca.pem", flush_on_exit=False)
    with pytest.raises(ValueError, match="key_file: needed with cert_file"):
        make_channel("https://localhost:1", cert_file=tmp_path / "c.pem")
    # A token sent to a server without tokens is ignored, as any unknown metadata.
    with make_channel(srv.target, token="rw_000000000000_" + "x" * 43) as channel:
        assert [r.run_id for r in _list_runs(channel)] == ["plain-1"]


@pytest.mark.slow
def test_project_checks_on_the_kafka_door(kafka, tmp_path):
    """With Kafka the RunStart is consumed later (maybe elsewhere): the door remembers what it let through."""
    from runwatch.service.background import BackgroundServer

    path = tmp_path / "tokens.json"
    alpha = create_token(path, projects=["alpha"], scopes=["ingest", "read"])[0]
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "d", kafka=kafka, auth_tokens=path)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        with _channel(srv, alpha) as channel:
            ingest = service_pb2_grpc.IngestServiceStub(channel)
            start = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="ka-1", project="alpha")])
            events = runs_pb2.EventBatch(
                events=[runs_pb2.MetricEvent(run_id="ka-1", step=i, metrics={"loss": 1.0}) for i in range(5)]
            )
            assert ingest.Ingest(start, timeout=30).accepted == 1
            assert ingest.Ingest(events, timeout=30).accepted == 5  # before the start is consumed, maybe
            stranger = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="kb-1", step=0, metrics={"loss": 1.0})])
            err = _rpc_error(lambda: ingest.Ingest(stranger, timeout=30))
            assert err.code() == PERMISSION_DENIED and "unknown to this instance" in err.details()
            beta = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="kb-2", project="beta")])
            assert _code(lambda: ingest.Ingest(beta, timeout=30)) == PERMISSION_DENIED
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                runs = _list_runs(channel)
                if runs and runs[0].event_count == 5:
                    break
                time.sleep(0.2)
            assert [(r.run_id, r.project, r.event_count) for r in runs] == [("ka-1", "alpha", 5)]
        assert srv.server.run_project("kb-2") is None
    finally:
        srv.stop()
