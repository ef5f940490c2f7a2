"""Bad input over real gRPC: each case gets a field and a reason; the stream and service keep going."""

from __future__ import annotations

import math

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runwatch.v1 import runs_pb2, service_pb2


def batch(seq: int = 0, start: str | None = None, events=(), ends=()) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch(sequence=seq)
    if start:
        b.starts.add(run_id=start, project="tests")
    for run_id, step, metrics in events:
        ev = b.events.add(run_id=run_id, step=step)
        ev.metrics.update(metrics)
    for run_id in ends:
        b.ends.add(run_id=run_id, status=runs_pb2.RUN_STATUS_FINISHED)
    return b


def send_all(stubs, batches):
    """Send batches on one StreamEvents call; return the acks in order."""
    return list(stubs.ingest.StreamEvents(iter(batches), timeout=30))


def violation_fields(ack) -> list[str]:
    return [v.field for v in ack.violations]


def test_each_bad_item_is_named_and_the_stream_keeps_going(server):
    _, stubs = server
    acks = send_all(
        stubs,
        [
            batch(1, start="run-a", events=[("run-a", i, {"loss": 1.0 / (i + 1)}) for i in range(5)]),
            batch(2, events=[("", 5, {"loss": 1.0})]),  # missing run id
            batch(3, events=[("bad id!", 5, {"loss": 1.0})]),  # malformed run id
            batch(4, events=[("never-started", 1, {"loss": 1.0})]),  # unknown run
            batch(5, events=[("run-a", 2, {"loss": 9.0})]),  # re-sent step: duplicate, not an error
            batch(6, events=[("run-a", 7, {"loss": 0.1}), ("run-a", 6, {"loss": 0.2})]),  # out of order
            batch(7, events=[("run-a", 8, {})]),  # empty event
            batch(8, events=[("run-a", 9, {"bad name": 1.0})]),  # metric name with whitespace
            batch(9, events=[("run-a", -1, {"loss": 1.0})]),  # negative step
            batch(10, events=[("run-a", 10, {"loss": math.nan, "grad_norm": math.inf})]),  # NaN/Inf are valid
        ],
    )
    assert [a.sequence for a in acks] == list(range(1, 11))
    assert (acks[0].accepted, acks[0].rejected) == (6, 0)
    assert violation_fields(acks[1]) == ["events[0].run_id"] and "missing" in acks[1].violations[0].reason
    assert violation_fields(acks[2]) == ["events[0].run_id"] and "malformed" in acks[2].violations[0].reason
    assert violation_fields(acks[3]) == ["events[0].run_id"] and "unknown run" in acks[3].violations[0].reason
    assert (acks[4].duplicates, acks[4].rejected) == (1, 0)
    assert acks[5].accepted == 1 and violation_fields(acks[5]) == ["events[1].step"]
    assert "before the run's last step 7" in acks[5].violations[0].reason
    assert violation_fields(acks[6]) == ["events[0].metrics"]
    assert violation_fields(acks[7]) == ["events[0].metrics['bad name']"]
    assert violation_fields(acks[8]) == ["events[0].step"]
    assert (acks[9].accepted, acks[9].rejected) == (1, 0)

    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-a"))
    assert summary.run.event_count == 7  # 5 + step 7 + step 10: nothing accepted was lost
    assert summary.run.last_step == 10
    loss = {m.name: m for m in summary.metrics}["loss"]
    assert loss.count == 7 and loss.nonfinite_count == 1


def test_undecodable_oversized_and_unknown_fields_do_not_end_the_stream(start_server):
    _, stubs = start_server(max_batch_bytes=4096)
    good = batch(1, start="run-b", events=[("run-b", 0, {"loss": 1.0})])
    oversized = batch(2, events=[("run-b", i, {"x" * 200: 1.0}) for i in range(1, 40)])
    event_with_field_99 = runs_pb2.MetricEvent(run_id="run-b", step=50).SerializeToString() + b"\x98\x06\x01"
    unknown = runs_pb2.EventBatch(sequence=3)
    unknown.events.add().ParseFromString(event_with_field_99)
    unknown.events.add(run_id="run-b", step=51).metrics["loss"] = 0.5
    after = batch(4, events=[("run-b", 60, {"loss": 0.4})])
    call = stubs.raw_stream()
    acks = list(
        call(
            iter(
                [
                    good.SerializeToString(),
                    b"\x0a\xff\xff\xff\xff\x0fnot a protobuf",
                    oversized.SerializeToString(),
                    unknown.SerializeToString(),
                    after.SerializeToString(),
                ]
            ),
            timeout=30,
        )
    )
    assert len(acks) == 5
    assert acks[0].accepted == 2
    # The whole batch is refused, named where its bytes break: the first start's length runs past the end.
    assert violation_fields(acks[1]) == ["starts[0]"] and "not a valid runwatch.v1.EventBatch" in acks[1].violations[0].reason
    assert "length 4294967295 runs past the end" in acks[1].violations[0].reason
    assert violation_fields(acks[2]) == ["batch"] and "over the limit of 4096 bytes" in acks[2].violations[0].reason
    assert violation_fields(acks[3]) == ["events[0].<field 99>"] and acks[3].accepted == 1
    assert acks[4].accepted == 1
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-b"))
    assert summary.run.event_count == 3


def test_unknown_fields_can_be_allowed(start_server):
    _, stubs = start_server(allow_unknown_fields=True)
    b = batch(1, start="run-c")
    b.events.add().ParseFromString(
        runs_pb2.MetricEvent(run_id="run-c", step=1, metrics={"loss": 1.0}).SerializeToString() + b"\x98\x06\x01"
    )
    (ack,) = send_all(stubs, [b])
    assert (ack.accepted, ack.rejected) == (2, 0)
    assert any("unknown field ignored" in w for w in ack.warnings)


def test_unary_ingest_reports_bad_request_details_and_keeps_valid_items(server):
    _, stubs = server
    b = batch(1, start="run-d", events=[("run-d", 0, {"loss": 1.0}), ("ghost", 0, {"loss": 1.0})])
    with pytest.raises(grpc.RpcError) as err:
        stubs.ingest.Ingest(b, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "accepted 2, rejected 1" in err.value.details()
    status = rpc_status.from_call(err.value)
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    assert [(v.field, "unknown run" in v.description) for v in detail.field_violations] == [("events[1].run_id", True)]
    assert stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-d")).run.event_count == 1
    ok = stubs.ingest.Ingest(batch(2, events=[("run-d", 1, {"loss": 0.5})]), timeout=10)
    assert (ok.sequence, ok.accepted) == (2, 1)


def test_events_after_run_end_and_restart_of_ended_run_are_rejected(server):
    _, stubs = server
    acks = send_all(
        stubs,
        [
            batch(1, start="run-e", events=[("run-e", 0, {"loss": 1.0})], ends=["run-e"]),
            batch(2, events=[("run-e", 1, {"loss": 1.0})]),
            batch(3, start="run-e"),
        ],
    )
    assert acks[0].accepted == 3
    assert "already ended (RUN_STATUS_FINISHED)" in acks[1].violations[0].reason
    assert violation_fields(acks[2]) == ["starts[0].run_id"]
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-e")).run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.event_count == 1


def test_auto_create_runs_opens_run_implicitly(start_server):
    _, stubs = start_server(auto_create_runs=True)
    (ack,) = send_all(stubs, [batch(1, events=[("implicit-1", 0, {"loss": 1.0})])])
    assert ack.accepted == 1 and "opened implicitly" in ack.warnings[0]
    (ack,) = send_all(stubs, [batch(2, start="implicit-1", events=[("implicit-1", 1, {"loss": 0.9})])])
    assert (ack.accepted, ack.duplicates) == (2, 0)  # the late RunStart completes the run's metadata: accepted
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="implicit-1")).run
    assert info.project == "tests" and info.event_count == 2


def test_bad_queries_name_the_field(server):
    _, stubs = server
    with pytest.raises(grpc.RpcError) as err:
        stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="no such run"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "run_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="missing-run"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        next(stubs.watch.WatchAnomalies(service_pb2.WatchRequest(min_severity=42), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_severity" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stubs.runs.ListRuns(service_pb2.ListRunsRequest(status=99))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "status" in err.value.details()


def test_events_with_equal_sized_but_different_metric_names_keep_their_own_values(server):
    # Regression: a fast path reused the previous event's names; indexing a protobuf map with a
    # missing name inserts it (0.0) instead of raising, which would have invented values.
    _, stubs = server
    b = batch(1, start="run-names", events=[
        ("run-names", 0, {"loss": 1.0, "a": 5.0}),
        ("run-names", 1, {"loss": 0.9, "b": 7.0}),
        ("run-names", 2, {"loss": 0.8, "a": 6.0}),
    ])
    (ack,) = send_all(stubs, [b])
    assert ack.accepted == 4
    metrics = {m.name: m for m in stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-names")).metrics}
    assert (metrics["a"].count, metrics["a"].min, metrics["a"].max) == (2, 5.0, 6.0)
    assert (metrics["b"].count, metrics["b"].last, metrics["b"].last_step) == (1, 7.0, 1)
    assert metrics["loss"].count == 3


def event_bytes(run_id: str, step: int, extra: bytes = b"", **metrics: float) -> bytes:
    return runs_pb2.MetricEvent(run_id=run_id, step=step, metrics=metrics).SerializeToString() + extra


def batch_of_events(*events: bytes, starts: runs_pb2.EventBatch | None = None) -> bytes:
    raw = starts.SerializeToString() if starts is not None else b""
    for ev in events:
        raw += b"\x12" + bytes([len(ev)]) + ev
    return raw


@pytest.mark.parametrize("allow_unknown", [False, True])
def test_a_field_with_the_wrong_wire_type_is_named_by_its_name(start_server, allow_unknown):
    _, stubs = start_server(allow_unknown_fields=allow_unknown)
    opening = batch(1, start="run-w")
    step_as_string = event_bytes("run-w", 0, b"\x12\x03abc", loss=1.0)  # field 2 (step) sent as length-delimited
    step_as_fixed32 = event_bytes("run-w", 0, b"\x15\x01\x00\x00\x00", loss=1.0)
    raw = batch_of_events(step_as_string, step_as_fixed32, event_bytes("run-w", 3, loss=0.5), starts=opening)
    (ack,) = stubs.raw_stream()(iter([raw]), timeout=30)
    # Rejected even where unknown fields are allowed: the step's value is lost, not merely extra.
    assert [(v.field, v.reason) for v in ack.violations] == [
        ("events[0].step", "wrong wire type: sent as length-delimited, expected varint (int64)"),
        ("events[1].step", "wrong wire type: sent as 32-bit, expected varint (int64)"),
    ]
    assert (ack.accepted, ack.rejected) == (2, 2)  # the start and events[2]
    assert stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="run-w")).run.last_step == 3


def test_bad_utf8_names_the_string_field(server):
    _, stubs = server
    bad = event_bytes("run-u", 1, loss=1.0).replace(b"run-u", b"run-\xff")
    raw = batch_of_events(event_bytes("run-u", 0, loss=1.0), event_bytes("run-u", 1, loss=1.0), bad)
    after = batch_of_events(event_bytes("run-u", 2, loss=1.0), starts=batch(0, start="run-u"))
    acks = list(stubs.raw_stream()(iter([raw, after]), timeout=30))
    assert acks[0].rejected == 1 and acks[0].violations[0].field == "events[2].run_id"
    assert acks[0].violations[0].reason.startswith("not valid UTF-8 (byte 0xff at offset 4 of the string)")
    assert "not a valid runwatch.v1.EventBatch protobuf, so none of it was read" in acks[0].violations[0].reason
    assert acks[1].accepted == 2  # the stream goes on
