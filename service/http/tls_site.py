"""The dashboard's HTTPS listener, which answers a plain-HTTP request with a redirect to HTTPS.

aiohttp's ``TCPSite`` with an SSL context closes a connection whose first bytes are not a
TLS handshake, so ``http://host:port/`` typed for an HTTPS dashboard gets an empty reply
(curl: "Empty reply from server"; a browser: "the connection was reset") and nothing says
why. This listener peeks at each connection's first byte before any TLS: a handshake
record (``0x16``) is handed to the aiohttp server with TLS, as ``TCPSite`` would; anything
else gets ``301 Moved Permanently`` to the same path under ``https://`` (what nginx calls
"plain HTTP request sent to HTTPS port", answered the friendly way) and is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl

from aiohttp import web

log = logging.getLogger("runwatch.http")

#: Seconds a new connection may take to send its first byte, and a plain-HTTP one its request head.
FIRST_BYTE_TIMEOUT_S = 10.0
#: The most of a plain-HTTP request head read to find its path and Host.
MAX_HEAD_BYTES = 8192
_TLS_HANDSHAKE = 0x16


def redirect_for(head: bytes, port: int) -> bytes:
    """The ``301`` answer to a plain-HTTP request head sent to the HTTPS port ``port``.

    Examples
    --------
    >>> print(redirect_for(b"GET /runs?p=a HTTP/1.1\\r\\nHost: box:8080\\r\\n\\r\\n", 8080).decode().splitlines()[1])
    Location: https://box:8080/runs?p=a
    >>> redirect_for(b"\\x00\\x01", 8080).split(b"\\r\\n")[0]
    b'HTTP/1.1 400 Bad Request'
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    host = next((line[5:].strip() for line in lines[1:] if line[:5].lower() == b"host:"), b"")
    path = parts[1] if len(parts) == 3 and parts[1].startswith(b"/") else b""
    valid_host = host and all(33 <= c < 127 and c not in b'/\\?#@"<>' for c in host)
    if not path or not valid_host or any(c < 33 or c == 127 for c in path):
        body = b"This server speaks HTTPS only.\n"
        return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    if b":" not in host.rsplit(b"]", 1)[-1]:  # no port in Host: the one the request reached
        host += b":%d" % port
    location = b"https://" + host + path
    body = b"This server speaks HTTPS: " + location + b"\n"
    return (b"HTTP/1.1 301 Moved Permanently\r\nLocation: %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (location, len(body), body))  # fmt: skip


class HttpsSite(web.BaseSite):
    """``TCPSite(runner, host, port, ssl_context=...)``, redirecting plain HTTP to HTTPS."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task] = []
        self._routing: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return self._listeners[0].getsockname()[1] if self._listeners else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        port = self._port
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                sock.listen(128)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRNOTAVAIL:  # that address family is not enabled here (as asyncio does)
                    continue
                self._close_listeners()
                raise
            port = sock.getsockname()[1]  # port 0: the other addresses take the one the first got
            self._listeners.append(sock)
        if not self._listeners:
            raise OSError(errno.EADDRNOTAVAIL, f"no address of {self._host!r} can be bound")
        self._accepting = [asyncio.create_task(self._accept(sock)) for sock in self._listeners]

    async def stop(self) -> None:
        for task in (*self._accepting, *self._routing):
            task.cancel()
        for task in (*self._accepting, *self._routing):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._close_listeners()
        await super().stop()

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: the listener itself is fine
                log.warning("dashboard: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._route(conn))
            self._routing.add(task)
            task.add_done_callback(self._routing.discard)

    async def _route(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            first = await asyncio.wait_for(_peek(loop, conn), FIRST_BYTE_TIMEOUT_S)
            if first and first[0] == _TLS_HANDSHAKE:
                server = self._runner.server
                await loop.connect_accepted_socket(server, conn, ssl=self._ssl_context)
                return
            if first:
                head = await asyncio.wait_for(_read_head(loop, conn), FIRST_BYTE_TIMEOUT_S)
                await loop.sock_sendall(conn, redirect_for(head, self.port))
        except (OSError, ssl.SSLError, TimeoutError):  # a client that went away or never spoke
            pass
        except asyncio.CancelledError:
            conn.close()
            raise
        conn.close()


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The connection's first byte, left unread (b"" if it closed first)."""
    while True:
        try:
            return conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())


def _wake(readable: asyncio.Future) -> None:
    if not readable.done():  # a reader callback already queued when the waiter removed it must not fail
        readable.set_result(None)


async def _read_head(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """A plain-HTTP request head, up to its blank line or :data:`MAX_HEAD_BYTES`."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_HEAD_BYTES:
        chunk = await loop.sock_recv(conn, MAX_HEAD_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head
