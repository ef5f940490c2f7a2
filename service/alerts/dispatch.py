"""The alert dispatcher: a hub subscriber that routes anomaly revisions to sinks.

It watches the hub like any ``WatchAnomalies`` stream, so detection never
waits for it: the hub puts revisions on a bounded queue without blocking (a
full queue loses its oldest revision, counted in ``hub_dropped``). The
dispatcher decides per route (match, news for the incident, rate limit) and
hands each notification to its sinks' own bounded queues; a full sink queue
drops the new notification with a counted warning. Every sink delivers in
order on its own thread with retries and exponential backoff, so a slow or
dead sink delays only itself.

Counted on the server's Prometheus registry:
``runwatch_alert_deliveries_total{sink}`` and ``runwatch_alert_failures_total{sink}``
(undeliverable after retries, refused, or dropped from a full queue), and
``runwatch_alerts_suppressed_total{route}`` (held back by a rate limit; summarised).

Examples
--------
>>> import asyncio
>>> from runwatch.service.alerts.config import AlertsConfig
>>> from runwatch.service.hub import AnomalyHub
>>> cfg = AlertsConfig.model_validate({
...     "sinks": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/alerts"}},
...     "routes": [{"name": "all", "sinks": ["hook"]}]})
>>> async def main():
...     d = AlertDispatcher(cfg, AnomalyHub())
...     d.start()
...     await d.stop()
...     return d.stats.opened
>>> asyncio.run(main())
0
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import Counter

from runwatch.service.alerts.config import AlertsConfig
from runwatch.service.alerts.message import SUPPRESSED, Notification
from runwatch.service.alerts.ratelimit import SuppressedTally, TokenBucket
from runwatch.service.alerts.routing import OPENED, IncidentLedger, MatchingRoute
from runwatch.service.alerts.sinks import DeliveryError, Sink, make_sink
from runwatch.v1 import anomaly_pb2

log = logging.getLogger("runwatch.alerts")

#: How often held-back notifications are checked for a summary, and the hub for losses.
TICK_SECONDS = 1.0


@dataclass
class AlertStats:
    """Counters of one dispatcher (also logged at stop)."""

    opened: int = 0  # incidents notified on a route (one per route and incident)
    updates: int = 0  # escalations, resolutions, other updates
    delivered: int = 0  # sink deliveries that succeeded
    retries: int = 0  # tries after a failed one
    failed: int = 0  # notifications a sink could not deliver (after retries, or refused)
    dropped: int = 0  # notifications lost to a full sink queue
    suppressed: int = 0  # held back by rate limits (summarised)
    summaries: int = 0  # summaries of held-back notifications sent
    hub_dropped: int = 0  # revisions the hub discarded because the dispatcher fell behind


class _RouteState:
    def __init__(self, route: MatchingRoute, bucket: TokenBucket | None, sinks: list[_SinkWorker]) -> None:
        self.route = route
        self.bucket = bucket
        self.sinks = sinks
        self.held = SuppressedTally()


class _SinkWorker:
    """One sink's queue and the task that drains it."""

    def __init__(self, sink: Sink, queue_size: int, dispatcher: AlertDispatcher) -> None:
        self.sink = sink
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=queue_size)
        self.d = dispatcher
        self.task: asyncio.Task | None = None
        self.drops = 0

    def offer(self, n: Notification) -> None:
        try:
            self.queue.put_nowait(n)
        except asyncio.QueueFull:
            self.drops += 1
            self.d._failed(self.sink, n, f"its queue is full ({self.queue.maxsize} waiting)", dropped=True)

    async def run(self) -> None:
        while True:
            n = await self.queue.get()
            try:
                await self.d._deliver(self.sink, n)
            finally:
                self.queue.task_done()


class AlertDispatcher:
    """Routes the hub's anomaly revisions to the configured sinks (see the module docstring)."""

    def __init__(self, config: AlertsConfig, hub, metrics=None, *, clock=time.monotonic) -> None:
        self.config = config
        self.hub = hub
        self.metrics = metrics
        self.clock = clock
        self.stats = AlertStats()
        self.ledger = IncidentLedger()
        self._sub = None
        self._tasks: list[asyncio.Task] = []
        self._hub_dropped_seen = 0
        # Deliveries block (urllib, smtplib, subprocess): on threads of their own, never the
        # loop's default executor, which serves the store's reads.
        self._executor = ThreadPoolExecutor(max(1, len(config.sinks)), thread_name_prefix="runwatch-alert")
        self.workers = {
            name: _SinkWorker(make_sink(name, c), config.queue_size, self) for name, c in config.sinks.items()
        }
        self.routes = [
            _RouteState(
                MatchingRoute(r),
                TokenBucket(r.rate_limit.per_minute, r.rate_limit.burst, clock) if r.rate_limit else None,
                [self.workers[s] for s in r.sinks],
            )
            for r in config.routes
        ]
        self._suppressed_metric = None
        if metrics is not None:
            self._suppressed_metric = Counter(
                "runwatch_alerts_suppressed", "Alert notifications held back by a route's rate limit (summarised)",
                ["route"], registry=metrics.registry,
            )  # fmt: skip

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the hub and start the workers (call on the server's event loop)."""
        self._sub = self.hub.subscribe(local_only=True)  # other instances sharing the store alert on their own
        loop = asyncio.get_running_loop()
        for w in self.workers.values():
            w.task = loop.create_task(w.run(), name=f"runwatch-alert-{w.sink.name}")
            self._tasks.append(w.task)
        self._tasks.append(loop.create_task(self._route_loop(), name="runwatch-alert-router"))
        self._tasks.append(loop.create_task(self._tick_loop(), name="runwatch-alert-ticker"))
        for w in self.workers.values():
            log.info("alerts: sink %s ready", w.sink.describe())

    async def stop(self, grace: float = 2.0) -> None:
        """Route what the hub still holds, give the sinks ``grace`` seconds to finish, then stop."""
        if self._sub is not None:
            self.hub.unsubscribe(self._sub)
            while not self._sub.queue.empty():
                self._route(self._sub.queue.get_nowait())
        for state in self.routes:
            if state.held.count:
                log.warning(
                    "alerts: route %s stops with %d held-back notification(s) never summarised",
                    state.route.name, state.held.count,
                )  # fmt: skip
        pending = [w.queue.join() for w in self.workers.values()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), grace)
            except TimeoutError:
                left = sum(w.queue.qsize() for w in self.workers.values())
                log.warning("alerts: stopping with %d notification(s) not delivered", left)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("alerts: %s", self.stats)

    # -- routing ------------------------------------------------------------------------------

    async def _route_loop(self) -> None:
        while True:
            a = await self._sub.queue.get()
            try:
                self._route(a)
            except Exception:  # a bug in routing must not end alerting
                log.exception("alerts: routing failed for anomaly %s", a.id)

    def _route(self, a: anomaly_pb2.Anomaly) -> None:
        for state in self.routes:
            route = state.route
            if not route.matches(a):
                continue
            decision = self.ledger.decide(route, a)
            if decision is None:
                continue
            action, previous = decision
            self._flush_held(state)
            if state.bucket is not None and not state.bucket.take():
                self._hold(state, a)
                continue
            if action == OPENED:
                self.stats.opened += 1
            else:
                self.stats.updates += 1
            n = Notification(
                route.name, action, a, previous, dashboard_url=self.config.dashboard_url, created=time.time()
            )
            for w in state.sinks:
                w.offer(n)

    def _hold(self, state: _RouteState, a: anomaly_pb2.Anomaly) -> None:
        if not state.held.count:
            rl = state.route.config.rate_limit
            log.warning(
                "alerts: route %s is over its rate limit (%g/min, burst %d): holding notifications back; "
                "a summary follows", state.route.name, rl.per_minute, rl.burst,
            )  # fmt: skip
        state.held.add(a, time.time())
        self.stats.suppressed += 1
        if self._suppressed_metric is not None:
            self._suppressed_metric.labels(state.route.name).inc()

    def _flush_held(self, state: _RouteState) -> None:
        """Send the summary of held-back notifications once the route has a token again."""
        if not state.held.count or not state.bucket.take():
            return
        held, state.held = state.held, SuppressedTally()
        log.warning("alerts: route %s held back %d notification(s); sending a summary", state.route.name, held.count)
        self.stats.summaries += 1
        n = Notification(
            state.route.name, SUPPRESSED, suppressed=held, dashboard_url=self.config.dashboard_url, created=time.time()
        )
        for w in state.sinks:
            w.offer(n)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for state in self.routes:
                self._flush_held(state)
            dropped = self._sub.dropped
            if dropped > self._hub_dropped_seen:
                lost = dropped - self._hub_dropped_seen
                self._hub_dropped_seen = dropped
                self.stats.hub_dropped += lost
                log.warning("alerts: fell behind detection: %d anomaly revision(s) discarded unrouted", lost)

    # -- delivery ------------------------------------------------------------------------------

    async def _deliver(self, sink: Sink, n: Notification) -> None:
        loop = asyncio.get_running_loop()
        policy = sink.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                await loop.run_in_executor(self._executor, sink.deliver, n)
            except DeliveryError as exc:
                if exc.permanent or attempt == policy.attempts:
                    why = f"{exc} (refused: not retried)" if exc.permanent else f"{exc} (after {attempt} tries)"
                    self._failed(sink, n, why)
                    return
                wait = (
                    exc.retry_after if exc.retry_after is not None else policy.wait(attempt) * random.uniform(0.8, 1.2)
                )
                wait = min(wait, policy.max_backoff_s)
                log.info("alerts: %s failed (%s); try %d in %.2f s", sink.describe(), exc, attempt + 1, wait)
                self.stats.retries += 1
                await asyncio.sleep(wait)
            except Exception as exc:  # noqa: BLE001 - a sink bug (or a vanished secret variable): not retried
                self._failed(sink, n, f"{type(exc).__name__}: {exc}")
                return
            else:
                self.stats.delivered += 1
                if self.metrics is not None:
                    self.metrics.alert_deliveries.labels(sink.name).inc()
                return

    def _failed(self, sink: Sink, n: Notification, why: str, dropped: bool = False) -> None:
        if dropped:
            self.stats.dropped += 1
        else:
            self.stats.failed += 1
        if self.metrics is not None:
            self.metrics.alert_failures.labels(sink.name).inc()
        if dropped and (self.stats.dropped & (self.stats.dropped - 1)):
            return  # a full queue logs its 1st, 2nd, 4th, 8th... drop, not every one
        log.error("alerts: not delivered to %s: %s: %s", sink.describe(), n.title, why)
