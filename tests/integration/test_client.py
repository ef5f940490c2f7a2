"""The client SDK against a real runwatch server on loopback."""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest

from runwatch.client import RunwatchClient
from runwatch.service.demo_training import HYPERPARAMETERS, build_model, diverging
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2


def get_run(stubs, run_id: str) -> service_pb2.RunSummary:
    return stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client_for():
    clients: list[RunwatchClient] = []

    def make(target: str, **kwargs) -> RunwatchClient:
        c = RunwatchClient(target, flush_on_exit=False, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close(timeout=1)


def test_run_round_trip(server, client_for):
    srv, stubs = server
    client = client_for(srv.target)
    model = build_model("healthy")
    run = client.start_run(
        run_id="client-roundtrip",
        project="sdk",
        hyperparameters=HYPERPARAMETERS["healthy"],
        model=model,
        tags=["unit", "mlp"],
    )
    for i in range(30):
        run.log({"loss": 1.0 / (i + 1), "lr": 1e-3})
    run.log({"val/loss": 0.5, "val/acc": 0.9}, step=40)
    run.log({"loss": 0.01})  # continues after the explicit step
    run.log_text("epoch 1 done", level="warning", step=41)
    assert run.finish(reason="completed", timeout=10)

    stats = client.stats()
    assert stats.enqueued == 1 + 32 + 1 + 1
    assert stats.acked == stats.enqueued and stats.sent == stats.enqueued
    assert stats.rejected == stats.dropped == stats.pending == 0

    summary = get_run(stubs, "client-roundtrip")
    info = summary.run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.end_reason == "completed"
    assert info.event_count == 32 and info.last_step == 41
    start = info.start
    assert start.project == "sdk" and list(start.tags) == ["unit", "mlp"]
    assert start.hyperparameters["lr"] == pytest.approx(1e-3)
    assert start.framework.startswith("torch ")
    assert [(l.name, l.activation) for l in start.architecture.layers] == [("0", "ReLU"), ("2", "ReLU"), ("4", "")]
    assert start.architecture.total_params == sum(p.numel() for p in model.parameters())
    with pytest.raises(RuntimeError):
        run.log({"loss": 1.0})


def test_rejected_items_are_counted_and_explained(server, client_for):
    srv, _ = server
    client = client_for(srv.target)
    run = client.start_run(project="sdk")
    run.log({"bad name": 1.0})  # whitespace is not allowed in metric names
    run.log({"loss": 1.0})
    assert run.flush(timeout=10)
    stats = client.stats()
    assert stats.rejected == 1 and stats.acked == 2
    (seq, field, reason), = client.violations
    assert field.startswith("events[0].metrics") and reason
    run.finish()


def test_context_manager_records_the_failure(server, client_for):
    srv, stubs = server
    client = client_for(srv.target)
    with pytest.raises(ValueError):
        with client.start_run(run_id="client-crash") as run:
            run.log({"loss": 1.0})
            raise ValueError("boom")
    assert run.finished
    info = get_run(stubs, "client-crash").run
    assert info.status == runs_pb2.RUN_STATUS_FAILED
    assert info.end_reason == "ValueError: boom"


def test_diverging_demo_through_the_client_raises_anomalies(server, client_for):
    srv, stubs = server
    client = client_for(srv.target)
    run = client.start_run(
        project="sdk-demo", hyperparameters=HYPERPARAMETERS["diverging"], model=build_model("diverging")
    )
    got: list[anomaly_pb2.Anomaly] = []
    nonfinite = threading.Event()

    def on_anomaly(a: anomaly_pb2.Anomaly) -> None:
        got.append(a)
        if a.kind == anomaly_pb2.ANOMALY_KIND_NONFINITE:
            nonfinite.set()

    watch = run.on_anomaly(on_anomaly)
    summary = diverging(lambda step, metrics: run.log(metrics, step=step), seed=0)
    assert run.finish("failed", reason="loss became non-finite", timeout=20)

    assert nonfinite.wait(10), [anomaly_pb2.AnomalyKind.Name(a.kind) for a in got]
    assert all(a.run_id == run.run_id for a in got)
    first = min(a.step for a in got if a.kind == anomaly_pb2.ANOMALY_KIND_NONFINITE)
    assert first <= summary["first_nonfinite_step"]
    assert len({(a.id, a.revision) for a in got}) == len(got)  # each revision once

    # The same incidents, replayed from the store (latest revision of each).
    with client.watch_anomalies(run_id=run.run_id, include_history=True, timeout=1) as stream:
        replayed = {a.id: a.revision for a in stream}
    assert {a.id for a in got} == set(replayed)
    assert all(a.revision <= replayed[a.id] for a in got)

    deadline = time.time() + client.anomaly_grace + 5
    while watch.running and time.time() < deadline:
        time.sleep(0.05)
    assert not watch.running  # stopped after finish() and its grace period

    info = get_run(stubs, run.run_id).run
    assert info.event_count == summary["steps"] and info.status == runs_pb2.RUN_STATUS_FAILED


def test_a_run_logged_under_its_own_names_is_watched_and_stored_as_logged(server, client_for):
    """``run.log`` with Keras/MLflow names (no integration renames them): detected, and named as logged."""
    srv, stubs = server
    client = client_for(srv.target)
    rename = {"loss": "train_loss", "lr": "learning_rate", "val/loss": "val_loss", "val/acc": "val_accuracy",
              "grad_norm": "gradient_norm"}
    run = client.start_run(project="sdk-names", hyperparameters=HYPERPARAMETERS["diverging"])
    got: list[anomaly_pb2.Anomaly] = []
    warned = threading.Event()

    def on_anomaly(a: anomaly_pb2.Anomaly) -> None:
        got.append(a)
        if a.severity >= anomaly_pb2.SEVERITY_WARNING and a.kind != anomaly_pb2.ANOMALY_KIND_NONFINITE:
            warned.set()

    run.on_anomaly(on_anomaly)
    summary = diverging(lambda step, metrics: run.log({rename.get(k, k): v for k, v in metrics.items()}, step=step), seed=0)
    assert run.finish("failed", reason="loss became non-finite", timeout=20)

    # Before the loss is non-finite, a learned or rule alert on the loss (with the names, none would come).
    assert warned.wait(10), [(anomaly_pb2.AnomalyKind.Name(a.kind), a.metric) for a in got]
    early = [a for a in got if a.severity >= anomaly_pb2.SEVERITY_WARNING and a.step < summary["first_nonfinite_step"]]
    assert early, [(anomaly_pb2.AnomalyKind.Name(a.kind), a.step, a.metric) for a in got]
    named = {m for a in got for m in a.metrics} | {p.metric for a in got for p in a.evidence}
    assert "train_loss" in named and not named & set(rename), named

    stored = {m.name for m in get_run(stubs, run.run_id).metrics}
    assert {"train_loss", "learning_rate", "val_loss"} <= stored and not stored & set(rename)


def test_reconnects_and_resends_after_a_server_restart(start_server, client_for):
    srv, _ = start_server()
    port = srv.port
    client = client_for(srv.target)
    run = client.start_run(run_id="client-restart")
    for _ in range(20):
        run.log({"loss": 1.0})
    assert run.flush(timeout=10)

    srv.stop()
    for _ in range(30):
        run.log({"loss": 2.0})  # never blocks, whatever the server does
    assert not run.flush(timeout=0.5)
    assert client.stats().pending == 30

    _, stubs = start_server(port=port)  # same data folder
    assert run.flush(timeout=30)
    assert run.finish(timeout=10)
    stats = client.stats()
    assert stats.reconnects >= 1 and stats.dropped == 0 and stats.rejected == 0
    assert stats.acked == stats.enqueued == 1 + 50 + 1
    info = get_run(stubs, "client-restart").run
    assert info.event_count == 50 and info.last_step == 49
    assert info.status == runs_pb2.RUN_STATUS_FINISHED


def test_a_full_queue_drops_the_oldest_events_but_keeps_start_and_end(start_server, client_for):
    port = free_port()  # nothing listens yet
    client = client_for(f"127.0.0.1:{port}", max_queue=10, max_batch_items=5, max_inflight=1)
    run = client.start_run(run_id="client-overflow")
    for step in range(100):
        run.log({"loss": float(step)})
    assert not run.finish(timeout=0.2)
    stats = client.stats()
    assert stats.dropped > 0 and stats.pending + stats.dropped == stats.enqueued == 102
    assert stats.pending <= 10 + 5

    _, stubs = start_server(port=port)
    assert client.flush(timeout=30)
    stats = client.stats()
    assert stats.acked + stats.dropped == stats.enqueued and stats.rejected == 0
    info = get_run(stubs, "client-overflow").run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED  # RunStart and RunEnd survived
    assert info.last_step == 99  # the newest events survived
    assert info.event_count == 100 - stats.dropped


def test_close_is_bounded_when_no_server_listens(client_for):
    client = client_for(f"127.0.0.1:{free_port()}")
    run = client.start_run()
    run.log({"loss": math.nan})
    t0 = time.perf_counter()
    assert not client.close(timeout=0.3)
    assert time.perf_counter() - t0 < 5
    assert client.stats().dropped == 2
    with pytest.raises(RuntimeError):
        client.start_run()
