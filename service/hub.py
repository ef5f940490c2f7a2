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
        self, project: str = "", run_id: str = "", min_severity: int = 0, projects: frozenset[str] | None = None
    ) -> Subscription:
        sub = Subscription(project, run_id, min_severity, projects=projects)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        return len(self._subs)

    def publish(self, anomaly: anomaly_pb2.Anomaly) -> None:
        for sub in self._subs:
            if not sub.matches(anomaly):
                continue
            q = sub.queue
            if q.full():
                q.get_nowait()
                sub.dropped += 1
            q.put_nowait(anomaly)
