"""The dashboard and ``/metrics``: an aiohttp app on the gRPC server's own event loop.

Pages (one static page, ``static/index.html``, that reads its route from the URL):

- ``/``: projects; ``/projects/NAME``: a project's runs; ``/runs/RUN_ID?from=A&to=B``: a run's
  curves with anomaly markers, logs and the advisor (the zoom is in the URL);
  ``/compare?runs=A,B``: runs overlaid by step; ``/anomalies``: the feed across projects.

JSON API (what the pages call; every answer comes from the queries ``RunService``,
``WatchAnomalies`` and ``AdvisorService`` use, through the same store and hub):

- ``GET /api/projects``; ``GET /api/runs?project=P[&status=RUNNING][&limit=N]`` (a run with no step yet has
  ``last_step`` null, here and wherever a run's ``last_step`` appears);
- ``GET /api/run?run=ID``: the run, its incidents, its metric names;
- ``GET /api/series?run=ID[&m=loss&m=lr...][&from=A&to=B][&width=PX]``: downsampled curves;
- ``GET /api/anomalies?[project=P|run=ID][&min_severity=2][&limit=N]``: newest first;
- ``GET /api/logs?run=ID[&limit=2000][&offset=0]``: the newest ``limit`` lines (``offset`` of the newest
  left out), oldest first;
- ``GET /api/suggest?run=ID[&target=val/loss][&num=3]`` (scope ``advise``);
- ``GET /api/stream?[run=ID|project=P][&since=STEP]``: server-sent events (see :mod:`.stream`).

``GET /metrics`` is Prometheus's text format; ``GET /healthz`` answers "ok" without a token.

Examples
--------
>>> import asyncio, tempfile
>>> from runwatch.service.server import RunwatchServer
>>> from runwatch.service.settings import ServiceSettings
>>> async def main():
...     s = RunwatchServer(ServiceSettings(port=0, http_port=0, data_dir=tempfile.mkdtemp()))
...     await s.start()
...     ok = s.http_port > 0
...     await s.stop()
...     return ok
>>> asyncio.run(main())
True
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import ssl
from importlib import resources

import grpc
import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runwatch.service.http.access import COOKIE, HttpAccess, allowed_projects
from runwatch.service.http.payloads import anomaly_json, health, log_json, run_json, step_or_none, suggestions_json
from runwatch.service.http.series import ColumnCache, downsample
from runwatch.service.http.stream import EventStream
from runwatch.service.http.tls_site import HttpsSite
from runwatch.service.store_backends import store_unavailable
from runwatch.service.tokens import Principal
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

log = logging.getLogger("runwatch.service.http")

STATIC = resources.files("runwatch.service.http") / "static"
PAGES = ("/", "/projects/{name:.+}", "/runs/{run_id:.+}", "/compare", "/anomalies")
DEFAULT_WIDTH = 1000
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    """An answer other than 200: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be in [{lo}, {hi}], got {value}")
    return value


def _step_bound(request: web.Request, name: str) -> float | None:
    """A zoom bound: a finite number (``float()`` also reads "nan", "inf" and "1e400", which bound no step
    and which strict JSON cannot echo back in the answer's ``from``/``to``)."""
    raw = request.query.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected a finite step number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name}: expected a finite step number, got {raw!r}")
    return value


def _severity(request: web.Request) -> int:
    raw = request.query.get("min_severity", "")
    if raw == "":
        return 0
    # int() itself decides what is a number: str.isdigit() also passes "²", and digits past int()'s limit.
    try:
        number = int(raw)
    except ValueError:
        number = None
    if number in anomaly_pb2.Severity.values():
        return number
    try:
        return anomaly_pb2.Severity.Value("SEVERITY_" + raw.upper())
    except ValueError:
        raise ApiError(400, f"min_severity: unknown severity {raw!r}; use INFO, WARNING, ERROR or CRITICAL") from None


def _ssl_context(settings) -> ssl.SSLContext | None:
    """HTTPS with the gRPC server's certificate; client certificates required when gRPC requires them."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(settings.tls_client_ca)
    return ctx


def _refusal(principal: Principal | None) -> tuple[str, int] | None:
    """Why the sign-in page turns a token down (message, status); None for a token the dashboard can use.

    A token without the ``read`` scope (an ingest-only one) gets no cookie: with it every page would answer 403.
    """
    if principal is None:
        return "That token is unknown, malformed or revoked.", 401
    if not principal.can("read"):
        return f"Not signed in: {principal.describe()} lacks the 'read' scope the dashboard needs.", 403
    return None


def _login_page(message: str, next_url: str, status: int = 401) -> web.Response:
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>runwatch: sign in</title>
<link rel="stylesheet" href="/static/style.css"></head><body><main class="login">
<h1>runwatch</h1><p>{html.escape(message)}</p>
<form method="post" action="/login"><input type="hidden" name="next" value="{html.escape(next_url)}">
<label>Access token <input type="password" name="token" autocomplete="off" placeholder="rw_..."></label>
<button type="submit">Sign in</button></form>
<p class="hint">A token with the <code>read</code> scope: <code>runwatch tokens create --scope read ...</code></p>
</main></body></html>"""
    return web.Response(text=body, content_type="text/html", status=status)


def _safe_next(url: str) -> str:
    """``url`` when it is a path on this server, else "/": never an open redirect.

    Browsers (and yarl, which writes the ``Location`` header) drop ASCII tab, CR and LF anywhere
    in a URL and blanks before it, and read a backslash as a slash: ``/<tab>/evil.example`` and
    ``/\\evil.example`` are ``//evil.example``, another host. So a control character or a backslash
    anywhere refuses ``url``, and what is left after the leading blanks must be one "/" then no "/".
    """
    if "\\" in url or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        return "/"
    path = url.lstrip()
    return path if path == "/" or (path.startswith("/") and path[1] not in "/\\") else "/"


def _same_server(location: str) -> str:
    """A redirect built from the request's own path: one leading "/", as a browser reads "//host/x" as another host."""
    return "/" + location.lstrip("/")


class Dashboard:
    """The HTTP side of a :class:`~runwatch.service.server.RunwatchServer`: start, serve, stop."""

    def __init__(self, server) -> None:
        self.server = server
        settings = server.settings
        self.ssl = _ssl_context(settings)
        self.access = HttpAccess(server.tokens, secure_cookie=self.ssl is not None)
        self.columns = ColumnCache()
        self.closing = asyncio.Event()
        self.index = (STATIC / "index.html").read_bytes()
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(self._headers)
        r = app.router
        for path in PAGES:
            r.add_get(path, self.page)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_get("/logout", self.logout)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/projects", self.api_projects)
        r.add_get("/api/runs", self.api_runs)
        r.add_get("/api/run", self.api_run)
        r.add_get("/api/series", self.api_series)
        r.add_get("/api/anomalies", self.api_anomalies)
        r.add_get("/api/logs", self.api_logs)
        r.add_get("/api/suggest", self.api_suggest)
        r.add_get("/api/stream", self.api_stream)
        r.add_static("/static/", str(STATIC))
        return app

    async def start(self) -> int:
        """Bind ``http_host:http_port`` and serve; returns the bound port."""
        s = self.server.settings
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        if self.ssl is None:
            site = web.TCPSite(runner, s.http_host, s.http_port, reuse_address=True)
        else:
            site = HttpsSite(runner, s.http_host, s.http_port, self.ssl)  # plain HTTP gets a redirect, not silence
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(f"cannot bind the dashboard to {s.http_host}:{s.http_port}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = site.port if isinstance(site, HttpsSite) else runner.addresses[0][1]
        scheme = "https" if self.ssl else "http"
        log.info(
            "dashboard and /metrics on %s://%s:%d/", scheme, s.http_host, self.port,
            extra={"http_host": s.http_host, "http_port": self.port},
        )  # fmt: skip
        if s.http_exposure_problem:  # allowed only by allow_insecure (see ServiceSettings)
            log.warning(
                "SECURITY: the dashboard on %s:%d runs %s (allow_insecure is set): anyone who can reach it can "
                "read every project's runs", s.http_host, self.port, s.http_exposure_problem,
            )  # fmt: skip
        return self.port

    async def stop(self) -> None:
        self.closing.set()  # event streams end themselves, before the runner waits on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- access -----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        path = request.path
        if path.startswith("/static/") or path in ("/healthz", "/login", "/logout"):
            return await handler(request)
        api = path.startswith("/api/") or path == "/metrics"
        token = request.query.get("token")
        if token is not None and not api and request.method == "GET":
            # A login link: keep the token in a cookie and drop it from the address bar (and history).
            if refused := _refusal(self.access.check_token(token)):
                return _login_page(refused[0], path, refused[1])
            kept = [(k, v) for k, v in request.query.items() if k != "token"]
            response = web.HTTPFound(_same_server(str(request.rel_url.with_query(kept))))
            response.set_cookie(COOKIE, token.strip(), **self.access.cookie_options())
            raise response
        principal = self.access.principal(request.headers, request.cookies)
        if principal is None:
            if api:
                return web.json_response(
                    {"error": "this server needs a token: 'Authorization: Bearer rw_...' or the runwatch_token cookie"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="runwatch"'},
                )
            return _login_page("This runwatch server needs an access token.", str(request.rel_url))
        if not principal.can("read"):
            if api:
                return _json({"error": f"{principal.describe()} lacks the 'read' scope"}, 403)
            # A cookie set before sign-in checked the scope: a page offers to sign in with another token.
            return _login_page(_refusal(principal)[0], str(request.rel_url), 403)
        request["principal"] = principal
        try:
            return await handler(request)
        except ApiError as exc:
            return _json({"error": str(exc)}, exc.status)
        except Exception as exc:
            # The store cannot be reached (the database down, its connection lost): 503 and why, not a bare 500.
            # (Not once a response is under way, an event stream's: that one just ends, and the page reconnects.)
            if request.get("prepared") or (message := store_unavailable(self.server.store.backend, exc)) is None:
                raise
            log.warning("%s: %s", path, message)
            return _json({"error": message}, 503)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        request["prepared"] = True  # its headers are sent: _guard can no longer answer with another status
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)

    def _require_project(self, principal: Principal, project: str) -> None:
        if not principal.may_access(project):
            raise ApiError(403, f"project: {principal.describe()} does not grant project {project or 'default'!r}")

    async def _run_info(self, request: web.Request) -> service_pb2.RunInfo:
        run_id = request.query.get("run", "")
        if not run_id:
            raise ApiError(400, "run: required")
        info = await asyncio.to_thread(self.server.store.get_run, run_id)
        if info is None:
            raise ApiError(404, f"run: no run {run_id!r}")
        principal: Principal = request["principal"]
        if not principal.may_access(info.project):
            raise ApiError(403, f"run: the run belongs to a project {principal.describe()} does not grant")
        return info

    # -- pages ------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.index, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def login_form(self, request: web.Request) -> web.Response:
        return _login_page("Sign in with an access token.", _safe_next(request.query.get("next", "/")), 200)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        token, next_url = str(form.get("token", "")), _safe_next(str(form.get("next", "/")))
        if refused := _refusal(self.access.check_token(token)):
            return _login_page(refused[0], next_url, refused[1])
        response = web.HTTPFound(next_url)
        response.set_cookie(COOKIE, token.strip(), **self.access.cookie_options())
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, self.server.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- API --------------------------------------------------------------------------------

    async def api_projects(self, request: web.Request) -> web.Response:
        principal: Principal = request["principal"]
        rows = await asyncio.to_thread(self.server.store.projects)
        projects = [
            {"name": name, "runs": runs, "running": running or 0, "last_activity": last or 0.0}
            for name, runs, running, last in rows
            if principal.may_access(name)
        ]
        return _json({"projects": projects})

    async def api_runs(self, request: web.Request) -> web.Response:
        project = request.query.get("project", "")
        if not project:
            raise ApiError(400, "project: required")
        self._require_project(request["principal"], project)
        status = request.query.get("status", "").upper()
        code = 0
        if status:
            try:
                code = runs_pb2.RunStatus.Value("RUN_STATUS_" + status)
            except ValueError:
                raise ApiError(400, f"status: unknown status {status!r}") from None
        limit = _int(request, "limit", 500, 1, 10_000)
        store = self.server.store

        def query() -> dict:
            runs = store.list_runs(project, code, limit)
            by_run: dict[str, list] = {}
            for a in store.anomalies(project=project):
                by_run.setdefault(a.run_id, []).append(a)
            return {"runs": [{**run_json(r), "health": health(by_run.get(r.run_id, ()))} for r in runs]}

        return _json(await asyncio.to_thread(query))

    async def api_run(self, request: web.Request) -> web.Response:
        info = await self._run_info(request)
        store = self.server.store
        cols = self.columns.get(info.run_id)

        def query() -> dict:
            cols.refresh(store)
            anomalies = store.anomalies(run_id=info.run_id)
            return {
                "run": run_json(info),
                "health": health(anomalies),
                "anomalies": [anomaly_json(a) for a in anomalies],
                "metrics": cols.names(),
                "last_step": step_or_none(cols.last_step),
            }

        return _json(await asyncio.to_thread(query))

    async def api_series(self, request: web.Request) -> web.Response:
        info = await self._run_info(request)
        lo, hi = _step_bound(request, "from"), _step_bound(request, "to")
        width = _int(request, "width", DEFAULT_WIDTH, 1, 8192)
        wanted = request.query.getall("m", [])
        store = self.server.store
        cols = self.columns.get(info.run_id)

        def query() -> dict:
            cols.refresh(store)
            keep = np.array(sorted({s for a in store.anomalies(run_id=info.run_id) for s in (a.step, a.first_step)}))
            series = {}
            for name in wanted or cols.names():
                curve = cols.curve(name)
                if curve is None:
                    continue
                x, y = downsample(curve[0], curve[1], width, lo, hi, keep)
                series[name] = {"x": x, "y": y, "total": len(curve[0])}
            self.columns.trim()
            return {
                "run": info.run_id,
                "from": lo,
                "to": hi,
                "width": width,
                "last_step": step_or_none(cols.last_step),
                "series": series,
            }

        return _json(await asyncio.to_thread(query))

    async def api_anomalies(self, request: web.Request) -> web.Response:
        principal: Principal = request["principal"]
        min_severity = _severity(request)
        limit = _int(request, "limit", 200, 1, 10_000)
        store = self.server.store
        if request.query.get("run"):
            info = await self._run_info(request)
            found = await asyncio.to_thread(store.anomalies, info.run_id, "", min_severity, limit)
            found.reverse()
        else:
            project = request.query.get("project", "")
            if project:
                self._require_project(principal, project)
            projects = [project] if project else allowed_projects(principal)
            found = await asyncio.to_thread(store.latest_anomalies, limit, projects, min_severity)
        return _json({"anomalies": [anomaly_json(a) for a in found]})

    async def api_logs(self, request: web.Request) -> web.Response:
        info = await self._run_info(request)
        limit = _int(request, "limit", 2000, 1, 100_000)
        offset = _int(request, "offset", 0, 0, 2**62)
        lines = await asyncio.to_thread(self.server.store.latest_log_lines, info.run_id, limit, offset)
        return _json({"logs": [log_json(line) for line in lines]})

    async def api_suggest(self, request: web.Request) -> web.Response:
        principal: Principal = request["principal"]
        if not principal.can("advise"):
            raise ApiError(403, f"{principal.describe()} lacks the 'advise' scope the advisor needs")
        info = await self._run_info(request)
        suggest = service_pb2.SuggestRequest(
            run_id=info.run_id,
            target_metric=request.query.get("target", ""),
            constraints=service_pb2.SuggestConstraints(num_suggestions=_int(request, "num", 3, 1, 20)),
        )
        from runwatch.service.advice import AdviceError

        try:
            response = await asyncio.to_thread(self.server.advice.suggest, suggest)
        except AdviceError as exc:
            raise ApiError(_STATUS.get(exc.code, 500), str(exc)) from None
        except Exception:
            log.exception("dashboard: advisor failed for run %r", info.run_id)
            raise ApiError(500, "the advisor failed (logged by the server)") from None
        return _json(suggestions_json(response))

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        principal: Principal = request["principal"]
        run_id, project = "", request.query.get("project", "")
        if request.query.get("run"):
            run_id = (await self._run_info(request)).run_id
        elif project:
            self._require_project(principal, project)
        stream = EventStream(self, principal, project, run_id, _severity(request), _int(request, "since", 0, -1, 2**62))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await stream.run(response)
        return response
