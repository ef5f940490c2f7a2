"""The input checks without a server: nesting limit, RunStart merging, wire-error location, JSON batch reading."""

from __future__ import annotations

import doctest
import importlib

import pytest

from runwatch.service import nesting, run_starts, wire_check
from runwatch.service.validation import items_with_unknown_fields
from runwatch.v1 import runs_pb2


@pytest.mark.parametrize(
    "module",
    [
        "runwatch.service.nesting",
        "runwatch.service.run_starts",
        "runwatch.service.wire_check",
        "runwatch.service.validation",
        "runwatch.service.kafka.json_batch",
        "runwatch.service.kafka.dead_letters",
    ],
)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_too_deep_walks_any_depth_without_recursion():
    value: object = 1
    for _ in range(100_000):
        value = [value]
    found = nesting.too_deep({"a": value}, "h")
    assert found == ("h.a" + "[0]" * 15, "nested deeper than 16 levels")
    assert nesting.key_path("h", "odd key") == "h['odd key']" and nesting.key_path("h", "lr") == "h.lr"


def test_merge_start_repeats_completions_and_conflicts():
    rec = runs_pb2.RunStart(run_id="r", project="p", kind=runs_pb2.RUN_KIND_TRAINING, start_time=3.0)
    rec.hyperparameters.update({"opt": {"name": "adam"}})
    same_defaults = runs_pb2.RunStart(run_id="r", project="p", kind=runs_pb2.RUN_KIND_UNSPECIFIED)
    assert run_starts.merge_start(rec, same_defaults) == (None, None)  # unset kind means training
    deploy = runs_pb2.RunStart(run_id="r", project="p", kind=runs_pb2.RUN_KIND_DEPLOYMENT)
    assert run_starts.merge_start(rec, deploy)[1] == (
        "kind", "run 'r' already started with kind 'RUN_KIND_TRAINING', got 'RUN_KIND_DEPLOYMENT'"
    )
    later = runs_pb2.RunStart(run_id="r", project="p", start_time=4.0)
    assert run_starts.merge_start(rec, later)[1][0] == "start_time"
    more = runs_pb2.RunStart(run_id="r", project="p")
    more.hyperparameters.update({"opt": {"lr": 0.1}})
    merged, v = run_starts.merge_start(rec, more)
    assert v is None and merged.hyperparameters["opt"]["name"] == "adam" and merged.hyperparameters["opt"]["lr"] == 0.1
    # A placeholder of an implicitly opened run takes the first real start whole.
    placeholder = run_starts.implicit_start("r", 9.0)
    assert run_starts.looks_implicit(placeholder) and not run_starts.looks_implicit(rec)
    taken, v = run_starts.merge_start(placeholder, runs_pb2.RunStart(run_id="r", project="q"), implicit=True)
    assert v is None and (taken.project, taken.start_time) == ("q", 9.0)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"\x12\x02\x0a\x05", ("events[0].run_id", "length 5 runs past the end of its message (0 bytes left)")),
        (b"\x12\x01\x10", ("events[0].step", "cut off inside its value")),
        (b"\x12\x01\x19", ("events[0].wall_time", "cut off: a 64-bit value needs 8 bytes, 0 left")),
        (b"\x0f", ("starts[0]", "wire type 7 does not exist (corrupt bytes)")),
        (b"\x07", ("batch", "field number 0 does not exist (corrupt bytes)")),
        (b"\x12\x03\x22\x01\x0a", ("events[0].metrics.key", "cut off inside its length")),
        (b"\x28" + b"\xff" * 10 + b"\x01", ("sequence", "its value is a varint longer than 10 bytes")),
    ],
)
def test_locate_names_where_the_bytes_break(raw, where):
    with pytest.raises(Exception, match="Error parsing"):
        runs_pb2.EventBatch.FromString(raw)
    assert wire_check.locate(raw, runs_pb2.EventBatch.DESCRIPTOR) == where


def test_locate_finds_nothing_in_bytes_that_parse():
    b = runs_pb2.EventBatch(sequence=3)
    b.starts.add(run_id="r").hyperparameters.update({"a": [1, {"b": "c"}]})
    b.events.add(run_id="r", step=1).metrics["loss"] = 1.0
    assert wire_check.locate(b.SerializeToString(), runs_pb2.EventBatch.DESCRIPTOR) is None
    assert wire_check.without_field(b.starts[0].SerializeToString(), 5) == runs_pb2.RunStart(run_id="r").SerializeToString()


def test_wrong_wire_types_are_told_apart_from_unknown_fields():
    b = runs_pb2.EventBatch()
    b.events.add(run_id="r", step=1)
    b.events.add().ParseFromString(b"\x18\x05")  # field 3 (wall_time, a double) sent as a varint
    b.logs.add().ParseFromString(b"\xa0\x06\x01")  # field 100: unknown
    found, top = items_with_unknown_fields(b)
    assert found[("events", 1)] == ("events[1].wall_time", "wrong wire type: sent as varint, expected 64-bit (double)")
    assert found[("logs", 0)][0] == "logs[0].<field 100>" and top is None
