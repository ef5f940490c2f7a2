"""runwatch.client.init against real servers: nothing is lost when the service is down or killed.

The service is a real ``runwatch serve`` process where it must die by SIGKILL;
the client spools to disk meanwhile and never blocks the training loop.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runwatch.client as rw
from runwatch.service.demo_training import HYPERPARAMETERS, build_model, diverging
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_run(target: str, run_id: str) -> service_pb2.RunSummary:
    with grpc.insecure_channel(target) as channel:
        return service_pb2_grpc.RunServiceStub(channel).GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)


def serve(port: int, data_dir) -> subprocess.Popen:
    """``runwatch serve`` in its own process, once it answers health checks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runwatch.service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.time() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return proc
            except grpc.RpcError:
                time.sleep(0.1)
    proc.kill()
    raise AssertionError("runwatch serve did not start")


@pytest.fixture
def processes():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def timed_log(run, metrics, step, worst: list[float]) -> None:
    t0 = time.perf_counter()
    run.log(metrics, step=step)
    worst[0] = max(worst[0], time.perf_counter() - t0)


def test_service_down_at_start_then_up_nothing_lost(start_server, tmp_path):
    port = free_port()  # nothing listens yet
    run = rw.init(
        project="sdk-delivery", config={"lr": 0.01}, run_id="down-at-start", target=f"127.0.0.1:{port}",
        spool_dir=tmp_path / "spool", flush_on_exit=False,
    )
    worst = [0.0]
    for step in range(300):
        timed_log(run, {"loss": 1.0 / (step + 1), "lr": 0.01}, step, worst)
    run.log_text("epoch 1 done", step=299)
    time.sleep(0.3)  # let the sender cut the queue into the spool
    stats = run.stats()
    assert stats.acked == 0 and stats.unacked == stats.enqueued == 302 and stats.spool_bytes > 0
    assert stats.queued == 0  # nothing waits in memory: it is on disk
    assert worst[0] < 0.05  # the loop never waited on the network

    srv, _ = start_server(port=port)
    assert run.finish(timeout=30)
    stats = run.stats()
    assert stats.acked == stats.enqueued == 303 and stats.dropped == stats.rejected == 0
    info = get_run(srv.target, "down-at-start").run
    assert info.event_count == 300 and info.last_step == 299
    assert info.status == runs_pb2.RUN_STATUS_FINISHED
    env = info.start.environment
    assert env["python"] and env["torch"] and "cpu_count" in env
    assert not any((tmp_path / "spool").iterdir())  # delivered batches are deleted


def test_service_killed_mid_run_and_restarted_nothing_lost(processes, tmp_path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    processes.append(serve(port, data))
    run = rw.init(project="sdk-delivery", run_id="killed-mid-run", target=target, spool_dir=tmp_path / "spool", flush_on_exit=False)
    worst = [0.0]
    for step in range(150):
        timed_log(run, {"loss": 1.0 / (step + 1)}, step, worst)
        time.sleep(0.001)
    # SIGKILL while batches may be in flight: no graceful shutdown, no last acks.
    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait(10)
    for step in range(150, 400):
        timed_log(run, {"loss": 1.0 / (step + 1)}, step, worst)
        time.sleep(0.001)
    assert worst[0] < 0.05
    assert not run.flush(timeout=0.3) and run.stats().unacked > 0
    processes.append(serve(port, data))  # same port, same data folder
    assert run.finish(timeout=60)
    stats = run.stats()
    assert stats.dropped == 0 and stats.reconnects >= 1
    summary = get_run(target, "killed-mid-run")
    assert summary.run.status == runs_pb2.RUN_STATUS_FINISHED and summary.run.last_step == 399
    loss = next(m for m in summary.metrics if m.name == "loss")
    # Every step is stored. A batch committed just before the kill but not yet acknowledged is
    # re-sent after the restart: the server keeps one copy (an event at its last step may be
    # stored twice; earlier steps are refused as already past, counted in stats.rejected).
    assert loss.count >= 400 and loss.last_step == 399
    assert stats.acked + stats.rejected == stats.enqueued
    print(f"after SIGKILL: {stats.rejected} re-sent item(s) refused as already stored, {loss.count - 400} stored twice")


def test_a_new_process_sends_what_a_dead_one_left_in_the_spool(start_server, tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    code = (
        "import os, sys, time, runwatch.client as rw\n"
        f"run = rw.init(project='sdk-delivery', run_id='orphan', target='127.0.0.1:{port}', spool_dir=sys.argv[1], capture_env=False)\n"
        "for i in range(50): run.log({'loss': 1.0 / (i + 1)}, step=i)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)  # dies without finishing the run or closing the client\n"
    )
    subprocess.run([sys.executable, "-c", code, str(spool)], check=True, timeout=60)
    srv, _ = start_server(port=port)
    client = rw.RunwatchClient(srv.target, spool_dir=spool, flush_on_exit=False)
    assert client.spool.adopted_items == 51
    assert client.flush(timeout=30)
    client.close()
    info = get_run(srv.target, "orphan").run
    assert info.event_count == 50 and info.status == runs_pb2.RUN_STATUS_RUNNING


def test_on_anomaly_stop_action_stops_a_real_diverging_run(server, tmp_path):
    srv, _ = server
    run = rw.init(
        project="sdk-actions", config=HYPERPARAMETERS["diverging"], model=build_model("diverging"),
        target=srv.target, spool_dir=tmp_path / "spool", flush_on_exit=False,
    )
    seen: list[anomaly_pb2.Anomaly] = []
    got_one = threading.Event()

    def callback(a: anomaly_pb2.Anomaly) -> None:
        seen.append(a)
        got_one.set()

    run.on_anomaly(callback)
    action = run.stop_on_divergence()

    def log(step: int, metrics: dict) -> None:
        run.log(metrics, step=step)
        if step >= 120:
            time.sleep(0.01)  # real steps take longer than this toy's; leaves the answer time to arrive

    summary = diverging(log, seed=0, should_stop=lambda: run.should_stop)
    assert run.finish(timeout=30)
    assert got_one.wait(10) and all(a.run_id == run.run_id for a in seen)
    # One stop requested; a second divergence incident (another detector's) may arrive before the loop
    # sees should_stop, and counts as a trigger without a second request.
    assert action.triggered >= 1 and run.should_stop
    assert len([t for t in run.actions_taken if t.startswith("runwatch action stop_on_divergence:")]) == 1
    assert summary["stopped_early"] and summary["first_nonfinite_step"] is None  # stopped before the NaN
    info = get_run(srv.target, run.run_id).run
    assert info.status == runs_pb2.RUN_STATUS_KILLED
    assert info.end_reason.startswith("stopped by runwatch: divergence predicted at step ")
    predicted = [a for a in seen if a.kind == anomaly_pb2.ANOMALY_KIND_DIVERGENCE_PREDICTED]
    assert predicted and predicted[0].step < summary["steps"]
    assert run.actions_taken and run.actions_taken[0].startswith("runwatch action stop_on_divergence:")


def test_two_events_at_one_step_with_as_many_different_names_are_both_kept(server):
    """Frameworks log training then validation metrics at one step (the server once took the second for a re-send)."""
    srv, _ = server
    run = rw.init(project="sdk-delivery", run_id="same-step", target=srv.target, spool_dir=False, system_metrics=False, capture_env=False)
    for step in range(1, 4):
        run.log({"grad_norm": 1.0, "step_time": 0.1, "data_time": 0.01}, step=step)
        run.log({"loss": 1.0, "lr": 0.1, "epoch": 0.5}, step=step)
    assert run.finish(timeout=30)
    assert run.stats().duplicates == 0
    counts = {m.name: m.count for m in get_run(srv.target, "same-step").metrics}
    assert counts == {"grad_norm": 3, "step_time": 3, "data_time": 3, "loss": 3, "lr": 3, "epoch": 3}


def test_a_metric_logged_again_at_a_step_costs_no_other_metric(server):
    """The server refuses a whole event that repeats a name of its step: the SDK sends the repeat no more."""
    srv, _ = server
    run = rw.init(
        project="sdk-delivery", run_id="repeats", target=srv.target, spool_dir=False, capture_env=False,
        system_interval=0.0, flush_on_exit=False,  # cpu_mem at every step
    )
    for step in range(3):
        run.log({"loss": 1.0, "lr": 0.1}, step=step)  # the run adds step_time and cpu_mem to this one
        # The loop's own repeat (loss, another value; lr, the same) and a name the SDK already added (cpu_mem):
        # the event's other metrics are kept, the first values win.
        run.log({"loss": 2.0, "lr": 0.1, "cpu_mem": 1.0, "val/loss": 3.0}, step=step)
    finished = run.finish(timeout=30)
    points = {m.name: m for m in get_run(srv.target, "repeats").metrics}
    assert "val/loss" in points and points["val/loss"].count == 3  # the server refused these whole events
    assert points["loss"].count == 3 and points["lr"].count == 3 and points["cpu_mem"].count == 3
    assert points["loss"].last == 1.0 and points["cpu_mem"].last != 1.0
    stats = run.stats()
    assert stats.rejected == 0 and stats.duplicates == 0
    assert not finished  # a value the loop logged was not stored: said so...
    assert run.refused_repeats == 3  # ...for loss alone: lr repeated its value, cpu_mem was the SDK's own


class _TwoLayers(torch.nn.Module):
    """Described from its first forward pass (not an nn.Sequential): the architecture arrives after the start."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_fresh_run_counts_no_duplicates(server, tmp_path):
    srv, _ = server
    model = _TwoLayers()
    run = rw.init(
        project="sdk-delivery", run_id="no-duplicates", config={"lr": 0.1}, model=model, target=srv.target,
        spool_dir=tmp_path / "spool", flush_on_exit=False,
    )
    run.watch(model, every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(10):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"loss": loss.item()}, step=step)
        if step == 3:
            run.update_start(hyperparameters={"lr": 0.1})  # nothing new: not re-sent
            run.update_start(hyperparameters={"batch": 4})  # new: sent, and added by the server
    assert run.finish(timeout=30)
    stats = run.stats()
    assert stats.duplicates == 0 and stats.resent == 0 and stats.rejected == 0
    start = get_run(srv.target, "no-duplicates").run.start
    assert [layer.name for layer in start.architecture.layers] == ["fc1", "fc2"]
    assert start.architecture.layers[0].activation == "ReLU"
    assert dict(start.hyperparameters) == {"lr": 0.1, "batch": 4}


def test_finish_returns_within_its_timeout_when_the_server_hangs(processes, tmp_path):
    port = free_port()
    processes.append(serve(port, tmp_path / "data"))
    run = rw.init(
        project="sdk-delivery", run_id="hung", target=f"127.0.0.1:{port}", spool_dir=tmp_path / "spool",
        flush_on_exit=False,
    )
    for step in range(20):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    assert run.flush(timeout=30)
    processes[0].send_signal(signal.SIGSTOP)  # the connection stays open; nothing answers on it
    try:
        for step in range(20, 40):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        t0 = time.monotonic()
        assert not run.finish(timeout=2.0)
        took = time.monotonic() - t0
    finally:
        processes[0].send_signal(signal.SIGCONT)
    assert 2.0 <= took < 2.5, took  # it took 4.0 s: 2 s more waiting for the last acks after the flush timed out
    assert run.stats().spooled + run.stats().unacked > 0  # the rest is kept on disk for the next client
