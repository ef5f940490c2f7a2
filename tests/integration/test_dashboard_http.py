"""The dashboard's HTTP side against a real server: pages, JSON API, server-sent events, tokens, packaging."""

from __future__ import annotations

import http.client
import json
import math
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from runwatch.service.settings import ServiceSettings
from runwatch.service.tokens import create_token
from runwatch.v1 import runs_pb2, service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, headers: dict | None = None, follow: bool = True) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(*(() if follow else (NoRedirect,)))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = get(url, headers)
    return status, json.loads(body)


def raw(base: str, method: str, target: str, form: dict | None = None, headers: dict | None = None):
    """One request with its target sent as written (as ``curl --path-as-is``), no redirect followed:
    ``(status, headers, body)``; the headers are case-insensitive."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = dict(headers or {})
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def ingest(target: str, run_id: str, project: str, steps: int, nan_at: int = -1, token: str | None = None) -> None:
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id=run_id, project=project)
    for step in range(steps):
        loss = math.nan if 0 <= nan_at <= step else 1.0 / (step + 1)
        batch.events.add(run_id=run_id, step=step).metrics.update({"loss": loss, "lr": 0.1, "grad_norm/fc1": 0.5})
    batch.logs.add(run_id=run_id, step=3, text="epoch 1", level=runs_pb2.LOG_LEVEL_INFO)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30, metadata=metadata)


@pytest.fixture
def dashboard(start_server):
    srv, _ = start_server(http_port=0)
    return srv, f"http://127.0.0.1:{srv.server.http_port}"


def test_pages_are_one_static_page_and_assets_ship_with_the_package(dashboard):
    _, base = dashboard
    index = get(base + "/")[2]
    for path in ("/projects/p", "/runs/a/b:c", "/compare?runs=a,b", "/anomalies"):
        status, headers, body = get(base + path)
        assert status == 200 and body == index, path
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"/static/app.js" in index and b"http" not in index.replace(b'href="data:,"', b"")  # nothing external
    status, headers, body = get(base + "/static/vendor/uPlot.iife.min.js")
    assert (
        status == 200
        and "javascript" in headers["Content-Type"]
        and body.startswith(b"/*! https://github.com/leeoniya/uPlot")
    )
    assert get(base + "/nope")[0] == 404
    assert get(base + "/healthz")[2] == b"ok\n"


def test_vendored_chart_library_is_the_locked_version_with_its_license():
    static = ROOT / "service" / "http" / "static" / "vendor"
    lock = json.loads((ROOT / "service" / "http" / "frontend" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    assert (
        json.loads((ROOT / "service" / "http" / "frontend" / "package.json").read_text())["dependencies"]["uplot"]
        == version
    )
    head = (static / "uPlot.iife.min.js").read_text()[:80]
    assert f"(v{version})" in head
    assert "MIT License" in (static / "uPlot.LICENSE").read_text()
    assert "https://" not in (ROOT / "service" / "http" / "static" / "app.js").read_text()  # no CDN, no fetch elsewhere


def test_api_answers_from_the_same_queries_as_the_grpc_services(dashboard):
    srv, base = dashboard
    ingest(srv.target, "api-ok", "proj", steps=50)
    ingest(srv.target, "api/nan", "proj", steps=50, nan_at=40)
    status, projects = get_json(base + "/api/projects")
    assert status == 200 and projects["projects"] == [
        {"name": "proj", "runs": 2, "running": 2, "last_activity": projects["projects"][0]["last_activity"]}
    ]
    runs = get_json(base + "/api/runs?project=proj")[1]["runs"]
    by_id = {r["run_id"]: r for r in runs}
    assert by_id["api-ok"]["health"] == {"badge": "healthy", "open": {}, "incidents": 0}
    assert by_id["api/nan"]["health"]["badge"] == "critical" and by_id["api/nan"]["health"]["open"] == {"NONFINITE": 1}
    assert by_id["api/nan"]["last_step"] == 49
    run = get_json(base + "/api/run?run=api%2Fnan")[1]
    assert run["metrics"] == ["grad_norm/fc1", "loss", "lr"] and run["anomalies"][0]["kind"] == "NONFINITE"
    series = get_json(base + "/api/series?run=api%2Fnan&m=loss&width=10")[1]["series"]
    assert list(series) == ["loss"] and series["loss"]["total"] == 50
    assert 40 in series["loss"]["x"]  # the anomaly's point is kept
    assert series["loss"]["y"][series["loss"]["x"].index(40)] is None  # NaN: a gap
    zoomed = get_json(base + "/api/series?run=api-ok&from=10&to=19")[1]["series"]["lr"]
    assert zoomed["x"] == list(range(10, 20))
    feed = get_json(base + "/api/anomalies?min_severity=ERROR")[1]["anomalies"]
    assert [a["run_id"] for a in feed] == ["api/nan"]
    logs = get_json(base + "/api/logs?run=api-ok")[1]["logs"]
    assert logs == [{"time": logs[0]["time"], "step": 3, "level": "INFO", "text": "epoch 1"}]
    assert get_json(base + "/api/run?run=nobody") == (404, {"error": "run: no run 'nobody'"})
    assert get_json(base + "/api/series?run=api-ok&width=x")[0] == 400
    assert get_json(base + "/api/runs")[0] == 400
    status, body = get_json(base + "/api/suggest?run=api-ok")
    assert status in (409, 200) and ("error" in body or "suggestions" in body)  # no architecture record: refused


def read_events(response, until, timeout: float) -> list[tuple[str, dict]]:
    """Server-sent events from an open response until ``until(events)`` or ``timeout``."""
    events, name = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = response.readline().decode()
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if until(events):
                break
    return events


def test_event_stream_pushes_anomalies_and_new_points(dashboard):
    srv, base = dashboard
    ingest(srv.target, "live", "proj", steps=10)
    response = urllib.request.urlopen(base + "/api/stream?run=live&since=9", timeout=10)
    assert response.headers["Content-Type"] == "text/event-stream"
    batch = runs_pb2.EventBatch()
    for step in range(10, 20):
        batch.events.add(run_id="live", step=step).metrics.update({"loss": math.nan if step == 15 else 0.1})
    t0 = time.monotonic()
    channel = grpc.insecure_channel(srv.target)
    threading.Timer(0.3, lambda: service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=10)).start()

    def done(events):
        names = {n for n, _ in events}
        return (
            "anomaly" in names
            and any(n == "points" and 19 in d["series"]["loss"]["x"] for n, d in events)
            and any(n == "run" and d["last_step"] == 19 for n, d in events)
        )

    events = read_events(response, done, timeout=5)
    response.close()
    channel.close()
    assert done(events), events
    assert time.monotonic() - t0 < 3
    anomaly = next(d for n, d in events if n == "anomaly")
    assert anomaly["kind"] == "NONFINITE" and anomaly["step"] == 15
    points = [d for n, d in events if n == "points"]
    assert points[0]["series"]["loss"]["x"][0] == 9  # from the step the page said it had


def test_tokens_guard_pages_api_streams_and_metrics(start_server, tmp_path):
    tokens = tmp_path / "tokens.json"
    reader, _ = create_token(tokens, projects=["alpha"], scopes=["read"])
    writer, _ = create_token(tokens, projects=["*"], scopes=["ingest", "read", "advise"])
    srv, _ = start_server(http_port=0, auth_tokens=tokens)
    base = f"http://127.0.0.1:{srv.server.http_port}"
    ingest(srv.target, "a1", "alpha", steps=5, token=writer)
    ingest(srv.target, "b1", "beta", steps=5, token=writer)
    bearer = {"Authorization": f"Bearer {reader}"}

    status, headers, body = get(base + "/api/projects")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and b"token" in body
    assert get(base + "/metrics")[0] == 401
    assert get(base + "/api/projects", {"Authorization": "Bearer rw_000000000000_" + "x" * 43})[0] == 401
    status, _, page = get(base + "/runs/a1")
    assert status == 401 and b'action="/login"' in page  # a page offers to sign in
    assert get(base + "/static/app.js")[0] == 200 and get(base + "/healthz")[0] == 200

    assert [p["name"] for p in get_json(base + "/api/projects", bearer)[1]["projects"]] == ["alpha"]
    assert get_json(base + "/api/run?run=a1", bearer)[0] == 200
    assert get_json(base + "/api/run?run=b1", bearer)[0] == 403
    assert get_json(base + "/api/runs?project=beta", bearer)[0] == 403
    assert get_json(base + "/api/suggest?run=a1", bearer) == (
        403,
        {"error": f"token '{reader[3:15]}' lacks the 'advise' scope the advisor needs"},
    )
    assert {
        a["project"] for a in get_json(base + "/api/anomalies", {"Authorization": f"Bearer {writer}"})[1]["anomalies"]
    } <= {"alpha", "beta"}
    assert get(base + "/metrics", bearer)[0] == 200

    # A login link: the token goes into an HttpOnly cookie and out of the URL.
    status, headers, _ = get(f"{base}/runs/a1?token={reader}&from=1", follow=False)
    assert status == 302 and headers["Location"] == "/runs/a1?from=1"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"runwatch_token={reader};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    with_cookie = {"Cookie": f"runwatch_token={reader}"}
    assert get(base + "/runs/a1", with_cookie)[0] == 200
    assert get_json(base + "/api/run?run=a1", with_cookie)[0] == 200
    assert get(f"{base}/runs/a1?token=rw_nope", follow=False)[0] == 401

    # The stream of a token for alpha carries alpha's anomalies only.
    response = urllib.request.urlopen(urllib.request.Request(base + "/api/stream", headers=bearer), timeout=10)
    time.sleep(0.3)
    ingest(srv.target, "b2", "beta", steps=5, nan_at=2, token=writer)
    ingest(srv.target, "a2", "alpha", steps=5, nan_at=2, token=writer)
    events = read_events(response, lambda ev: any(n == "anomaly" for n, _ in ev), timeout=5)
    response.close()
    assert [d["run_id"] for n, d in events if n == "anomaly"] == ["a2"]


def test_a_non_loopback_dashboard_follows_the_security_rule(tmp_path):
    with pytest.raises(ValidationError, match="http_host: '0.0.0.0' is not a loopback address"):
        ServiceSettings(http_port=0, http_host="0.0.0.0", data_dir=tmp_path)
    assert ServiceSettings(
        http_port=0, http_host="0.0.0.0", allow_insecure=True, data_dir=tmp_path
    ).http_exposure_problem
    assert not ServiceSettings(http_host="0.0.0.0", data_dir=tmp_path).http_exposure_problem  # dashboard off
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.service.cli", "serve", "--port", "0", "--http-port", "0",
         "--http-host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "http_host" in done.stderr and "--allow-insecure" in done.stderr


def test_package_data_lists_the_dashboard_assets():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"runwatch\.service\.http" = \["static/\*', text)
    assert '"runwatch.service.http"' in text.split("packages = [")[1].split("]")[0]


def test_app_docstring_example_serves_on_a_free_port():
    import doctest

    from runwatch.service.http import app

    result = doctest.testmod(app)
    assert result.failed == 0 and result.attempted > 0


def run_with_architecture(target: str, run_id: str) -> None:
    """A finished run with an architecture record (two Linear layers) and a val/loss curve."""
    batch = runs_pb2.EventBatch()
    start = batch.starts.add(run_id=run_id, project="advice")
    start.architecture.layers.add(
        name="fc1", type="Linear", in_size=64, out_size=32, activation="ReLU", param_count=2080
    )
    start.architecture.layers.add(name="fc2", type="Linear", in_size=32, out_size=10, param_count=330)
    start.architecture.total_params = 2410
    for step in range(50):
        m = {"loss": 2.0 / (1 + step)}
        if step % 10 == 9:
            m["val/loss"] = 2.5 / (1 + step) + 0.3
        batch.events.add(run_id=run_id, step=step).metrics.update(m)
    batch.ends.add(run_id=run_id)
    with grpc.insecure_channel(target) as channel:
        service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30)


def test_advisor_suggestions_come_with_diff_effect_and_evidence(dashboard):
    srv, base = dashboard
    run_with_architecture(srv.target, "adv")
    status, body = get_json(base + "/api/suggest?run=adv&num=2")
    assert status == 200, body
    first = body["suggestions"][0]
    assert first["rank"] == 1 and first["changes"][0]["before"] != first["changes"][0]["after"]
    assert first["effect"]["metric"] == "val/loss" and {"predicted", "delta", "stddev"} <= first["effect"].keys()
    assert first["evidence"] and len(body["suggestions"]) == 2


def test_event_stream_points_come_in_step_order(dashboard):
    """Steps where watch() metrics ride along are stored in another layout; the stream still sends steps in order."""
    srv, base = dashboard
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id="watched", project="proj")
    for step in range(40):
        metrics = {"loss": 1.0 / (step + 1), "grad_norm": 0.5} if step % 10 == 0 else {"loss": 1.0 / (step + 1)}
        batch.events.add(run_id="watched", step=step).metrics.update(metrics)
    with grpc.insecure_channel(srv.target) as channel:
        assert service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30).rejected == 0
    with urllib.request.urlopen(base + "/api/stream?run=watched&since=0", timeout=10) as response:
        events = read_events(response, lambda got: any(name == "points" for name, _ in got), timeout=5)
    series = next(data for name, data in events if name == "points")["series"]
    assert series["loss"]["x"] == list(range(40)) and series["grad_norm"]["x"] == [0, 10, 20, 30]


def test_sign_in_redirects_only_to_a_path_on_this_server(start_server, tmp_path):
    """No open redirect: browsers drop tab, CR and LF anywhere in a URL and blanks before it, so
    ``/<tab>/evil.example`` is ``//evil.example``, another host; such a ``next`` becomes "/"."""
    tokens = tmp_path / "tokens.json"
    reader, _ = create_token(tokens, projects=["*"], scopes=["read"])
    srv, _ = start_server(http_port=0, auth_tokens=tokens)
    base = f"http://127.0.0.1:{srv.server.http_port}"
    elsewhere = (
        "/\t/evil.example/", "/\r\n/evil.example/", "\t//evil.example/", " //evil.example/", "//evil.example/",
        "/\\evil.example/", "\\/evil.example/", "/x\\y", "/\x00/evil.example/", "/\x7f/evil.example/",
        "https://evil.example/", "evil.example", "",
    )  # fmt: skip
    for next_url in elsewhere:
        status, headers, _ = raw(base, "POST", "/login", {"token": reader, "next": next_url})
        assert (status, headers["Location"]) == (302, "/"), next_url
        status, _, page = raw(base, "GET", "/login?" + urllib.parse.urlencode({"next": next_url}))
        assert status == 200 and 'name="next" value="/"' in page.decode(), next_url
    for next_url, location in (("/runs/a1?from=1", "/runs/a1?from=1"), (" /anomalies", "/anomalies"), ("/", "/")):
        status, headers, _ = raw(base, "POST", "/login", {"token": reader, "next": next_url})
        assert (status, headers["Location"]) == (302, location), next_url
    # A login link whose path starts with "//": the redirect that drops the token stays on this server.
    for target, location in (
        (f"//evil.example/x?token={reader}", "/evil.example/x"),
        (f"////evil.example/x?from=1&token={reader}", "/evil.example/x?from=1"),
        (f"/runs/a1?token={reader}", "/runs/a1"),
    ):
        status, headers, _ = raw(base, "GET", target)
        assert (status, headers["Location"]) == (302, location), target


def test_api_answers_400_for_numbers_it_cannot_use(dashboard):
    """Infinite step bounds (``inf``, ``1e400``) are no step: 400 naming the parameter, as ``from=abc``, not a 500."""
    srv, base = dashboard
    ingest(srv.target, "bounds", "proj", steps=20)
    for name in ("from", "to"):
        for value in ("inf", "-inf", "Infinity", "1e400", "-1e400", "nan", "abc"):
            status, _, body = get(f"{base}/api/series?run=bounds&{name}={value}")
            assert status == 400, (name, value, status, body[:200])
            assert json.loads(body)["error"].startswith(f"{name}: expected a finite step number"), (name, value)
    wide = get_json(f"{base}/api/series?run=bounds&m=loss&from=-1e300&to=1e300")
    assert wide[0] == 200 and wide[1]["series"]["loss"]["total"] == 20 and wide[1]["from"] == -1e300
    # The other numbers the API reads from the query: 400 naming the parameter, never a 500.
    for path, name, value in (
        ("/api/anomalies?", "min_severity", "\u00b2"),  # a digit to str.isdigit(), not to int()
        ("/api/anomalies?", "min_severity", "9" * 5000),  # more digits than int() reads
        ("/api/stream?run=bounds&", "min_severity", "\u00b2"),
        ("/api/anomalies?", "limit", "inf"),
        ("/api/logs?run=bounds&", "offset", "1e400"),
        ("/api/series?run=bounds&", "width", "9" * 5000),
        ("/api/stream?run=bounds&", "since", "inf"),
        ("/api/suggest?run=bounds&", "num", "nan"),
    ):
        status, _, body = get(base + path + urllib.parse.urlencode({name: value}))
        assert status == 400, (path, name, value[:10], status, body[:200])
        assert json.loads(body)["error"].startswith(f"{name}: "), (path, name, value[:10], body[:200])


def test_sign_in_refuses_a_token_without_the_read_scope(start_server, tmp_path):
    """An ingest-only token gets no cookie: the sign-in page says why, rather than every page a JSON 403."""
    tokens = tmp_path / "tokens.json"
    pusher, _ = create_token(tokens, projects=["*"], scopes=["ingest"])
    reader, _ = create_token(tokens, projects=["*"], scopes=["read"])
    srv, _ = start_server(http_port=0, auth_tokens=tokens)
    base = f"http://127.0.0.1:{srv.server.http_port}"
    lacks = f"token &#x27;{pusher[3:15]}&#x27; lacks the &#x27;read&#x27; scope"
    for method, target, form in (
        ("POST", "/login", {"token": pusher, "next": "/runs/a1"}),
        ("GET", f"/runs/a1?token={pusher}", None),
    ):
        status, headers, page = raw(base, method, target, form)
        assert status == 403 and "Set-Cookie" not in headers and lacks in page.decode(), target
        assert headers["Content-Type"].startswith("text/html") and 'action="/login"' in page.decode()
    # A cookie set before this rule: the pages offer to sign in again; the API still answers JSON.
    status, headers, page = raw(base, "GET", "/runs/a1", headers={"Cookie": f"runwatch_token={pusher}"})
    assert status == 403 and headers["Content-Type"].startswith("text/html") and lacks in page.decode()
    status, body = get_json(base + "/api/projects", {"Cookie": f"runwatch_token={pusher}"})
    assert status == 403 and "lacks the 'read' scope" in body["error"]
    status, headers, _ = raw(base, "POST", "/login", {"token": reader, "next": "/runs/a1"})
    assert status == 302 and headers["Set-Cookie"].startswith(f"runwatch_token={reader};")


def test_a_run_without_steps_has_no_last_step(dashboard):
    """A run that has logged no metric yet: ``last_step`` is null (kept, not left out), not -1."""
    srv, base = dashboard
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id="empty", project="proj")
    with grpc.insecure_channel(srv.target) as channel:
        service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30)
    ingest(srv.target, "stepped", "proj", steps=5)
    runs = {r["run_id"]: r for r in get_json(base + "/api/runs?project=proj")[1]["runs"]}
    assert "last_step" in runs["empty"] and runs["empty"]["last_step"] is None
    assert runs["stepped"]["last_step"] == 4
    run = get_json(base + "/api/run?run=empty")[1]
    assert run["run"]["last_step"] is None and run["last_step"] is None and run["metrics"] == []
    series = get_json(base + "/api/series?run=empty")[1]
    assert series["last_step"] is None and series["series"] == {}
    assert get_json(base + "/api/series?run=stepped")[1]["last_step"] == 4
