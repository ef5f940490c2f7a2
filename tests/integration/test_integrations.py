"""The Lightning and Hugging Face integrations, training tiny real models against a real server.

The trainings run in a child process (framework_runs.py), so these libraries never load into
the test process; the checks read the server's record of each run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

SCRIPT = Path(__file__).with_name("framework_runs.py")


def get_run(target: str, run_id: str) -> service_pb2.RunSummary:
    with grpc.insecure_channel(target) as channel:
        return service_pb2_grpc.RunServiceStub(channel).GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)


def train(which: str, target: str, work: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), which, target, str(work)], capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, out.stderr[-4000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


@needs("pytorch_lightning")
def test_lightning_logger_and_callback(server, tmp_path):
    srv, _ = server
    result = train("lightning", srv.target, tmp_path)

    # A healthy run: logger + callback with watch_every=5.
    healthy = result["healthy"]
    assert healthy["stopped_at"] is None and healthy["finished"]
    summary = get_run(srv.target, healthy["run_id"])
    info = summary.run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.last_step == 29
    assert info.start.hyperparameters["lr"] == pytest.approx(1e-3)
    assert [layer.type for layer in info.start.architecture.layers] == ["Linear", "Linear", "Linear"]
    assert "lightning" in info.start.tags and info.start.environment["torch"]
    metrics = {m.name: m for m in summary.metrics}
    assert {"loss", "val/loss", "epoch", "step_time", "data_time", "cpu_mem", "grad_norm", "grad_norm/net.0", "act/zero_frac/net.0"} <= set(metrics)
    assert metrics["loss"].count == 30  # every step, at Lightning's own step numbers
    assert metrics["grad_norm/net.0"].count == 6  # every 5 optimizer steps

    # A diverging run: the callback stops the trainer once runwatch predicts divergence.
    div = result["diverging"]
    assert div["stopped_at"] is not None and div["steps"] < 400
    assert div["all_finite"]  # stopped before the loss became NaN/Inf
    summary = get_run(srv.target, div["run_id"])
    assert summary.run.status == runs_pb2.RUN_STATUS_KILLED
    assert summary.run.end_reason.startswith("stopped by runwatch: divergence predicted at step")
    assert anomaly_pb2.ANOMALY_KIND_DIVERGENCE_PREDICTED in {a.kind for a in summary.anomalies}


@needs("transformers", "accelerate")
def test_huggingface_callback_and_report_to(server, tmp_path):
    srv, _ = server
    result = train("huggingface", srv.target, tmp_path)

    summary = get_run(srv.target, "hf-report-to")  # report_to=["runwatch"] after register()
    info = summary.run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.project == "hf" and info.last_step == 20
    assert info.start.hyperparameters["learning_rate"] == pytest.approx(1e-3)
    assert info.start.hyperparameters["model_config"]["n_layer"] == 2
    assert len(info.start.architecture.layers) > 10 and "huggingface" in info.start.tags
    metrics = {m.name: m for m in summary.metrics}
    assert {"loss", "lr", "grad_norm", "epoch", "step_time", "cpu_mem", "grad_norm/lm_head"} <= set(metrics)
    assert metrics["loss"].count == 4 and metrics["grad_norm/lm_head"].count == 4  # logging_steps=5, watch_every=5

    assert result["stopped"] == {"global_step": 6, "stopped_at": 6}
    info = get_run(srv.target, "hf-stopped").run
    assert info.status == runs_pb2.RUN_STATUS_KILLED and info.end_reason == "stopped by runwatch: divergence predicted at step 6"
