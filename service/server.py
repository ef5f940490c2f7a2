"""The asyncio gRPC server: ingest, watch, run queries, advisor; health and reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
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
from runwatch.service.hub import AnomalyHub
from runwatch.service.pipeline import BatchResult, DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore
from runwatch.service.telemetry import ServiceMetrics
from runwatch.service.validation import check_run_id
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

log = logging.getLogger("runwatch.service")

SERVICE_NAMES = tuple(
    service_pb2.DESCRIPTOR.services_by_name[n].full_name
    for n in ("IngestService", "WatchService", "RunService", "AdvisorService")
)
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
        result = self.s.ingest(raw)
        ack = await self.s.settle(result)
        if ack.rejected:
            first = "; ".join(f"{v.field}: {v.reason}" for v in ack.violations[:3])
            msg = f"accepted {ack.accepted}, rejected {ack.rejected}: {first}"
            await context.abort_with_status(_bad_request(msg, ack.violations))
        return ack

    async def StreamEvents(self, requests: AsyncIterator[bytes], context) -> AsyncIterator[service_pb2.IngestAck]:
        pending: asyncio.Queue = asyncio.Queue(maxsize=256)

        async def consume() -> None:
            try:
                async for raw in requests:
                    await pending.put(self.s.ingest(raw))
            finally:
                await pending.put(None)

        # Reading the next batch overlaps with waiting for the previous one's commit.
        reader = asyncio.create_task(consume())
        try:
            while (result := await pending.get()) is not None:
                yield await self.s.settle(result)
        finally:
            reader.cancel()


class WatchServicer(service_pb2_grpc.WatchServiceServicer):
    def __init__(self, server: RunwatchServer) -> None:
        self.s = server

    async def WatchAnomalies(self, request: service_pb2.WatchRequest, context) -> AsyncIterator[anomaly_pb2.Anomaly]:
        if request.run_id and (v := check_run_id(request.run_id)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"run_id: {v[1]}")
        if request.min_severity not in anomaly_pb2.Severity.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"min_severity: unknown Severity {request.min_severity}")
        sub = self.s.hub.subscribe(request.project, request.run_id, request.min_severity)
        self.s.metrics.watchers.set(self.s.hub.watchers)
        try:
            seen: set[tuple[str, int]] = set()
            if request.include_history:
                history = await asyncio.to_thread(
                    self.s.store.anomalies, request.run_id, request.project, request.min_severity
                )
                for a in history:
                    seen.add((a.id, a.revision))
                    yield a
            while True:
                a = await sub.queue.get()
                if (a.id, a.revision) not in seen:
                    yield a
        finally:
            self.s.hub.unsubscribe(sub)
            self.s.metrics.watchers.set(self.s.hub.watchers)


class RunQueryServicer(service_pb2_grpc.RunServiceServicer):
    def __init__(self, server: RunwatchServer) -> None:
        self.s = server

    async def GetRun(self, request: service_pb2.GetRunRequest, context) -> service_pb2.RunSummary:
        if v := check_run_id(request.run_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{v[0]}: {v[1]}")
        summary = await asyncio.to_thread(self.s.run_summary, request.run_id)
        if summary is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: no run {request.run_id!r}")
        return summary

    async def ListRuns(self, request: service_pb2.ListRunsRequest, context) -> service_pb2.ListRunsResponse:
        if request.status not in runs_pb2.RunStatus.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"status: unknown RunStatus {request.status}")
        await asyncio.wrap_future(self.s.store.submit([]))
        runs = await asyncio.to_thread(self.s.store.list_runs, request.project, request.status, request.limit or 100)
        return service_pb2.ListRunsResponse(runs=runs)


class AdvisorServicer(service_pb2_grpc.AdvisorServiceServicer):
    """Suggest runs in a worker thread: fitting the surrogate and searching take seconds."""

    def __init__(self, server: RunwatchServer) -> None:
        self.advice = server.advice

    async def Suggest(self, request: service_pb2.SuggestRequest, context) -> service_pb2.SuggestResponse:
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
        prior = read_history(settings.advisor_history) if settings.advisor_history else []  # before the store opens
        self.store = RunStore(settings.db_path)
        self.advice = AdviceService(self.store, prior)
        self.pipeline = DetectionPipeline(settings, self.store, publish=self._publish)
        self.health = HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._ticker: asyncio.Task | None = None
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

    def _publish(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.metrics.observe_anomaly(anomaly)
        self.hub.publish(anomaly)
        if self.kafka is not None:
            self.kafka.on_anomaly(anomaly)

    def ingest(self, raw: bytes) -> BatchResult | service_pb2.IngestAck | asyncio.Task:
        if self.kafka is not None:
            return asyncio.ensure_future(self.kafka.ingest(raw))
        t0 = time.perf_counter()
        try:
            result = self.pipeline.ingest_bytes(raw, t0)
        except Exception:  # a bug must cost one batch, never the stream or the service
            log.exception("ingest failed on a %d-byte batch", len(raw))
            ack = service_pb2.IngestAck(rejected=1)
            ack.violations.add(field="batch", reason="internal error while processing this batch (logged by the server)")
            return ack
        ack = result.ack
        self.metrics.observe_batch(ack.accepted, ack.duplicates, ack.rejected, time.perf_counter() - t0)
        return result

    async def settle(self, result: BatchResult | service_pb2.IngestAck | asyncio.Future) -> service_pb2.IngestAck:
        """Wait until a batch's writes are durable, then return its acknowledgement."""
        if isinstance(result, service_pb2.IngestAck):
            return result
        if isinstance(result, asyncio.Future):
            return await result
        try:
            await asyncio.wrap_future(result.durable)
        except Exception as exc:
            log.exception("store write failed")
            ack = service_pb2.IngestAck(sequence=result.ack.sequence, rejected=result.ack.accepted + result.ack.rejected)
            ack.violations.add(field="batch", reason=f"not stored: {exc}; re-send it")
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
        server = grpc.aio.server(options=opts)
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
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            await asyncio.to_thread(self.store.close)
            raise OSError(f"cannot bind the gRPC server to {address}: the address is in use or not available")
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
        self._ticker = asyncio.create_task(self._tick_loop())
        return self.port

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stall_check_seconds)
            try:
                self.pipeline.tick()
                self.metrics.active_runs.set(sum(1 for s in self.pipeline.runs.values() if s.monitor is not None))
            except Exception:
                log.exception("time-based checks failed")

    async def stop(self, grace: float = 2.0) -> None:
        """Drain: report NOT_SERVING, finish in-flight calls, persist, close."""
        await self.health.enter_graceful_shutdown()
        if self._ticker:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        if self.kafka is not None:
            await self.kafka.stop()  # finishes the cycle in hand: its offsets are committed or left for the next owner
        await asyncio.to_thread(self.store.close)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(settings: ServiceSettings, ready=None) -> None:
    """Run until SIGINT/SIGTERM; ``ready(port)`` is called once the server listens."""
    server = RunwatchServer(settings)
    port = await server.start()
    log.info("runwatch listening on %s:%d, data in %s", settings.host, port, settings.data_dir)
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
