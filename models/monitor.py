"""Run one run's telemetry through a set of diagnostics and the alert policy.

:class:`RunMonitor` is the single code path from metric values to alerts: the
service's pipeline, the evaluation harness and the tests all use it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from runwatch.models.alerting import Alert, IncidentPolicyConfig, IncidentTracker
from runwatch.models.base import Diagnostic, RunContext
from runwatch.models.block import Column, MetricBlock
from runwatch.models.findings import Finding
from runwatch.models.fusion import FindingFusion, FusionConfig
from runwatch.models.metric_names import DetectorNames

#: Columns kept per metric for evidence before the older ones are merged into one.
MAX_EVIDENCE_COLUMNS = 8
#: Blocks received before their columns are filed as evidence (at most; ``evidence_len`` events file them too).
UNFILED_BLOCKS = 8
#: Gaps between logged steps remembered for the logging interval (their median).
STEP_GAPS = 16
#: An incident's cool-down is at least this many logging intervals: a run logged every 500 steps finds a held
#: condition again 500 steps on, and its next finding is the same stretch, not a new incident.
COOLDOWN_GAPS = 3


class _External:
    """Name and version of a detector that reports through :meth:`RunMonitor.report`."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


class RunMonitor:
    """Feeds a run's metric blocks to its diagnostics and merges findings into incidents.

    Parameters
    ----------
    run_id
        Run being watched (used for incident ids).
    diagnostics
        Fresh diagnostic instances owned by this run.
    policy
        Incident policy configuration.
    evidence_len
        How many recent values per metric an anomaly carries as evidence.
    fusion
        How learned normality gates the rule findings (:mod:`runwatch.models.fusion`);
        None leaves findings as the diagnostics report them.
    context
        The run's project and the per-project models (:meth:`bind`); None = no project, shipped models.

    The diagnostics read the run's metrics under runwatch's names (``train_loss`` as
    ``loss``, ``learning_rate`` as ``lr``: :class:`~runwatch.models.metric_names.DetectorNames`);
    findings and their evidence name the metrics as the run logged them.

    Examples
    --------
    >>> from runwatch.models.diagnostics.nonfinite import NonFiniteDiagnostic
    >>> m = RunMonitor("r1", [NonFiniteDiagnostic()])
    >>> m.observe(1, 0.0, {"train_loss": 2.3})
    []
    >>> [(a.finding.kind.name, a.finding.metric) for a in m.observe(2, 0.0, {"train_loss": float("nan")})]
    [('NONFINITE', 'train_loss')]
    """

    def __init__(
        self,
        run_id: str,
        diagnostics: Iterable[Diagnostic],
        policy: IncidentPolicyConfig | None = None,
        evidence_len: int = 32,
        fusion: FusionConfig | None = None,
        context: RunContext | None = None,
    ) -> None:
        self.run_id = run_id
        self.diagnostics = list(diagnostics)
        self.names = DetectorNames()
        self.context = RunContext()
        if context is not None:
            self.bind(context)
        # The worst severity published per anomaly kind: whether a finished run counts as healthy.
        self.severities: dict[int, int] = {}
        self.incidents = IncidentTracker(run_id, policy)
        self.evidence_len = evidence_len
        self.last_step = -1
        self.last_wall_time = 0.0
        # The latest gaps between the run's logged steps: the alert policy's cool-down is at least a few of them.
        self._step_gaps: deque[int] = deque(maxlen=STEP_GAPS)
        # Per metric, the most recent columns (at most evidence_len of them, each non-empty),
        # kept by reference: evidence is only assembled when an alert is raised.
        self._recent: dict[str, deque[Column]] = {}
        self._recent_points: dict[str, int] = {}  # points held in each deque
        # Blocks not yet split into ``_recent`` (at most UNFILED_BLOCKS of them, or evidence_len events): an SDK
        # flushing every step sends one-event blocks, filed together rather than one by one.
        self._unfiled: list[MetricBlock] = []
        self._unfiled_points = 0
        self.fusion = FindingFusion(fusion) if fusion is not None else None
        gates = [getattr(d, "learned_normal", None) for d in self.diagnostics]
        self._learned_normal = next((g for g in gates if g is not None), None)
        calm = [getattr(d, "loss_calm", None) for d in self.diagnostics]
        self._loss_calm = next((c for c in calm if c is not None), None)
        fell = [getattr(d, "loss_fell", None) for d in self.diagnostics]
        self._loss_fell = next((c for c in fell if c is not None), None)

    def bind(self, context: RunContext) -> None:
        """Set the run's project (and per-project models) for every diagnostic: at opening, or when a RunStart moves it."""
        self.context = context
        for diag in self.diagnostics:
            diag.bind(context)

    def observe(self, step: int, wall_time: float, metrics: Mapping[str, float]) -> list[Alert]:
        """Feed one event; return the alerts (incident revisions) it raised."""
        return self.observe_block(MetricBlock.single(step, wall_time, metrics))

    def observe_block(self, block: MetricBlock) -> list[Alert]:
        """Feed one block of events (step order); return the alerts it raised."""
        block = self.names.rename(block)
        found: list[tuple[Diagnostic, Finding]] = []
        for diag in self.diagnostics:
            findings = diag.observe_block(block)
            if findings:
                found.extend((diag, f) for f in findings)
        if len(block):
            self._unfiled.append(block)
            self._unfiled_points += len(block)
            if self._unfiled_points >= self.evidence_len or len(self._unfiled) >= UNFILED_BLOCKS:
                self._file_evidence()
            last = int(block.steps[-1])
            self._note_gaps(block.steps)
            self.last_step = max(self.last_step, last)
            self.last_wall_time = float(block.wall_times[-1])
        if not found:
            return []
        if len(found) > 1:
            found.sort(key=lambda pair: pair[1].step)
        if self.fusion is not None:
            for diag, f in found:  # fusion remembers its root incident by detector, kind and key
                f.detector = diag.name
            self.fusion.apply([f for _, f in found], self._learned_normal, self._loss_calm, self._loss_fell)
        return self._alerts(found, self.last_wall_time)

    def report(self, findings: list[Finding], wall_time: float | None = None) -> list[Alert]:
        """Merge findings made outside the diagnostics (e.g. from log text) into incidents.

        Each finding names its ``detector``; the alert policy treats it like any other.
        """
        if not findings:
            return []
        by_name = {}
        for f in findings:
            by_name.setdefault(f.detector, _External(f.detector, f.detector_version))
        return self._alerts(
            [(by_name[f.detector], f) for f in findings], self.last_wall_time if wall_time is None else wall_time
        )

    def _file_evidence(self) -> None:
        """File the blocks received since the last call into ``_recent``, one column per metric."""
        blocks, self._unfiled, self._unfiled_points = self._unfiled, [], 0
        if len(blocks) > 1 and self._file_matrices(blocks):
            return
        by_name: dict[str, list[Column]] = {}
        for b in blocks:
            for name, col in b.columns.items():
                by_name.setdefault(name, []).append(col)
        # Metrics logged with the same events share their blocks' step and time arrays: join those once.
        joined: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        for name, cols in by_name.items():
            if len(cols) == 1:
                self._remember(name, cols[0])
                continue
            key = tuple(id(c.steps) for c in cols) + tuple(id(c.wall_times) for c in cols)
            axes = joined.get(key)
            if axes is None:
                axes = joined[key] = (np.concatenate([c.steps for c in cols]), np.concatenate([c.wall_times for c in cols]))
            self._remember(name, Column(axes[0], np.concatenate([c.values for c in cols]), axes[1]))

    def _file_matrices(self, blocks: list[MetricBlock]) -> bool:
        """:meth:`_file_evidence` for small blocks that each log the same names at every event: their matrices
        joined once, each metric's column a view of it (the same values, no per-metric joins). False, doing
        nothing, when they do not."""
        first = blocks[0]
        names = tuple(first.columns)
        if any(b.matrix is None or (b is not first and tuple(b.columns) != names) for b in blocks):
            return False
        values = np.concatenate([b.matrix for b in blocks])
        steps = np.concatenate([b.steps for b in blocks])
        walls = np.concatenate([b.wall_times for b in blocks])
        for j, name in enumerate(names):
            self._remember(name, Column(steps, values[:, j], walls))
        return True

    def _remember(self, name: str, col: Column) -> None:
        """Keep the newest block's column whole and ``evidence_len`` points before it, no more.

        A finding anywhere in the newest block needs the points before it; older ones never are,
        and keeping whole old blocks would grow a run's memory with its batch sizes.
        """
        q = self._recent.get(name)
        if q is None:
            q = self._recent[name] = deque()
        older = self._recent_points.get(name, 0)  # points held before this column
        q.append(col)
        while len(q) > 1 and older - len(q[0]) >= self.evidence_len:
            older -= len(q.popleft())
        if len(q) > MAX_EVIDENCE_COLUMNS:
            # Small blocks (an SDK flushing every step or two) leave one tiny column each, whose arrays
            # cost far more than their points: the older ones become one column of the points kept.
            olds = [q.popleft() for _ in range(len(q) - 1)]
            keep = min(older, self.evidence_len)
            q.appendleft(
                Column(
                    np.concatenate([c.steps for c in olds])[-keep:],
                    np.concatenate([c.values for c in olds])[-keep:],
                    np.concatenate([c.wall_times for c in olds])[-keep:],
                )
            )
            older = keep
        elif older > self.evidence_len:  # the oldest column holds more than is needed: keep its tail only
            c = q[0]
            k = len(c) - (older - self.evidence_len)
            q[0] = Column(c.steps[-k:].copy(), c.values[-k:].copy(), c.wall_times[-k:].copy())
            older = self.evidence_len
        self._recent_points[name] = older + len(col)

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

    def end(self, wall_time: float | None = None) -> list[Alert]:
        """The run finished: let diagnostics judge it as a whole (:meth:`Diagnostic.on_end`); return the alerts."""
        found = [(diag, f) for diag in self.diagnostics if hasattr(diag, "on_end") for f in diag.on_end()]
        if not found:
            return []
        found.sort(key=lambda pair: pair[1].step)
        return self._alerts(found, self.last_wall_time if wall_time is None else wall_time)

    def next_idle_due(self, now: float, last_seen: float | None = None) -> float | None:
        """The earliest time after ``now`` at which :meth:`idle` could raise something new, or None (never).

        ``last_seen`` as for :meth:`idle`. The service restores a run evicted from memory
        at that time, so a stall is raised for it as for a run that stayed.
        """
        seen = self.last_wall_time if last_seen is None else last_seen
        due = [t for d in self.diagnostics if (t := d.next_idle_due(now, seen)) is not None]
        return min(due) if due else None

    def evidence(self, metrics: Iterable[str], up_to_step: int | None = None) -> list[tuple[str, int, float]]:
        """Recent ``(metric, step, value)`` points of the given metrics, up to a step."""
        if self._unfiled:
            self._file_evidence()
        out = []
        for name in metrics:
            q = self._recent.get(name)
            if not q:
                continue
            steps = np.concatenate([c.steps for c in q])
            values = np.concatenate([c.values for c in q])
            if up_to_step is not None:
                keep = steps <= up_to_step
                steps, values = steps[keep], values[keep]
            steps, values = steps[-self.evidence_len :], values[-self.evidence_len :]
            out.extend((name, s, v) for s, v in zip(steps.tolist(), values.tolist()))
        return out

    def state_dict(self) -> dict:
        """JSON-safe snapshot of everything this monitor knows about its run.

        Restoring it into a fresh monitor of the same suite (:meth:`load_state_dict`)
        continues detection exactly where this one stands.
        """
        from runwatch.models.snapshot import encode

        if self._unfiled:
            self._file_evidence()
        evidence = {}
        for name, q in self._recent.items():
            if q:
                steps = np.concatenate([c.steps for c in q])[-self.evidence_len :]
                values = np.concatenate([c.values for c in q])[-self.evidence_len :]
                times = np.concatenate([c.wall_times for c in q])[-self.evidence_len :]
                evidence[name] = [encode(steps), encode(values), encode(times)]
        return {
            "run_id": self.run_id,
            "last_step": self.last_step,
            "last_wall_time": encode(self.last_wall_time),
            "incidents": self.incidents.state_dict(),
            "evidence": evidence,
            "diagnostics": [d.state_dict() for d in self.diagnostics],
            "fusion": self.fusion.state_dict() if self.fusion is not None else None,
            "severities": {str(k): v for k, v in self.severities.items()},
            "names": self.names.state_dict(),
            "step_gaps": list(self._step_gaps),
        }

    def load_state_dict(self, snapshot: dict) -> list[str]:
        """Restore :meth:`state_dict` output; returns the diagnostics whose state did not fit (left fresh)."""
        from runwatch.models.snapshot import SnapshotError, decode

        try:
            self.last_step = int(snapshot["last_step"])
            self.last_wall_time = float(decode(snapshot["last_wall_time"]))
            self.incidents.load_state_dict(snapshot["incidents"])
            self._recent, self._recent_points = {}, {}
            self._unfiled, self._unfiled_points = [], 0
            for name, (steps, values, times) in snapshot["evidence"].items():
                col = Column(decode(steps), decode(values), decode(times))
                self._recent[name], self._recent_points[name] = deque([col]), len(col)
            saved = {d["name"]: d for d in snapshot["diagnostics"]}
            if self.fusion is not None and snapshot.get("fusion"):
                self.fusion.load_state_dict(snapshot["fusion"])
            self.names.load_state_dict(snapshot.get("names") or {})  # absent before names were mapped: none were
            self._step_gaps = deque((int(g) for g in snapshot.get("step_gaps", [])), maxlen=STEP_GAPS)
            if "severities" in snapshot:
                self.severities = {int(k): int(v) for k, v in snapshot["severities"].items()}
            else:  # a checkpoint from before they were kept: the open incidents' published severities
                self.severities = {}
                for row in snapshot["incidents"]:
                    kind, sev = int(row[1]), int(row[8])
                    self.severities[kind] = max(self.severities.get(kind, 0), sev)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SnapshotError):
                raise
            raise SnapshotError(f"monitor state: {type(exc).__name__}: {exc}") from None
        misfits = []
        for diag in self.diagnostics:
            if diag.name not in saved or not diag.load_state_dict(saved[diag.name]):
                misfits.append(diag.name)
        return misfits

    def _note_gaps(self, steps: np.ndarray) -> None:
        """Remember the latest gaps between distinct logged steps (from the last step seen before the block)."""
        if len(steps) == 1:  # one event per block (the SDK's live stream): no array work
            step = int(steps[0])
            if self.last_step >= 0 and step > self.last_step:
                self._step_gaps.append(step - self.last_step)
            return
        tail = steps[-(STEP_GAPS + 1) :]
        if self.last_step >= 0 and len(tail) <= STEP_GAPS:
            tail = np.concatenate(([self.last_step], tail))
        gaps = np.diff(tail)
        self._step_gaps.extend(gaps[gaps > 0].tolist())

    def _logging_cooldown(self) -> int:
        """Cool-down floor for this run's incidents: COOLDOWN_GAPS of its median logging interval."""
        if not self._step_gaps:
            return 0
        return COOLDOWN_GAPS * int(np.median(self._step_gaps))

    def _alerts(self, findings: list[tuple[Diagnostic, Finding]], wall_time: float) -> list[Alert]:
        alerts = []
        renamed = self.names.renamed
        floor = self._logging_cooldown()
        for diag, f in findings:
            f.detector = diag.name
            f.detector_version = diag.version
            f.wall_time = f.wall_time or wall_time
            alert = self.incidents.observe(f, floor)
            if alert is not None:
                if f.folded_into:
                    alert.part_of = self.incidents.open_id(*f.folded_into)
                f.evidence = self.evidence(f.metrics, f.step)
                alerts.append(alert)
                kind = int(f.kind)
                if f.severity > self.severities.get(kind, 0):
                    self.severities[kind] = int(f.severity)
            if renamed:
                self.names.relabel(f)
        return alerts
