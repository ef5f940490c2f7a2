"""A run's stored metric events, cut to a step range and a set of metrics, in chunks (``GetMetrics``).

Examples
--------
>>> from runwatch.v1 import runs_pb2, service_pb2
>>> events = [runs_pb2.MetricEvent(run_id="r", step=s, metrics={"loss": 1.0 / (s + 1), "lr": 0.1}) for s in range(5)]
>>> request = service_pb2.GetMetricsRequest(run_id="r", metrics=["loss"], min_step=1, max_step=3)
>>> chunks = metric_history(events, request, chunk_events=2)
>>> [[(e.step, dict(e.metrics)) for e in c.events] for c in chunks]
[[(1, {'loss': 0.5}), (2, {'loss': 0.3333333333333333})], [(3, {'loss': 0.25})]]
"""

from __future__ import annotations

from collections.abc import Iterable

from runwatch.v1 import runs_pb2, service_pb2

#: Events per streamed chunk: about 1 MB with 20 metrics an event, far below gRPC's message limit.
CHUNK_EVENTS = 4096


def metric_history(
    events: Iterable[runs_pb2.MetricEvent], request: service_pb2.GetMetricsRequest, chunk_events: int = CHUNK_EVENTS
) -> list[service_pb2.MetricHistory]:
    """The events ``request`` asks for, as :class:`MetricHistory` chunks of at most ``chunk_events``."""
    wanted = frozenset(request.metrics)
    lo = request.min_step if request.HasField("min_step") else None
    hi = request.max_step if request.HasField("max_step") else None
    chunks: list[service_pb2.MetricHistory] = []
    current = service_pb2.MetricHistory()
    for ev in events:
        if (lo is not None and ev.step < lo) or (hi is not None and ev.step > hi):
            continue
        if wanted:
            values = {k: v for k, v in ev.metrics.items() if k in wanted}
            if not values:
                continue
            current.events.add(run_id=ev.run_id, step=ev.step, wall_time=ev.wall_time, metrics=values)
        else:
            current.events.append(ev)
        if len(current.events) >= chunk_events:
            chunks.append(current)
            current = service_pb2.MetricHistory()
    if len(current.events) or not chunks:
        chunks.append(current)
    return chunks
