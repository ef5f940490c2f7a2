"""Who may call what: the scope each RPC needs, and the server interceptor that checks tokens.

Every RPC needs one scope (see :data:`METHOD_SCOPES`); health checks need none,
so load balancers can probe without a token. Server reflection needs ``read``.
A method this table does not know needs ``admin``, so an RPC added later is
closed until it is given a scope.

The interceptor checks *who* calls and *which scope*: a missing, malformed,
unknown or revoked token is ``UNAUTHENTICATED``; a valid token without the
scope is ``PERMISSION_DENIED``. Which *projects* a call may touch depends on
its data (the runs in a batch, the run a query names), so the servicers check
that with :meth:`Access.principal` and :meth:`Access.require_project`.

Examples
--------
>>> required_scope("/runwatch.v1.IngestService/StreamEvents")
'ingest'
>>> required_scope("/grpc.health.v1.Health/Check") is None
True
>>> required_scope("/runwatch.v1.Future/Unknown")
'admin'
"""

from __future__ import annotations

import logging
import time

import grpc

from runwatch.service.tokens import ANYONE, Principal, TokenStore

log = logging.getLogger("runwatch.service.auth")

METHOD_SCOPES: dict[str, str] = {
    "/runwatch.v1.IngestService/Ingest": "ingest",
    "/runwatch.v1.IngestService/StreamEvents": "ingest",
    "/runwatch.v1.WatchService/WatchAnomalies": "read",
    "/runwatch.v1.RunService/GetRun": "read",
    "/runwatch.v1.RunService/ListRuns": "read",
    "/runwatch.v1.RunService/GetMetrics": "read",
    "/runwatch.v1.RunService/ListAnomalies": "read",
    "/runwatch.v1.AdvisorService/Suggest": "advise",
}
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)
# Reflection only describes the (public) schema, but still needs a token: no anonymous probing.
READ_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")

NO_TOKEN = (
    "no token: this server needs 'authorization: Bearer rw_...' call metadata (RUNWATCH_TOKEN for the SDK and CLI)"
)
BAD_TOKEN = "unknown, malformed or revoked token"


def required_scope(method: str) -> str | None:
    """The scope a full method name (``/package.Service/Method``) needs; None = no token needed."""
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method.startswith(READ_PREFIXES):
        return "read"
    return METHOD_SCOPES.get(method, "admin")


def authorization_of(metadata) -> str | None:
    """The ``authorization`` value of call metadata (a sequence of key/value pairs), if any."""
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with ``code`` at once."""

    async def refuse(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(code, message)

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class _RateLimitedLog:
    """At most one WARNING per ``period`` seconds, counting the refusals in between (no log flood)."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last = 0.0
        self._since = 0

    def __call__(self, message: str, *args) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= self.period:
            log.warning(message + " (%d refused call(s) since the last such message)", *args, self._since)
            self._last = now
            self._since = 0


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid token, or whose token lacks the method's scope.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from runwatch.service.tokens import create_token
    >>> path = Path(tempfile.mkdtemp()) / "tokens.json"
    >>> _ = create_token(path, projects=["alpha"], scopes=["read"])
    >>> server = grpc.aio.server(interceptors=[AuthInterceptor(TokenStore(path))])  # doctest: +SKIP
    """

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens
        self._warn = _RateLimitedLog()

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        scope = required_scope(method)
        handler = await continuation(handler_call_details)
        if scope is None or handler is None:  # public, or no such method (UNIMPLEMENTED)
            return handler
        header = authorization_of(handler_call_details.invocation_metadata)
        principal = self.tokens.authenticate(header)
        if principal is None:
            self._warn("refused %s: %s", method, "no token" if header is None else BAD_TOKEN)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, NO_TOKEN if header is None else BAD_TOKEN)
        if not principal.can(scope):
            self._warn("refused %s: token %r lacks scope %r", method, principal.token_id, scope)
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal.describe()} lacks the {scope!r} scope that {method} needs",
            )
        return handler


class Access:
    """Per-call access decisions for the servicers; with no token store, everyone may do everything.

    Examples
    --------
    >>> Access(None).enabled
    False
    """

    def __init__(self, tokens: TokenStore | None) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller (the interceptor already checked its token and scope); ``ANYONE`` when auth is off."""
        if self.tokens is None:
            return ANYONE
        principal = self.tokens.authenticate(authorization_of(context.invocation_metadata()))
        if principal is None:  # revoked between the interceptor and here
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN)
        return principal

    def still_valid(self, principal: Principal) -> bool:
        """Whether a long call (a stream) may go on: its token was neither revoked nor changed."""
        return self.tokens is None or self.tokens.still_valid(principal)

    async def require_project(
        self, context: grpc.aio.ServicerContext, principal: Principal, project: str, field: str
    ) -> None:
        """Abort with ``PERMISSION_DENIED`` (naming ``field``) unless ``principal`` covers ``project``.

        ``field`` "project" is a project the caller named; any other field found
        the project through a run, whose project is then not told.
        """
        if principal.may_access(project):
            return
        if field == "project":
            message = f"project: {principal.describe()} does not grant project {project or 'default'!r}"
        else:
            message = f"{field}: the run belongs to a project {principal.describe()} does not grant"
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
