"""Dead-letter reasons on a real broker name the field, in proto names, on one line; a short delivery timeout starts."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from kafka import KafkaProducer
from kafka_broker import TopicReader

from runwatch.service.background import BackgroundServer
from runwatch.service.kafka import dead_letters
from runwatch.service.settings import ServiceSettings
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

pytestmark = pytest.mark.slow



def produce_then_dead_letters(bootstrap, topic, dlq_topic, key, before, poison, after):
    """Produce ``before``, ``poison`` and ``after`` ((value, headers) each) to ``topic`` under ``key``; the dead
    letters of the poison records, read from ``dlq_topic`` in the order produced (checked by their origin offsets)."""
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    for value, headers in before:
        p.send(topic, key=key, value=value, headers=headers)
    metas = [p.send(topic, key=key, value=value, headers=headers) for value, headers in poison]
    for value, headers in after:
        p.send(topic, key=key, value=value, headers=headers)
    p.flush()
    offsets = [m.get().offset for m in metas]
    p.close()
    dlq = TopicReader(bootstrap, dlq_topic)
    dead = dlq.read_until(lambda r: len(r) >= len(poison))
    dlq.close()
    dead.sort(key=lambda r: int(dict(r.headers)[dead_letters.ORIGIN_OFFSET]))
    assert [int(dict(r.headers)[dead_letters.ORIGIN_OFFSET]) for r in dead] == offsets
    return dead

def event_record(run_id: str, step: int, extra: bytes = b"") -> bytes:
    ev = runs_pb2.MetricEvent(run_id=run_id, step=step, metrics={"loss": 1.0}).SerializeToString() + extra
    return b"\x12" + bytes([len(ev)]) + ev


def test_dead_letter_reasons_name_the_field(kafka, tmp_path):
    # A delivery timeout under linger + 15 s used to stop `serve` (kafka-python's own check); now it runs.
    k = kafka.model_copy(update={"delivery_timeout_ms": 5000})
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=k)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        opening = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="m-run", project="alpha", framework="jax")])
        opening.events.add(run_id="m-run", step=0).metrics["loss"] = 1.0
        deep: object = 1
        for _ in range(200):
            deep = {"a": deep}
        conflicting = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="m-run", project="beta")])
        conflicting.events.add(run_id="m-run", step=2).metrics["loss"] = 0.5
        poison = [
            b'{"events": [{"run_id": "m-run", "step": 1, "metrics": {"loss": 1}}, {"run_id": "m-run", "step": "abc"}]}',
            b'{"events": [{"run_id": "m-run", "step": 1, "step": 2}]}',
            b'{"events": [{"runId": "m-run", "stepp": 1}]}',
            event_record("m-run", 1).replace(b"m-run", b"m-r\xffn"),
            event_record("m-run", 1, b"\x12\x03abc"),  # step sent as a string
            conflicting.SerializeToString(),
            json.dumps({"starts": [{"run_id": "m-deep", "hyperparameters": deep}, {"run_id": "m-ok"}]}).encode(),
        ]
        after = runs_pb2.EventBatch()
        after.events.add(run_id="m-run", step=3).metrics["loss"] = float("nan")
        dead = produce_then_dead_letters(
            kafka.bootstrap, k.ingest_topic, k.dlq_topic, b"m-run",
            [(opening.SerializeToString(), [])], [(v, []) for v in poison], [(after.SerializeToString(), [])],
        )  # fmt: skip
        for rec in dead:
            assert all(b"\n" not in v and b"\r" not in v for _, v in rec.headers), rec.headers
        reasons = [dict(r.headers)[dead_letters.REASON].decode() for r in dead]
        kinds = [dict(r.headers)[dead_letters.ERROR_KIND].decode() for r in dead]
        assert kinds == ["undecodable"] * 4 + ["rejected", "partial", "partial"]
        assert reasons[0] == "events[1].step: 'abc' is not an integer"
        assert reasons[1] == "events[0]: duplicate key 'step'"
        assert reasons[2] == (
            'events[0].stepp: runwatch.v1.MetricEvent has no field named "stepp"; did you mean "step"? '
            "(its fields: run_id, step, wall_time, metrics)"
        )
        assert reasons[3].startswith("events[0].run_id: not valid UTF-8 (byte 0xff at offset 3 of the string)")
        assert reasons[4] == "events[0].step: wrong wire type: sent as length-delimited, expected varint (int64)"
        assert reasons[5] == (
            "starts[0].project: run 'm-run' already started with project 'alpha', got 'beta'; "
            "1 other item(s) of this record were accepted"
        )
        assert reasons[6] == (
            "starts[0].hyperparameters" + ".a" * 16 + ": nested deeper than 16 levels; "
            "1 other item(s) of this record were accepted"
        )

        with grpc.insecure_channel(srv.target) as channel:
            runs = service_pb2_grpc.RunServiceStub(channel)
            run = runs.GetRun(service_pb2.GetRunRequest(run_id="m-run"), timeout=10).run
            assert (run.project, run.start.framework, run.event_count, run.last_step) == ("alpha", "jax", 3, 3)
            listed = runs.ListRuns(service_pb2.ListRunsRequest(), timeout=10).runs
            assert sorted(r.run_id for r in listed) == ["m-ok", "m-run"]
    finally:
        srv.stop()


def test_slightly_off_json_is_read_or_refused_in_json_terms(kafka, tmp_path):
    """Sweep item 3: a byte-order mark, a bare null or array, and a content type that contradicts the bytes."""
    srv = BackgroundServer(ServiceSettings(port=0, data_dir=tmp_path / "data", kafka=kafka)).start()
    try:
        assert srv.server.kafka.consumer.ready.wait(30), "no partitions assigned in 30 s"
        opening = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="j-run", project="alpha")])
        opening.events.add(run_id="j-run", step=0).metrics["loss"] = 1.0
        step2 = runs_pb2.EventBatch()
        step2.events.add(run_id="j-run", step=2).metrics["loss"] = 0.9
        as_json = b'{"events": [{"run_id": "j-run", "step": 3, "metrics": {"loss": 0.8}}]}'
        json_label = [("content-type", b"application/json")]
        proto_label = [("content-type", b"application/x-protobuf; messageType=runwatch.v1.EventBatch")]
        poison = [
            (b"null", []),
            (b'[{"events": [{"run_id": "j-run", "step": 3, "metrics": {"loss": 0.8}}]}]', []),
            (step2.SerializeToString(), json_label),  # protobuf said to be JSON
            (as_json, proto_label),  # JSON said to be protobuf
        ]
        # An editor's UTF-8 byte-order mark before JSON: read, not dead-lettered.
        bom_first = b'\xef\xbb\xbf{"events": [{"run_id": "j-run", "step": 1, "metrics": {"loss": 0.95}}]}'
        dead = produce_then_dead_letters(
            kafka.bootstrap, kafka.ingest_topic, kafka.dlq_topic, b"j-run",
            [(opening.SerializeToString(), []), (bom_first, [])], poison,
            [(step2.SerializeToString(), proto_label), (b"\xef\xbb\xbf" + as_json, json_label)],
        )  # fmt: skip
        reasons = [dict(r.headers)[dead_letters.REASON].decode() for r in dead]
        assert [dict(r.headers)[dead_letters.ERROR_KIND].decode() for r in dead] == ["undecodable"] * 4
        expected = 'value: expected a JSON object {"events": [...]} (a runwatch.v1.EventBatch), got '
        assert reasons[0] == expected + "null"
        assert reasons[1] == expected + "an array"
        assert reasons[2] == (
            "header content-type: says 'application/json', but the value is not JSON: it reads as a "
            "runwatch.v1.EventBatch protobuf: label it application/x-protobuf; messageType=runwatch.v1.EventBatch"
        )
        assert reasons[3] == (
            "header content-type: says 'application/x-protobuf; messageType=runwatch.v1.EventBatch', but the value "
            "is JSON, not protobuf: label it application/json, or send it without the header"
        )

        with grpc.insecure_channel(srv.target) as channel:
            runs = service_pb2_grpc.RunServiceStub(channel)
            deadline = time.monotonic() + 20
            while (run := runs.GetRun(service_pb2.GetRunRequest(run_id="j-run"), timeout=10).run).last_step < 3:
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
            assert (run.event_count, run.last_step) == (4, 3)  # steps 0-3: both byte-order-marked records read
    finally:
        srv.stop()
