"""Kafka wire forms and settings, without a broker: decoding never raises, errors name the field."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from runwatch.service.kafka import codecs
from runwatch.service.kafka.config import KafkaSettings
from runwatch.v1 import anomaly_pb2, runs_pb2


def test_json_and_protobuf_records_decode_to_the_same_batch():
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="r", project="p")
    b.events.add(run_id="r", step=3, wall_time=1.5).metrics.update({"loss": math.inf, "lr": 0.1})
    value, headers = codecs.encode_batch(b)
    assert codecs.header(headers, "Content-Type") == "application/x-protobuf; messageType=runwatch.v1.EventBatch"
    typed = b'{"starts":[{"run_id":"r","project":"p"}],"events":[{"runId":"r","step":"3","wall_time":1.5,"metrics":{"loss":"Infinity","lr":0.1}}]}'
    assert codecs.decode_batch(value, headers) == b
    assert codecs.decode_batch(value) == b  # no header: not JSON-looking, so protobuf
    assert codecs.decode_batch(typed) == b  # no header: starts with "{", so JSON
    assert codecs.decode_batch(typed, [("content-type", b"application/json")]) == b


@pytest.mark.parametrize(
    ("value", "headers", "field", "says"),
    [
        (b"", [], "value", "empty record"),
        (b"\x0a\xff\xff", [], "value", "not a valid runwatch.v1.EventBatch protobuf"),
        (b'{"events": [{"run_id": "r", "stepp": 1}]}', [], "value", 'no field named "stepp"'),
        (b'{"events": [{"run_id": "r", "step": "x"}]}', [], "value", "Failed to parse step field"),
        (b'{"events": [', [], "value", "Failed to load JSON"),
        (b"\xff{", [("content-type", b"application/json")], "value", "JSON must be UTF-8"),
        (b"x", [("content-type", b"text/csv")], "header content-type", "unsupported content type"),
        (b"x", [("content-type", b"application/x-protobuf; messageType=runwatch.v1.RunStart")], "header content-type",
         "'runwatch.v1.RunStart' is not accepted"),
    ],
)
def test_bad_records_become_failures_naming_the_field(value, headers, field, says):
    failure = codecs.decode_batch(value, headers)
    assert isinstance(failure, codecs.DecodeFailure)
    assert failure.field == field and says in failure.reason


def test_anomaly_records_json_by_default_protobuf_on_request():
    a = anomaly_pb2.Anomaly(id="abc", run_id="r", step=7, revision=2, score=math.nan, kind=anomaly_pb2.ANOMALY_KIND_NONFINITE)
    value, headers = codecs.encode_anomaly(a)
    h = dict(headers)
    assert h["content-type"] == b"application/json" and h[codecs.SCHEMA_VERSION] == b"1"
    assert (h[codecs.ANOMALY_ID], h[codecs.ANOMALY_REVISION]) == (b"abc", b"2")
    assert b'"run_id":"r"' in value and b'"kind":"ANOMALY_KIND_NONFINITE"' in value
    back = codecs.decode_anomaly(value, headers)
    assert back.id == "abc" and back.step == 7 and math.isnan(back.score)
    value, headers = codecs.encode_anomaly(a, "protobuf")
    assert dict(headers)["content-type"] == b"application/x-protobuf; messageType=runwatch.v1.Anomaly"
    assert codecs.decode_anomaly(value, headers).revision == 2


def test_split_by_run_keeps_order_and_bounds_record_size():
    from runwatch.service.kafka.front import split_by_run

    b = runs_pb2.EventBatch(sequence=4)
    b.starts.add(run_id="a")
    for i in range(300):
        b.events.add(run_id="a", step=i).metrics["loss"] = float(i)
        if i % 100 == 0:
            b.events.add(run_id="b", step=i).metrics["loss"] = 1.0
    b.ends.add(run_id="a")
    parts = split_by_run(b, 2048)
    a_parts = [x for run, x in parts if run == "a"]
    assert len(a_parts) > 1 and all(x.ByteSize() <= 2048 for x in a_parts)
    assert [e.step for x in a_parts for e in x.events] == list(range(300))
    assert len(a_parts[0].starts) == 1 and len(a_parts[-1].ends) == 1
    assert [e.step for run, x in parts if run == "b" for e in x.events] == [0, 100, 200]
    assert {x.sequence for _, x in parts} == {4}


def test_settings_from_environment_and_client_options(monkeypatch):
    monkeypatch.setenv("RUNWATCH_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    monkeypatch.setenv("RUNWATCH_KAFKA_COMPRESSION", "gzip")
    monkeypatch.setenv("RUNWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RUNWATCH_KAFKA_SASL_PASSWORD", "s3cret")
    k = KafkaSettings()
    assert k.enabled and "s3cret" not in repr(k)
    p = k.producer_options()
    assert p["bootstrap_servers"] == ["k1:9092", "k2:9092"] and p["compression_type"] == "gzip"
    assert p["acks"] == "all" and p["enable_idempotence"] is True
    assert p["sasl_plain_password"] == "s3cret" and p["reconnect_backoff_max_ms"] == 5000
    c = k.consumer_options()
    assert c["enable_auto_commit"] is False and c["group_id"] == "runwatch-detector"
    assert KafkaSettings(bootstrap="x", acks="1").producer_options()["enable_idempotence"] is False
    with pytest.raises(ValidationError, match="unknown compression 'brotli'"):
        KafkaSettings(compression="brotli")
    monkeypatch.delenv("RUNWATCH_KAFKA_BOOTSTRAP")
    from runwatch.service.settings import ServiceSettings

    assert not ServiceSettings().kafka.enabled
