"""The runwatch client: open runs, log metrics and text, watch anomalies.

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
import logging
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from runwatch.client import convert
from runwatch.client.sender import END, EVENT, LOG, START, BatchSender, SenderStats
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

if TYPE_CHECKING:
    from torch import nn

__all__ = ["AnomalyStream", "AnomalyWatch", "Run", "RunwatchClient"]

logger = logging.getLogger("runwatch.client")

DEFAULT_TARGET = "127.0.0.1:50051"

# gRPC's own reconnect backoff goes up to 120 s; keep it short so a restarted
# server is found again within seconds.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

_live_clients: weakref.WeakSet[RunwatchClient] = weakref.WeakSet()


class RunwatchClient:
    """Connection to a runwatch server; creates runs and watches anomalies.

    One client holds one gRPC channel and one background sender that streams
    the telemetry of all its runs over a single ``StreamEvents`` stream.

    Parameters
    ----------
    target
        ``host:port`` of the server.
    channel
        Use this channel instead of creating one (``target`` is then ignored);
        the client does not close a channel it did not create.
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
    ) -> None:
        self.target = target
        self._owns_channel = channel is None
        self.channel = channel or grpc.insecure_channel(target, options=[*_CHANNEL_OPTIONS, *options])
        self.anomaly_grace = anomaly_grace
        self._sender = BatchSender(
            self.channel,
            max_queue=max_queue,
            max_batch_items=max_batch_items,
            flush_interval=flush_interval,
            max_inflight=max_inflight,
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
            A torch model; its architecture is described with
            :func:`runwatch.client.torch_watch.describe_architecture` unless
            ``architecture`` is given.
        architecture
            The architecture, when already described.
        tags
            Free-form tags.
        framework
            e.g. ``"torch 2.13.0"``; detected from ``model`` or an imported
            torch when None.
        environment
            Extra environment facts, merged over python/platform/host/pid.

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
        if architecture is None and model is not None:
            from runwatch.client.torch_watch import describe_architecture

            architecture = describe_architecture(model)
        if framework is None:
            torch = sys.modules.get("torch")
            framework = f"torch {torch.__version__}" if torch is not None and hasattr(torch, "__version__") else ""
        env = convert.default_environment()
        if environment:
            env.update({str(k): str(v) for k, v in environment.items()})
        start = runs_pb2.RunStart(
            run_id=run_id,
            project=project,
            kind=convert.run_kind(kind),
            start_time=time.time(),
            hyperparameters=convert.to_struct(hyperparameters),
            framework=framework,
            tags=[str(t) for t in tags],
            environment=env,
        )
        if architecture is not None:
            start.architecture.CopyFrom(architecture)
        self._sender.put(START, start)
        return Run(self, run_id, project, start)

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

    def __enter__(self) -> RunwatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunwatchClient({self.target!r})"


class Run:
    """An open run; created by :meth:`RunwatchClient.start_run`.

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

    @property
    def step(self) -> int:
        """The step the next :meth:`log` without ``step`` will use."""
        return self._next_step

    @property
    def finished(self) -> bool:
        return self._finished

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics at a step; returns at once.

        Parameters
        ----------
        metrics
            Metric name to number (floats, ints, numpy or one-element torch
            values; NaN and Inf are valid). Names follow runwatch's
            conventions: ``loss``, ``val/loss``, ``grad_norm/<layer>``, ...
        step
            Training step; None uses the step after the previous call's (0
            first). Steps must not decrease.

        Examples
        --------
        >>> run.log({"loss": 0.9})             # step 0  # doctest: +SKIP
        >>> run.log({"loss": 0.8})             # step 1  # doctest: +SKIP
        >>> run.log({"val/acc": 0.7}, step=10)  # doctest: +SKIP
        """
        values = convert.metrics_map(metrics)
        with self._lock:
            self._check_open()
            if step is None:
                step = self._next_step
            else:
                step = int(step)
                if step < 0:
                    raise ValueError(f"step must be >= 0, got {step}")
            self._next_step = max(self._next_step, step + 1)
            if values:
                # inside the lock so concurrent callers enqueue in step order
                event = runs_pb2.MetricEvent(run_id=self.run_id, step=step, wall_time=time.time(), metrics=values)
                self.client._sender.put(EVENT, event)

    def log_text(self, text: str, level: str | int = "info", step: int = 0) -> None:
        """Record a text log line (cut to 64 KiB); returns at once.

        Parameters
        ----------
        text
            The line.
        level
            ``"debug"``, ``"info"``, ``"warning"``, ``"error"``,
            ``"critical"``, a ``LogLevel`` number or a stdlib ``logging`` level.
        step
            Step the line refers to (0 when unknown).
        """
        self._check_open()
        line = runs_pb2.LogLine(
            run_id=self.run_id,
            time=time.time(),
            level=convert.log_level(level),
            text=convert.truncate_text(str(text)),
            step=int(step),
        )
        self.client._sender.put(LOG, line)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is acknowledged by the server.

        Returns False on timeout. (Counters are per client; see
        :meth:`RunwatchClient.stats`.)
        """
        return self.client.flush(timeout)

    def stats(self) -> SenderStats:
        """The client's delivery counters."""
        return self.client.stats()

    def finish(self, status: str | int = "finished", reason: str = "", timeout: float | None = 10.0) -> bool:
        """Close the run: queue its ``RunEnd`` and flush (up to ``timeout`` seconds).

        Parameters
        ----------
        status
            ``"finished"``, ``"failed"`` or ``"killed"`` (or a ``RunStatus`` number).
        reason
            Why it ended, e.g. ``"completed"`` or ``"loss became NaN"``.
        timeout
            Seconds to wait for delivery.

        Returns
        -------
        bool
            Whether everything was acknowledged. Calling again returns the
            flush result without sending a second ``RunEnd``.
        """
        code = convert.run_status(status)  # a bad status raises before the run is closed
        with self._lock:
            already = self._finished
            self._finished = True
            if not already:
                end = runs_pb2.RunEnd(run_id=self.run_id, status=code, reason=str(reason), end_time=time.time())
                self.client._sender.put(END, end)
        flushed = self.client.flush(timeout)
        if not already:
            for watch in self._watches:
                watch.stop(delay=self.client.anomaly_grace)
        return flushed

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

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._finished:
            return
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed", "KeyboardInterrupt")
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}"[:1000])

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, project={self.project!r}, step={self._next_step})"


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

    def __enter__(self) -> AnomalyStream:
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
        while not self._stop.is_set():
            call = self._stub.WatchAnomalies(request)
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
                    except Exception:  # noqa: BLE001 - a user callback must not end the watch
                        logger.exception("runwatch: anomaly callback failed")
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
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


@atexit.register
def _flush_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.close(timeout=2.0)
        except Exception:  # noqa: BLE001 - never fail interpreter shutdown
            pass
