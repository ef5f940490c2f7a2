"""Admission limits answered with RESOURCE_EXHAUSTED: streams and watchers per connection and overall, runs per project.

A refusal here is not a verdict on the data: the client should re-send the
same batches later (the SDK keeps them in its spool and backs off), so each
one ends the call with ``RESOURCE_EXHAUSTED`` and a message naming the limit
(the settings field) and what to do, never as rejected items in an ack.
"""

from __future__ import annotations

from collections import Counter

from runwatch.service.settings import ServiceSettings


class IngestExhausted(Exception):
    """A batch refused because a limit is reached; nothing of it was applied. Re-send it later."""


class _OpenCalls:
    """Calls of one kind open now, in all and per client connection."""

    def __init__(self) -> None:
        self.total = 0
        self.by_peer: Counter[str] = Counter()

    def open(self, peer: str) -> None:
        self.total += 1
        self.by_peer[peer] += 1

    def close(self, peer: str) -> None:
        self.total -= 1
        self.by_peer[peer] -= 1
        if self.by_peer[peer] <= 0:
            del self.by_peer[peer]


class StreamLimits:
    """Counts open StreamEvents and WatchAnomalies calls; refuses those beyond the settings' limits.

    Examples
    --------
    >>> limits = StreamLimits(ServiceSettings(max_streams=2, max_streams_per_peer=1))
    >>> limits.open_stream("ipv4:127.0.0.1:5000") is None
    True
    >>> print(limits.open_stream("ipv4:127.0.0.1:5000"))
    max_streams_per_peer: this connection (ipv4:127.0.0.1:5000) already has 1 StreamEvents stream(s) open, the limit; send on the open stream or retry later
    >>> limits.close_stream("ipv4:127.0.0.1:5000")
    >>> limits.streams
    0
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._streams = _OpenCalls()
        self._watchers = _OpenCalls()
        self.refused = Counter()  # limit field -> calls refused

    @property
    def streams(self) -> int:
        return self._streams.total

    @property
    def watchers(self) -> int:
        return self._watchers.total

    def open_stream(self, peer: str) -> str | None:
        """Count a new StreamEvents call; the refusal message (naming the field) if a limit is reached."""
        s, open_ = self.settings, self._streams
        if open_.by_peer[peer] >= s.max_streams_per_peer:
            return self._refuse(
                "max_streams_per_peer",
                f"this connection ({peer}) already has {open_.by_peer[peer]} StreamEvents stream(s) open, the limit; "
                "send on the open stream or retry later",
            )
        if open_.total >= s.max_streams:
            return self._refuse(
                "max_streams", f"{open_.total} StreamEvents streams are open on this server, the limit; retry later"
            )
        open_.open(peer)
        return None

    def close_stream(self, peer: str) -> None:
        self._streams.close(peer)

    def open_watcher(self, peer: str) -> str | None:
        """Count a new WatchAnomalies call; the refusal message (naming the field) if a limit is reached."""
        s, open_ = self.settings, self._watchers
        if open_.by_peer[peer] >= s.max_watchers_per_peer:
            return self._refuse(
                "max_watchers_per_peer",
                f"this connection ({peer}) already has {open_.by_peer[peer]} WatchAnomalies stream(s) open, "
                "the limit; watch several runs with one project filter or retry later",
            )
        if open_.total >= s.max_watchers:
            return self._refuse(
                "max_watchers",
                f"{open_.total} WatchAnomalies streams are open on this server, the limit; close one or retry later",
            )
        open_.open(peer)
        return None

    def close_watcher(self, peer: str) -> None:
        self._watchers.close(peer)

    def _refuse(self, field: str, message: str) -> str:
        self.refused[field] += 1
        return f"{field}: {message}"


class LimitsCollector:
    """Prometheus view of the limits, read at scrape time: evictions, restores, refusals, open streams.

    ``runwatch_evicted_runs_total``, ``runwatch_restored_runs_total``,
    ``runwatch_refused_total{limit}`` (the settings field that refused),
    ``runwatch_ingest_streams`` and ``runwatch_evicted_runs_waiting`` (evicted
    runs whose stall check is still due).
    """

    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        pipeline, limits = self.server.pipeline, self.server.limits
        yield CounterMetricFamily(
            "runwatch_evicted_runs", "Runs checkpointed to the store and dropped from memory", value=pipeline.evictions
        )
        yield CounterMetricFamily(
            "runwatch_restored_runs", "Evicted runs restored from their checkpoint", value=pipeline.restores
        )
        refused = CounterMetricFamily(
            "runwatch_refused", "Calls and batches refused with RESOURCE_EXHAUSTED", labels=["limit"]
        )
        counts = {**limits.refused, "max_active_runs_per_project": pipeline.refused_batches}
        for field in ("max_streams", "max_streams_per_peer", "max_watchers", "max_watchers_per_peer", "max_active_runs_per_project"):
            refused.add_metric([field], counts.get(field, 0))
        yield refused
        yield GaugeMetricFamily("runwatch_ingest_streams", "Open StreamEvents streams", value=limits.streams)
        yield GaugeMetricFamily(
            "runwatch_evicted_runs_waiting",
            "Evicted runs to be restored when their stall check is due",
            value=pipeline.evicted_waiting,
        )
