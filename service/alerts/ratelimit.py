"""Per-route rate limits: a token bucket, and a tally of what it held back.

Notifications over a route's limit are not dropped silently: they are counted
by kind and project, and the next token sends one summary of them.

Examples
--------
>>> now = [0.0]
>>> bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: now[0])
>>> [bucket.take() for _ in range(3)]
[True, True, False]
>>> now[0] = 1.0; bucket.take()   # one token a second
True
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from runwatch.v1 import anomaly_pb2


class TokenBucket:
    """``burst`` tokens at most, refilled continuously at ``per_minute``."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> bool:
        self._refill()
        return self._tokens >= 1.0

    def take(self) -> bool:
        """Spend a token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class SuppressedTally:
    """Notifications a route held back since its last summary."""

    count: int = 0
    since: float = 0.0
    until: float = 0.0
    kinds: Counter = field(default_factory=Counter)
    severities: Counter = field(default_factory=Counter)
    projects: Counter = field(default_factory=Counter)
    runs: list[str] = field(default_factory=list)  # the first few, for the summary's text

    def add(self, a: anomaly_pb2.Anomaly, now: float) -> None:
        if not self.count:
            self.since = now
        self.count += 1
        self.until = now
        self.kinds[anomaly_pb2.AnomalyKind.Name(a.kind).removeprefix("ANOMALY_KIND_")] += 1
        self.severities[anomaly_pb2.Severity.Name(a.severity).removeprefix("SEVERITY_")] += 1
        self.projects[a.project] += 1
        if a.run_id not in self.runs and len(self.runs) < 10:
            self.runs.append(a.run_id)
