"""``runwatch pipe``: a process's output as a run's log lines, the process left as it was.

Two ways in::

    runwatch pipe --project p [--run-id ID] -- python train.py --lr 3e-4
    python train.py 2>&1 | runwatch pipe --project p

With a command, :func:`pipe` starts it with its stdout and stderr on pipes
(stdin, the environment and the working folder are the caller's; Python
children get ``PYTHONUNBUFFERED=1`` so their lines come as they are written,
as on a terminal) and one reader thread per stream copies every chunk to
runwatch's own stdout or stderr at once, byte for byte, before anything
else. Complete lines then go through a bounded queue to the client: the
readers never wait on the network, and when the queue is full (a server far
behind) lines are dropped and counted, never the child's output. The client
keeps undelivered batches in the spool (``$RUNWATCH_SPOOL_DIR``, else
``~/.cache/runwatch/spool``; ``--no-spool`` to keep them in memory only), so a
server that is away gets them later (``runwatch replay SPOOL`` or the next
client using that spool).

Each line is a ``LogLine`` timed when it was read; its level is the one the
line states (``INFO``, ``[WARNING]``, ``E0412``, a Python traceback: ERROR),
else INFO for stdout and WARNING for stderr. Lines of one stream keep their
order; lines of the two streams are queued in the order they were read. A
carriage-return redraw (a progress bar) counts once, in its last state.

The child's exit makes the ``RunEnd``: 0 ``finished``; another code
``failed`` (reason ``exit code N``); a crash signal (SIGSEGV, SIGBUS,
SIGABRT, SIGILL, SIGFPE, ...) ``failed`` too (reason ``SIGSEGV``): the
process broke, nobody stopped it; any other signal ``killed`` (reason
``SIGTERM``); ``pipe`` then exits as the child did (128 + N for signal N,
as shells report it). A command that cannot be started (no such program,
a folder, not executable) ends the run ``failed`` (reason ``cannot start
PROGRAM: ...``) and its ``OSError`` is raised. A ``run_id`` the server
says already ended is refused (``ValueError``) before anything starts: its
new lines would be stored but never analysed. SIGTERM, SIGHUP and SIGQUIT
sent to ``runwatch pipe`` are passed on to the child; so is SIGINT, unless it
came from the terminal, which already sent it to the child (the same
foreground group).
Reading stdin instead, the run finishes at end of input (``killed`` when an
interrupt came first). If runwatch's own stdout goes away (``| head``), the
child's pipe is closed too, so the child sees the broken pipe it would have seen.

Examples
--------
>>> code = pipe(["python", "train.py"], project="gpt-small", target="127.0.0.1:50051")  # doctest: +SKIP
>>> code                                                                          # doctest: +SKIP
0
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from runwatch.client import convert
from runwatch.client.log_lines import LineSplitter, stream_level
from runwatch.client.sender import LOG
from runwatch.client.session import RunwatchClient
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

__all__ = ["PipeReport", "pipe"]

#: Lines waiting for the client; beyond it new lines are dropped (and counted), the child never waits.
QUEUE_LINES = 100_000
_CHUNK = 1 << 16
_FORWARDED = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGINT")
# A process dies of these by its own fault (a bad memory access, abort(), a bad instruction): a failure, not a stop.
_CRASH_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE", "SIGSYS", "SIGTRAP")
    if hasattr(signal, name)
)
#: Seconds to ask the server whether a given run id already ended; unanswered, the run goes on (maybe spooled).
ENDED_CHECK_TIMEOUT = 2.0


@dataclass
class PipeReport:
    """What :func:`pipe` did: the run, the child's exit, and what happened to the lines."""

    run_id: str = ""
    exit_code: int = 0  # as a shell reports it: 128 + N for signal N
    status: str = "finished"
    reason: str = ""
    lines: int = 0  # complete lines read
    dropped: int = 0  # of them, dropped in pipe's own queue (the client's drops are in ``stats``)
    delivered: bool = True  # everything acknowledged by the server before the end
    stats: Any = None
    notes: list[str] = field(default_factory=list)


class _Lines:
    """The bounded hand-off from the readers to the sending thread."""

    def __init__(self, run_id: str, client: RunwatchClient, limit: int) -> None:
        self.run_id = run_id
        self.sender = client._sender
        self.queue: queue.Queue = queue.Queue(limit)
        self.read = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._send, name="runwatch-pipe-send", daemon=True)
        self._thread.start()

    def offer(self, raw: bytes, stream: str) -> None:
        if not raw.strip():
            return
        with self._lock:
            self.read += 1
        try:
            self.queue.put_nowait((time.time(), stream, raw))
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _send(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            when, stream, raw = item
            text = convert.truncate_text(raw.decode("utf-8", "replace"))
            line = runs_pb2.LogLine(run_id=self.run_id, time=when, level=stream_level(text, stream), text=text)
            try:
                self.sender.put(LOG, line)
            except RuntimeError:  # the client is closing: nothing more can be sent
                return

    def close(self, timeout: float) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def _copy(source: IO[bytes], sink: IO[bytes] | None, stream: str, lines: _Lines, on_broken: Callable[[], None]) -> None:
    """Reader thread: each chunk to ``sink`` first (as it came), then its complete lines to ``lines``."""
    splitter = LineSplitter()
    fd = source.fileno()
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError:
            break
        if not chunk:
            break
        if sink is not None:
            try:
                sink.write(chunk)
                sink.flush()
            except (BrokenPipeError, ValueError, OSError):
                # Whoever read our output is gone: the child must see it too.
                on_broken()
                break
        for raw in splitter.feed(chunk):
            lines.offer(raw, stream)
    for raw in splitter.close():
        lines.offer(raw, stream)
    with contextlib.suppress(OSError):
        source.close()


def _widen(source: IO[bytes]) -> None:
    """A 1 MiB pipe (Linux; 64 KiB by default): a burst of output waits there, not in the child's write."""
    try:
        import fcntl

        fcntl.fcntl(source.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass  # another OS, or over /proc/sys/fs/pipe-max-size: the default pipe


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _from_terminal() -> bool:
    """Whether this process is in the terminal's foreground group (a Ctrl-C reached the child too)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except (AttributeError, ValueError, OSError):
            continue
    return False


def _status(code: int) -> tuple[str, str, int]:
    """(RunEnd status, reason, shell-style exit code) of a child's return code."""
    if code == 0:
        return "finished", "exit code 0", 0
    if code < 0:
        status = "failed" if -code in _CRASH_SIGNALS else "killed"
        return status, _signal_name(-code), 128 - code
    return "failed", f"exit code {code}", code


def _cannot_start(program: str, exc: OSError) -> str:
    """The ``RunEnd`` reason of a command that never ran."""
    return f"cannot start {program}: {exc.strerror or exc}"[:1000]


def _refuse_ended_run(client: RunwatchClient, run_id: str) -> None:
    """Raise ValueError when the server says ``run_id`` already ended; a server that does not answer says nothing."""
    runs = service_pb2_grpc.RunServiceStub(client.channel)
    try:
        info = runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=ENDED_CHECK_TIMEOUT).run
    except grpc.RpcError:
        return  # not found, away, or not ours to read: nothing known against it
    if info.status not in (runs_pb2.RUN_STATUS_RUNNING, runs_pb2.RUN_STATUS_UNSPECIFIED):
        status = runs_pb2.RunStatus.Name(info.status).removeprefix("RUN_STATUS_")
        raise ValueError(
            f"--run-id: run {run_id!r} already ended ({status}) at {client.target}: its lines would be stored "
            "but never analysed; give a new run id, or --resume to continue it"
        )


def pipe(
    command: Sequence[str] | None,
    *,
    project: str = "default",
    run_id: str | None = None,
    target: str = "127.0.0.1:50051",
    kind: str = "training",
    tags: Sequence[str] = (),
    spool_dir: str | os.PathLike[str] | None | bool = None,
    finish_timeout: float = 10.0,
    queue_lines: int = QUEUE_LINES,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    notify: Callable[[str], None] | None = None,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    resume: bool = False,
    watchdog_s: float | None = None,
) -> PipeReport:
    """Run ``command`` (or read ``stdin`` when None) and stream its output as a run's log lines.

    Parameters
    ----------
    command
        The program and its arguments; None reads lines from ``stdin`` instead.
    project, run_id, kind, tags
        Of the run (``run_id`` generated when None).
    target
        ``host:port`` of the server (``https://`` for TLS).
    spool_dir
        Where undelivered batches wait: None = the default spool
        (``$RUNWATCH_SPOOL_DIR`` or ``~/.cache/runwatch/spool``), False = memory only.
    finish_timeout
        Seconds to wait, after the child ended, for the server to acknowledge.
    queue_lines
        Lines that may wait for the client; beyond it lines are dropped and counted.
    stdin, stdout, stderr
        Binary streams (default: this process's); output is copied to them unchanged.
    notify
        Receives runwatch's own messages (the run id, what was not delivered); None: silent.
    token, ca_file, cert_file, key_file
        As for :class:`~runwatch.client.session.RunwatchClient`.
    resume
        Continue ``run_id`` even if it ended (a restarted job); without it an ended run is refused.
    watchdog_s
        When set: once the child has ended, what is left (delivering the last lines and the run's end, each
        within ``finish_timeout``) gets ``2 * finish_timeout + watchdog_s`` seconds; past that every thread's stack
        is written to stderr and the process exits with status 1 (:func:`faulthandler.dump_traceback_later`)
        rather than hang a job script for good. For the command line (30): it sets a process-wide timer.
    """
    from runwatch.client.spool import default_spool_dir

    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    notify = notify or (lambda message: None)
    if spool_dir is False:
        spool_path = None
    elif spool_dir is None or spool_dir is True:
        spool_path = default_spool_dir()
    else:
        spool_path = Path(spool_dir)
    # The SDK's warnings (server away, queue full) would land in the child's stderr stream: keep them out.
    sdk_log = logging.getLogger("runwatch.client")
    propagate = sdk_log.propagate
    sdk_log.propagate = False
    null = logging.NullHandler()
    sdk_log.addHandler(null)
    client = RunwatchClient(
        target, spool_dir=spool_path, flush_on_exit=False, max_queue=100_000, max_batch_items=1024,
        token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
    )  # fmt: skip
    report = PipeReport()
    not_started: OSError | None = None
    try:
        if run_id and not resume:
            _refuse_ended_run(client, run_id)
        env = convert.default_environment()
        env["pipe.cwd"] = os.getcwd()[-1000:]
        env["pipe.command"] = (subprocess.list2cmdline(list(command)) if command else "<stdin>")[:4000]
        run = client.start_run(
            run_id=run_id, project=project, kind=kind, tags=["pipe", *tags], environment=env, framework="",
            resume=resume,
        )
        report.run_id = run.run_id
        notify(f"runwatch: run {run.run_id} (project {project}) at {target}")
        lines = _Lines(run.run_id, client, queue_lines)
        if command:
            try:
                code = _run_child(list(command), out, err, lines)
            except OSError as exc:
                not_started = exc
                report.status, report.reason = "failed", _cannot_start(command[0], exc)
            else:
                report.status, report.reason, report.exit_code = _status(code)
        else:
            interrupted = _read_stdin(stdin if stdin is not None else sys.stdin.buffer, out, lines)
            report.status, report.reason = ("killed", "interrupted") if interrupted else ("finished", "end of input")
        if watchdog_s is not None:
            faulthandler.dump_traceback_later(2 * finish_timeout + watchdog_s, exit=True)
        lines.close(timeout=finish_timeout)
        report.lines, report.dropped = lines.read, lines.dropped
        report.delivered = run.finish(report.status, report.reason, timeout=finish_timeout)
    finally:
        client.close(timeout=0)
        sdk_log.removeHandler(null)
        sdk_log.propagate = propagate
        if watchdog_s is not None:
            faulthandler.cancel_dump_traceback_later()
    report.stats = client.stats()
    lost = report.dropped + report.stats.dropped
    if lost:
        report.notes.append(f"{lost} line(s) dropped while the server at {target} was slow or away")
    if not report.delivered:
        where = f"kept in the spool {spool_path}" if spool_path is not None else "lost (no spool)"
        report.notes.append(f"not all of run {report.run_id} was acknowledged by {target}: the rest is {where}")
    for note in report.notes:
        notify(f"runwatch: {note}")
    if not_started is not None:
        raise not_started  # the run is ended; the caller says why the command did not run
    return report


def _run_child(command: list[str], out: IO[bytes], err: IO[bytes], lines: _Lines) -> int:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines as the child writes them, as on a terminal
    child: subprocess.Popen | None = None
    pending: list[int] = []  # signals that came before the child existed

    def forward(number: int, frame) -> None:
        if number == signal.SIGINT and _from_terminal():
            return  # the terminal sent it to the whole foreground group, the child included
        if child is None:
            pending.append(number)
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(number)

    previous = {}
    # Before the child starts: a signal sent as soon as it shows signs of life must not kill pipe instead.
    if threading.current_thread() is threading.main_thread():
        for name in _FORWARDED:
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, forward)
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
        for number in pending:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(number)
        readers = []
        for source, sink, name in ((child.stdout, out, "stdout"), (child.stderr, err, "stderr")):
            _widen(source)

            def broken(source=source) -> None:
                with contextlib.suppress(OSError):
                    source.close()

            t = threading.Thread(
                target=_copy, args=(source, sink, name, lines, broken), name=f"runwatch-pipe-{name}", daemon=True
            )
            t.start()
            readers.append(t)
        code = child.wait()
        for t in readers:
            # A grandchild may hold the pipes open: its output is not waited for long.
            t.join(timeout=10)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return code


class _Stopped(Exception):
    pass


def _read_stdin(source: IO[bytes], out: IO[bytes], lines: _Lines) -> bool:
    """Copy ``source`` to ``out`` and its lines to the run until end of input; whether it was interrupted.

    SIGINT is noted and reading goes on (the writer got it too, and its last
    lines, a traceback, are still coming); SIGTERM stops reading at once.
    """
    interrupted = threading.Event()
    previous = {}

    def note(number: int, frame) -> None:
        interrupted.set()
        if number != signal.SIGINT:
            raise _Stopped

    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, note)
    try:
        _copy(source, out, "stdout", lines, lambda: None)
    except _Stopped:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return interrupted.is_set()
