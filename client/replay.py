"""Stream logs already on disk into a runwatch server, so their history becomes anomalies.

:func:`replay` reads ``PATH`` with :mod:`runwatch.client.importers`, opens one
run per imported run (``RunStart`` with the source's hyperparameters,
start time and environment; tags ``replay`` and the format), sends its events
in step order with their original wall times, and closes it with the
source's status when it has one (MLflow, TensorBoard hparams), else
``finished``. ``pace="fast"`` sends as fast as the server acknowledges;
``pace="original"`` waits between events as long as the run did (divided by
``speed``, each wait capped at ``max_gap`` seconds; runs are replayed one
after the other, and formats without a clock are sent fast).

Run ids are stable for a source (see :meth:`ImportedRun.run_id`): a run the
server already has is skipped, unless ``new_ids`` gives every replay fresh
ids. A runwatch spool folder (what a client left unsent) is a source too:
its batches are sent as they are. A text log (``format="text"``) is sent as
the run's log lines, in file order; the server reads its metrics and
failures out of them.

A folder is replayed leniently: a malformed entry (a CSV row, a JSON line,
an event record) or a file that cannot be read at all is skipped with one
warning naming the file, the position and the reason, and everything else
is sent. ``strict=True`` reads everything first and sends nothing if
anything is malformed (the first problem is raised).

Examples
--------
>>> report = replay("runs/", target="127.0.0.1:50051")            # doctest: +SKIP
warning: runs/a/metrics.csv:line 7: 6 fields, the header has 5; the row was skipped
>>> report.ok, len(report.warnings)                                # doctest: +SKIP
(True, 1)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from runwatch.client.connection import make_channel, parse_target
from runwatch.client.importers import ImportedRun, Problems, detect, read_all
from runwatch.client.sender import LOG
from runwatch.client.session import RunwatchClient
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

__all__ = ["ReplayReport", "ReplayedRun", "is_spool_dir", "replay"]

# The server refuses events with more metrics than this (its default limit is 4096).
MAX_METRICS_PER_EVENT = 1000
#: Warnings shown per file; the rest are counted (all are in ``ReplayReport.warnings``).
WARNINGS_SHOWN_PER_FILE = 10


@dataclass
class ReplayedRun:
    """What happened to one run."""

    run_id: str
    name: str
    format: str
    source: str
    events: int = 0
    values: int = 0
    lines: int = 0  # text log lines
    skipped: str = ""  # why it was not sent ("" = sent)
    anomalies: int = -1  # incidents the server raised (-1 = not asked)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReplayReport:
    """Outcome of :func:`replay`."""

    runs: list[ReplayedRun] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    dropped: int = 0
    violations: list[tuple[int, str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Malformed entries and files left out: ``path:position: reason; what was skipped``.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything sent was accepted (nothing rejected or dropped); see :attr:`complete` too."""
        return self.rejected == 0 and self.dropped == 0

    @property
    def complete(self) -> bool:
        """:attr:`ok`, and nothing of the input was left out as malformed."""
        return self.ok and not self.warnings


def is_spool_dir(path: Path) -> bool:
    """A runwatch spool folder (or one owner's sub-folder of it)."""
    if not path.is_dir():
        return False
    if any(p.name.startswith("seg-") and p.suffix == ".rws" for p in path.iterdir()):
        return True
    return any(c.is_dir() and (c / "lock").exists() for c in path.iterdir())


def _server_ready(target: str, timeout: float, connection: dict) -> None:
    with make_channel(target, **connection) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            tls = ""
            if parse_target(target).tls:
                tls = " or no TLS handshake with it (check the CA and client certificate)"
            raise ConnectionError(f"no runwatch server at {target}{tls} (waited {timeout:g} s)") from None


def replay(
    path: str | Path,
    *,
    target: str = "127.0.0.1:50051",
    project: str | None = None,
    pace: str = "fast",
    speed: float = 1.0,
    max_gap: float = 60.0,
    fmt: str = "auto",
    canonical: bool = True,
    new_ids: bool = False,
    dry_run: bool = False,
    connect_timeout: float = 10.0,
    out: Callable[[str], None] = print,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    token: str | None = None,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ReplayReport:
    """Replay the logs under ``path`` into the server at ``target``.

    Parameters
    ----------
    path
        A file, a folder of logs, an ``mlruns`` folder or a runwatch spool folder.
    target
        ``host:port`` of the server.
    project
        Project of the replayed runs; default: the source's (MLflow
        experiment name), else ``"replay"``.
    pace
        ``"fast"`` or ``"original"``.
    speed, max_gap
        With ``pace="original"``: divide waits by ``speed``, cap each at ``max_gap`` s.
    fmt
        ``"auto"`` or one of :data:`runwatch.client.importers.FORMATS`.
    canonical
        Map metric names onto runwatch's conventions (``train_loss`` -> ``loss``, ...).
    new_ids
        Give the runs fresh ids (replay again what the server already has).
    dry_run
        Read and summarise, send nothing.
    out
        Receives one line per run.
    strict
        Send nothing if any file or entry is malformed (raise the first
        problem); by default each is skipped with a warning and the rest is sent.
    warn
        Receives one line per skipped entry or file (default: ``out``).
    token, ca_file, cert_file, key_file
        Access token and TLS files, as for :class:`~runwatch.client.session.RunwatchClient`.

    Raises
    ------
    ImportFormatError
        Nothing readable at ``path``, or (``strict``) a malformed file or
        entry (its message names the file and the position).
    ConnectionError
        No server answers at ``target``.
    """
    if pace not in ("fast", "original"):
        raise ValueError(f"pace must be 'fast' or 'original', got {pace!r}")
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    path = Path(path)
    t0 = time.perf_counter()
    report = ReplayReport()
    connection = {"token": token, "ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    if fmt in ("auto", "spool") and is_spool_dir(path):
        return _replay_spool(path, target, connect_timeout, dry_run, report, out, t0, connection)
    if fmt == "spool":
        raise ValueError(f"{path} is not a runwatch spool folder")
    items = detect(path, fmt)
    # Read everything first: with strict, a malformed file stops the replay before anything is sent.
    problems = Problems(strict=strict)
    runs: list[ImportedRun] = read_all(path, items, canonical, problems)
    report.warnings = [str(e) for e in problems.skipped]
    _warn(report.warnings, problems, warn or out)
    if dry_run:
        for run in runs:
            rr = ReplayedRun(run.run_id(), run.display, run.format, str(run.source), len(run.steps), run.n_values,
                             len(run.lines), skipped="dry run", notes=list(run.notes))
            report.runs.append(rr)
            out(_line(rr, run))
        report.seconds = time.perf_counter() - t0
        return report
    _server_ready(target, connect_timeout, connection)
    client = RunwatchClient(target, max_queue=20_000, flush_on_exit=False, **connection)
    runs_stub = service_pb2_grpc.RunServiceStub(client.channel)
    try:
        for run in runs:
            rr = _replay_run(client, runs_stub, run, project, pace, speed, max_gap, new_ids)
            report.runs.append(rr)
            out(_line(rr, run))
        client.flush(timeout=120)
        for rr in report.runs:
            if not rr.skipped:
                try:
                    info = runs_stub.GetRun(service_pb2.GetRunRequest(run_id=rr.run_id), timeout=30).run
                    rr.anomalies = info.anomaly_count
                except grpc.RpcError:
                    pass
    finally:
        client.close(timeout=60)
    return _delivered(report, client, t0)


def _warn(warnings: list[str], problems: Problems, warn: Callable[[str], None]) -> None:
    """One line per skipped entry, at most :data:`WARNINGS_SHOWN_PER_FILE` per file, then a count."""
    per_file: dict[str, int] = {}
    for text, error in zip(warnings, problems.skipped):
        n = per_file[error.path] = per_file.get(error.path, 0) + 1
        if n <= WARNINGS_SHOWN_PER_FILE:
            warn(f"warning: {text}")
    for path, n in per_file.items():
        if n > WARNINGS_SHOWN_PER_FILE:
            warn(f"warning: {path}: {n - WARNINGS_SHOWN_PER_FILE} more malformed entries skipped (not shown)")


def _delivered(report: ReplayReport, client, t0: float) -> ReplayReport:
    """``report`` completed with what the (closed) client delivered."""
    stats = client.stats()
    report.accepted = stats.acked - stats.duplicates
    report.rejected = stats.rejected
    report.dropped = stats.dropped
    report.violations = client.violations
    report.seconds = time.perf_counter() - t0
    return report


def _replay_run(
    client: RunwatchClient,
    runs_stub: service_pb2_grpc.RunServiceStub,
    run: ImportedRun,
    project: str | None,
    pace: str,
    speed: float,
    max_gap: float,
    new_ids: bool,
) -> ReplayedRun:
    run_id = run.run_id(uuid.uuid4().hex[:8] if new_ids else "")
    rr = ReplayedRun(run_id, run.display, run.format, str(run.source), len(run.steps), run.n_values, len(run.lines),
                     notes=list(run.notes))
    if not new_ids:
        try:
            runs_stub.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)
            rr.skipped = "already on the server (use --new-ids to replay it again)"
            return rr
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    if not run.steps and not run.lines:
        rr.skipped = "no metric values" if run.format != "text" else "no text lines"
        return rr
    env = dict(run.environment)
    env["replay.source"] = str(run.source)[-1000:]
    env["replay.format"] = run.format
    if run.original_id:
        env["replay.original_id"] = run.original_id[:1000]
    if run.renamed:
        env["replay.renamed"] = ", ".join(f"{k}->{v}" for k, v in sorted(run.renamed.items()))[:4000]
    started = client.start_run(
        run_id=run_id,
        project=project or run.project or "replay",
        hyperparameters=run.hyperparameters,
        tags=["replay", run.format, *run.tags],
        framework="",
        environment=env,
        start_time=run.start_time or (run.wall_times[0] if run.wall_times else 0.0) or None,
    )
    sender = client._sender
    prev_wall = 0.0
    for step, wall, metrics in run.events():
        if pace == "original" and wall > 0 and prev_wall > 0:
            wait = min((wall - prev_wall) / speed, max_gap)
            if wait > 0:
                client.flush(timeout=60)  # what came before is on the server when the clock says so
                time.sleep(wait)
        if wall > 0:
            prev_wall = wall
        items = list(metrics.items())
        for i in range(0, len(items), MAX_METRICS_PER_EVENT):
            if len(sender._queue) >= sender.max_queue // 2:
                sender.wait_for_room(timeout=120)
            started.log(dict(items[i : i + MAX_METRICS_PER_EVENT]), step=step, wall_time=wall or None)
    prev_time = 0.0
    for line in run.lines:
        if pace == "original" and line.time > 0 and prev_time > 0:
            wait = min((line.time - prev_time) / speed, max_gap)
            if wait > 0:
                client.flush(timeout=60)
                time.sleep(wait)
        if line.time > 0:
            prev_time = line.time
        if len(sender._queue) >= sender.max_queue // 2:
            sender.wait_for_room(timeout=120)
        # Lines without a clock of their own get none: the server stamps them as they arrive.
        sender.put(LOG, runs_pb2.LogLine(run_id=run_id, time=line.time, level=line.level, text=line.text, step=line.step))
    status = run.status if run.status in ("finished", "failed", "killed") else "finished"
    started.finish(status, reason=f"replayed from {run.source}"[:1000], timeout=60)
    return rr


def _replay_spool(path, target, connect_timeout, dry_run, report, out, t0, connection) -> ReplayReport:

    root = path if not any(p.suffix == ".rws" for p in path.iterdir()) else path.parent
    if dry_run:
        out(f"spool {root}: would send what it holds")
        report.seconds = time.perf_counter() - t0
        return report
    _server_ready(target, connect_timeout, connection)
    client = RunwatchClient(target, spool_dir=root, flush_on_exit=False, **connection)
    spool = client.spool
    adopted = spool.adopted_items if spool is not None else 0
    run_ids = spool.run_ids() if spool is not None else []
    try:
        client.flush(timeout=300)
        runs_stub = service_pb2_grpc.RunServiceStub(client.channel)
        for run_id in run_ids:  # the runs its batches belonged to, as the summary counts replayed runs
            rr = ReplayedRun(run_id, run_id, "spool", str(root))
            try:
                info = runs_stub.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).run
                rr.events, rr.anomalies = info.event_count, info.anomaly_count
            except grpc.RpcError:
                pass
            report.runs.append(rr)
    finally:
        client.close(timeout=60)
    stats = client.stats()
    out(f"spool {root}: {adopted} item(s) found for {len(run_ids)} run(s), {stats.acked} acknowledged, {stats.rejected} rejected")
    return _delivered(report, client, t0)


def _line(rr: ReplayedRun, run: ImportedRun) -> str:
    what = f"{rr.events} steps, {rr.values} values, {len(run.metric_names)} metrics"
    if rr.lines or (run.format == "text" and not rr.events):
        what = f"{rr.lines} lines"
    if rr.skipped:
        status = f"skipped: {rr.skipped}"
    else:
        status = "sent"
    name = rr.name if len(rr.name) <= 60 else "..." + rr.name[-57:]
    text = f"{rr.format:11} {name:60} {what:38} {status}"
    if not rr.skipped:
        text += f" as {rr.run_id}"
    for note in rr.notes:
        text += f"\n{'':12}note: {note}"
    return text
