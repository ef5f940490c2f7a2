"""Project checks on ingested batches: items of runs the caller's token does not grant are refused.

A token bound to projects may only open runs in those projects and only send
events, log lines and ends to runs of those projects. Items that break this
are refused one by one (``PERMISSION_DENIED: ...`` in the ack's violations,
counted in ``rejected``); the other items of the same batch go through as if
they had come alone, and a stream goes on. A RunStart is refused when either
the project it names or the project its run already has is not granted, so a
token cannot move another team's run into its own project.

Where a run's project is known comes first: the pipeline's memory and the
store (:meth:`RunwatchServer.run_project`), then a RunStart of the same batch.
A run known nowhere is left to the pipeline, which refuses its items as an
unknown run, or opens it in project ``default`` with ``auto_create_runs``
(checked as such). With Kafka, a run can be open on another instance: there
the RunStarts this door let through are remembered, and items of a run still
unknown are refused.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from runwatch.service.event_scan import scan_batch
from runwatch.service.tokens import Principal
from runwatch.v1 import runs_pb2, service_pb2

MAX_VIOLATIONS_REPORTED = 100
_LISTS = ("starts", "events", "logs", "ends")
_ITEM_PATH = re.compile(r"^(starts|events|logs|ends)\[(\d+)\]")


@dataclass(slots=True)
class Screened:
    """A batch after the project check: what to ingest and what was refused."""

    raw: bytes | None  # bytes to ingest (the original ones when nothing was refused); None = nothing left
    refused: list[tuple[str, str]] = field(default_factory=list)  # (field path, reason) of refused items
    # original index of each kept item, per list; empty when nothing was refused
    kept: dict[str, list[int]] = field(default_factory=dict)
    sequence: int = 0

    def merge(self, ack: service_pb2.IngestAck | None) -> service_pb2.IngestAck:
        """The ack of the whole batch: the ingested part's ``ack`` with paths as sent, plus the refusals."""
        out = service_pb2.IngestAck(sequence=self.sequence)
        if ack is not None:
            out.CopyFrom(ack)
        if not self.refused:
            return out
        if ack is not None and self.kept:
            for v in out.violations:
                v.field = self._original_path(v.field)
            warnings = [self._original_path(w) for w in out.warnings]
            del out.warnings[:]
            out.warnings.extend(warnings)
        earlier = list(out.violations)
        del out.violations[:]
        for path, reason in self.refused:
            if len(out.violations) < MAX_VIOLATIONS_REPORTED:
                out.violations.add(field=path, reason=reason)
        for v in earlier:
            if len(out.violations) < MAX_VIOLATIONS_REPORTED:
                out.violations.append(v)
        out.rejected += len(self.refused)
        return out

    def _original_path(self, path: str) -> str:
        m = _ITEM_PATH.match(path)
        if m is None:
            return path
        kept = self.kept.get(m.group(1), [])
        i = int(m.group(2))
        return f"{m.group(1)}[{kept[i]}]{path[m.end():]}" if i < len(kept) else path


class ProjectScreen:
    """Checks each batch against the caller's projects before it is ingested.

    Parameters
    ----------
    run_project
        The project of a run this server knows, else None.
    auto_create_runs
        Events of an unknown run open it in project ``default``.
    remember_starts
        Remember the projects of RunStarts let through, and refuse items of
        runs known nowhere (the Kafka door, whose runs may be open on another
        instance).
    max_batch_bytes
        Bigger batches are left to the pipeline, which refuses them unread.

    Examples
    --------
    >>> from runwatch.service.tokens import Principal
    >>> alpha = Principal("0123456789ab", frozenset({"ingest"}), frozenset({"alpha"}))
    >>> screen = ProjectScreen(lambda run_id: {"b1": "beta"}.get(run_id))
    >>> b = runs_pb2.EventBatch(sequence=3)
    >>> _ = b.starts.add(run_id="a1", project="alpha")
    >>> _ = b.events.add(run_id="b1", step=1, metrics={"loss": 1.0})
    >>> _ = b.events.add(run_id="a1", step=1, metrics={"loss": 1.0})
    >>> s = screen.screen(b.SerializeToString(), alpha)
    >>> s.refused[0][0], runs_pb2.EventBatch.FromString(s.raw).events[0].run_id
    ('events[0].run_id', 'a1')
    >>> s.merge(service_pb2.IngestAck(sequence=3, accepted=2)).rejected
    1
    """

    def __init__(
        self,
        run_project: Callable[[str], str | None],
        *,
        auto_create_runs: bool = False,
        remember_starts: bool = False,
        max_batch_bytes: int = 8 << 20,
        remembered: int = 100_000,
    ) -> None:
        self.run_project = run_project
        self.auto_create_runs = auto_create_runs
        self.remember_starts = remember_starts
        self.max_batch_bytes = max_batch_bytes
        self._claims: OrderedDict[str, str] = OrderedDict()
        self._max_claims = remembered

    def _known(self, run_id: str) -> str | None:
        project = self.run_project(run_id)
        if project is None and self.remember_starts:
            project = self._claims.get(run_id)
        return project

    def screen(self, raw: bytes, principal: Principal) -> Screened:
        """Split ``raw`` into what ``principal`` may ingest and what it may not."""
        if principal.all_projects or len(raw) > self.max_batch_bytes:
            return Screened(raw)
        scanned = scan_batch(raw)
        if scanned is not None and not scanned.other_items:
            # Events only, read without parsing: most batches stop here.
            if all(self._refusal(r.run_id, {}, principal) is None for r in scanned.runs):
                return Screened(raw)
        try:
            batch = runs_pb2.EventBatch.FromString(raw)
        except DecodeError:
            return Screened(raw)  # the pipeline refuses it, and says why; nothing is applied
        return self._screen_parsed(raw, batch, principal)

    def _refusal(self, run_id: str, in_batch: dict[str, str], principal: Principal) -> str | None:
        """Why an item of ``run_id`` is refused, or None if it may go through."""
        project = self._known(run_id)
        if project is not None:
            return None if principal.may_access(project) else self._not_yours(principal, run_id)
        project = in_batch.get(run_id)
        if project is None:
            if self.remember_starts:
                return (
                    f"PERMISSION_DENIED: run {run_id!r} is unknown to this instance, so its project cannot be "
                    "checked; send its RunStart through this instance first"
                )
            if not self.auto_create_runs:
                return None  # the pipeline refuses it as an unknown run
            project = "default"
        return None if principal.may_access(project) else self._denied(principal, project, run_id)

    @staticmethod
    def _denied(principal: Principal, project: str, run_id: str) -> str:
        """Refusal of a project the caller named itself (in a RunStart)."""
        return f"PERMISSION_DENIED: {principal.describe()} does not grant project {project!r} (run {run_id!r})"

    @staticmethod
    def _not_yours(principal: Principal, run_id: str) -> str:
        # Another team's run: say so without naming its project.
        return f"PERMISSION_DENIED: run {run_id!r} belongs to a project {principal.describe()} does not grant"

    def _screen_parsed(self, raw: bytes, batch: runs_pb2.EventBatch, principal: Principal) -> Screened:
        refused: list[tuple[str, str]] = []
        refused_at: dict[str, set[int]] = {name: set() for name in _LISTS}

        def refuse(name: str, i: int, what: str, reason: str) -> None:
            refused_at[name].add(i)
            refused.append((f"{name}[{i}].{what}", reason))

        in_batch: dict[str, str] = {}
        for i, start in enumerate(batch.starts):
            claimed = start.project or "default"
            existing = self._known(start.run_id)
            if existing is not None and not principal.may_access(existing):
                refuse("starts", i, "run_id", self._not_yours(principal, start.run_id))
            elif not principal.may_access(claimed):
                refuse("starts", i, "project", self._denied(principal, claimed, start.run_id))
                in_batch[start.run_id] = claimed  # so the run's other items are refused too
            else:
                in_batch.setdefault(start.run_id, claimed)
        reasons: dict[str, str | None] = {}
        for name in ("events", "logs", "ends"):
            items = getattr(batch, name)
            run_ids = [item.run_id for item in items]
            for run_id in set(run_ids).difference(reasons):
                reasons[run_id] = self._refusal(run_id, in_batch, principal)
            if not any(reasons[r] for r in set(run_ids)):
                continue
            for i, run_id in enumerate(run_ids):
                if (reason := reasons[run_id]) is not None:
                    refuse(name, i, "run_id", reason)
        if self.remember_starts:
            for i, start in enumerate(batch.starts):
                if i not in refused_at["starts"]:
                    self._remember(start.run_id, start.project or "default")
        if not refused:
            return Screened(raw)
        kept_batch = runs_pb2.EventBatch(sequence=batch.sequence)
        kept: dict[str, list[int]] = {}
        for name in _LISTS:
            items = getattr(batch, name)
            kept[name] = [i for i in range(len(items)) if i not in refused_at[name]]
            getattr(kept_batch, name).extend(items[i] for i in kept[name])
        left = any(kept.values())
        return Screened(kept_batch.SerializeToString() if left else None, refused, kept, batch.sequence)

    def _remember(self, run_id: str, project: str) -> None:
        self._claims[run_id] = project
        self._claims.move_to_end(run_id)
        while len(self._claims) > self._max_claims:
            self._claims.popitem(last=False)
