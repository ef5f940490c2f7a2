"""Which routes an anomaly revision matches, and whether it is news for a route.

Detectors fire per step; the incident tracker (``runwatch.models.alerting``)
already merges findings into incidents with stable ids and revisions. A route
then sends one notification when an incident first matches it (``opened``),
and later revisions only as updates: ``escalated`` when the severity rose,
``resolved`` when the incident closed, ``updated`` for other revisions when
the route asks for ``all``. A revision seen before (a redelivery, or a replay
after a Kafka rebalance on the same instance) is never sent twice.

Examples
--------
>>> from runwatch.service.alerts.config import Route
>>> from runwatch.v1 import anomaly_pb2 as pb
>>> route = MatchingRoute(Route(name="r", projects=["nlp-*"], min_severity="ERROR", sinks=["s"]))
>>> a = pb.Anomaly(id="i1", project="nlp-bert", kind=pb.ANOMALY_KIND_LOSS_SPIKE, severity=pb.SEVERITY_WARNING,
...                revision=1, state=pb.ANOMALY_STATE_OPEN)
>>> route.matches(a)   # below the route's severity
False
>>> ledger = IncidentLedger()
>>> b = pb.Anomaly(); b.CopyFrom(a); b.severity, b.revision, b.state = pb.SEVERITY_ERROR, 2, pb.ANOMALY_STATE_UPDATED
>>> route.matches(b), ledger.decide(route, b)   # first time it matches: it opens here
(True, ('opened', 0))
>>> ledger.decide(route, b) is None   # the same revision again
True
>>> c = pb.Anomaly(); c.CopyFrom(b); c.severity, c.revision = pb.SEVERITY_CRITICAL, 3
>>> ledger.decide(route, c)
('escalated', 3)
"""

from __future__ import annotations

from collections import OrderedDict
from fnmatch import fnmatchcase

from runwatch.service.alerts.config import SEVERITIES, Route
from runwatch.v1 import anomaly_pb2

OPENED, ESCALATED, UPDATED, RESOLVED = "opened", "escalated", "updated", "resolved"


class MatchingRoute:
    """A :class:`Route` with its filters compiled for the hot path."""

    __slots__ = ("config", "kinds", "min_severity", "name", "projects")

    def __init__(self, config: Route) -> None:
        self.config = config
        self.name = config.name
        self.projects = tuple(config.projects)
        self.min_severity = SEVERITIES.index(config.min_severity) + 1  # Severity enum values start at INFO = 1
        self.kinds = frozenset(anomaly_pb2.AnomalyKind.Value("ANOMALY_KIND_" + k) for k in config.kinds)

    def matches(self, a: anomaly_pb2.Anomaly) -> bool:
        return (
            a.severity >= self.min_severity
            and (not self.kinds or a.kind in self.kinds)
            and any(fnmatchcase(a.project or "default", p) for p in self.projects)
        )


class IncidentLedger:
    """What each route last sent per incident: ``(revision, severity)``, for the ``capacity`` newest incidents.

    An incident forgotten (beyond ``capacity``) and revised later is sent as
    ``opened`` again: the bound keeps a long-running server's memory flat.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def decide(self, route: MatchingRoute, a: anomaly_pb2.Anomaly) -> tuple[str, int] | None:
        """``(action, previous severity)`` to notify, or None; records the revision either way."""
        key = (route.name, a.id)
        last = self._seen.get(key)
        if last is not None and a.revision <= last[0]:
            return None
        if last is None:
            if a.state == anomaly_pb2.ANOMALY_STATE_RESOLVED:
                return None  # never notified here: nothing to resolve
            self._remember(key, a.revision, a.severity)
            return OPENED, 0
        _, severity = last
        self._remember(key, a.revision, max(severity, a.severity))
        policy = route.config.updates
        if policy == "none":
            return None
        if a.state == anomaly_pb2.ANOMALY_STATE_RESOLVED:
            return RESOLVED, severity
        if a.severity > severity:
            return ESCALATED, severity
        if policy == "all":
            return UPDATED, severity
        return None

    def _remember(self, key: tuple[str, str], revision: int, severity: int) -> None:
        self._seen[key] = (revision, severity)
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
