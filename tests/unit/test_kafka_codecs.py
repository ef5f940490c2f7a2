"""Kafka wire forms and settings, without a broker: decoding never raises, errors name the field."""

from __future__ import annotations

import json
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
        (b"\x0a\xff\xff", [], "starts[0]", "not a valid runwatch.v1.EventBatch protobuf"),
        (b'{"events": [{"run_id": "r", "stepp": 1}]}', [], "events[0].stepp", 'no field named "stepp"; did you mean "step"?'),
        (b'{"events": [{"run_id": "r", "step": "x"}]}', [], "events[0].step", "'x' is not an integer"),
        (b'{"events": [', [], "value", "not valid JSON: Expecting value: line 1 column 13"),
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


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        (b'{"events": [{}, {}, {}, {"run_id": "r", "step": "abc"}]}', "events[3].step", "'abc' is not an integer"),
        (b'{"events": [{"run_id": "r", "step": 1.5}]}', "events[0].step", "1.5 is not an integer"),
        (b'{"events": [{"run_id": "r", "step": 1, "step": 2}]}', "events[0]", "duplicate key 'step'"),
        (b'{"events": [{"run_id": "r", "runId": "s"}]}', "events[0].run_id", "given twice (as 'run_id' and 'runId')"),
        (b'{"events": [{"run_id": "r", "wallTme": 1}]}', "events[0].wallTme",
         'runwatch.v1.MetricEvent has no field named "wallTme"; did you mean "wall_time"? '
         "(its fields: run_id, step, wall_time, metrics)"),
        (b'{"events": [{"run_id": "r", "metrics": {"loss": "low"}}]}', "events[0].metrics['loss']",
         '\'low\' is not a number (use a number, or "NaN", "Infinity", "-Infinity")'),
        (b'{"events": [{"run_id": "\\ud800"}]}', "events[0].run_id", "not valid UTF-8: lone surrogate '\\ud800' at character 0"),
        (b'{"ends": [{"run_id": "r", "status": "DONE"}]}', "ends[0].status",
         "'DONE' is not a RunStatus: use one of RUN_STATUS_UNSPECIFIED, RUN_STATUS_RUNNING, RUN_STATUS_FINISHED, "
         "RUN_STATUS_FAILED, RUN_STATUS_KILLED"),
        (b'{"starts": [{"run_id": "r", "hyperparameters": {"a": {"b": 1, "b": 2}}}]}', "starts[0].hyperparameters.a",
         "duplicate key 'b'"),
        (b'{"events": {"run_id": "r"}}', "events", "an object is not a list"),
        (b'{"sequence": -1}', "sequence", "-1 is out of range for uint64"),
        (b'{"events": [{"run_id": "r", "step": 1, "metrics": {"loss": NaN}}]}', "value",
         'not valid JSON: bare NaN is not JSON; write it as the string "NaN"'),
        (b'{"events": [1]', "value", "not valid JSON: Expecting ',' delimiter: line 1 column 15 (char 14)"),
        (b'{"events": [{"step": "x"}, {"step": "y"}]}', "events[0].step", "'x' is not an integer (and 1 more problem(s) in this record)"),
    ],
)
def test_json_problems_name_the_proto_field(value, field, reason):
    failure = codecs.decode_batch(value)
    assert (failure.field, failure.reason) == (field, reason)
    assert "\n" not in failure.reason


def test_json_too_deep_hyperparameters_reach_the_start_check_cut_at_the_limit():
    from runwatch.service import validation
    from runwatch.service.nesting import MAX_NESTING

    deep: object = 1
    for _ in range(200):  # deeper than any protobuf parser goes
        deep = {"a": deep}
    value = json.dumps({"starts": [{"run_id": "r", "hyperparameters": deep}, {"run_id": "s"}]}).encode()
    batch = codecs.decode_batch(value)
    assert len(batch.starts) == 2  # decoded: the other start is not lost with it
    assert validation.check_start(batch.starts[0]) == ("hyperparameters" + ".a" * MAX_NESTING, "nested deeper than 16 levels")
    assert validation.check_start(batch.starts[1]) is None


def test_protobuf_problems_name_the_field():
    ev = runs_pb2.MetricEvent(run_id="r1", step=1).SerializeToString().replace(b"r1", b"r\xc3")
    failure = codecs.decode_batch(b"\x12" + bytes([len(ev)]) + ev)
    assert failure.field == "events[0].run_id"
    assert failure.reason.startswith("not valid UTF-8 (byte 0xc3 at offset 1 of the string); not a valid runwatch.v1")


def test_dead_letter_headers_are_single_line():
    from types import SimpleNamespace

    from runwatch.service.kafka.dead_letters import REASON, dead_letter

    record = SimpleNamespace(topic="t", partition=0, offset=1, timestamp=2, key=b"k", value=b"v", headers=[])
    letter = dead_letter("dlq", record, "undecodable", [("value", "line one\nline two\r\tend")])
    assert dict(letter.headers)[REASON] == b"value: line one\\nline two\\r\\tend"
    assert all(b"\n" not in v and b"\r" not in v for _, v in letter.headers)


@pytest.mark.parametrize("delivery", [1005, 5000, 15004, 15005, 30000])
def test_every_accepted_delivery_timeout_is_one_kafka_python_accepts(delivery):
    from kafka.producer.record_accumulator import RecordAccumulator

    options = KafkaSettings(bootstrap="x", delivery_timeout_ms=delivery).producer_options()
    RecordAccumulator(**{k: options[k] for k in ("linger_ms", "request_timeout_ms", "delivery_timeout_ms")})
    assert options["request_timeout_ms"] == min(delivery - 5, 15_000)


def test_a_delivery_timeout_too_short_for_linger_and_one_request_is_refused_by_name(monkeypatch):
    with pytest.raises(ValidationError, match=r"delivery_timeout_ms \(1000\) must be at least linger_ms \(5\) \+ 1000 ms"):
        KafkaSettings(delivery_timeout_ms=1000)
    with pytest.raises(ValidationError, match=r"delivery_timeout_ms \(3000\) must be at least linger_ms \(2500\)"):
        KafkaSettings(delivery_timeout_ms=3000, linger_ms=2500)
    monkeypatch.setenv("RUNWATCH_KAFKA_DELIVERY_TIMEOUT_MS", "1002")
    from runwatch.service.settings import ServiceSettings

    with pytest.raises(ValidationError, match="delivery_timeout_ms"):
        ServiceSettings()


def _start_of_length(n: int) -> bytes:
    """An EventBatch protobuf whose first field, a RunStart, is ``n`` bytes long (so its second byte is ``n``)."""
    for pad in range(200):
        b = runs_pb2.EventBatch()
        b.starts.add(run_id="r", project="p" * pad)
        value = b.SerializeToString()
        if value[1] == n:
            return value
    raise AssertionError(n)


_EVENTS_JSON = b'{"events": [{"run_id": "r", "step": 1, "metrics": {"loss": 0.5}}]}'
_EVENTS_PROTO = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="r", step=1, metrics={"loss": 0.5})])
_JSON_LABEL = [("content-type", b"application/json")]
_PROTO_LABEL = [("content-type", b"application/x-protobuf; messageType=runwatch.v1.EventBatch")]
_OBJECT = 'expected a JSON object {"events": [...]} (a runwatch.v1.EventBatch), got '
_NOT_JSON = (
    "says 'application/json', but the value is not JSON: it reads as a runwatch.v1.EventBatch protobuf: "
    "label it application/x-protobuf; messageType=runwatch.v1.EventBatch"
)
_NOT_PROTOBUF = (
    "says 'application/x-protobuf; messageType=runwatch.v1.EventBatch', but the value is JSON, not protobuf: "
    "label it application/json, or send it without the header"
)


@pytest.mark.parametrize(
    ("value", "headers", "field", "reason"),
    [
        (b"null", [], "value", _OBJECT + "null"),
        (b" \n[" + _EVENTS_JSON + b"]", [], "value", _OBJECT + "an array"),
        (b"true", [], "value", _OBJECT + "true"),
        (b'"abc"', [], "value", _OBJECT + 'the string "abc"'),
        (b"42", [], "value", _OBJECT + "the number 42"),
        (b"\xef\xbb\xbfnull", _JSON_LABEL, "value", _OBJECT + "null"),
        (b"[1, 2", [], "value", "not valid JSON: Expecting ',' delimiter: line 1 column 6 (char 5)"),
        (_EVENTS_PROTO.SerializeToString(), _JSON_LABEL, "header content-type", _NOT_JSON),
        (_start_of_length(123), _JSON_LABEL, "header content-type", _NOT_JSON),  # "\n{...": JSON-like, protobuf
        (_EVENTS_JSON, _PROTO_LABEL, "header content-type", _NOT_PROTOBUF),
        (b"[" + _EVENTS_JSON + b"]", _PROTO_LABEL, "header content-type", _NOT_PROTOBUF),
    ],
)
def test_slightly_off_json_is_refused_in_json_terms(value, headers, field, reason):
    """Sweep item 3: such records were refused by how their bytes fail as protobuf (``<field 13>: wire type 6``)."""
    failure = codecs.decode_batch(value, headers)
    assert (failure.field, failure.reason) == (field, reason)


@pytest.mark.parametrize("headers", [[], _JSON_LABEL])
def test_json_after_a_byte_order_mark_is_read(headers):
    value = b"\xef\xbb\xbf" + _EVENTS_JSON
    assert codecs.batch_format(value, headers) == "json"
    assert codecs.decode_batch(value, headers) == _EVENTS_PROTO
    assert codecs.decode_batch(b"\xef\xbb\xbf \r\n" + _EVENTS_JSON, headers) == _EVENTS_PROTO


@pytest.mark.parametrize("n", [ord(c) for c in '{["-0n'] + [ord("\t"), ord(" ")])
def test_protobuf_whose_bytes_begin_like_json_is_read_as_protobuf(n):
    """A batch opening with a RunStart of 123 bytes starts ``\\n{``: JSON whitespace, then ``{`` (was read as JSON)."""
    value = _start_of_length(n)
    assert codecs.batch_format(value) == "protobuf"
    assert codecs.decode_batch(value) == runs_pb2.EventBatch.FromString(value)
    ends = runs_pb2.EventBatch(ends=[runs_pb2.RunEnd(run_id="r")]).SerializeToString()  # starts with '"' (tag 4)
    assert ends[:1] == b'"' and codecs.decode_batch(ends) == runs_pb2.EventBatch.FromString(ends)


def test_detector_client_id_names_the_group_and_the_instance():
    """Sweep item 5: librdkafka named every instance of every group ``runwatch-detector#consumer-1``."""
    import os
    import socket

    c = KafkaSettings(bootstrap="x", group="swg").consumer_config()
    assert c["client.id"] == f"runwatch-detector.swg.{socket.gethostname()}-{os.getpid()}"
    named = KafkaSettings(bootstrap="x", client_id="rw").consumer_config()["client.id"]
    assert named.startswith("rw-detector.runwatch-detector.")
