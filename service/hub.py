"""Fan-out of anomaly revisions to live watchers (the WatchAnomalies streams)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from runwatch.v1 import anomaly_pb2


@dataclass(eq=False)
class Subscription:
    """One watcher's filter and bounded queue."""

    project: str = ""
    run_id: str = ""
    min_severity: int = 0
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    dropped: int = 0
    projects: frozenset[str] | None = None  # the watcher's token grants only these (None = all)
    local_only: bool = False  # only what this instance raised (alerts: each instance alerts on its own)

    def matches(self, a: anomaly_pb2.Anomaly) -> bool:
        return (
            a.severity >= self.min_severity
            and (not self.project or a.project == self.project)
            and (not self.run_id or a.run_id == self.run_id)
            and (self.projects is None or (a.project or "default") in self.projects)
        )


class AnomalyHub:
    """Delivers each published anomaly to every matching subscription.

    A watcher that falls 10,000 anomalies behind loses the oldest ones (counted
    in ``dropped``) rather than slowing down detection for everyone.
    """

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(
        self,
        project: str = "",
        run_id: str = "",
        min_severity: int = 0,
        projects: frozenset[str] | None = None,
        local_only: bool = False,
    ) -> Subscription:
        sub = Subscription(project, run_id, min_severity, projects=projects, local_only=local_only)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        return len(self._subs)

    def publish(self, anomaly: anomaly_pb2.Anomaly, remote: bool = False) -> None:
        """Queue ``anomaly`` for every matching watcher; ``remote``: raised by another instance sharing the store.

        >>> import asyncio
        >>> async def main():
        ...     hub = AnomalyHub()
        ...     watcher, alerts = hub.subscribe(), hub.subscribe(local_only=True)
        ...     hub.publish(anomaly_pb2.Anomaly(id="a"), remote=True)
        ...     return watcher.queue.qsize(), alerts.queue.qsize()
        >>> asyncio.run(main())
        (1, 0)
        """
        for sub in self._subs:
            if (remote and sub.local_only) or not sub.matches(anomaly):
                continue
            q = sub.queue
            if q.full():
                q.get_nowait()
                sub.dropped += 1
            q.put_nowait(anomaly)
