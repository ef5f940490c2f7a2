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
    c = k.consumer_config()
    assert c["enable.auto.commit"] is False and c["group.id"] == "runwatch-detector"
    assert c["bootstrap.servers"] == "k1:9092,k2:9092" and c["sasl.password"] == "s3cret"
    assert c["sasl.mechanism"] == "SCRAM-SHA-512" and c["reconnect.backoff.max.ms"] == 5000
    from confluent_kafka import Consumer

    Consumer(c).close()  # librdkafka accepts every key and value
    assert KafkaSettings(bootstrap="x", acks="1").producer_options()["enable_idempotence"] is False
    with pytest.raises(ValidationError, match="unknown compression 'brotli'"):
        KafkaSettings(compression="brotli")
    monkeypatch.delenv("RUNWATCH_KAFKA_BOOTSTRAP")
    from runwatch.service.settings import ServiceSettings

    assert not ServiceSettings().kafka.enabled


def _filled(message, rng, depth: int = 0):
    """Every field of ``message`` set to an awkward value (non-finite doubles, 64-bit extremes, unknown enums)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    doubles = [math.nan, math.inf, -math.inf, -0.0, 1e300, 5e-324, 0.1, 0.0]
    ints64 = [0, -(2**63), 2**63 - 1, 2**53 + 1, 7]
    for field in message.DESCRIPTOR.fields:
        n = rng.integers(0, 4) if field.is_repeated else 1
        values = []
        for _ in range(n):
            if field.cpp_type == F.CPPTYPE_MESSAGE:
                if depth > 2:
                    continue
                sub = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
                _filled(sub, rng, depth + 1)
                continue
            if field.cpp_type == F.CPPTYPE_DOUBLE:
                values.append(doubles[rng.integers(len(doubles))])
            elif field.cpp_type == F.CPPTYPE_INT64:
                values.append(ints64[rng.integers(len(ints64))])
            elif field.cpp_type == F.CPPTYPE_INT32:
                values.append(int(rng.integers(-(2**31), 2**31)))
            elif field.cpp_type == F.CPPTYPE_ENUM:
                values.append(int(rng.integers(0, len(field.enum_type.values) + 3)))  # some unknown numbers
            elif field.cpp_type == F.CPPTYPE_STRING:
                values.append(rng.choice(["", "loss", "ü∆\"\\\n", "layer.0/weight"]))
            elif field.cpp_type == F.CPPTYPE_BOOL:
                values.append(bool(rng.integers(2)))
        if values and field.is_repeated:
            getattr(message, field.name).extend(values)
        elif values and rng.random() < 0.8:  # some left at their default
            setattr(message, field.name, values[0])
    return message


def test_anomaly_json_equals_json_format_on_awkward_values():
    import json

    import numpy as np
    from google.protobuf import json_format

    from runwatch.service.kafka.proto_json import _plan, message_to_json_object

    assert _plan(anomaly_pb2.Anomaly.DESCRIPTOR) is not None  # anomalies take the compiled path
    rng = np.random.default_rng(0)

    def reference(m):
        return json_format.MessageToDict(m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    for _ in range(300):
        a = _filled(anomaly_pb2.Anomaly(), rng)
        ours = message_to_json_object(a)
        assert json.dumps(ours, sort_keys=True) == json.dumps(reference(a), sort_keys=True)
        value, headers = codecs.encode_anomaly(a)
        back = codecs.decode_anomaly(value, headers)
        assert back.id == a.id and back.step == a.step and len(back.evidence) == len(a.evidence)
    # A type with a map (EventBatch) is left to json_format, with the same result.
    b = runs_pb2.EventBatch(sequence=3)
    b.events.add(run_id="r", step=1).metrics["loss"] = math.nan
    assert message_to_json_object(b) == reference(b)
