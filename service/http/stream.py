"""Server-sent events for the dashboard: anomalies from the hub, a run's new points from the store.

One stream per open page. Anomalies arrive through the same
:class:`~runwatch.service.hub.AnomalyHub` subscription as a ``WatchAnomalies``
call, the moment detection raises them. A run page's stream also polls its
run every :data:`POLL_SECONDS` (one indexed query) and, when events were
stored, sends the points past the step the page already has; a burst larger
than :data:`MAX_LIVE_POINTS` is announced as ``reload`` instead, and the page
fetches its downsampled curves again.

Events (``event:`` name, ``data:`` JSON):

- ``anomaly``: an anomaly revision (:func:`~runwatch.service.http.payloads.anomaly_json`);
- ``points``: ``{"series": {metric: {"x": [...], "y": [...]}}}``, steps >= the page's ``since`` in ascending
  order (y is null where the value is NaN or infinite: a gap, as in ``/api/series``);
- ``run``: the run's summary when its status, last step or counts change;
- ``reload``: too many new points to send; fetch the curves again (at most every :data:`RELOAD_SECONDS`).

Examples
--------
>>> sse("anomaly", {"id": "a1"})
b'event: anomaly\\ndata: {"id":"a1"}\\n\\n'
"""

from __future__ import annotations

import asyncio
import json
import math

from runwatch.service.http.access import allowed_projects
from runwatch.service.http.payloads import anomaly_json, run_json
from runwatch.service.tokens import Principal

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_LIVE_POINTS = 5000
#: Least time between two ``reload`` events of one stream: a run streaming thousands of steps a second
#: refreshes its page every 2 s, rather than costing the ingest path a full curve read every poll.
RELOAD_SECONDS = 2.0


def sse(event: str, data: object) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


def new_points(cols, since: int) -> dict[str, dict] | None:
    """Every metric's points at steps >= ``since`` in step order, JSON-ready; None when more than
    :data:`MAX_LIVE_POINTS` in all."""
    out, total = {}, 0
    for name in cols.names():
        curve = cols.tail(name, since)
        if curve is None or not len(curve[0]):
            continue
        steps, values = curve
        total += len(steps)
        if total > MAX_LIVE_POINTS:
            return None
        out[name] = {"x": steps.tolist(), "y": [y if math.isfinite(y) else None for y in values.tolist()]}
    return out


def last_sent_step(points: dict[str, dict]) -> int:
    """The highest step of a ``points`` payload (each metric's ``x`` ascends)."""
    return max(series["x"][-1] for series in points.values())


class EventStream:
    """Feeds one SSE response until the client leaves, the server closes, or the token stops being valid."""

    def __init__(self, dashboard, principal: Principal, project: str, run_id: str, min_severity: int, since: int):
        self.d = dashboard
        self.principal = principal
        self.project = project
        self.run_id = run_id
        self.min_severity = min_severity
        self.since = since
        self.next_reload = 0.0

    async def run(self, response) -> None:
        d = self.d
        hub = d.server.hub
        sub = hub.subscribe(self.project, self.run_id, self.min_severity, projects=allowed_projects(self.principal))
        d.server.metrics.dashboard_streams.inc()
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        last_run = None
        closing = asyncio.ensure_future(d.closing.wait())
        try:
            await response.write(b"retry: 2000\n\n")
            while not d.closing.is_set():
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, closing}, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    batch = [getter.result()]
                    while not sub.queue.empty():
                        batch.append(sub.queue.get_nowait())
                    for a in batch:
                        await response.write(sse("anomaly", anomaly_json(a)))
                else:
                    getter.cancel()
                if not d.access.still_valid(self.principal):
                    await response.write(sse("denied", {"error": "token revoked or changed; sign in again"}))
                    return
                if self.run_id:
                    last_run = await self._poll_run(response, last_run)
                now = loop.time()
                if now - last_beat > HEARTBEAT_SECONDS:
                    await response.write(b": ping\n\n")
                    last_beat = now
        except ConnectionResetError:
            pass  # the page went away
        finally:
            closing.cancel()
            hub.unsubscribe(sub)
            d.server.metrics.dashboard_streams.dec()

    async def _poll_run(self, response, last_run):
        store = self.d.server.store
        info = await asyncio.to_thread(store.get_run, self.run_id)
        if info is None:
            return last_run
        key = (info.status, info.last_step, info.event_count, info.anomaly_count)
        if key == last_run:
            return last_run
        cols = self.d.columns.get(self.run_id)
        await asyncio.to_thread(cols.refresh, store)
        points = await asyncio.to_thread(new_points, cols, self.since)
        if points is None:
            now = asyncio.get_running_loop().time()
            if now < self.next_reload:
                return last_run  # not yet: the next poll looks again
            self.next_reload = now + RELOAD_SECONDS
            await response.write(sse("reload", {"last_step": cols.last_step}))
            self.since = cols.last_step + 1
        elif points:
            await response.write(sse("points", {"series": points}))
            # Re-send the last step next time: another metric may still log at it (val/loss after loss).
            # The step comes from what was sent, not cols.last_step: another request may have refreshed
            # the shared columns since, and their new points must still come in the next payload.
            self.since = max(self.since, last_sent_step(points))
        self.d.columns.trim()
        await response.write(sse("run", run_json(info)))
        return key
