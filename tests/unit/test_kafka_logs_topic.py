"""Logs-topic records (raw lines as Fluent Bit, Vector and kcat write them) read into LogLines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runwatch.service.kafka.codecs import DecodeFailure
from runwatch.service.kafka.logs_topic import Owners, decode_line
from runwatch.v1 import runs_pb2

WARNING, ERROR, INFO = runs_pb2.LOG_LEVEL_WARNING, runs_pb2.LOG_LEVEL_ERROR, runs_pb2.LOG_LEVEL_INFO


def rec(value: bytes | None, key: bytes | None = b"run-1", headers=(), timestamp: int = 1740823200123):
    return SimpleNamespace(key=key, value=value, headers=list(headers), timestamp=timestamp)


def test_plain_line_with_and_without_headers():
    got = decode_line(rec(b"iteration 10/100 | lm loss: 2.3\r\n"))
    assert (got.run_id, got.line.text, got.line.level, got.line.time) == (
        "run-1",
        "iteration 10/100 | lm loss: 2.3",
        INFO,
        1740823200.123,
    )
    got = decode_line(
        rec(b"x", headers=[("Level", b"err"), ("time", b"2025-03-01T10:00:00Z"), ("step", b"12"), ("project", b"p")])
    )
    assert (got.line.level, got.line.time, got.line.step, got.project) == (ERROR, 1740823200.0, 12, "p")
    assert decode_line(rec(b"50%|#####", headers=[("source", b"stderr")])).line.level == WARNING
    assert decode_line(rec(b"INFO: loaded", headers=[("stream", b"stderr")])).line.level == INFO  # its own word wins
    assert decode_line(rec(b"x", headers=[("level", b"40")])).line.level == ERROR  # a logging number


def test_json_values_of_the_shippers():
    docker = decode_line(rec(b'{"log": "CUDA out of memory\\n", "stream": "stderr", "time": "2025-03-01T10:00:01Z"}'))
    assert (docker.line.text, docker.line.level, docker.line.time) == ("CUDA out of memory", WARNING, 1740823201.0)
    vector = decode_line(rec(b'{"message": "step 3 loss=0.4", "timestamp": 1740823202}'))
    assert (vector.line.text, vector.line.time) == ("step 3 loss=0.4", 1740823202.0)
    structured = decode_line(rec(b'{"level": "warning", "msg": "grad overflow", "step": 7}'))
    assert (structured.line.level, structured.line.step) == (WARNING, 7)
    other = decode_line(rec(b'{"loss": 0.5}'))  # JSON naming no text: the line as it is
    assert other.line.text == '{"loss": 0.5}'


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (rec(b"x", key=None), "key", "no run id: key each record with the id of the run the line belongs to"),
        (rec(b"x", key=b"bad id!"), "key", "run id 'bad id!': "),
        (rec(b"x", key=b"\xff\xfe"), "key", "not UTF-8: byte 0xff at offset 0"),
        (rec(b"ok \xe9 no"), "value", "not UTF-8: byte 0xe9 at offset 3"),
        (rec(b"y" * 70_000), "value", "70000 bytes is over the limit of 65536 bytes for one line"),
        (rec(b"x", headers=[("level", b"loud")]), "header level", "unknown level b'loud'"),
        (rec(b"x", headers=[("time", b"soon")]), "header time", "b'soon' is not a time"),
        (rec(b"x", headers=[("step", b"-3")]), "header step", "'-3' is not a non-negative integer"),
        (rec(b"x", headers=[("project", b"p" * 300)]), "header project", "longer than"),
        (rec(b'{"text": "x", "step": "later"}'), "value", "step: 'later' is not a non-negative integer"),
    ],
)
def test_malformed_records_name_the_part_and_the_problem(record, field, reason):
    got = decode_line(record)
    assert isinstance(got, DecodeFailure) and got.field == field and reason in got.reason, got


def test_owner_partition_is_javas_murmur2():
    owners = Owners(12)
    # the partitions Java's and kafka-python's default partitioners (and librdkafka's murmur2_random) choose
    from kafka.partitioner.default import murmur2

    for key in (b"run-1", b"kc-murmur", b"a" * 100):
        assert owners(key) == (murmur2(key) & 0x7FFFFFFF) % 12 == owners(key)


def test_docstring_examples():
    import doctest

    from runwatch.service.kafka import logs_topic

    assert doctest.testmod(logs_topic).failed == 0
