"""The runwatch client: open runs, log metrics and text, watch anomalies, react to them.

:func:`init` is the one-call entry point (W&B / MLflow style): it opens a
:class:`Run` that owns its connection, spools to disk, records git /
versions / device and logs timing and memory with every step.
:class:`RunwatchClient` is the lower-level handle (one connection, many runs).

Logging never waits on the network: :meth:`Run.log` converts the values and
appends to the :class:`~runwatch.client.sender.BatchSender` queue; a background
thread batches and streams them. Only :meth:`Run.flush`, :meth:`Run.finish`
and :meth:`RunwatchClient.close` wait, each up to a timeout.

Examples
--------
>>> from runwatch.client import RunwatchClient
>>> client = RunwatchClient("127.0.0.1:50051")           # doctest: +SKIP
>>> with client.start_run(project="mnist", hyperparameters={"lr": 1e-3}) as run:  # doctest: +SKIP
...     for step in range(100):
...         run.log({"loss": 1.0 / (step + 1)})
>>> client.close()                                       # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import grpc

from runwatch.client import convert
from runwatch.client.actions import ReduceLROnAnomaly, SkipBatches, StopOnDivergence, StopTraining
from runwatch.client.connection import make_channel
from runwatch.client.sender import END, EVENT, LOG, START, BatchSender, SenderStats
from runwatch.client.spool import Spool
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

if TYPE_CHECKING:
    from torch import nn

__all__ = ["AnomalyStream", "AnomalyWatch", "Run", "RunwatchClient"]

logger = logging.getLogger("runwatch.client")

DEFAULT_TARGET = "127.0.0.1:50051"
#: Seconds a resumed run waits for the server to say where it left off (see ``start_run(resume=True)``).
RESUME_LOOKUP_TIMEOUT = 5.0

# gRPC's own reconnect backoff goes up to 120 s; keep it short so a restarted
# server is found again within seconds.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

_live_clients: weakref.WeakSet[RunwatchClient] = weakref.WeakSet()


def _environment_facts(environment: Mapping[str, Any] | None) -> dict[str, str]:
    """The user's environment facts as strings; a TypeError naming ``environment`` when it is not a mapping."""
    if not environment:
        return {}
    return {str(k): str(v) for k, v in convert.require_mapping(environment, "environment", "{'gpu': 'A100'}").items()}


class RunwatchClient:
    """Connection to a runwatch server; creates runs and watches anomalies.

    One client holds one gRPC channel and one background sender that streams
    the telemetry of all its runs over a single ``StreamEvents`` stream.

    Parameters
    ----------
    target
        ``host:port`` of the server (plaintext), or ``https://host:port`` (TLS).
    channel
        Use this channel instead of creating one (``target`` and the TLS and
        token arguments are then ignored); the client does not close a
        channel it did not create.
    token
        Access token sent with every call (servers started with
        ``--auth-tokens``); None = ``$RUNWATCH_TOKEN``.
    ca_file, cert_file, key_file
        For an ``https://`` target: PEM CA bundle to check the server with
        (None = ``$RUNWATCH_CA_FILE``, else the system's CAs), and a client
        certificate and key for mutual TLS (None = ``$RUNWATCH_CLIENT_CERT``
        / ``$RUNWATCH_CLIENT_KEY``). See :mod:`runwatch.client.connection`.
    max_queue
        Most items waiting to be sent; beyond it the oldest metric events and
        log lines are dropped (see ``stats().dropped``).
    max_batch_items, flush_interval
        A batch goes out when it holds this many items or its oldest item is
        this many seconds old.
    max_inflight
        Most batches sent but not yet acknowledged.
    anomaly_grace
        Seconds :meth:`Run.finish` lets the run's anomaly callbacks keep
        running, so anomalies raised by the last events still arrive.
    flush_on_exit
        At interpreter exit, flush (up to 2 s) whatever is still queued.
    options
        Extra gRPC channel options.
    spool_dir
        Keep batches on disk in this folder until the server acknowledges
        them (see :mod:`runwatch.client.spool`); None keeps them in memory
        only. If the folder cannot be used, the client warns and keeps them
        in memory.
    spool_max_bytes
        Bound of the spool; beyond it ``spool_on_full`` decides.
    spool_on_full
        ``"drop_oldest"`` (default) or ``"drop_newest"``.

    Examples
    --------
    >>> client = RunwatchClient("127.0.0.1:50051")  # doctest: +SKIP
    >>> run = client.start_run(project="demo", hyperparameters={"lr": 0.1}, tags=["baseline"])  # doctest: +SKIP
    >>> run.log({"loss": 0.7, "lr": 0.1})  # step 0  # doctest: +SKIP
    >>> run.finish()  # doctest: +SKIP
    True
    >>> client.stats().acked  # doctest: +SKIP
    3
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        max_queue: int = 10_000,
        max_batch_items: int = 256,
        flush_interval: float = 0.05,
        max_inflight: int = 32,
        anomaly_grace: float = 1.0,
        flush_on_exit: bool = True,
        options: Iterable[tuple[str, Any]] = (),
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 << 20,
        spool_on_full: str = "drop_oldest",
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target = target
        if channel is None:
            # Before the spool: a bad TLS argument must fail before anything is claimed on disk.
            channel = make_channel(
                target, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                options=[*_CHANNEL_OPTIONS, *options],
            )  # fmt: skip
            self._owns_channel = True
        else:
            self._owns_channel = False
        spool = None
        if spool_dir is not None:
            try:
                spool = Spool(spool_dir, max_bytes=spool_max_bytes, on_full=spool_on_full)
            except OSError as exc:
                logger.warning("runwatch: cannot use the spool folder %s (%s); keeping events in memory only", spool_dir, exc)
        self.channel = channel
        self.anomaly_grace = anomaly_grace
        self._sender = BatchSender(
            self.channel,
            max_queue=max_queue,
            max_batch_items=max_batch_items,
            flush_interval=flush_interval,
            max_inflight=max_inflight,
            spool=spool,
            target=target,
        )
        self._watch_stub = service_pb2_grpc.WatchServiceStub(self.channel)
        self._closed = False
        if flush_on_exit:
            _live_clients.add(self)

    # -- runs --------------------------------------------------------------

    def start_run(
        self,
        run_id: str | None = None,
        project: str = "default",
        kind: str | int = "training",
        hyperparameters: Mapping[str, Any] | None = None,
        model: nn.Module | None = None,
        architecture: runs_pb2.Architecture | None = None,
        tags: Iterable[str] = (),
        framework: str | None = None,
        environment: Mapping[str, str] | None = None,
        start_time: float | None = None,
        example_input: Any = None,
        resume: bool = False,
    ) -> Run:
        """Open a run: queue its ``RunStart`` and return a :class:`Run` to log to.

        Parameters
        ----------
        run_id
            Unique id (1-128 characters of ``[A-Za-z0-9._:/-]``); generated
            when None.
        project
            Project the run belongs to.
        kind
            ``"training"`` or ``"deployment"`` (or a ``RunKind`` number).
        hyperparameters
            JSON-like mapping; numpy/torch scalars and tuples are converted.
        model
            A torch model whose architecture the run records unless
            ``architecture`` is given: at once when ``example_input`` is
            given or the model is made of ``nn.Sequential`` alone, else from
            the model's first forward pass in the training loop (see
            :meth:`Run.set_model`).
        architecture
            The architecture, when already described.
        tags
            Free-form tags.
        framework
            e.g. ``"torch 2.13.0"``; detected from ``model`` or an imported
            torch when None.
        environment
            Extra environment facts, merged over python/platform/host/pid
            (:func:`runwatch.client.init` records git, versions and device too).
        start_time
            When the run started (seconds since the epoch); now when None.
        example_input
            Input for one traced forward pass of ``model`` now (see
            ``describe_architecture``); without it the training loop's first
            forward pass is used.
        resume
            Continue ``run_id`` if the server has it, ended or not (a job
            restarted from its checkpoint): its detectors pick up from its
            stored history, steps up to its last stored one are dropped as
            duplicates, and its recorded hyperparameters stay (new keys are
            added). Opens the run as usual if it does not exist.

        Returns
        -------
        Run
            The open run.

        Examples
        --------
        >>> run = client.start_run(project="mnist", model=model, hyperparameters={"lr": 1e-3})  # doctest: +SKIP
        >>> run.run_id  # doctest: +SKIP
        'run-3f2a...'
        """
        self._check_open()
        run_id = convert.validate_run_id(run_id) if run_id is not None else convert.new_run_id()
        convert.validate_project(project)
        if architecture is None and model is not None:
            architecture = _architecture_before_training(model, example_input)
        if framework is None:
            torch = sys.modules.get("torch")
            framework = f"torch {torch.__version__}" if torch is not None and hasattr(torch, "__version__") else ""
        env = convert.default_environment()
        env.update(_environment_facts(environment))
        start = runs_pb2.RunStart(
            run_id=run_id,
            project=project,
            kind=convert.run_kind(kind),
            start_time=time.time() if start_time is None else float(start_time),
            hyperparameters=convert.to_struct(hyperparameters),
            framework=framework,
            tags=[str(t) for t in tags],
            environment=env,
            resume=bool(resume),
        )
        if architecture is not None:
            start.architecture.CopyFrom(architecture)
        run = Run(self, run_id, project, start)
        if resume:
            run._next_step = self._last_stored_step(run_id) + 1  # log() without step continues after it
        run._send_start()
        if model is not None and architecture is None:
            run._describe_at_first_forward(model)
        return run

    def _last_stored_step(self, run_id: str) -> int:
        """The server's last step of ``run_id``; -1 when it has none, does not answer within
        :data:`RESUME_LOOKUP_TIMEOUT`, or the token may not read it (explicit steps then still work)."""
        runs = service_pb2_grpc.RunServiceStub(self.channel)
        try:
            info = runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=RESUME_LOOKUP_TIMEOUT).run
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # not found: a resume of a new run, which starts at 0
                logger.warning(
                    "runwatch: could not ask %s where run %s left off (%s); log() without step= starts at 0, and "
                    "steps the server already has are dropped as duplicates: pass step= to continue it",
                    self.target, run_id, exc.code().name,
                )
            return -1
        return int(info.last_step) if info.event_count else -1

    # -- anomalies ---------------------------------------------------------

    def watch_anomalies(
        self,
        project: str = "",
        run_id: str = "",
        min_severity: str | int = 0,
        include_history: bool = False,
        timeout: float | None = None,
    ) -> AnomalyStream:
        """Stream anomalies matching a filter, as they are raised.

        Parameters
        ----------
        project, run_id
            Only this project / run (``""`` = all).
        min_severity
            Only this severity and above: a ``Severity`` number or a name such
            as ``"warning"`` (0 = everything).
        include_history
            First replay stored anomalies that match, then follow live ones.
        timeout
            End the stream after this many seconds (None = never).

        Returns
        -------
        AnomalyStream
            An iterator of ``anomaly_pb2.Anomaly``; ``cancel()`` ends it.

        Examples
        --------
        >>> with client.watch_anomalies(project="mnist", min_severity="error") as anomalies:  # doctest: +SKIP
        ...     for a in anomalies:
        ...         print(a.run_id, anomaly_pb2.AnomalyKind.Name(a.kind), a.explanation)
        """
        self._check_open()
        request = service_pb2.WatchRequest(
            project=project,
            run_id=run_id,
            min_severity=convert.severity(min_severity),
            include_history=include_history,
        )
        return AnomalyStream(self._watch_stub.WatchAnomalies(request, timeout=timeout))

    # -- delivery ----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is acknowledged; False on timeout."""
        return self._sender.flush(timeout)

    def stats(self) -> SenderStats:
        """Delivery counters: ``sent``, ``acked``, ``rejected``, ``dropped``, ...

        See :class:`~runwatch.client.sender.SenderStats`.
        """
        return self._sender.stats()

    @property
    def spool(self) -> Spool | None:
        """The on-disk spool, when the client has one."""
        return self._sender.spool

    @property
    def violations(self) -> list[tuple[int, str, str]]:
        """Recent server rejections as ``(batch sequence, field path, reason)``."""
        return list(self._sender.violations)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush (up to ``timeout`` seconds), stop the sender and close the channel.

        Returns whether everything was delivered. Idempotent.
        """
        if self._closed:
            return self._sender.stats().pending == 0
        self._closed = True
        _live_clients.discard(self)
        flushed = self._sender.close(timeout)
        if self._owns_channel:
            self.channel.close()
        return flushed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("RunwatchClient is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunwatchClient({self.target!r})"


class Run:
    """An open run; created by :func:`runwatch.client.init` or :meth:`RunwatchClient.start_run`.

    Besides logging, a run can (each opt-in): watch a model's layers
    (:meth:`watch`), time the data pipeline (:meth:`track_data`), log system
    metrics, and react to its own anomalies (:meth:`on_anomaly` and the
    ready-made actions :meth:`stop_on_divergence`,
    :meth:`reduce_lr_on_anomaly`, :meth:`skip_batches_on_anomaly`).

    Examples
    --------
    >>> with client.start_run(project="mnist") as run:  # doctest: +SKIP
    ...     for step, (x, y) in enumerate(loader):
    ...         loss = train_step(x, y)
    ...         run.log({"loss": loss.item(), "lr": opt.param_groups[0]["lr"]}, step=step)
    ...     run.log_text("epoch done", level="info")
    """

    def __init__(self, client: RunwatchClient, run_id: str, project: str, start: runs_pb2.RunStart) -> None:
        self.client = client
        self.run_id = run_id
        self.project = project
        self.start_message = start
        self._next_step = 0
        self._finished = False
        self._lock = threading.Lock()
        self._watches: list[AnomalyWatch] = []
        self._owns_client = False
        # -- automatic metrics (see enable_system_metrics / track_data / watch)
        self._sampler = None
        self._timing = False
        self._last_step: int | None = None  # newest step logged
        self._last_step_time = 0.0  # perf_counter() when it was logged
        self._data_wait = 0.0
        self._excluded = 0.0
        self._data_tracked = False
        self._watchers: list[Any] = []
        self._watch_stash: dict[str, float] = {}
        self._logs_lr = False  # the loop logs "lr" itself: watch() then adds none
        self._watch_fresh = False
        self._opt_hook = None
        self._saw_optimizer_step = False
        self._opt_matches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._captures: list[Any] = []  # capture_output / capture_logging handles, stopped by finish()
        self._architecture_recording: Any = None  # a FirstForwardRecording awaiting the model's first forward
        # -- names sent at the newest step: the server stores each metric once per step and refuses an
        # event repeating one, so a repeat is taken out before sending (see _log)
        self._names_step = -1
        self._names_sent: dict[str, float] = {}
        self._names_auto: set[str] = set()  # of those, the ones the SDK added itself
        #: Metrics the caller logged again at a step with a different value: not sent (the first value is kept).
        self.refused_repeats = 0
        self._warned_repeat = False
        self._sent_start: bytes | None = None  # the start record as last queued (see _send_start)
        # -- actions
        #: Set when a stop was requested (by :class:`StopOnDivergence` or :meth:`request_stop`).
        self.should_stop = False
        #: Why the stop was requested ("" if none).
        self.stop_reason = ""
        #: What the actions did, as logged.
        self.actions_taken: list[str] = []
        #: Steps named by anomalies that :class:`SkipBatches` reacted to.
        self.offending_steps: list[int] = []
        self._skips = 0
        self._deferred: deque[Callable[[], Any]] = deque()
        # The client's counters cover all its runs: finish() judges this run by what changed since it started.
        self._undelivered_at_start = self._undelivered()

    @property
    def step(self) -> int:
        """The step the next :meth:`log` without ``step`` will use."""
        return self._next_step

    @property
    def current_step(self) -> int:
        """The latest step logged so far (0 before the first :meth:`log`): the step log lines without one refer to."""
        return max(self._next_step - 1, 0)

    @property
    def finished(self) -> bool:
        return self._finished

    # -- logging -----------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int | None = None, *, wall_time: float | None = None) -> None:
        """Record metrics at a step; returns at once.

        With :meth:`watch`, :meth:`track_data` or system metrics enabled, the
        event also carries the metrics those collect (names the caller gives
        win). Afterwards, actions deferred to the training thread (LR
        changes) are applied.

        Parameters
        ----------
        metrics
            Metric name to number (floats, ints, numpy or one-element torch
            values; NaN and Inf are valid). Names follow runwatch's
            conventions: ``loss``, ``val/loss``, ``grad_norm/<layer>``, ...
        step
            Training step: an int from 0 to 2**63 - 1 (the wire format's
            int64), or a float with a whole value such as ``3.0``; None uses
            the step after the previous call's (0 first). Steps must not
            decrease. Anything else (``2.9``, ``True``, ``"4"``) raises
            ``TypeError`` / ``ValueError`` naming ``step``, and the run is
            left as it was.
        wall_time
            When the metrics were measured (seconds since the epoch); now when None.

        Examples
        --------
        >>> run.log({"loss": 0.9})             # step 0  # doctest: +SKIP
        >>> run.log({"loss": 0.8})             # step 1  # doctest: +SKIP
        >>> run.log({"val/acc": 0.7}, step=10)  # doctest: +SKIP

        A name already logged at the same step is not sent again (the server
        stores each metric once per step and would refuse the whole event):
        the first value is kept, and a different value is counted in
        :attr:`refused_repeats`, reported once, and makes :meth:`finish`
        return False. The metrics the SDK adds itself (``step_time``,
        ``cpu_mem``, watch statistics, ...) are only added where the step
        does not have them yet.
        """
        self._log(metrics, step, wall_time, automatic=False)

    def _log(self, metrics: Mapping[str, Any], step: int | None, wall_time: float | None, automatic: bool) -> None:
        """:meth:`log`; with ``automatic``, ``metrics`` are the SDK's own (an integration's timing, watch
        statistics, ...): names the step already has are left out silently, never counted as refused."""
        values = convert.metrics_map(metrics)
        if step is not None:
            step = convert.step_number(step)
        if self._watchers and not self._saw_optimizer_step and (step is None or step >= self._next_step):
            self.collect_watch()  # no torch optimizer step seen: collect at the log call
        refused: list[str] = []
        with self._lock:
            self._check_open()
            if step is None:
                step = self._next_step
            self._next_step = max(self._next_step, step + 1)
            if "lr" in values and not automatic:
                self._logs_lr = True
            if step > self._names_step:
                self._names_step = step
                self._names_sent = {}
                self._names_auto = set()
            # Names this step already has (None: an older step, which the server judges itself).
            sent = self._names_sent if step == self._names_step else None
            if sent:
                for k in [k for k in values if k in sent]:
                    v = values.pop(k)
                    # A repeat of the SDK's own metric is no fault of the caller's: left out, not refused.
                    if not automatic and k not in self._names_auto and not _same_value(v, sent[k]):
                        refused.append(k)
            added: list[str] = list(values) if automatic else []
            if self._timing or self._sampler is not None or self._watch_fresh:
                extra = self._auto_metrics(step)
                if extra:
                    for k, v in extra.items():
                        if k not in values and (sent is None or k not in sent):
                            values[k] = v
                            added.append(k)
            if sent is not None:
                sent.update(values)
                self._names_auto.update(added)
            if refused:
                self.refused_repeats += len(refused)
            if values:
                # inside the lock so concurrent callers enqueue in step order
                event = runs_pb2.MetricEvent(
                    run_id=self.run_id,
                    step=step,
                    wall_time=time.time() if wall_time is None else float(wall_time),
                    metrics=values,
                )
                self.client._sender.put(EVENT, event)
        if refused and not self._warned_repeat:
            self._warned_repeat = True
            logger.warning(
                "runwatch: %s logged again at step %d with another value; a step keeps each metric once "
                "(the first value), so the repeat is not sent (reported once; run.refused_repeats counts them)",
                ", ".join(repr(k) for k in refused[:5]),
                step,
            )
        if self._deferred:
            self.apply_actions()

    def _auto_metrics(self, step: int) -> dict[str, float]:
        """Timing, system and watch metrics for an event at ``step`` (caller holds the lock)."""
        out: dict[str, float] = {}
        if self._watch_fresh:
            out.update(self._watch_stash)
            self._watch_stash.clear()
            self._watch_fresh = False
        advanced = self._last_step is None or step > self._last_step
        if not advanced:
            return out
        now = time.perf_counter()
        if self._timing and self._last_step is not None:
            n = step - self._last_step
            out["step_time"] = max(now - self._last_step_time - self._excluded, 0.0) / n
            if self._data_tracked:
                out["data_time"] = self._data_wait / n
        self._last_step = step
        self._last_step_time = now
        self._data_wait = 0.0
        self._excluded = 0.0
        if self._sampler is not None:
            out.update(self._sampler.sample())
        return out

    def log_text(self, text: str, level: str | int = "info", step: int | None = None) -> None:
        """Record a text log line (cut to 64 KiB); returns at once.

        Parameters
        ----------
        text
            The line.
        level
            ``"debug"``, ``"info"``, ``"warning"``, ``"error"``,
            ``"critical"``, a ``LogLevel`` number or a stdlib ``logging`` level.
        step
            Step the line refers to, checked as :meth:`log` checks it; None:
            :attr:`current_step`, the latest step logged (0 before any).
            Lines captured by :meth:`capture_output` and
            :meth:`capture_logging` get it too.
        """
        self._check_open()
        line = runs_pb2.LogLine(
            run_id=self.run_id,
            time=time.time(),
            level=convert.log_level(level),
            text=convert.truncate_text(str(text)),
            step=self.current_step if step is None else convert.step_number(step),
        )
        self.client._sender.put(LOG, line)

    def capture_output(self, stdout: bool = True, stderr: bool = True) -> Any:
        """Tee ``sys.stdout`` / ``sys.stderr`` into this run's log lines; returns the started capture.

        The program's output still goes where it went, first and unchanged;
        each complete line is also logged (its own level word wins, else INFO
        for stdout, WARNING for stderr). Use it as a context manager or call
        ``stop()``; :meth:`finish` stops it. See :mod:`runwatch.client.capture`.

        Examples
        --------
        >>> with run.capture_output():          # doctest: +SKIP
        ...     print("iteration 10/100 | lm loss: 2.31 | grad norm: 1.2")
        """
        from runwatch.client.capture import OutputCapture

        self._check_open()
        capture = OutputCapture(self, stdout=stdout, stderr=stderr).start()
        self._captures.append(capture)
        return capture

    def capture_logging(self, logger: logging.Logger | str | None = None, level: int | str = logging.INFO) -> Any:
        """Send the records of ``logger`` (None: the root logger) at ``level`` and above as log lines.

        Each record keeps its level; a record with a traceback becomes one
        line per line. Records below the logger's own level are never made
        (``logging.getLogger().setLevel(logging.INFO)`` to see INFO through
        the root logger, whose default is WARNING). Returns the handle
        (``stop()`` or ``with``); :meth:`finish` stops it.

        Examples
        --------
        >>> run.capture_logging("transformers", level="WARNING")  # doctest: +SKIP
        """
        from runwatch.client.capture import LoggingCapture

        self._check_open()
        number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(number, int):
            raise ValueError(f"level: unknown logging level {level!r}")
        capture = LoggingCapture(self, logger, number).start()
        self._captures.append(capture)
        return capture

    # -- automatic metrics -------------------------------------------------

    def enable_system_metrics(self, interval: float = 1.0, timing: bool = True) -> None:
        """Add ``cpu_mem`` / ``gpu_mem`` (at most every ``interval`` s) and, with ``timing``, ``step_time``.

        ``step_time`` is the time between two :meth:`log` calls that advance
        the step, divided by the number of steps advanced: the whole step,
        data wait included (runwatch's convention), plus whatever the loop did
        in between unless wrapped in :meth:`untimed` (e.g. validation).
        ``data_time`` comes with :meth:`track_data`. :func:`init` turns this on.
        """
        from runwatch.client.environment import SystemSampler

        with self._lock:
            if self._sampler is None:
                self._sampler = SystemSampler(interval)
            else:
                self._sampler.interval = float(interval)
            self._timing = self._timing or timing

    def track_data(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """Wrap a data loader: the wait for each batch becomes ``data_time`` (seconds, per step).

        Examples
        --------
        >>> for step, (x, y) in enumerate(run.track_data(loader)):  # doctest: +SKIP
        ...     ...
        ...     run.log({"loss": loss.item()}, step=step)   # adds data_time and step_time
        """
        self._timing = True
        self._data_tracked = True
        return _TrackedIterable(self, iterable)

    def _add_data_wait(self, seconds: float) -> None:
        self._data_wait += seconds

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """Leave the time spent inside out of ``step_time`` (validation, checkpointing)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - t0

    def watch(self, model: Any, every: int = 10, *, grad_norm_every_step: bool = False, example_input: Any = None) -> Any:
        """Collect per-layer statistics of ``model`` every ``every`` optimizer steps, no hooks to write.

        Adds to the next :meth:`log` after each collection ``grad_norm/<layer>``,
        ``weight_norm/<layer>``, ``update_ratio/<layer>``, ``act/mean|std|zero_frac|sat_frac/<layer>``,
        the optimizer's learning rate as ``lr`` (when all its parameter groups share one and the
        loop does not log ``lr`` itself) and the global ``grad_norm`` (see
        :class:`~runwatch.client.torch_watch.ModelWatcher`); with
        ``grad_norm_every_step`` also ``grad_norm`` on every other step (one
        more pass over the gradients per step: +2-3 % on the benchmark MLP).
        Statistics are
        taken just before each ``optimizer.step()`` of an optimizer that owns
        the model's parameters (gradients are there then, whatever the loop's
        order of ``zero_grad``), through torch's global optimizer step hook;
        without an optimizer step between two :meth:`log` calls they are taken
        at the :meth:`log` call. Also records the model's architecture in the
        run's start record if it had none and awaits none (see :meth:`set_model`).

        Returns
        -------
        ModelWatcher
            Its ``close()`` removes the hooks (:meth:`finish` does too).
        """
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        from runwatch.client.torch_watch import ModelWatcher

        watcher = ModelWatcher(model, every=every, always_grad_norm=grad_norm_every_step)
        watcher._runwatch_params = {id(p) for p in model.parameters()}  # type: ignore[attr-defined]
        self._watchers.append(watcher)
        if self._opt_hook is None:
            self._opt_hook = register_optimizer_step_pre_hook(self._before_optimizer_step)
        if not self.start_message.architecture.layers and self._architecture_recording is None:
            self.set_model(model, example_input)
        return watcher

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._finished or not self._watchers:
            return
        try:
            matches = self._opt_matches.get(optimizer)
        except TypeError:
            matches = None
        for watcher in self._watchers:
            key = (id(watcher), len(optimizer.param_groups))
            owned = None if matches is None else matches.get(key)
            if owned is None:
                owned = any(id(p) in watcher._runwatch_params for g in optimizer.param_groups for p in g["params"])
                with contextlib.suppress(TypeError):
                    self._opt_matches.setdefault(optimizer, {})[key] = owned
            if not owned:
                continue
            try:
                stats = watcher.stats()
            except Exception:
                logger.exception("runwatch: collecting model statistics failed")
                continue
            self._saw_optimizer_step = True
            if stats:
                lr = _single_lr(optimizer) if not self._logs_lr else None
                if lr is not None:
                    stats["lr"] = lr
                with self._lock:
                    self._watch_stash.update(stats)
                    self._watch_fresh = True

    def collect_watch(self) -> None:
        """Take the watched models' statistics now (for loops without a torch optimizer step)."""
        for watcher in self._watchers:
            stats = watcher.stats()
            if stats:
                with self._lock:
                    self._watch_stash.update(stats)
                    self._watch_fresh = True

    def set_model(self, model: Any, example_input: Any = None) -> None:
        """Describe ``model``'s architecture into the run's start record and re-send it.

        A server fills the architecture in once, so it is sent only when it
        is known to be right: at once with ``example_input`` (one traced
        forward pass in eval mode) or for a model made of ``nn.Sequential``
        alone; otherwise from the model's first forward pass in the training
        loop, recorded by one-shot hooks that change nothing in it (see
        :func:`~runwatch.client.torch_watch.describe_first_forward`). If no
        forward pass comes before :meth:`finish`, the registration-order
        description is sent then. Errors are logged, never raised.

        Examples
        --------
        >>> run.set_model(model)            # sent after model's first forward pass  # doctest: +SKIP
        >>> run.set_model(model, torch.randn(1, 64))  # sent now                     # doctest: +SKIP
        """
        try:
            arch = _architecture_before_training(model, example_input)
        except Exception:
            logger.exception("runwatch: cannot describe the model's architecture")
            return
        if arch is not None:
            self._record_architecture(arch)
        elif self._architecture_recording is None or self._architecture_recording.model is not model:
            self._describe_at_first_forward(model)

    def _describe_at_first_forward(self, model: Any) -> None:
        from runwatch.client.torch_watch import describe_first_forward

        self._drop_architecture_recording()
        try:
            self._architecture_recording = describe_first_forward(model, self._record_architecture)
        except Exception:
            logger.exception("runwatch: cannot describe the model's architecture")

    def _drop_architecture_recording(self) -> None:
        recording, self._architecture_recording = self._architecture_recording, None
        if recording is not None:
            recording.remove()

    def _record_architecture(self, arch: runs_pb2.Architecture) -> None:
        self._drop_architecture_recording()
        self.start_message.architecture.CopyFrom(arch)
        if not self.start_message.framework:
            torch = sys.modules.get("torch")
            if torch is not None:
                self.start_message.framework = f"torch {torch.__version__}"
        self.update_start()

    def _send_awaited_architecture(self) -> None:
        """The model never ran a forward pass: record its registration-order description, so the run has one."""
        recording = self._architecture_recording
        if recording is None or self._finished:
            return
        from runwatch.client.torch_watch import describe_architecture

        self._drop_architecture_recording()
        try:
            self._record_architecture(describe_architecture(recording.model))
        except Exception:
            logger.exception("runwatch: cannot describe the model's architecture")

    def update_start(self, hyperparameters: Mapping[str, Any] | None = None, environment: Mapping[str, Any] | None = None) -> None:
        """Merge into the start record and re-send it (when that changed it).

        The server adds what its record lacks (new keys, an architecture); a value that
        contradicts one already recorded is rejected by its path and logged here. A start
        record that adds nothing is not sent again (the server would count it in
        ``stats().duplicates`` as a re-send).

        Raises
        ------
        ValueError
            When ``hyperparameters`` nest deeper than the server accepts (16 levels).
        """
        self._check_open()
        if hyperparameters:
            merged = convert.struct_to_dict(self.start_message.hyperparameters)
            merged.update(hyperparameters)
            self.start_message.hyperparameters.Clear()
            self.start_message.hyperparameters.CopyFrom(convert.to_struct(merged))
        self.start_message.environment.update(_environment_facts(environment))
        self._send_start()

    def _send_start(self) -> None:
        """Queue a copy of the start record, unless it is the one sent last (the server would count a repeat
        as a re-sent duplicate). A copy: the queued message is serialized later, on the sender's thread, and
        must not change meanwhile (an architecture recorded into ``start_message`` would turn the first
        ``RunStart`` into the second one, making that a duplicate)."""
        start = runs_pb2.RunStart()
        start.CopyFrom(self.start_message)
        wire = start.SerializeToString(deterministic=True)
        if wire == self._sent_start:
            return
        self._sent_start = wire
        self.client._sender.put(START, start)

    # -- actions -----------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the training loop to stop: sets :attr:`should_stop` (first reason wins)."""
        if not self.should_stop:
            self.stop_reason = reason
            self.should_stop = True

    def check_stop(self) -> None:
        """Raise :class:`StopTraining` if a stop was requested."""
        if self.should_stop:
            raise StopTraining(self.stop_reason)

    def defer(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the training thread, at the next :meth:`log` or :meth:`apply_actions`."""
        self._deferred.append(fn)

    def apply_actions(self) -> int:
        """Apply deferred actions now (call from the training thread); returns how many ran."""
        n = 0
        while self._deferred:
            fn = self._deferred.popleft()
            try:
                fn()
            except Exception:
                logger.exception("runwatch: action failed")
            n += 1
        return n

    def add_skips(self, count: int) -> None:
        self._skips += int(count)

    def should_skip_batch(self) -> bool:
        """True (once per skip granted by :class:`SkipBatches`) when this batch's optimizer step should be skipped."""
        if self._skips <= 0:
            return False
        self._skips -= 1
        step = self.current_step
        text = f"runwatch action skip_batches: skipped the optimizer step after step {step}"
        self.actions_taken.append(text)
        with contextlib.suppress(RuntimeError):
            self.log_text(text, level="warning", step=step)
        return True

    def stop_on_divergence(
        self, kinds: Iterable[str | int] = ("divergence_predicted",), min_severity: str | int = "warning"
    ) -> StopOnDivergence:
        """Opt in: set :attr:`should_stop` on predicted divergence, WARNING and up (see :class:`StopOnDivergence`)."""
        action = StopOnDivergence(self, kinds, min_severity)
        self.on_anomaly(action)
        return action

    def reduce_lr_on_anomaly(self, optimizer: Any, factor: float = 0.5, **kwargs: Any) -> ReduceLROnAnomaly:
        """Opt in: lower the LR on a loss spike or plateau, WARNING and up (see :class:`ReduceLROnAnomaly`)."""
        action = ReduceLROnAnomaly(self, optimizer, factor, **kwargs)
        self.on_anomaly(action)
        return action

    def skip_batches_on_anomaly(self, count: int = 1, **kwargs: Any) -> SkipBatches:
        """Opt in: skip the next ``count`` optimizer steps after a bad batch, WARNING and up (see SkipBatches)."""
        action = SkipBatches(self, count=count, **kwargs)
        self.on_anomaly(action)
        return action

    # -- delivery and end --------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is acknowledged by the server.

        Returns False on timeout. (Counters are per client; see
        :meth:`RunwatchClient.stats`.)
        """
        return self.client.flush(timeout)

    def stats(self) -> SenderStats:
        """The client's delivery counters."""
        return self.client.stats()

    def finish(self, status: str | int | None = None, reason: str = "", timeout: float | None = 10.0) -> bool:
        """Close the run: queue its ``RunEnd`` and flush (up to ``timeout`` seconds).

        Parameters
        ----------
        status
            ``"finished"``, ``"failed"`` or ``"killed"`` (or a ``RunStatus``
            number); None means ``"killed"`` after a requested stop (with
            :attr:`stop_reason` as the reason), else ``"finished"``.
        reason
            Why it ended, e.g. ``"completed"`` or ``"loss became NaN"``.
        timeout
            Seconds to wait for delivery.

        Returns
        -------
        bool
            Whether everything was delivered and accepted: False when the
            flush timed out (with a spool, what was not acknowledged stays on
            disk for the next client), or when, since this run started, the
            server rejected an item (see :attr:`RunwatchClient.violations`) or
            the client dropped one (``stats().dropped``). The counters are the
            client's: with several runs open on one :class:`RunwatchClient`,
            a rejection of any of them counts. Also False when a metric was
            logged again at a step with another value (:attr:`refused_repeats`).
            Calling again answers the same question again without sending a
            second ``RunEnd``. It returns within ``timeout`` (a few
            milliseconds more to close the connection of a run opened by
            :func:`init`), also when the server accepts the connection but
            does not answer.
        """
        if status is None:
            status = "killed" if self.should_stop else "finished"
            if self.should_stop and not reason:
                reason = self.stop_reason
        code = convert.run_status(status)  # a bad status raises before the run is closed
        self._send_awaited_architecture()
        for capture in self._captures:  # their last lines go out before the RunEnd
            capture.stop()
        with self._lock:
            already = self._finished
            self._finished = True
            if not already:
                end = runs_pb2.RunEnd(run_id=self.run_id, status=code, reason=str(reason), end_time=time.time())
                self.client._sender.put(END, end)
        if not already:
            self._release_hooks()
        delivered = (
            self.client.flush(timeout)
            and self._undelivered() == self._undelivered_at_start
            and self.refused_repeats == 0
        )
        if not already:
            _forget_current(self)
            grace = self.client.anomaly_grace
            watches = [w for w in self._watches if w.running]
            if self._owns_client and watches:
                # Anomalies raised by the last events still reach the callbacks during the grace
                # period; then the watches stop and the connection closes, off the caller's thread.
                def close_later() -> None:
                    for w in watches:
                        w.stop(timeout=2.0)
                    self.client.close(timeout=2.0)

                timer = threading.Timer(grace, close_later)
                timer.daemon = True
                timer.start()
            else:
                for watch in self._watches:
                    watch.stop(delay=grace)
                if self._owns_client:
                    self.client.close(timeout=0)
        return delivered

    def _undelivered(self) -> int:
        """Items the server rejected or the client gave up on, over the client's life."""
        stats = self.client.stats()
        return stats.rejected + stats.dropped

    def _release_hooks(self) -> None:
        self._drop_architecture_recording()
        if self._opt_hook is not None:
            self._opt_hook.remove()
            self._opt_hook = None
        for watcher in self._watchers:
            with contextlib.suppress(Exception):
                watcher.close()
        self._watchers.clear()
        if self._sampler is not None:
            self._sampler.close()

    def on_anomaly(
        self,
        callback: Callable[[anomaly_pb2.Anomaly], Any],
        min_severity: str | int = 0,
        include_history: bool = True,
    ) -> AnomalyWatch:
        """Call ``callback(anomaly)`` from a background thread for each anomaly of this run.

        Reconnects if the watch stream breaks; each anomaly revision is passed
        once (history replays after a reconnect are skipped). Stops shortly
        after :meth:`finish`, or on ``stop()`` of the returned handle.
        Exceptions raised by ``callback`` are logged and do not stop the watch.
        Ready-made callbacks: :meth:`stop_on_divergence`,
        :meth:`reduce_lr_on_anomaly`, :meth:`skip_batches_on_anomaly`.

        Parameters
        ----------
        callback
            Receives ``anomaly_pb2.Anomaly`` messages.
        min_severity
            Only this severity and above (name or number).
        include_history
            Also deliver anomalies raised before the watch started.

        Examples
        --------
        >>> stop = threading.Event()                                   # doctest: +SKIP
        >>> run.on_anomaly(lambda a: stop.set(), min_severity="error")  # doctest: +SKIP
        >>> for batch in loader:                                        # doctest: +SKIP
        ...     if stop.is_set():
        ...         run.finish("killed", "runwatch reported an error")
        ...         break
        """
        request = service_pb2.WatchRequest(
            run_id=self.run_id, min_severity=convert.severity(min_severity), include_history=include_history
        )
        watch = AnomalyWatch(self.client._watch_stub, request, callback)
        self._watches.append(watch)
        if self._finished:
            watch.stop(delay=self.client.anomaly_grace)
        return watch

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"run {self.run_id} is finished")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._finished:
            return
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed", "KeyboardInterrupt")
        elif issubclass(exc_type, StopTraining):
            self.finish("killed", self.stop_reason or str(exc))
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}"[:1000])

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, project={self.project!r}, step={self._next_step})"


class _TrackedIterable:
    """Iterates a loader, adding each wait for the next item to the run's ``data_time``."""

    def __init__(self, run: Run, iterable: Iterable[Any]) -> None:
        self._run = run
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        it = iter(self._iterable)
        clock = time.perf_counter
        run = self._run
        while True:
            t0 = clock()
            try:
                item = next(it)
            except StopIteration:
                return
            run._add_data_wait(clock() - t0)
            yield item

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterable, name)


_current: list[Run] = []


def current_run() -> Run | None:
    """The run :func:`init` opened most recently and not yet finished."""
    return _current[-1] if _current else None


def _forget_current(run: Run) -> None:
    with contextlib.suppress(ValueError):
        _current.remove(run)


def init(
    project: str = "default",
    config: Mapping[str, Any] | None = None,
    model: Any = None,
    *,
    run_id: str | None = None,
    target: str | None = None,
    kind: str | int = "training",
    tags: Iterable[str] = (),
    environment: Mapping[str, Any] | None = None,
    example_input: Any = None,
    spool_dir: str | os.PathLike[str] | None | bool = None,
    spool_max_bytes: int = 256 << 20,
    spool_on_full: str = "drop_oldest",
    capture_env: bool = True,
    system_metrics: bool = True,
    system_interval: float = 1.0,
    resume: bool | None = None,
    **client_options: Any,
) -> Run:
    """Open a run on a runwatch server, W&B / MLflow style; returns the :class:`Run`.

    The run owns its connection (closed by :meth:`Run.finish`), spools to
    disk, records where it runs (git commit/branch/dirty state of the
    script's repository, Python/PyTorch/CUDA versions, device, host: see
    :mod:`runwatch.client.environment`) and logs ``step_time``, ``cpu_mem``
    and ``gpu_mem`` with each step.

    Parameters
    ----------
    project
        Project the run belongs to.
    config
        Hyperparameters (JSON-like; numpy/torch scalars are converted).
    model
        A torch model: its architecture goes into the start record, described
        from its first forward pass in the training loop (at once for a model
        made of ``nn.Sequential`` alone, or with ``example_input``); see
        :meth:`Run.set_model`.
    run_id
        Unique id; generated when None.
    target
        ``host:port`` of the server, or ``https://host:port`` for TLS; default
        ``$RUNWATCH_TARGET``, else ``127.0.0.1:50051``. A token and TLS files
        come from ``$RUNWATCH_TOKEN``, ``$RUNWATCH_CA_FILE``, ... unless given
        as ``token=``, ``ca_file=``, ... (see :class:`RunwatchClient`).
    kind, tags, environment
        As for :meth:`RunwatchClient.start_run` (``environment`` wins over captured facts).
    example_input
        Input for one traced forward pass now, to describe ``model`` before
        training instead of from its first forward pass.
    spool_dir
        Folder of the on-disk spool: None = ``$RUNWATCH_SPOOL_DIR`` or
        ``~/.cache/runwatch/spool``; False = memory only.
    spool_max_bytes, spool_on_full
        Bound of the spool, and ``"drop_oldest"`` or ``"drop_newest"`` beyond it.
    capture_env
        Record git, versions and device.
    system_metrics
        Log ``cpu_mem``/``gpu_mem`` (every ``system_interval`` s) and ``step_time``.
    resume
        Continue ``run_id`` if it exists, ended or not (see
        :meth:`RunwatchClient.start_run`); default ``$RUNWATCH_RESUME``
        (``1``/``true``), so a scheduler that restarts a job with the same
        ``RUNWATCH_RUN_ID`` continues its run.
    **client_options
        Passed to :class:`RunwatchClient` (``max_queue``, ``flush_interval``, ...).

    Examples
    --------
    >>> import runwatch.client as rw                                      # doctest: +SKIP
    >>> run = rw.init(project="mnist", config={"lr": 1e-3}, model=model)  # doctest: +SKIP
    >>> run.watch(model, every=10)                                       # doctest: +SKIP
    >>> for i, (x, y) in enumerate(run.track_data(loader)):              # doctest: +SKIP
    ...     loss = step(x, y)
    ...     run.log({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=i)
    >>> run.finish()                                                     # doctest: +SKIP
    """
    from runwatch.client.environment import capture_environment
    from runwatch.client.spool import default_spool_dir

    if config is not None:
        convert.to_struct(config, "config")  # refused by the argument's own name, before a connection or spool exists
    convert.validate_project(project)
    facts = _environment_facts(environment)
    target = target or os.environ.get("RUNWATCH_TARGET") or DEFAULT_TARGET
    if spool_dir is False:
        spool_path = None
    elif spool_dir is None or spool_dir is True:
        spool_path = default_spool_dir()
    else:
        spool_path = Path(spool_dir)
    client = RunwatchClient(
        target, spool_dir=spool_path, spool_max_bytes=spool_max_bytes, spool_on_full=spool_on_full, **client_options
    )
    try:
        env = capture_environment(model) if capture_env else {}
        env.update(facts)
        run = client.start_run(
            run_id=run_id,
            project=project,
            kind=kind,
            hyperparameters=config,
            model=model,
            tags=tags,
            environment=env,
            example_input=example_input,
            resume=_resume_default() if resume is None else resume,
        )
    except BaseException:
        client.close(timeout=0)
        raise
    run._owns_client = True
    if system_metrics:
        run.enable_system_metrics(system_interval)
    _current.append(run)
    return run


def _resume_default() -> bool:
    value = os.environ.get("RUNWATCH_RESUME", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"RUNWATCH_RESUME: expected 1/true/yes or 0/false/no, got {value!r}")


class AnomalyStream:
    """Iterator over a ``WatchAnomalies`` stream; ``cancel()`` (or leaving ``with``) ends it.

    Iteration ends quietly when the stream is cancelled or its timeout
    expires; other stream errors raise ``grpc.RpcError``.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[anomaly_pb2.Anomaly]:
        return self

    def __next__(self) -> anomaly_pb2.Anomaly:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise StopIteration from None
            raise

    def cancel(self) -> None:
        """End the stream."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class AnomalyWatch:
    """Background thread feeding one run's anomalies to a callback; see :meth:`Run.on_anomaly`."""

    def __init__(
        self,
        stub: service_pb2_grpc.WatchServiceStub,
        request: service_pb2.WatchRequest,
        callback: Callable[[anomaly_pb2.Anomaly], Any],
        backoff_max: float = 5.0,
    ) -> None:
        self.request = request
        self.callback = callback
        self.delivered = 0
        self._stub = stub
        self._stop = threading.Event()
        self._call: Any = None
        self._lock = threading.Lock()
        self._seen: set[tuple[str, int]] = set()
        self._backoff_max = backoff_max
        self._started = time.time()
        self._thread = threading.Thread(target=self._run, name=f"runwatch-watch-{request.run_id}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, delay: float = 0.0, timeout: float | None = None) -> None:
        """Stop watching, after ``delay`` seconds (without blocking) or now.

        With no delay, waits up to ``timeout`` seconds for the thread to end.
        """
        if delay > 0:
            timer = threading.Timer(delay, self.stop)
            timer.daemon = True
            timer.start()
            return
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        request = self.request
        warned = False
        while not self._stop.is_set():
            try:
                call = self._stub.WatchAnomalies(request)
            except ValueError:  # the channel was closed under us: nothing more to watch
                break
            with self._lock:
                self._call = call
            if self._stop.is_set():
                call.cancel()
            try:
                for anomaly in call:
                    backoff = 0.1
                    key = (anomaly.id, anomaly.revision)
                    if key in self._seen or (
                        not self.request.include_history and anomaly.detected_time < self._started
                    ):
                        continue
                    self._seen.add(key)
                    self.delivered += 1
                    try:
                        self.callback(anomaly)
                    except Exception:
                        logger.exception("runwatch: anomaly callback failed")
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) and not warned:
                    warned = True  # else callbacks would stay silent for a reason only debug logs tell
                    logger.warning(
                        "runwatch: cannot watch anomalies of %s (%s: %s); a token with the 'read' scope is needed",
                        self.request.run_id, code.name, exc.details(),
                    )  # fmt: skip
                logger.debug("runwatch: anomaly watch for %s broke: %s", self.request.run_id, exc)
            if self._stop.wait(backoff * random.uniform(0.8, 1.2)):
                break
            backoff = min(backoff * 2, self._backoff_max)
            if not request.include_history:
                # Replay history after a break so nothing raised meanwhile is missed;
                # older anomalies are filtered by detected_time above.
                request = service_pb2.WatchRequest()
                request.CopyFrom(self.request)
                request.include_history = True


def _architecture_before_training(model: Any, example_input: Any) -> runs_pb2.Architecture | None:
    """``model``'s architecture when it is known without the training loop's forward pass, else None.

    Known with an example input (a traced pass), and for models whose
    registration order is their forward order (``nn.Sequential`` alone).
    """
    from runwatch.client.torch_watch import describe_architecture, registration_order_is_forward_order

    if example_input is None and not registration_order_is_forward_order(model):
        return None
    return describe_architecture(model, example_input)


@atexit.register
def _flush_at_exit() -> None:
    for client in list(_live_clients):
        with contextlib.suppress(Exception):  # never fail interpreter shutdown
            client.close(timeout=2.0)


def _same_value(a: float, b: float) -> bool:
    """Whether a repeated metric value is the one already logged (NaN repeats NaN)."""
    return a == b or (math.isnan(a) and math.isnan(b))


def _single_lr(optimizer: Any) -> float | None:
    """The optimizer's learning rate when every parameter group uses the same finite one, else None.

    ``run.watch`` logs it as ``lr`` beside the norms, so the rules that read the learning rate
    (the step size against the weights, warm-ups, jumps) have it without the loop logging it.

    Examples
    --------
    >>> class Opt:
    ...     param_groups = [{"lr": 0.1}, {"lr": 0.1}]
    >>> _single_lr(Opt())
    0.1
    >>> Opt.param_groups = [{"lr": 0.1}, {"lr": 0.01}]   # a head trained faster than the backbone: ambiguous
    >>> _single_lr(Opt()) is None
    True
    """
    try:
        rates = {float(g["lr"]) for g in optimizer.param_groups}
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if len(rates) != 1:
        return None
    (lr,) = rates
    return lr if math.isfinite(lr) else None
