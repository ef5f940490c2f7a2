"""The ingest benchmark's paced client (bench/ingest_throughput.py): an even offered load over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from bench.ingest_throughput import _drive, make_batches
from runwatch.v1 import runs_pb2, service_pb2


async def _bare_server(arrivals: list[float]):
    async def stream(requests, context):
        loop = asyncio.get_running_loop()
        async for raw in requests:
            arrivals.append(loop.time())
            b = runs_pb2.EventBatch.FromString(raw)
            yield service_pb2.IngestAck(sequence=b.sequence, accepted=len(b.events))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(
            "runwatch.v1.IngestService",
            {"StreamEvents": grpc.stream_stream_rpc_method_handler(
                stream, response_serializer=service_pb2.IngestAck.SerializeToString)},
        ),
    ))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.parametrize("rate", [0.0, 100.0])
def test_a_paced_client_spreads_its_batches_evenly_and_sends_every_one(rate):
    per_run, n_events, _ = make_batches(runs=4, steps=15, batch=1, seed=0)  # 60 one-event batches

    async def main():
        arrivals: list[float] = []
        server, port = await _bare_server(arrivals)
        try:
            seconds, accepted = await _drive(port, per_run, streams=4, rate=rate)
        finally:
            await server.stop(None)
        return seconds, accepted, arrivals

    seconds, accepted, arrivals = asyncio.run(main())
    assert accepted == n_events == len(arrivals) == 60
    if rate:
        # 4 streams of 15 batches, each stream one batch every 4 / 100 s: at least 14 intervals.
        assert seconds >= 14 * 4 / rate
        # Streams start staggered: the arrivals are spread evenly, not in bursts of one batch per stream.
        gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
        assert gaps[len(gaps) // 4] > 0.3 / rate
