"""Run a :class:`RunwatchServer` on its own thread and event loop.

Used by ``runwatch demo`` (train in the main thread, serve beside it) and by
the tests (synchronous gRPC clients against a real server on loopback).
"""

from __future__ import annotations

import asyncio
import threading

from runwatch.service.server import RunwatchServer
from runwatch.service.settings import ServiceSettings


class BackgroundServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager).

    Examples
    --------
    >>> import tempfile
    >>> with BackgroundServer(ServiceSettings(port=0, data_dir=tempfile.mkdtemp())) as srv:
    ...     srv.target.startswith("127.0.0.1:")
    True
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.server: RunwatchServer | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runwatch-server", daemon=True)

    @property
    def target(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def call(self, coro, timeout: float = 60.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> BackgroundServer:
        self._thread.start()

        async def boot() -> int:
            self.server = RunwatchServer(self.settings)
            return await self.server.start()

        self.port = self.call(boot())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(grace=1.0))
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
