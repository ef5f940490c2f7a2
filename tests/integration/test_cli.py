"""The runwatch command line, as real processes against a real server."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runwatch.v1 import runs_pb2, service_pb2_grpc

RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def wait_serving(target: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.time() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"no server at {target}")


@pytest.fixture
def served(tmp_path):
    """`runwatch serve` configured only through RUNWATCH_* variables."""
    port = free_port()
    env = {**os.environ, "RUNWATCH_PORT": str(port), "RUNWATCH_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([*RUNWATCH, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = f"127.0.0.1:{port}"
    try:
        wait_serving(target)
        yield proc, target, tmp_path / "data"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def seed_run(target: str) -> None:
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id="cli-run", project="cli")
    for step in range(12):
        batch.events.add(run_id="cli-run", step=step).metrics.update(
            {"loss": float("nan") if step >= 10 else 1.0 / (step + 1)}
        )
    with grpc.insecure_channel(target) as channel:
        service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30)


def test_serve_from_environment_then_runs_show_and_graceful_stop(served):
    proc, target, data_dir = served
    seed_run(target)
    env = {**os.environ, "RUNWATCH_TARGET": target}
    listed = cli("runs", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-run"))
    assert row.split()[1:5] == ["cli", "RUNNING", "11", "12"]
    shown = cli("show", "cli-run", "--target", target)
    assert shown.returncode == 0, shown.stderr
    assert "NONFINITE" in shown.stdout and "loss became NaN at step 10" in shown.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert (data_dir / "runwatch.db").exists()


def first_line_of_watch(*args: str, stream: str = "stdout") -> str:
    """The first line `runwatch watch ARGS` prints on ``stream`` (it follows forever: stopped after that line)."""
    watcher = subprocess.Popen([*RUNWATCH, "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return getattr(watcher, stream).readline()
    finally:
        watcher.kill()
        watcher.wait(timeout=10)


def test_watch_prints_history_then_follows(served):
    _, target, _ = served
    seed_run(target)
    line = first_line_of_watch("--target", target, "--history", "--min-severity", "critical")
    assert line.startswith("cli-run") and "NONFINITE" in line and "CRITICAL" in line


def test_watch_leaves_out_the_other_layers_of_an_incident_unless_all_is_asked(served):
    _, target, _ = served
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id="dead-layers", project="cli")
    for step in range(200):  # fc1 and fc2 stop getting gradients at step 100; fc3 still does
        # fc3 still learns, so the loss keeps moving (a loss frozen to every digit is frozen_loss's own finding)
        m = {"loss": 2.3 / (1 + min(step, 100) / 10) ** 0.5 - 1e-4 * max(step - 100, 0), "lr": 1e-3}
        for i, layer in enumerate(("fc1", "fc2", "fc3")):
            m[f"grad_norm/{layer}"] = 0.0 if step >= 100 and layer != "fc3" else 0.4 + 0.05 * math.sin(step / (3 + i))
        batch.events.add(run_id="dead-layers", step=step).metrics.update(m)
    with grpc.insecure_channel(target) as channel:
        service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30)

    def lines(*extra: str) -> list[str]:
        watcher = subprocess.Popen([*RUNWATCH, "watch", "--target", target, "--history", "--run", "dead-layers", *extra],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, _ = watcher.communicate(timeout=8)
        except subprocess.TimeoutExpired:  # it follows forever: what it printed by then
            watcher.kill()
            out, _ = watcher.communicate(timeout=10)
        return [line for line in out.splitlines() if "VANISHING_GRADIENT" in line]

    default, everything = lines(), lines("--all")
    assert len(default) == 1 and "grad_norm/fc1" in default[0] and "ERROR" in default[0]
    assert len(everything) == 2 and any("part of the VANISHING_GRADIENT incident" in line for line in everything)


def test_watching_a_run_that_does_not_exist_yet_says_so(served):
    _, target, _ = served
    note = first_line_of_watch("--target", target, "--run", "no-such-run", stream="stderr")
    assert note.startswith("note: no run 'no-such-run'") and "waiting for its anomalies" in note


def test_watch_reconnects_across_a_server_restart_and_prints_what_was_raised_meanwhile(tmp_path):
    """A deploy restarts the server: the watch says so, reconnects, and prints the anomaly raised while it was
    away, once, without the ones it printed before. Before, it exited with the ingest clients' "re-send what was
    not acknowledged" message."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {**os.environ, "RUNWATCH_PORT": str(port), "RUNWATCH_DATA_DIR": str(tmp_path / "data")}

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen([*RUNWATCH, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_serving(target)
        return proc

    server = serve()
    seed_run(target)
    # --history: the first anomaly is printed however long the watch takes to start following
    watcher = subprocess.Popen([*RUNWATCH, "watch", "--target", target, "--min-severity", "critical", "--history"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert watcher.stdout.readline().startswith("cli-run")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert watcher.stderr.readline().startswith(f"note: lost {target}")
        server = serve()
        batch = runs_pb2.EventBatch()
        batch.starts.add(run_id="cli-run-2", project="cli")
        batch.events.add(run_id="cli-run-2", step=0).metrics["loss"] = float("nan")
        with grpc.insecure_channel(target) as channel:
            service_pb2_grpc.IngestServiceStub(channel).Ingest(batch, timeout=30)
        assert watcher.stdout.readline().startswith("cli-run-2")  # cli-run's anomaly is not printed again
        assert watcher.stderr.readline().startswith(f"note: watching {target} again")
        assert watcher.poll() is None
    finally:
        watcher.kill()
        watcher.wait(timeout=10)
        server.kill()
        server.wait(timeout=10)


def test_help_shows_environment_fallbacks():
    out = cli("serve", "--help", env={**os.environ, "COLUMNS": "200"}).stdout
    for var in ("RUNWATCH_HOST", "RUNWATCH_PORT", "RUNWATCH_DATA_DIR", "RUNWATCH_METRICS_PORT", "RUNWATCH_DIAGNOSTICS_CONFIG"):
        assert var in out, var


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--port", "70000"], {}, "port: Input should be less than or equal to 65535"),
        (["serve"], {"RUNWATCH_MAX_BATCH_BYTES": "12"}, "max_batch_bytes: Input should be greater than or equal to 1024"),
        (["serve", "--log-level", "LOUD"], {}, "--log-level: unknown level 'LOUD'"),
        (["watch", "--min-severity", "meh"], {}, "--min-severity: unknown severity 'meh'"),
        (["runs", "--status", "sleeping"], {}, "--status: unknown status 'sleeping'"),
        (["runs", "--target", "127.0.0.1:1"], {}, "no runwatch server at 127.0.0.1:1"),
    ],
)
def test_bad_flags_and_settings_name_the_field(args, env, message, tmp_path):
    extra = ["--data-dir", str(tmp_path)] if args[0] == "serve" else []
    done = cli(*args, *extra, env={**os.environ, **env})
    assert done.returncode == 2
    assert message in done.stderr


def test_bad_diagnostics_config_file_names_the_setting(tmp_path):
    bad = tmp_path / "diag.json"
    bad.write_text('{"enabled": ["nonfinite", "loss_spike"], "settings": {"loss_spike": {"z_treshold": 3}}}')
    done = cli("serve", "--port", "0", "--data-dir", str(tmp_path), "--diagnostics-config", str(bad))
    assert done.returncode == 2
    assert "settings.loss_spike" in done.stderr and "z_treshold" in done.stderr
    missing = cli("serve", "--port", "0", "--data-dir", str(tmp_path), "--diagnostics-config", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read diagnostics config" in missing.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = cli("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 2 and f"127.0.0.1:{port}" in done.stderr


def test_kafka_without_the_kafka_extra_names_the_extra(tmp_path):
    # A None entry in sys.modules makes the import fail as if confluent-kafka were not installed.
    script = (
        "import sys; sys.modules['confluent_kafka'] = None; from runwatch.service.cli import app; "
        f"app(['serve', '--port', '0', '--data-dir', {str(tmp_path)!r}, '--kafka-bootstrap', '127.0.0.1:9'])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "kafka.bootstrap: Kafka needs the kafka extra (confluent_kafka is not installed)" in done.stderr
    assert "pip install 'runwatch[kafka]'" in done.stderr and "Traceback" not in done.stderr
