"""The asyncio gRPC server: ingest, watch, run queries, advisor; health and reflection."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from runwatch.nas.history_file import read_history
from runwatch.service.advice import AdviceError, AdviceService
from runwatch.service.auth import Access, AuthInterceptor
from runwatch.service.history import metric_history
from runwatch.service.hub import AnomalyHub
from runwatch.service.ingest_access import ProjectScreen, Screened
from runwatch.service.limits import IngestExhausted, LimitsCollector, StreamLimits
from runwatch.service.pipeline import BatchResult, DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.service.store_backends import store_unavailable
from runwatch.service.telemetry import ServiceMetrics
from runwatch.service.tls import server_credentials
from runwatch.service.tokens import ANYONE, Principal, TokenStore
from runwatch.service.unavailable import CURRENT_LANE, IngestUnavailable, Lane
from runwatch.service.validation import check_run_id
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

log = logging.getLogger("runwatch.service")

SERVICE_NAMES = tuple(
    service_pb2.DESCRIPTOR.services_by_name[n].full_name
    for n in ("IngestService", "WatchService", "RunService", "AdvisorService")
)
# Batches read from the ingest streams are applied in groups (service/pipeline.py: begin_group): one commit,
# and one detection call per run, for every batch the streams delivered while the previous group was applied.
# A group's first batch waits as long as the previous group took to apply, at most GROUP_WAIT_S, once groups
# hold several batches: idle, or with one client awaiting each ack, a batch is applied at once; under load,
# groups grow. The batches a group may hold follow how long the last one took
# against GROUP_BUDGET_S (more when it took less: a run's batches cost less together), and the streams stop
# reading while the next group is full: a batch read waits about GROUP_WAIT_S + GROUP_BUDGET_S at most.
GROUP_WAIT_S = 0.015
GROUP_BUDGET_S = 0.025
GROUP_MIN_BATCHES = 1
GROUP_MAX_BATCHES = 4096
# ... and at most this many bytes of batches (~1,500 events of 16 metrics): large batches gain little from
# sharing a detection call, so a group of them stays about one budget long; one larger batch is a group alone.
GROUP_MAX_BYTES = 512 << 10
# gRPC's own limit is a backstop far above the batch limit, so an oversized batch gets a
# field-level rejection on a stream that stays open instead of a transport error.
GRPC_MAX_MESSAGE_BYTES = 256 << 20


def _bad_request(message: str, violations) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.reason) for v in violations
            ]
        )
    )
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail]))


class _ScreenedBatch:
    """A batch some of whose items the caller's token may not write: the rest's result, and the refusals."""

    __slots__ = ("kept", "screened")

    def __init__(self, kept, screened: Screened) -> None:
        self.kept = kept  # what RunwatchServer.ingest returned for the items let through; None if none
        self.screened = screened


_REVOKED = object()
REVOKED = "token revoked or changed while the stream was open; reconnect with a valid token"
SHUTTING_DOWN = (
    "the server is shutting down; re-send what was not acknowledged to it after its restart, or to another instance"
)

STATUS_LINGER_S = 0.2  # at shutdown: time for clients to read their calls' final status before connections close


class _Reader:
    """A StreamEvents call's request reader, as a shutdown sees it: stopped at once if it waits for a batch."""

    __slots__ = ("task", "waiting")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.waiting = False  # awaiting the client's next batch (nothing of ours in hand)


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


class IngestServicer:
    """IngestService with raw-bytes requests: undecodable or oversized batches are rejected, not fatal."""

    def __init__(self, server: RunwatchServer) -> None:
        self.s = server

    def handler(self) -> grpc.GenericRpcHandler:
        ack = service_pb2.IngestAck.SerializeToString
        return grpc.method_handlers_generic_handler(
            "runwatch.v1.IngestService",
            {
                "Ingest": grpc.unary_unary_rpc_method_handler(self.Ingest, response_serializer=ack),
                "StreamEvents": grpc.stream_stream_rpc_method_handler(self.StreamEvents, response_serializer=ack),
            },
        )

    async def Ingest(self, raw: bytes, context: grpc.aio.ServicerContext) -> service_pb2.IngestAck:
        CURRENT_LANE.set(Lane())
        result = self.s.ingest_as(await self.s.access.principal(context), raw)
        try:
            ack = await self.s.settle(result)
        except IngestUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except IngestExhausted as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if isinstance(result, _ScreenedBatch):
            refused = result.screened.refused
            first = "; ".join(f"{f}: {r}" for f, r in refused[:3])
            msg = f"accepted {ack.accepted}, refused {len(refused)} (of {ack.rejected} rejected): {first}"
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, msg)
        if ack.rejected:
            first = "; ".join(f"{v.field}: {v.reason}" for v in ack.violations[:3])
            msg = f"accepted {ack.accepted}, rejected {ack.rejected}: {first}"
            await context.abort_with_status(_bad_request(msg, ack.violations))
        return ack

    async def StreamEvents(self, requests: AsyncIterator[bytes], context) -> AsyncIterator[service_pb2.IngestAck]:
        if self.s.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        peer = context.peer()
        if (refusal := self.s.limits.open_stream(peer)) is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        state = _Reader()
        self.s.readers.add(state)
        try:
            pending: asyncio.Queue = asyncio.Queue(maxsize=256)
            principal = await self.s.access.principal(context)

            async def consume() -> None:
                try:
                    batches = aiter(requests)
                    while not self.s.draining:
                        state.waiting = True
                        try:
                            raw = await anext(batches)
                        except StopAsyncIteration:
                            break
                        finally:
                            state.waiting = False
                        if not self.s.access.still_valid(principal):
                            await pending.put(_REVOKED)
                            break
                        await pending.put(self.s.enqueue(principal, raw))
                        await self.s.room()  # the next group is full: read on once it is taken
                finally:
                    await pending.put(None)

            # Reading the next batch overlaps with waiting for the previous one's commit.
            CURRENT_LANE.set(Lane())  # before the reader task is made: its ingest tasks inherit it
            reader = state.task = asyncio.create_task(consume())
            try:
                while (result := await pending.get()) is not None:
                    if result is _REVOKED:
                        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REVOKED)
                    try:
                        if isinstance(result, asyncio.Future) and not isinstance(result, asyncio.Task):
                            result = await result  # applied with its group (RunwatchServer.enqueue)
                        ack = await self.s.settle(result)
                    except IngestUnavailable as exc:
                        # The client re-sends every batch not yet acknowledged, in order, on a new stream.
                        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
                    except IngestExhausted as exc:
                        # Nothing of this batch or the later ones was applied: the client re-sends them later.
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                    yield ack
                if self.s.draining:  # every batch read was acknowledged; the rest goes elsewhere
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            finally:
                reader.cancel()
        finally:
            self.s.readers.discard(state)
            self.s.limits.close_stream(peer)


def _store_errors(method):
    """A query handler whose store cannot be reached (the database down, its connection lost) answers UNAVAILABLE
    "store unavailable: ..." (password hidden): before, gRPC reported the driver's exception as UNKNOWN."""

    async def unavailable(self, context, exc: Exception) -> None:
        if (message := store_unavailable(self.s.store.backend, exc)) is None:
            raise exc
        log.warning("%s: %s", method.__name__, message)
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def stream(self, request, context):
            inner = method(self, request, context)
            try:
                async for item in inner:
                    yield item
            except Exception as exc:  # noqa: BLE001 - re-raised unless the store is unreachable
                await unavailable(self, context, exc)
            finally:
                await inner.aclose()  # its own clean-up now (a cancelled watch), not when collected

        return stream

    @functools.wraps(method)
    async def unary(self, request, context):
        try:
            return await method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - re-raised unless the store is unreachable
            await unavailable(self, context, exc)

    return unary


class WatchServicer(service_pb2_grpc.WatchServiceServicer):
    def __init__(self, server: RunwatchServer) -> None:
        self.s = server

    @_store_errors
    async def WatchAnomalies(self, request: service_pb2.WatchRequest, context) -> AsyncIterator[anomaly_pb2.Anomaly]:
        if request.run_id and (v := check_run_id(request.run_id)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"run_id: {v[1]}")
        if request.min_severity not in anomaly_pb2.Severity.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"min_severity: unknown Severity {request.min_severity}")
        access = self.s.access
        principal = await access.principal(context)
        if request.project:
            await access.require_project(context, principal, request.project, "project")
        if request.run_id and (project := self.s.run_project(request.run_id)) is not None:
            await access.require_project(context, principal, project, "run_id")
        # A run not known yet (its RunStart still on the way) is watched through the project filter.
        allowed = None if principal.all_projects else principal.projects
        if self.s.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        peer = context.peer()
        if (refusal := self.s.limits.open_watcher(peer)) is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        sub = self.s.hub.subscribe(request.project, request.run_id, request.min_severity, projects=allowed)
        self.s.watches.add(sub)
        self.s.metrics.watchers.set(self.s.hub.watchers)
        try:
            seen: set[tuple[str, int]] = set()
            if request.include_history:
                history = await asyncio.to_thread(
                    self.s.store.anomalies, request.run_id, request.project, request.min_severity
                )
                for a in history:
                    if principal.may_access(a.project):
                        seen.add((a.id, a.revision))
                        yield a
            while True:
                a = await sub.queue.get()
                if a is None:  # the server is shutting down
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                if not access.still_valid(principal):
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REVOKED)
                if (a.id, a.revision) not in seen:
                    yield a
        finally:
            self.s.hub.unsubscribe(sub)
            self.s.watches.discard(sub)
            self.s.limits.close_watcher(peer)
            self.s.metrics.watchers.set(self.s.hub.watchers)


class RunQueryServicer(service_pb2_grpc.RunServiceServicer):
    def __init__(self, server: RunwatchServer) -> None:
        self.s = server

    @_store_errors
    async def GetRun(self, request: service_pb2.GetRunRequest, context) -> service_pb2.RunSummary:
        if v := check_run_id(request.run_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{v[0]}: {v[1]}")
        principal = await self.s.access.principal(context)
        summary = await asyncio.to_thread(self.s.run_summary, request.run_id)
        if summary is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: no run {request.run_id!r}")
        await self.s.access.require_project(context, principal, summary.run.project, "run_id")
        return summary

    @_store_errors
    async def ListRuns(self, request: service_pb2.ListRunsRequest, context) -> service_pb2.ListRunsResponse:
        if request.status not in runs_pb2.RunStatus.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"status: unknown RunStatus {request.status}")
        principal = await self.s.access.principal(context)
        if request.project:
            await self.s.access.require_project(context, principal, request.project, "project")
        await asyncio.wrap_future(self.s.store.settled())
        limit = request.limit or 100
        if request.project or principal.all_projects:
            runs = await asyncio.to_thread(self.s.store.list_runs, request.project, request.status, limit)
        else:  # every project the token grants, merged newest first
            runs = []
            for project in sorted(principal.projects):
                runs += await asyncio.to_thread(self.s.store.list_runs, project, request.status, limit)
            runs = sorted(runs, key=lambda r: r.start_time, reverse=True)[:limit]
        return service_pb2.ListRunsResponse(runs=runs)

    @_store_errors
    async def GetMetrics(
        self, request: service_pb2.GetMetricsRequest, context
    ) -> AsyncIterator[service_pb2.MetricHistory]:
        if v := check_run_id(request.run_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{v[0]}: {v[1]}")
        principal = await self.s.access.principal(context)
        await asyncio.wrap_future(self.s.store.settled())
        info = await asyncio.to_thread(self.s.store.get_run, request.run_id)
        if info is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: no run {request.run_id!r}")
        await self.s.access.require_project(context, principal, info.project, "run_id")
        for chunk in await asyncio.to_thread(metric_history, self.s.store.events(request.run_id), request):
            yield chunk

    @_store_errors
    async def ListAnomalies(
        self, request: service_pb2.ListAnomaliesRequest, context
    ) -> service_pb2.ListAnomaliesResponse:
        if request.run_id and (v := check_run_id(request.run_id)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"run_id: {v[1]}")
        if request.min_severity not in anomaly_pb2.Severity.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"min_severity: unknown Severity {request.min_severity}")
        principal = await self.s.access.principal(context)
        if request.project:
            await self.s.access.require_project(context, principal, request.project, "project")
        if request.run_id and (project := self.s.run_project(request.run_id)) is not None:
            await self.s.access.require_project(context, principal, project, "run_id")
        await asyncio.wrap_future(self.s.store.settled())
        limit = request.limit or 10_000
        query = self.s.store.anomalies
        if request.project or request.run_id or principal.all_projects:
            found = await asyncio.to_thread(query, request.run_id, request.project, request.min_severity, limit)
        else:  # every project the token grants, merged oldest first
            found = []
            for project in sorted(principal.projects):
                found += await asyncio.to_thread(query, "", project, request.min_severity, limit)
            found = sorted(found, key=lambda a: a.detected_time)[:limit]
        return service_pb2.ListAnomaliesResponse(anomalies=[a for a in found if principal.may_access(a.project)])


class AdvisorServicer(service_pb2_grpc.AdvisorServiceServicer):
    """Suggest runs in a worker thread: fitting the surrogate and searching take seconds."""

    def __init__(self, server: RunwatchServer) -> None:
        self.s = server
        self.advice = server.advice

    async def Suggest(self, request: service_pb2.SuggestRequest, context) -> service_pb2.SuggestResponse:
        principal = await self.s.access.principal(context)
        if request.project:
            await self.s.access.require_project(context, principal, request.project, "project")
        if request.run_id and (project := self.s.run_project(request.run_id)) is not None:
            await self.s.access.require_project(context, principal, project, "run_id")
        try:
            return await asyncio.to_thread(self.advice.suggest, request)
        except AdviceError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("AdvisorService.Suggest failed for run %r", request.run_id)
            await context.abort(grpc.StatusCode.INTERNAL, "AdvisorService.Suggest: internal error (logged by the server)")


class RunwatchServer:
    """Owns the store, the pipeline, the hub and the gRPC server.

    Examples
    --------
    >>> import asyncio, tempfile
    >>> async def main():
    ...     s = RunwatchServer(ServiceSettings(port=0, data_dir=tempfile.mkdtemp()))
    ...     port = await s.start()
    ...     await s.stop()
    ...     return port > 0
    >>> asyncio.run(main())
    True
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.hub = AnomalyHub()
        self.alerts = None  # the alert channels (settings.alerts): a hub subscriber, started with the server
        # Read before the store opens: a token file that does not parse must stop the start, not refuse every call.
        self.tokens = TokenStore(settings.auth_tokens) if settings.auth_tokens is not None else None
        self.access = Access(self.tokens)
        prior = read_history(settings.advisor_history) if settings.advisor_history else []  # before the store opens
        self.store = RunStore(settings.store_location)  # SQLite in data_dir, or the shared database of --store
        self.advice = AdviceService(self.store, prior)
        self.pipeline = DetectionPipeline(settings, self.store, publish=self._publish)
        self.limits = StreamLimits(settings)
        self.metrics.registry.register(LimitsCollector(self))
        self.draining = False  # shutting down: no new calls, open streams finish what they read
        self.readers: set[_Reader] = set()
        self.watches: set = set()  # the WatchAnomalies calls' hub subscriptions
        self.health = HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task | None = None
        # Batches read from the streams, waiting for the next group (see enqueue).
        self._inbox: list[tuple] = []
        self._inbox_ready: asyncio.Event | None = None
        self._applier: asyncio.Task | None = None
        self._grouped: list | None = None  # (result, arrival) of the group being applied
        self.group_counts = {"groups": 0, "batches": 0, "waited_ms": 0.0}
        self._last_apply_s = 0.0  # how long the last group took to apply
        self._commits: dict = {}  # a group's commit future -> the asyncio future its batches await
        self._inbox_room: asyncio.Event | None = None  # set while the next group has room
        self._cap = 32  # batches the next group may hold (see _group_cap); grows while groups stay in budget
        self._last_group = 0  # batches the last group held
        self._flush_timer: asyncio.TimerHandle | None = None  # detects the events a busy group held (apply_group)
        self._inbox_bytes = 0  # bytes of the batches in the inbox
        self.dashboard = None  # the HTTP dashboard and /metrics, with settings.http_port
        self.http_port = 0
        self.metrics.count_active_runs(lambda: len(self.pipeline.runs))
        # With Kafka, the gRPC door produces to the ingest topic and a consumer feeds the pipeline.
        self.kafka = None
        self.kafka_cycle_open = False
        if settings.kafka.enabled:
            try:
                from runwatch.service.kafka.bridge import KafkaBridge
            except ImportError as exc:
                from runwatch.nas.nni_adapter import MissingExtraError

                raise MissingExtraError(
                    f"kafka.bootstrap: Kafka needs the kafka extra ({exc.name} is not installed): "
                    "pip install 'runwatch[kafka]'"
                ) from None

            self.kafka = KafkaBridge(self)
        self.screen = ProjectScreen(
            self.run_project,
            auto_create_runs=settings.auto_create_runs,
            remember_starts=self.kafka is not None,  # a run may be open on another instance
            max_batch_bytes=settings.max_batch_bytes,
        )

    def _publish(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.metrics.observe_anomaly(anomaly)
        self.hub.publish(anomaly)
        if self.kafka is not None:
            self.kafka.on_anomaly(anomaly)

    def ingest(
        self, raw: bytes, lane: Lane | None | object = CURRENT_LANE, arrival: float | None = None
    ) -> BatchResult | service_pb2.IngestAck | asyncio.Task:
        """Apply one serialized batch (``lane``: its call's, by default the current context's; ``arrival``:
        when it was read, ``time.perf_counter()``, by default now)."""
        if self.kafka is not None:
            task = asyncio.ensure_future(self.kafka.ingest(raw))
            # A stream ended by an earlier batch's refusal never awaits the later ones.
            task.add_done_callback(_retrieve)
            return task
        if lane is CURRENT_LANE:
            lane = CURRENT_LANE.get()
        if lane is not None and lane.exhausted:
            # A refused batch is re-sent with every later one: none of them may land before it.
            return BatchResult(service_pb2.IngestAck(), [], None, exhausted=lane.exhausted)
        t0 = time.perf_counter() if arrival is None else arrival
        try:
            result = self.pipeline.ingest_bytes(raw, t0)
        except Exception:  # a bug must cost one batch, never the stream or the service
            log.exception("ingest failed on a %d-byte batch", len(raw))
            ack = service_pb2.IngestAck(rejected=1)
            ack.violations.add(field="batch", reason="internal error while processing this batch (logged by the server)")
            return ack
        if result.exhausted:
            if lane is not None:
                lane.exhausted = result.exhausted
            return result
        if self._grouped is not None:
            self._grouped.append((result, t0))  # counted once its group's commit is submitted
            return result
        self._observe(result, time.perf_counter() - t0)
        return result

    def _observe(self, result: BatchResult, seconds: float) -> None:
        ack = result.ack
        self.metrics.observe_batch(
            ack.accepted, ack.duplicates, ack.rejected, seconds,
            violations=ack.violations, anomalies=len(result.anomalies), durable=result.durable,
        )  # fmt: skip

    def enqueue(
        self, principal: Principal, raw: bytes
    ) -> asyncio.Future | BatchResult | service_pb2.IngestAck | asyncio.Task:
        """:meth:`ingest_as`, applied with the next group of batches; a future of its result.

        The batches every stream delivers while a group is applied form the next group:
        one commit for all of them, and one detection call per run for its events of the
        whole group (:meth:`DetectionPipeline.begin_group`). Each stream still awaits its
        own batches' acknowledgements, in order, each sent only after the group's commit.
        """
        if self.kafka is not None:
            return self.ingest_as(principal, raw)  # the Kafka front queues batches itself
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.append((principal, raw, CURRENT_LANE.get(), fut, time.perf_counter()))
        self._inbox_bytes += len(raw)
        if self._applier is None or self._applier.done():
            self._inbox_ready, self._inbox_room = asyncio.Event(), asyncio.Event()
            self._applier = asyncio.create_task(self._apply_loop())
        self._inbox_ready.set()
        if self._next_group_full():
            self._inbox_room.clear()
        return fut

    def _next_group_full(self) -> bool:
        return len(self._inbox) >= self._group_cap() or self._inbox_bytes >= GROUP_MAX_BYTES

    def _take_group(self) -> list:
        """The inbox's first batches, as many as the next group may hold (at least one)."""
        cap, size, n = self._group_cap(), 0, 0
        for item in self._inbox:
            if n and (n >= cap or size + len(item[1]) > GROUP_MAX_BYTES):
                break
            size += len(item[1])
            n += 1
        items, self._inbox = self._inbox[:n], self._inbox[n:]
        self._inbox_bytes -= size
        return items

    def _group_cap(self) -> int:
        """Batches the next group may hold (follows how long the last groups took against GROUP_BUDGET_S)."""
        return self._cap

    async def room(self) -> None:
        """Wait while the next group is full (the streams stop reading; the batches wait in gRPC's buffers)."""
        if self._inbox_room is not None and not self._inbox_room.is_set():
            await self._inbox_room.wait()

    async def _apply_loop(self) -> None:
        while True:
            await self._inbox_ready.wait()
            # Let the streams deliver more meanwhile (the more batches of a run a group holds, the
            # less each costs): as long as the last group took to apply, at most GROUP_WAIT_S.
            wait = min(GROUP_WAIT_S, self._last_apply_s) - (time.perf_counter() - self._inbox[0][4])
            # A lone client waiting for each acknowledgement (last groups of one batch) never waits here.
            if wait > 0 and not self._next_group_full() and self._last_group > 1:
                await asyncio.sleep(wait)
                self.group_counts["waited_ms"] += wait * 1e3
            items = self._take_group()
            if not self._inbox:
                self._inbox_ready.clear()
            t0 = time.perf_counter()
            self._last_group = len(items)
            try:
                self.apply_group(items)
            finally:
                self._last_apply_s = time.perf_counter() - t0
                # Over the budget: fewer next time; under it, and the cap was what limited the group: more.
                scale = GROUP_BUDGET_S / max(self._last_apply_s, 1e-6)
                if scale < 1.0:
                    self._cap = max(GROUP_MIN_BATCHES, int(min(self._cap, len(items)) * max(scale, 0.5)))
                elif len(items) >= self._cap // 2:
                    self._cap = min(GROUP_MAX_BATCHES, int(self._cap * min(scale, 2.0)))
                if not self._next_group_full():
                    self._inbox_room.set()

    def apply_group(self, items: list) -> None:
        """Apply ``(principal, raw, lane, future, arrival)`` items as one group; resolve each future with its result."""
        results = []
        self.group_counts["groups"] += 1
        self.group_counts["batches"] += len(items)
        self._grouped = []
        self.pipeline.begin_group()
        try:
            for principal, raw, lane, fut, arrival in items:
                try:
                    results.append(self.ingest_as(principal, raw, lane, arrival))
                except Exception as exc:  # not expected: ingest answers a bug in a batch with a rejection
                    log.exception("ingest failed on a %d-byte batch", len(raw))
                    results.append(exc)
        finally:
            try:
                # Several batches: the streams are busy, so a run's events may wait for the next group's.
                durable = self.pipeline.end_group(hold=len(items) > 1)  # submits the writes even when detection fails
            except Exception:  # a detector bug: the batches are stored, their deferred anomalies lost (logged)
                log.exception("detection failed on a group of %d batches", len(items))
                durable = None
            grouped, self._grouped = self._grouped, None
            if durable is not None:
                # One asyncio wait for the group's commit, shared by every batch's settle (not one each).
                waiting = asyncio.wrap_future(durable)
                self._commits[durable] = waiting
                waiting.add_done_callback(lambda _, d=durable: self._commits.pop(d, None))
        if self.pipeline.holding and self._flush_timer is None:
            # If no group follows soon, the held events are detected anyway.
            self._flush_timer = asyncio.get_running_loop().call_later(self.settings.detection_hold_s, self._flush_held)
        end = time.perf_counter()
        for result, t0 in grouped:
            self._observe(result, end - t0)
        for (_, _, _, fut, _), result in zip(items, results):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def _flush_held(self) -> None:
        self._flush_timer = None
        try:
            self.pipeline.flush_held()
        except Exception:  # a detector bug: the events are stored, their anomalies lost (logged)
            log.exception("detection failed on held events")

    def run_project(self, run_id: str) -> str | None:
        """The project of a run this server knows (in memory or stored), else None."""
        state = self.pipeline.runs.get(run_id) or self.pipeline.ended.get(run_id)
        if state is not None:
            return state.project
        info = self.store.get_run(run_id)
        return info.project if info is not None else None

    def ingest_as(
        self, principal: Principal, raw: bytes, lane: Lane | None | object = CURRENT_LANE, arrival: float | None = None
    ):
        """:meth:`ingest` of the items of ``raw`` that ``principal``'s projects cover; the others are refused."""
        if principal is ANYONE:
            return self.ingest(raw, lane, arrival)
        screened = self.screen.screen(raw, principal)
        if not screened.refused:
            return self.ingest(raw, lane, arrival)
        return _ScreenedBatch(self.ingest(screened.raw, lane, arrival) if screened.raw is not None else None, screened)

    async def settle(self, result: BatchResult | service_pb2.IngestAck | asyncio.Future) -> service_pb2.IngestAck:
        """Wait until a batch's writes are durable, then return its acknowledgement."""
        if isinstance(result, _ScreenedBatch):
            kept = await self.settle(result.kept) if result.kept is not None else None
            return result.screened.merge(kept)
        if isinstance(result, service_pb2.IngestAck):
            return result
        if isinstance(result, asyncio.Future):
            return await result
        if result.exhausted:
            raise IngestExhausted(result.exhausted)
        try:
            waiting = self._commits.get(result.durable)
            await (waiting if waiting is not None else asyncio.wrap_future(result.durable))
        except Exception as exc:
            log.exception("store write failed")
            ack = service_pb2.IngestAck(sequence=result.ack.sequence, rejected=result.ack.accepted + result.ack.rejected)
            # Past the store's own retries (RunStore.write_retry_s): its items were applied, so a re-sent copy
            # would only be counted a duplicate; say what happened rather than ask for one.
            ack.violations.add(field="batch", reason=f"not stored: {exc}")
            return ack
        return result.ack

    def run_summary(self, run_id: str) -> service_pb2.RunSummary | None:
        self.store.flush()
        info = self.store.get_run(run_id)
        if info is None:
            return None
        summary = service_pb2.RunSummary(run=info)
        summary.anomalies.extend(self.store.anomalies(run_id=run_id))
        summary.metrics.extend(self.store.metric_summaries(run_id))
        by_detector: dict[str, service_pb2.DiagnosticStatus] = {}
        for a in summary.anomalies:
            d = by_detector.setdefault(a.detector, service_pb2.DiagnosticStatus(detector=a.detector))
            d.incidents += 1
            d.max_severity = max(d.max_severity, a.severity)
        summary.diagnostics.extend(by_detector[k] for k in sorted(by_detector))
        return summary

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        from threadpoolctl import threadpool_limits

        from runwatch.models.kernels import warm_up

        # Compile (or load from numba's disk cache) every detection kernel before the first
        # batch arrives, so its latency does not include seconds of compilation.
        compiled = await asyncio.to_thread(warm_up)
        log.debug("detection kernels ready in %.2f s", sum(compiled.values()))
        # The learned detectors multiply small matrices per block; a multi-threaded BLAS spends
        # more on waking its threads than on the products (measured 5x slower on 2 cores).
        threadpool_limits(1, user_api="blas")
        opts = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            # Without this, a second server on the same port binds too and steals half the streams.
            ("grpc.so_reuseport", 0),
        ]
        settings = self.settings
        credentials = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            try:
                credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            except ValueError:
                await asyncio.to_thread(self.store.close)
                raise
        interceptors = [AuthInterceptor(self.tokens)] if self.tokens is not None else None
        # gRPC itself answers RESOURCE_EXHAUSTED beyond this, before any handler reads the request: the backstop
        # for unary calls (each may hold a max_batch_bytes batch); streams and watchers have their own limits.
        concurrent = settings.max_streams + settings.max_watchers + settings.max_unary_calls
        server = grpc.aio.server(options=opts, interceptors=interceptors, maximum_concurrent_rpcs=concurrent)
        server.add_generic_rpc_handlers((IngestServicer(self).handler(),))
        service_pb2_grpc.add_WatchServiceServicer_to_server(WatchServicer(self), server)
        service_pb2_grpc.add_RunServiceServicer_to_server(RunQueryServicer(self), server)
        service_pb2_grpc.add_AdvisorServiceServicer_to_server(AdvisorServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        address = f"{self.settings.host}:{self.settings.port}"
        self._warn_exposure()
        try:
            if credentials is not None:
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            await asyncio.to_thread(self.store.close)
            raise OSError(f"cannot bind the gRPC server to {address}: the address is in use or not available")
        # -- shared store (issue 16): anomalies other instances commit reach this one's watchers (not its alerts) --
        loop = asyncio.get_running_loop()
        try:
            self.store.follow_anomalies(lambda a: loop.call_soon_threadsafe(self.hub.publish, a, True))
        except BaseException:
            await asyncio.to_thread(self.store.close)
            raise
        # -- end shared store --
        if self.settings.alerts is not None:
            from runwatch.service.alerts import AlertDispatcher

            self.alerts = AlertDispatcher(self.settings.alerts, self.hub, self.metrics)
            self.alerts.start()
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.host, self.settings.metrics_port)
        if self.kafka is not None:
            try:
                await self.kafka.start()
            except BaseException:
                await self.kafka.stop()
                await server.stop(0)
                await asyncio.to_thread(self.store.close)
                raise
        if self.settings.http_port is not None:
            from runwatch.service.http.app import Dashboard

            self.dashboard = Dashboard(self)
            try:
                self.http_port = await self.dashboard.start()
            except BaseException:
                if self.kafka is not None:
                    await self.kafka.stop()
                await server.stop(0)
                await asyncio.to_thread(self.store.close)
                raise
        if self.pipeline.refitter is not None:
            self.pipeline.refitter.start()  # the projects' run-outlier models, from the store's runs
        self._ticker = asyncio.create_task(self._tick_loop())
        # Everything imported and built so far lives as long as the process: moved out of the collector's reach,
        # full collections (which ingest's allocations trigger) stop re-scanning it. Measured: 10-15 % of metric
        # ingest at 500-event batches went to those scans once the text signatures module grew (docs/benchmarks.md).
        gc.freeze()
        return self.port

    def _warn_exposure(self) -> None:
        s = self.settings
        if s.exposure_problem:  # allowed only by allow_insecure (see ServiceSettings)
            log.warning(
                "SECURITY: serving %s:%s %s (allow_insecure is set): anyone who can reach this address can read "
                "every project's runs and anomalies and write into any run; see docs/security.md",
                s.host, s.port, s.exposure_problem,
            )
        elif self.tokens is None and s.tls_client_ca is not None:
            log.warning(
                "serving without --auth-tokens: any client with a certificate from %s may read and write every project",
                s.tls_client_ca,
            )
        elif self.tokens is not None and s.tls_cert is None:
            log.info("tokens travel in clear text (no TLS): fine on loopback only")

    def reload_tokens(self) -> None:
        """Re-read the token file now (SIGHUP); it is also re-read whenever it changes."""
        if self.tokens is not None:
            self.tokens.refresh(force=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stall_check_seconds)
            try:
                self.pipeline.tick()
                self.pipeline.evict_idle()
                self.metrics.active_runs.set(sum(1 for s in self.pipeline.runs.values() if s.monitor is not None))
            except Exception:
                log.exception("time-based checks failed")

    async def stop(self, grace: float = 2.0, deadline: float | None = None) -> bool:
        """Drain: report NOT_SERVING, finish in-flight calls, persist, close.

        New calls are refused (UNAVAILABLE); open streams stop reading, acknowledge
        every batch they read and end with UNAVAILABLE (the SDK re-sends the rest
        elsewhere or later); watchers end. In-flight calls get ``grace`` seconds.
        With ``deadline`` (``time.monotonic()``), the whole stop keeps within it: a
        Kafka stop that outlasts it is left behind (its uncommitted records are
        re-delivered) and False is returned. Without Kafka, every running run is
        checkpointed to the store, so a restart continues its detection exactly.
        """
        clean = True
        self.draining = True
        await self.health.enter_graceful_shutdown()
        if self._ticker:
            self._ticker.cancel()
        for reader in list(self.readers):
            if reader.waiting and reader.task is not None:
                reader.task.cancel()
        for sub in list(self.watches):  # a final None ends each WatchAnomalies call
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self._server is not None:
            if deadline is not None:
                grace = max(min(grace, (deadline - time.monotonic()) / 2), 0.1)
            await self._calls_ended(grace / 2)
            await self._server.stop(grace)
        if self.kafka is not None:
            # Finishes the cycle in hand: its offsets are committed or left for the next owner.
            if deadline is None:
                await self.kafka.stop()
            else:
                left = max(deadline - time.monotonic() - 1.0, 0.1)
                try:
                    await asyncio.wait_for(asyncio.shield(self.kafka.stop(timeout=left)), left)
                except TimeoutError:
                    clean = False
                    log.warning("Kafka did not stop within shutdown_grace_s; its uncommitted records will be re-delivered")
        if self._applier is not None:
            while self._inbox:
                self.apply_group(self._take_group())
            self._applier.cancel()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_held()
        if self.alerts is not None:
            await self.alerts.stop()  # after ingest stopped: the last anomalies are still routed
        self.pipeline.text.flush()  # log templates mined since the last throttled save
        if self.kafka is None:
            saved = self.pipeline.checkpoint_all(float("inf") if deadline is None else deadline - 1.0)
            log.debug("checkpointed %d running run(s) to the store", saved)
        if self.pipeline.refitter is not None:
            await asyncio.to_thread(self.pipeline.refitter.close)
        await asyncio.to_thread(self.store.close)
        return clean

    async def _calls_ended(self, within: float) -> None:
        """Wait for the open streams and watches to end with their status, then a moment more.

        The server's stop closes every connection, and a connection closed while a
        client still sends on it is reset: the client may then lose the status that
        tells it why its call ended ("shutting down") and see only "connection reset".
        """
        if not (self.readers or self.watches):
            return
        until = time.monotonic() + within
        while (self.readers or self.watches) and time.monotonic() < until:
            await asyncio.sleep(0.01)
        await asyncio.sleep(min(STATUS_LINGER_S, max(until - time.monotonic(), 0.0)))

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(settings: ServiceSettings, ready=None) -> None:
    """Run until SIGINT/SIGTERM; ``ready(port)`` is called once the server listens."""
    server = RunwatchServer(settings)
    port = await server.start()
    from runwatch.service.store_location import redact

    log.info("runwatch listening on %s:%d, data in %s", settings.host, port, redact(settings.store_location))
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if server.tokens is not None:  # else SIGHUP keeps its default (a closed terminal stops the server)
        loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)
    await stop.wait()
    grace = settings.shutdown_grace_s
    deadline = time.monotonic() + grace
    # Threads stuck on a vanished broker must not hold the exit past the grace period.
    watchdog = threading.Timer(grace, _exit_now, args=(server,))
    watchdog.daemon = True
    watchdog.start()
    log.info("shutting down: draining streams, committing (at most %g s)", grace)
    clean = await server.stop(grace=grace, deadline=deadline)
    if not clean:
        _exit_now(server)
    log.info("runwatch stopped")


def _exit_now(server: RunwatchServer) -> None:
    """End the process at once: 0 if the store was committed and closed, else 1."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0 if server.store._closed else 1)
