"""Deeply nested hyperparameters, over real gRPC: refused at ingest by path, and never break reads for other runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.internal.encoder import _VarintBytes

import runwatch.client as rw
from runwatch.service.nesting import CLIPPED, MAX_NESTING
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore, open_run_op
from runwatch.v1 import runs_pb2, service_pb2

TOO_DEEP = "starts[0].hyperparameters" + ".a" * MAX_NESTING


def nest(levels: int) -> dict:
    """``levels`` objects inside each other: ``nest(2) == {"a": {"a": 1}}``."""
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_struct_bytes(levels: int) -> bytes:
    """A serialized ``Struct`` nesting ``levels`` objects, built by hand: deeper than protobuf will build or parse."""
    raw = b""  # the innermost object is empty
    for _ in range(levels - 1):
        value = b"\x2a" + _VarintBytes(len(raw)) + raw  # Value.struct_value
        entry = b"\x0a\x01a" + b"\x12" + _VarintBytes(len(value)) + value
        raw = b"\x0a" + _VarintBytes(len(entry)) + entry
    return raw


def start_with(run_id: str, hyperparameters: dict) -> runs_pb2.RunStart:
    start = runs_pb2.RunStart(run_id=run_id, project="deep")
    start.hyperparameters.update(hyperparameters)
    return start


def test_nesting_over_the_limit_is_rejected_by_path_and_the_rest_is_kept(server):
    _, stubs = server
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.append(start_with("too-deep", nest(MAX_NESTING + 1)))
    b.starts.append(start_with("at-limit", nest(MAX_NESTING)))
    b.starts.append(start_with("in-list", {"a": [nest(MAX_NESTING - 1)]}))  # a list is a level too
    b.events.add(run_id="at-limit", step=0).metrics["loss"] = 1.0
    (ack,) = stubs.ingest.StreamEvents(iter([b]), timeout=30)
    assert (ack.accepted, ack.rejected) == (2, 2)
    assert [(v.field, v.reason) for v in ack.violations] == [
        (TOO_DEEP, f"nested deeper than {MAX_NESTING} levels"),
        ("starts[2].hyperparameters.a[0]" + ".a" * (MAX_NESTING - 2), f"nested deeper than {MAX_NESTING} levels"),
    ]
    runs = stubs.runs.ListRuns(service_pb2.ListRunsRequest(project="deep")).runs
    assert [r.run_id for r in runs] == ["at-limit"]
    assert json_format.MessageToDict(runs[0].start.hyperparameters) == nest(MAX_NESTING)


def test_nesting_too_deep_to_parse_names_the_same_path(server):
    _, stubs = server
    start = runs_pb2.RunStart(run_id="abyss").SerializeToString()
    struct = nested_struct_bytes(40)
    start += b"\x2a" + _VarintBytes(len(struct)) + struct
    raw = b"\x0a" + _VarintBytes(len(start)) + start
    with pytest.raises(Exception, match="MaxDepth"):
        runs_pb2.EventBatch.FromString(raw)
    (ack,) = stubs.raw_stream()(iter([raw]), timeout=30)
    assert ack.rejected == 1 and ack.violations[0].field == TOO_DEEP
    assert ack.violations[0].reason.startswith(f"nested deeper than {MAX_NESTING} levels; not a valid runwatch.v1.EventBatch")


def test_runs_stored_before_the_limit_do_not_break_reads(start_server, tmp_path):
    """A 32-level record (accepted before the limit) and a corrupt one, in the store of a restarted server."""
    settings = ServiceSettings(port=0, data_dir=tmp_path / "data")
    store = RunStore(settings.db_path)
    store.open_run(runs_pb2.RunStart(run_id="plain", project="p", start_time=1.0, framework="jax")).result()
    deep = start_with("deep32", nest(32))
    deep.project, deep.start_time = "p", 2.0
    store.submit([open_run_op(deep, runs_pb2.RUN_STATUS_RUNNING)]).result()

    cut = runs_pb2.RunStart(run_id="broken", framework="torch").SerializeToString() + b"\x2a\xff"  # a length, no value

    def corrupt(conn) -> None:
        conn.execute(
            "INSERT INTO runs (run_id, project, kind, status, start_time, start_record) VALUES (?, ?, ?, ?, ?, ?)",
            ("broken", "p", 1, 1, 3.0, cut),
        )

    store.submit([corrupt]).result()
    store.close()

    srv, stubs = start_server(data_dir=settings.data_dir)
    runs = {r.run_id: r for r in stubs.runs.ListRuns(service_pb2.ListRunsRequest(project="p")).runs}
    assert sorted(runs) == ["broken", "deep32", "plain"]
    assert runs["plain"].start.framework == "jax"
    shown = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="deep32")).run.start.hyperparameters
    value = json_format.MessageToDict(shown)
    for _ in range(MAX_NESTING - 1):
        value = value["a"]
    assert value == {"a": CLIPPED}
    broken = runs["broken"].start
    assert (broken.run_id, broken.project, broken.framework) == ("broken", "p", "torch")
    assert "cannot be read" in broken.hyperparameters["runwatch"]
    listing = subprocess.run(
        [sys.executable, "-m", "runwatch.service.cli", "runs", "--target", srv.target, "--project", "p"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert all(run_id in listing.stdout for run_id in ("plain", "deep32", "broken"))


def test_the_sdk_refuses_too_deep_hyperparameters_before_sending():
    client = rw.RunwatchClient("127.0.0.1:1", flush_on_exit=False)
    try:
        client.start_run(run_id="ok", hyperparameters=nest(MAX_NESTING))
        with pytest.raises(ValueError, match=rf"^{TOO_DEEP.removeprefix('starts[0].')}: nested deeper than 16 levels"):
            client.start_run(run_id="too-deep", hyperparameters=nest(MAX_NESTING + 1))
        with pytest.raises(ValueError, match="nested deeper"):
            client.start_run(run_id="abyss", hyperparameters=nest(5000))  # no RecursionError, no upb error
        run = client.start_run(run_id="later", hyperparameters={"lr": 0.1})
        with pytest.raises(ValueError, match=r"^hyperparameters\.deep"):
            run.update_start(hyperparameters={"deep": nest(MAX_NESTING)})
    finally:
        client.close(timeout=0)


def test_clip_leaves_a_readable_struct():
    s = struct_pb2.Struct()
    s.update(nest(30))
    from runwatch.service.nesting import clip, too_deep

    assert clip(s) == 1 and too_deep(s, "h") is None
    assert runs_pb2.RunStart.FromString(runs_pb2.RunStart(hyperparameters=s).SerializeToString()).hyperparameters == s
