"""The ingest benchmark's paced client (bench/ingest_throughput.py): an even offered load over real gRPC."""

from __future__ import annotations

import asyncio

import pytest

from bench.ingest_throughput import _drive, make_batches, start_bare_ingest


@pytest.mark.parametrize("rate", [0.0, 100.0])
def test_a_paced_client_spreads_its_batches_evenly_and_sends_every_one(rate):
    per_run, n_events, _ = make_batches(runs=4, steps=15, batch=1, seed=0)  # 60 one-event batches

    async def main():
        arrivals: list[float] = []
        loop = asyncio.get_running_loop()
        server, port = await start_bare_ingest(lambda batch: arrivals.append(loop.time()))
        try:
            seconds, accepted = await _drive(port, per_run, streams=4, rate=rate)
        finally:
            await server.stop(None)
        return seconds, accepted, arrivals

    seconds, accepted, arrivals = asyncio.run(main())
    assert len(arrivals) == n_events == 60  # every batch arrived
    assert accepted == n_events + 4  # each acknowledged whole: its event, and each run's RunStart in its first batch
    if rate:
        # 4 streams of 15 batches, each stream one batch every 4 / 100 s: at least 14 intervals.
        assert seconds >= 14 * 4 / rate
        # Streams start staggered: the arrivals are spread evenly, not in bursts of one batch per stream.
        gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
        assert gaps[len(gaps) // 4] > 0.3 / rate
