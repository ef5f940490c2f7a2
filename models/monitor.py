"""Run one run's telemetry through a set of diagnostics and the alert policy.

:class:`RunMonitor` is the single code path from metric values to alerts: the
service's pipeline, the evaluation harness and the tests all use it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from runwatch.models.alerting import Alert, IncidentPolicyConfig, IncidentTracker
from runwatch.models.base import Diagnostic, MetricHandler
from runwatch.models.findings import Finding

_NO_HANDLERS: tuple[MetricHandler, ...] = ()


class RunMonitor:
    """Routes each metric value to the diagnostics that watch it.

    Parameters
    ----------
    run_id
        Run being watched (used for incident ids).
    diagnostics
        Fresh diagnostic instances owned by this run.
    policy
        Incident policy configuration.
    evidence_len
        How many recent values per metric to keep as evidence.

    Examples
    --------
    >>> from runwatch.models.diagnostics.nonfinite import NonFiniteDiagnostic
    >>> m = RunMonitor("r1", [NonFiniteDiagnostic()])
    >>> m.observe(1, 0.0, {"loss": 2.3})
    []
    >>> [a.finding.kind.name for a in m.observe(2, 0.0, {"loss": float("nan")})]
    ['NONFINITE']
    """

    def __init__(
        self,
        run_id: str,
        diagnostics: Iterable[Diagnostic],
        policy: IncidentPolicyConfig | None = None,
        evidence_len: int = 32,
    ) -> None:
        self.run_id = run_id
        self.diagnostics = list(diagnostics)
        self.incidents = IncidentTracker(run_id, policy)
        self.evidence_len = evidence_len
        self.last_step = -1
        self.last_wall_time = 0.0
        self._routes: dict[str, tuple[tuple[Diagnostic, MetricHandler], ...]] = {}
        self._windows: dict[str, deque] = {}

    def _route(self, metric: str) -> tuple[tuple[Diagnostic, MetricHandler], ...]:
        pairs = []
        for diag in self.diagnostics:
            h = diag.handler(metric)
            if h is not None:
                pairs.append((diag, h))
        routes = tuple(pairs)
        self._routes[metric] = routes
        self._windows[metric] = deque(maxlen=self.evidence_len)
        return routes

    def observe(self, step: int, wall_time: float, metrics: Mapping[str, float]) -> list[Alert]:
        """Feed one event; return the alerts (incident revisions) it raised."""
        routes = self._routes
        windows = self._windows
        findings: list[tuple[Diagnostic, Finding]] | None = None
        for name, value in metrics.items():
            pairs = routes.get(name)
            if pairs is None:
                pairs = self._route(name)
            windows[name].append((step, value))
            for diag, handle in pairs:
                f = handle(step, wall_time, value)
                if f is not None:
                    if findings is None:
                        findings = []
                    findings.append((diag, f))
        if step > self.last_step:
            self.last_step = step
        self.last_wall_time = wall_time
        if findings is None:
            return []
        return self._alerts(findings, wall_time)

    def idle(self, now: float, last_seen: float | None = None) -> list[Alert]:
        """Give time-based diagnostics a chance to fire (call periodically).

        ``last_seen`` is when the run last sent anything, on the same clock as
        ``now`` (the service passes its own receive time so client clock skew
        cannot fake a stall); it defaults to the newest event's wall time.
        """
        seen = self.last_wall_time if last_seen is None else last_seen
        found = []
        for diag in self.diagnostics:
            f = diag.on_idle(now, seen, self.last_step)
            if f is not None:
                found.append((diag, f))
        return self._alerts(found, now) if found else []

    def knows(self, metric: str) -> bool:
        """Whether ``metric`` has been routed already (i.e. was seen and validated before)."""
        return metric in self._routes

    def evidence(self, metrics: Iterable[str]) -> list[tuple[str, int, float]]:
        """Recent ``(metric, step, value)`` points of the given metrics."""
        out = []
        for name in metrics:
            for step, value in self._windows.get(name, ()):
                out.append((name, step, value))
        return out

    def _alerts(self, findings: list[tuple[Diagnostic, Finding]], wall_time: float) -> list[Alert]:
        alerts = []
        for diag, f in findings:
            f.detector = diag.name
            f.detector_version = diag.version
            f.wall_time = f.wall_time or wall_time
            alert = self.incidents.observe(f)
            if alert is not None:
                f.evidence = self.evidence(f.metrics)
                alerts.append(alert)
        return alerts
