"""Alert policy: turn a stream of findings into incidents with stable ids.

Detectors fire on every step a condition holds; users want one alert per
incident. :class:`IncidentTracker` merges findings with the same
``(detector, kind, key)`` into one incident while they keep coming, publishes
a new revision only when the incident gets worse, and opens a new incident
once the old one has been quiet for ``cooldown_steps``.

Incident ids are a hash of run, detector, kind, key and first step, so
replaying the same telemetry yields the same ids (consumers de-duplicate on
them).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import Finding, Severity


class IncidentState(enum.IntEnum):
    """Values match ``runwatch.v1.AnomalyState``."""

    OPEN = 1
    UPDATED = 2
    RESOLVED = 3


class IncidentPolicyConfig(DiagnosticConfig):
    """When findings merge, and when a merged incident is re-published.

    Parameters
    ----------
    cooldown_steps
        An incident quiet for more than this many steps is closed; the next
        finding opens a new one.
    rescore_factor
        Re-publish an open incident when its score reaches this multiple of
        the last published score (severity escalation always re-publishes).
    min_update_gap_steps
        At most one score-driven re-publication per this many steps.
    """

    cooldown_steps: int = 200
    rescore_factor: float = 2.0
    min_update_gap_steps: int = 50


@dataclass(slots=True)
class Alert:
    """A published incident revision."""

    incident_id: str
    revision: int
    state: IncidentState
    first_step: int
    last_step: int
    occurrences: int
    finding: Finding
    part_of: str = ""  # id of the open incident the finding was folded under (Finding.folded_into), or ""


@dataclass(slots=True)
class _Incident:
    id: str
    first_step: int
    last_step: int
    occurrences: int
    revision: int
    published_severity: Severity
    published_score: float
    published_step: int


def incident_id(run_id: str, finding: Finding, first_step: int) -> str:
    """Deterministic id of the incident a finding opens."""
    raw = f"{run_id}|{finding.detector}|{finding.kind.name}|{finding.key}|{first_step}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


class IncidentTracker:
    """Per-run incident bookkeeping.

    Examples
    --------
    >>> from runwatch.models.findings import AnomalyKind
    >>> t = IncidentTracker("run-1")
    >>> f = lambda step, sev: Finding(AnomalyKind.LOSS_SPIKE, sev, 5.0, step, "loss", "spike", detector="loss_spike")
    >>> a = t.observe(f(10, Severity.WARNING))
    >>> a.state.name, a.revision
    ('OPEN', 1)
    >>> t.observe(f(11, Severity.WARNING)) is None   # same incident, no worse
    True
    >>> t.observe(f(12, Severity.CRITICAL)).state.name   # escalation re-publishes
    'UPDATED'
    >>> t.observe(f(500, Severity.WARNING)).first_step   # after the cool-down: new incident
    500
    >>> late = f(900, Severity.WARNING); late.since = 501   # held since 501: same stretch
    >>> t.observe(late) is None
    True
    """

    def __init__(self, run_id: str, config: IncidentPolicyConfig | None = None) -> None:
        self.run_id = run_id
        self.config = config or IncidentPolicyConfig()
        self._open: dict[tuple[str, int, str], _Incident] = {}

    def observe(self, finding: Finding, min_cooldown: int = 0) -> Alert | None:
        """Merge one finding; return the revision to publish, or None.

        ``min_cooldown`` raises the cool-down for this finding: a run logged every 500 steps finds its condition
        again at the next logged step, 500 steps on, which is no quieter than a dense run's next step.
        """
        key = (finding.detector, int(finding.kind), finding.key)
        inc = self._open.get(key)
        cfg = self.config
        if inc is None or finding.since - inc.last_step > max(cfg.cooldown_steps, min_cooldown):
            inc = _Incident(
                id=incident_id(self.run_id, finding, finding.step),
                first_step=finding.step,
                last_step=finding.step,
                occurrences=1,
                revision=1,
                published_severity=finding.severity,
                published_score=finding.score,
                published_step=finding.step,
            )
            self._open[key] = inc
            return Alert(inc.id, 1, IncidentState.OPEN, inc.first_step, inc.last_step, 1, finding)
        inc.last_step = max(inc.last_step, finding.step)
        inc.occurrences += 1
        escalated = finding.severity > inc.published_severity
        rescored = (
            finding.score >= cfg.rescore_factor * inc.published_score > 0
            and finding.step - inc.published_step >= cfg.min_update_gap_steps
        )
        if not (escalated or rescored):
            return None
        inc.revision += 1
        inc.published_severity = max(inc.published_severity, finding.severity)
        inc.published_score = max(inc.published_score, finding.score)
        inc.published_step = finding.step
        finding.severity = max(finding.severity, inc.published_severity)
        return Alert(inc.id, inc.revision, IncidentState.UPDATED, inc.first_step, inc.last_step, inc.occurrences, finding)

    def open_id(self, detector: str, kind: int, key: str) -> str:
        """The id of the incident open under ``(detector, kind, key)``, or "" when none is."""
        inc = self._open.get((detector, kind, key))
        return inc.id if inc is not None else ""

    @property
    def open_incidents(self) -> int:
        return len(self._open)

    def state_dict(self) -> list[list]:
        """JSON-safe list of the open incidents."""
        return [
            [det, kind, key, i.id, i.first_step, i.last_step, i.occurrences, i.revision,
             int(i.published_severity), i.published_score, i.published_step]
            for (det, kind, key), i in self._open.items()
        ]

    def load_state_dict(self, rows: list[list]) -> None:
        self._open = {
            (str(det), int(kind), str(key)): _Incident(
                str(iid), int(first), int(last), int(occ), int(rev), Severity(int(sev)), float(score), int(pstep)
            )
            for det, kind, key, iid, first, last, occ, rev, sev, score, pstep in rows
        }
