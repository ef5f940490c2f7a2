"""What detectors report: anomaly kinds, severities and findings.

A *finding* is one detector firing at one step. The alert policy
(:mod:`runwatch.models.alerting`) groups findings into incidents, so one
incident yields one anomaly id however many steps it spans.

Score convention, everywhere in runwatch: **higher = more anomalous**.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AnomalyKind(enum.IntEnum):
    """Kinds of problem; values match ``runwatch.v1.AnomalyKind``."""

    NONFINITE = 1
    LOSS_SPIKE = 2
    DIVERGENCE_PREDICTED = 3
    EXPLODING_GRADIENT = 4
    VANISHING_GRADIENT = 5
    DEAD_UNITS = 6
    SATURATION = 7
    PLATEAU = 8
    OVERFITTING = 9
    STALLED = 10
    LATENCY = 11
    ERROR_RATE = 12
    LOG_PATTERN = 13
    RUN_OUTLIER = 14
    MEMORY_GROWTH = 15
    DATA_BOTTLENECK = 16
    SEQUENCE_OUTLIER = 17
    UPDATE_RATIO = 18
    RUN_FAILED = 19
    ACTIVATION_SPIKE = 20


class Severity(enum.IntEnum):
    """Ordered urgency; values match ``runwatch.v1.Severity``."""

    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4


@dataclass(slots=True)
class Finding:
    """One detector firing at one step.

    Parameters
    ----------
    kind, severity, score
        What was found, how urgent, and how anomalous (higher = more).
    step
        Step of the value that triggered the finding.
    metric
        Primary metric; ``related`` lists other metrics involved.
    explanation
        One line with the numbers that triggered it.
    layer
        Layer name for per-layer findings, else ``""``.
    key
        Incident key within the detector: findings with the same
        ``(detector, key)`` in one run belong to one incident. Defaults to
        ``metric``.
    since
        Step since which the condition has held without a break (defaults to
        ``step``). Block-wise diagnostics report only a few steps of a long
        firing stretch; ``since`` tells the alert policy they are one stretch.
    lines
        Log lines behind a finding read from text (``LOG_PATTERN``), first offending line first.
    folded_into
        ``(detector, kind, key)`` of the incident that fusion made this (INFO) finding part or a
        symptom of; empty otherwise. The monitor turns it into the alert's ``part_of`` incident id.
    """

    kind: AnomalyKind
    severity: Severity
    score: float
    step: int
    metric: str
    explanation: str
    layer: str = ""
    related: tuple[str, ...] = ()
    key: str = ""
    detector: str = ""
    detector_version: str = ""
    wall_time: float = 0.0
    evidence: list[tuple[str, int, float]] = field(default_factory=list)
    since: int = -1
    lines: list[str] = field(default_factory=list)
    folded_into: tuple = ()  # (detector, kind, key) of the incident fusion made this finding part or a symptom of

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.metric
        if self.since < 0 or self.since > self.step:
            self.since = self.step

    @property
    def metrics(self) -> tuple[str, ...]:
        """The primary metric followed by the related ones."""
        return (self.metric, *self.related)
