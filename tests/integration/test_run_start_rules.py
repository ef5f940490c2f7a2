"""A second RunStart for a running run, over real gRPC: a repeat is a duplicate, a conflict is named, nothing wiped."""

from __future__ import annotations

from google.protobuf import json_format

from runwatch.v1 import runs_pb2, service_pb2


def first_start(run_id: str = "r1") -> runs_pb2.RunStart:
    start = runs_pb2.RunStart(run_id=run_id, project="alpha", start_time=1.7e9, framework="torch 2.13.0", tags=["base"])
    start.hyperparameters.update({"lr": 0.1, "opt": {"name": "adam"}})
    start.environment["host"] = "node-1"
    return start


def send(stubs, *batches):
    return list(stubs.ingest.StreamEvents(iter(batches), timeout=30))


def listed(stubs, project: str) -> list[str]:
    return [r.run_id for r in stubs.runs.ListRuns(service_pb2.ListRunsRequest(project=project)).runs]


def test_a_conflicting_start_is_rejected_by_field_and_the_rest_of_the_batch_is_kept(server):
    _, stubs = server
    opening = runs_pb2.EventBatch(sequence=1, starts=[first_start()])
    opening.events.add(run_id="r1", step=0).metrics["loss"] = 1.0
    stray = runs_pb2.EventBatch(sequence=2, starts=[runs_pb2.RunStart(run_id="r1", project="beta")])
    stray.events.add(run_id="r1", step=1).metrics["loss"] = 0.9
    stray.starts.add(run_id="r2", project="beta")
    acks = send(stubs, opening, stray)
    assert (acks[0].accepted, acks[0].rejected) == (2, 0)
    assert (acks[1].accepted, acks[1].duplicates, acks[1].rejected) == (2, 0, 1)  # r1's event and r2's start
    assert [(v.field, v.reason) for v in acks[1].violations] == [
        ("starts[0].project", "run 'r1' already started with project 'alpha', got 'beta'")
    ]
    run = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1")).run
    assert run.project == "alpha" and run.event_count == 2
    assert run.start.framework == "torch 2.13.0" and list(run.start.tags) == ["base"]
    assert json_format.MessageToDict(run.start.hyperparameters) == {"lr": 0.1, "opt": {"name": "adam"}}
    assert listed(stubs, "alpha") == ["r1"] and listed(stubs, "beta") == ["r2"]


def test_a_repeat_is_a_duplicate_and_changes_nothing(server):
    _, stubs = server
    start = first_start()
    (ack,) = send(stubs, runs_pb2.EventBatch(sequence=1, starts=[start]))
    assert ack.accepted == 1
    before = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1")).run.start
    # The same bytes again, and the same start with its unset fields left out (keeps what is recorded).
    acks = send(
        stubs,
        runs_pb2.EventBatch(sequence=2, starts=[start]),
        runs_pb2.EventBatch(sequence=3, starts=[runs_pb2.RunStart(run_id="r1", project="alpha")]),
    )
    assert [(a.accepted, a.duplicates, a.rejected) for a in acks] == [(0, 1, 0), (0, 1, 0)]
    assert stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1")).run.start == before


def test_a_start_may_fill_in_what_is_unset_but_not_change_what_is_set(server):
    _, stubs = server
    send(stubs, runs_pb2.EventBatch(sequence=1, starts=[first_start()]))
    # What the SDK re-sends once the model is known or hyperparameters are logged late.
    later = first_start()
    later.architecture.layers.add(name="fc1", type="Linear", in_size=4, out_size=2, param_count=10)
    later.hyperparameters.update({"batch_size": 32})
    later.environment["gpu"] = "none"
    changed = first_start()
    changed.hyperparameters["opt"]["name"] = "sgd"
    other_host = first_start()
    other_host.environment["host"] = "node-2"
    other_arch = first_start()
    other_arch.architecture.layers.add(name="fc1", type="Linear", in_size=4, out_size=3, param_count=10)
    starts = [later, changed, other_host, other_arch]
    acks = send(stubs, *(runs_pb2.EventBatch(sequence=i, starts=[s]) for i, s in enumerate(starts)))
    assert (acks[0].accepted, acks[0].rejected) == (1, 0)
    assert [(a.violations[0].field, a.violations[0].reason) for a in acks[1:]] == [
        ("starts[0].hyperparameters.opt.name",
         "run 'r1' already started with hyperparameters.opt.name = 'adam', got 'sgd'"),
        ("starts[0].environment.host", ("run 'r1' already started with environment.host = 'node-1', got 'node-2'; "
                                        "a restarted process continues a run with RunStart.resume")),
        ("starts[0].architecture.layers[0].out_size", "run 'r1' already started with another architecture; "
         "architecture.layers[0].out_size differs"),
    ]  # fmt: skip
    start = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1")).run.start
    assert json_format.MessageToDict(start.hyperparameters) == {"lr": 0.1, "opt": {"name": "adam"}, "batch_size": 32}
    assert dict(start.environment) == {"host": "node-1", "gpu": "none"}
    assert [(x.name, x.out_size) for x in start.architecture.layers] == [("fc1", 2)]


def test_the_rules_hold_after_a_restart(start_server, tmp_path):
    srv, stubs = start_server(data_dir=tmp_path / "kept")
    send(stubs, runs_pb2.EventBatch(sequence=1, starts=[first_start()]))
    srv.stop()
    _, stubs = start_server(data_dir=tmp_path / "kept")  # run state rebuilt from the store
    acks = send(
        stubs,
        runs_pb2.EventBatch(sequence=2, starts=[first_start()]),
        runs_pb2.EventBatch(sequence=3, starts=[runs_pb2.RunStart(run_id="r1", project="beta")]),
    )
    assert (acks[0].duplicates, acks[1].rejected) == (1, 1)
    assert acks[1].violations[0].field == "starts[0].project"
    assert stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="r1")).run.project == "alpha"


def test_an_implicitly_opened_run_takes_its_first_start_whole(start_server):
    _, stubs = start_server(auto_create_runs=True)
    implicit = runs_pb2.EventBatch(sequence=1)
    implicit.events.add(run_id="imp", step=0).metrics["loss"] = 1.0
    acks = send(stubs, implicit, runs_pb2.EventBatch(sequence=2, starts=[first_start("imp")]))
    assert (acks[1].accepted, acks[1].duplicates, acks[1].rejected) == (1, 0, 0)
    run = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="imp")).run
    assert run.project == "alpha" and run.start.framework == "torch 2.13.0" and run.event_count == 1
    # From then on the record is the client's: another project is a conflict.
    (ack,) = send(stubs, runs_pb2.EventBatch(sequence=3, starts=[runs_pb2.RunStart(run_id="imp", project="beta")]))
    assert ack.violations[0].field == "starts[0].project"
