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


def stored_points(target: str, run_id: str, metric: str) -> dict[int, float]:
    """A run's stored values of one metric, by step."""
    out: dict[int, float] = {}
    with grpc.insecure_channel(target) as channel:
        request = service_pb2.GetMetricsRequest(run_id=run_id, metrics=[metric])
        for chunk in service_pb2_grpc.RunServiceStub(channel).GetMetrics(request, timeout=30):
            for event in chunk.events:
                assert event.step not in out, f"{metric} stored twice at step {event.step}"
                out[event.step] = event.metrics[metric]
    return out


@needs("pytorch_lightning")
def test_lightning_callback_events_survive_a_metric_logged_at_the_batch_start(server, tmp_path):
    # LearningRateMonitor logs lr at each batch's start; the run then adds its own step_time/cpu_mem to that
    # event, and the callback's event at the same step once repeated them: the server refused all of them.
    srv, _ = server
    result = train("lightning_lr_monitor", srv.target, tmp_path)
    assert result["rejected"] == 0, result["violations"]
    assert result["finish"]
    assert result["duplicates"] == 0  # nothing was re-sent
    counts = {m.name: m.count for m in get_run(srv.target, result["run_id"]).metrics}
    steps = result["global_step"]
    assert counts["grad_norm"] == steps and counts["lr"] == steps and counts["loss"] == steps
    assert counts["grad_norm/net.0"] == steps // 5 and counts["act/zero_frac/net.0"] == steps // 5
    assert counts["data_time"] >= steps - 1 and counts["step_time"] >= steps - 1
    assert "train_loss" not in counts  # Lightning's train_loss is the callback's loss: one series


@needs("pytorch_lightning")
def test_lightning_loss_reaches_runwatch_every_batch_at_log_every_n_steps_50(server, tmp_path):
    # Lightning logs train_loss every 50 steps by default: runwatch used to see 8 losses of this run, never
    # predicted its divergence and let it run into NaN (step ~96); the callback now logs the loss of every batch.
    srv, _ = server
    result = train("lightning_log_every_50", srv.target, tmp_path)
    assert result["stopped_at"] is not None and result["stopped_at"] <= 90  # measured: 46-50
    summary = get_run(srv.target, result["run_id"])
    assert summary.run.status == runs_pb2.RUN_STATUS_KILLED
    predicted = [a.step for a in summary.anomalies if a.kind == anomaly_pb2.ANOMALY_KIND_DIVERGENCE_PREDICTED]
    assert predicted and min(predicted) <= 80  # measured: 44
    loss = stored_points(srv.target, result["run_id"], "loss")
    assert sorted(loss) == list(range(result["batches"]))  # a value for every batch
    assert "train_loss" not in {m.name for m in summary.metrics}


@needs("transformers", "accelerate")
def test_huggingface_grad_norms_are_taken_before_the_trainer_clips_them(server, tmp_path):
    # lr=1 makes every gradient norm far above max_grad_norm=1; the Trainer clips before on_pre_optimizer_step.
    srv, _ = server
    result = train("huggingface_clipped", srv.target, tmp_path)
    assert result["finish"] and result["rejected"] == 0
    pre_clip = {int(step): layers for step, layers in result["pre_clip"].items()}
    logged = {int(step): value for step, value in result["trainer_grad_norm"].items()}
    assert sum(v > 2.0 for v in logged.values()) >= 4  # clipping was active
    stored = stored_points(srv.target, result["run_id"], "grad_norm")
    # The Trainer's own grad_norm at its logging steps (3, 6, ...), also where the watcher collects (3, 9, 15)...
    assert {step: stored.get(step) for step in logged} == pytest.approx(logged, rel=1e-6)
    for layer in ("lm_head", "transformer.h.0.attn.c_attn", "transformer.wpe"):
        per_layer = stored_points(srv.target, result["run_id"], f"grad_norm/{layer}")
        assert sorted(per_layer) == list(range(1, 17, 2))  # watch_every=2
        for step, value in per_layer.items():  # ...and the layers' norms before clipping, not the clipped ones
            assert value == pytest.approx(pre_clip[step][layer], rel=1e-4), (layer, step)
    # The watcher's global norm where the Trainer logs none (1, 5, 7, ...): before clipping too, counting the
    # weight lm_head shares with transformer.wte once; and none on the other steps (it would be the clipped one).
    assert set(stored) == set(logged) | set(range(1, 17, 2))
    for step in set(stored) - set(logged):
        assert stored[step] == pytest.approx(pre_clip[step]["total"], rel=1e-5), step


@needs("transformers")
def test_a_huggingface_trainer_resumed_from_a_checkpoint_continues_its_run(server, tmp_path):
    srv, _ = server
    result = train("huggingface_resumed", srv.target, tmp_path)
    info = get_run(srv.target, "hf-resumed").run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.last_step == 20
    losses = stored_points(srv.target, "hf-resumed", "loss")  # each step once: steps 7-12 came twice
    assert sorted(losses) == list(range(1, 21))
    assert result["duplicates"] >= 6


@needs("pytorch_lightning")
def test_a_lightning_fit_resumed_from_a_checkpoint_continues_its_named_run(server, tmp_path):
    srv, _ = server
    result = train("lightning_resumed", srv.target, tmp_path)
    assert result["first"]["finish"] and result["second"]["finish"], result
    assert result["second"]["duplicates"] >= 6 and result["second"]["rejected"] == 0
    info = get_run(srv.target, "pl-resumed").run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.last_step == 19
    assert sorted(stored_points(srv.target, "pl-resumed", "loss")) == list(range(20))
