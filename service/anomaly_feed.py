"""Anomalies other instances committed to a shared PostgreSQL store, as they commit (LISTEN/NOTIFY).

Every instance's WatchAnomalies streams what its own pipeline raises through
the hub at once. With a shared PostgreSQL store, a trigger on ``anomalies``
sends ``NOTIFY runwatch_anomalies, '<revision> <id>'`` for each stored
revision; PostgreSQL delivers it to listeners only once the writing
transaction commits, so a watcher never sees a revision a rollback undid.
:class:`AnomalyFeed` listens on its own connection, skips notifications from
this instance's writer connections (its watchers already had those from the
hub), reads the record by id and hands it to ``deliver`` (called on the
feed's thread).

The feed is live only: revisions committed while its connection is down are
not replayed (``WatchAnomalies`` with ``include_history``, or ``ListAnomalies``,
read them from the store).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from runwatch.service.store_backends import PostgresBackend
from runwatch.v1 import anomaly_pb2

log = logging.getLogger("runwatch.store")

CHANNEL = "runwatch_anomalies"
#: Anomaly ids whose last delivered revision is remembered (a later notification of the same revision is skipped).
REMEMBERED = 100_000
RECONNECT_S = 1.0


class AnomalyFeed:
    """A thread delivering anomaly revisions committed by other instances.

    ``fetch(ids)`` reads the stored records of anomaly ids (the store's reader);
    ``deliver(anomaly)`` receives each new revision once.

    Examples
    --------
    Built by :meth:`runwatch.service.store.RunStore.follow_anomalies`, e.g. in the server::

        feed = store.follow_anomalies(lambda a: loop.call_soon_threadsafe(hub.publish, a, True))
        ...
        feed.close()
    """

    def __init__(
        self,
        backend: PostgresBackend,
        fetch: Callable[[list[str]], list[anomaly_pb2.Anomaly]],
        deliver: Callable[[anomaly_pb2.Anomaly], None],
    ) -> None:
        self.backend = backend
        self._fetch = fetch
        self._deliver = deliver
        self._delivered: OrderedDict[str, int] = OrderedDict()
        self._stop = threading.Event()
        self._conn: Any = backend.connect_listener()
        self._conn.execute(f"LISTEN {CHANNEL}")
        self.delivered = 0  # revisions handed to deliver (for tests and logs)
        self._thread = threading.Thread(target=self._loop, name="runwatch-anomaly-feed", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):  # closing a broken connection may fail; nothing to do about it
            self._conn.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                pending: dict[str, int] = {}
                # stop_after=1: deliver as soon as a packet of notifications arrives (the timeout checks _stop).
                for note in self._conn.notifies(timeout=0.5, stop_after=1):
                    self._note(note, pending)
                if pending:
                    self._publish(pending)
            except Exception as exc:  # noqa: BLE001 - a lost connection: reconnect, never end the feed
                if self._stop.is_set():
                    return
                log.warning("anomaly feed: %s; reconnecting in %.0f s", str(exc).strip(), RECONNECT_S)
                self._stop.wait(RECONNECT_S)
                self._reconnect()

    def _note(self, note: Any, pending: dict[str, int]) -> None:
        if note.channel != CHANNEL or self.backend.own_pid(note.pid):
            return
        revision, _, anomaly_id = note.payload.partition(" ")
        pending[anomaly_id] = max(pending.get(anomaly_id, -1), int(revision))

    def _publish(self, pending: dict[str, int]) -> None:
        for a in self._fetch(sorted(pending)):
            if self._delivered.get(a.id, -1) >= a.revision:
                continue  # an earlier notification already delivered this revision (or a later one)
            self._delivered[a.id] = a.revision
            self._delivered.move_to_end(a.id)
            if len(self._delivered) > REMEMBERED:
                self._delivered.popitem(last=False)
            self.delivered += 1
            self._deliver(a)

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):  # the old connection is gone either way
            self._conn.close()
        try:
            self._conn = self.backend.connect_listener()
            self._conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - try again on the next round
            log.warning("anomaly feed: %s", str(exc).strip())
