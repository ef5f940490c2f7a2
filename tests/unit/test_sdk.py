"""The client SDK without a server: environment capture, automatic metrics, watch, actions, StepLogger."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import runwatch.client as rw
from runwatch.client.actions import ReduceLROnAnomaly, SkipBatches, StopOnDivergence, StopTraining, kind_number
from runwatch.client.environment import SystemSampler, capture_environment, git_info
from runwatch.client.integrations import StepLogger
from runwatch.client.sender import EVENT, LOG, START
from runwatch.v1 import anomaly_pb2, runs_pb2

NOWHERE = "127.0.0.1:1"  # nothing listens: items stay queued where the test can read them


def queued(run, kind=None):
    return [m for _, k, m, _ in list(run.client._sender._queue) if kind is None or k == kind]


def events(run) -> list[runs_pb2.MetricEvent]:
    return queued(run, EVENT)


def anomaly(kind: str, step: int = 10, id: str = "a1", severity: int = anomaly_pb2.SEVERITY_ERROR) -> anomaly_pb2.Anomaly:
    return anomaly_pb2.Anomaly(
        id=id, kind=kind_number(kind), step=step, severity=severity, explanation=f"{kind} for the test", revision=1
    )


def git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True, capture_output=True
    )


def test_git_info_of_a_repository(tmp_path):
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://user:secret@example.com/team/proj.git")
    info = git_info(repo / "train.py")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert info["git.commit"] == commit and len(commit) == 40
    assert info["git.branch"] == "trunk" and info["git.dirty"] == "false"
    assert info["git.remote"] == "https://example.com/team/proj.git"  # credentials removed
    (repo / "train.py").write_text("print('changed')\n")
    assert git_info(repo)["git.dirty"] == "true"
    assert git_info(tmp_path) == {} or git_info(tmp_path).get("git.root") != str(repo)


def test_capture_environment_has_versions_and_device():
    model = nn.Linear(2, 2)
    env = capture_environment(model, {"cluster": "a"}, git=False)
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["cluster"] == "a"
    assert {"python", "platform", "host", "pid", "cpu_count", "runwatch", "gpu_count"} <= set(env)


def test_system_sampler_reads_rss():
    s = SystemSampler(interval=60)
    first = s.sample()
    assert first["cpu_mem"] > 10e6  # a Python process with torch loaded
    assert s.sample() == {}  # not due yet
    assert "gpu_mem" not in first  # CUDA never initialised here
    s.close()


def test_init_records_start_and_log_adds_timing_and_memory(offline_run):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    run = offline_run(config={"lr": 0.1}, model=model, system_interval=0.0, tags=["t"])
    assert rw.current_run() is run
    start = queued(run, START)[0]
    assert start.hyperparameters["lr"] == pytest.approx(0.1) and list(start.tags) == ["t"]
    assert [l.name for l in start.architecture.layers] == ["0", "2"]
    loader = [torch.randn(3, 4) for _ in range(4)]

    class Slow:
        def __iter__(self):
            for x in loader:
                time.sleep(0.01)
                yield x

        def __len__(self):
            return len(loader)

    tracked = run.track_data(Slow())
    assert len(tracked) == 4
    for step, x in enumerate(tracked):
        run.log({"loss": model(x).sum().item()}, step=step * 2)  # logged every other step
    run.log({"val/loss": 1.0}, step=6)  # a second event at the same step: no timing again
    evs = events(run)
    assert "step_time" not in evs[0].metrics and evs[0].metrics["cpu_mem"] > 0
    for ev in evs[1:4]:
        assert 0.004 < ev.metrics["data_time"] < ev.metrics["step_time"]  # per step: 10 ms over 2 steps
    assert set(evs[4].metrics) == {"val/loss"}
    with run.untimed():
        time.sleep(0.05)
    run.log({"loss": 0.5}, step=7)
    assert events(run)[-1].metrics["step_time"] < 0.05
    run.log_text("hello", level="warning", step=7)
    assert queued(run, LOG)[-1].text == "hello"
    run.finish(timeout=0)
    assert rw.current_run() is not run


def test_watch_collects_through_the_optimizer_hook(offline_run):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    run = offline_run(system_metrics=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = nn.Linear(2, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)  # not watched: ignored
    run.watch(model, every=3)
    assert [l.name for l in run.start_message.architecture.layers] == ["0", "2"]  # recorded by watch
    for step in range(7):
        # zero_grad right after step(): grads are gone by log time, the hook saw them
        loss = model(torch.randn(5, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        other(torch.randn(1, 2)).sum().backward()
        other_opt.step()
        run.log({"loss": loss.item()}, step=step)
    evs = events(run)
    collected = [i for i, ev in enumerate(evs) if "grad_norm/0" in ev.metrics]
    assert collected == [0, 3, 6]
    assert "update_ratio/0" in evs[3].metrics and "act/sat_frac/0" in evs[3].metrics
    assert all("grad_norm" not in evs[i].metrics for i in (1, 2, 4, 5))  # every=3, no per-step grad_norm
    assert [evs[i].metrics["lr"] for i in collected] == [0.1] * 3  # the optimizer's lr rides along
    run.finish(timeout=0)
    assert not model[0]._forward_hooks  # hooks removed


def test_watch_leaves_the_loops_own_lr_and_ambiguous_rates_alone(offline_run):
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    run = offline_run(system_metrics=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 10)  # a warm-up the loop logs scaled by 1000
    run.watch(model, every=1)
    for step in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        run.log({"loss": 1.0, "lr": 1000 * opt.param_groups[0]["lr"]} if step == 0 else {"loss": 1.0}, step=step)
    assert [ev.metrics.get("lr") for ev in events(run)] == [pytest.approx(20.0), None, None]  # its own, then none
    groups = offline_run(system_metrics=False)
    two = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}], lr=0.1)
    groups.watch(model, every=1)
    model(torch.randn(5, 4)).pow(2).mean().backward()
    two.step()
    groups.log({"loss": 1.0}, step=0)
    assert "lr" not in events(groups)[0].metrics and "grad_norm/0" in events(groups)[0].metrics


def test_watch_without_an_optimizer_collects_at_log_time(offline_run):
    model = nn.Linear(3, 1)
    run = offline_run(system_metrics=False)
    run.watch(model, every=1, grad_norm_every_step=True)
    for step in range(2):
        model(torch.randn(4, 3)).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        run.log({"loss": 1.0}, step=step)
    assert all("grad_norm/model" in ev.metrics for ev in events(run))


def test_stop_on_divergence_action(offline_run):
    run = offline_run(system_metrics=False)
    action = StopOnDivergence(run)
    action(anomaly("loss_spike"))  # not its kind
    assert not run.should_stop
    action(anomaly("divergence_predicted", step=196, severity=anomaly_pb2.SEVERITY_INFO))  # below warning
    assert not run.should_stop
    action(anomaly("divergence_predicted", step=196))
    action(anomaly("divergence_predicted", step=200))  # same incident id: once
    assert run.should_stop and run.stop_reason == "stopped by runwatch: divergence predicted at step 196"
    assert action.triggered == 1
    line = queued(run, LOG)[-1]
    assert line.level == runs_pb2.LOG_LEVEL_WARNING and line.step == 196
    assert line.text.startswith("runwatch action stop_on_divergence: requested a stop after DIVERGENCE_PREDICTED at step 196")
    with pytest.raises(StopTraining, match="divergence predicted"):
        run.check_stop()
    run.finish(timeout=0)


def test_finish_after_a_stop_records_killed(offline_run):
    run = offline_run(system_metrics=False)
    run.request_stop("stopped by runwatch: test")
    sender = run.client._sender
    run.finish(timeout=0)
    # the RunEnd was queued before the client closed; closing counted it as undelivered
    assert sender.stats().dropped >= 1


def test_reduce_lr_applies_on_the_training_thread(offline_run):
    run = offline_run(system_metrics=False)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.2}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    action = ReduceLROnAnomaly(run, opt, factor=0.5, cooldown_steps=5, scheduler=sched)
    action(anomaly("plateau", id="p1"))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]  # not from the watch thread
    run.log({"loss": 1.0}, step=0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    assert sched.base_lrs == pytest.approx([0.05, 0.1])
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])  # the scheduler keeps it
    action(anomaly("loss_spike", id="s1"))
    run.log({"loss": 1.0}, step=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # cooldown: 5 steps
    action(anomaly("loss_spike", id="s2"))
    run.log({"loss": 1.0}, step=9)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025) and action.reductions == 2
    assert "lr 0.1, 0.2 -> 0.05, 0.1 after PLATEAU" in queued(run, LOG)[0].text


def test_skip_batches(offline_run):
    run = offline_run(system_metrics=False)
    action = SkipBatches(run, count=2)
    assert not run.should_skip_batch()
    action(anomaly("nonfinite", step=42))
    assert run.offending_steps == [42]
    assert [run.should_skip_batch() for _ in range(3)] == [True, True, False]
    texts = [line.text for line in queued(run, LOG)]
    assert texts[0].startswith("runwatch action skip_batches: will skip the optimizer step of the next 2 batch(es)")
    assert sum("skipped the optimizer step" in t for t in texts) == 2


def test_kind_names():
    assert kind_number("LOSS_SPIKE") == kind_number("loss_spike") == anomaly_pb2.ANOMALY_KIND_LOSS_SPIKE
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        kind_number("explosion")


def test_step_logger_keeps_the_server_rules(offline_run):
    run = offline_run(system_metrics=False)
    steps = StepLogger(run)
    steps.log({"train_loss": 1.0, "epoch": 0, "note": "text", "flag": True}, step=5)
    steps.log({"val_loss": 2.0, "epoch": 0}, step=5)  # epoch again at step 5: dropped
    steps.log({"train_loss": 0.9}, step=4)  # a lower step is raised to 5... and loss is already there
    steps.log({"train_loss": 0.8, "epoch": 1}, step=6)
    evs = events(run)
    assert [(e.step, dict(e.metrics)) for e in evs] == [
        (5, {"loss": 1.0, "epoch": 0.0}),
        (5, {"val/loss": 2.0}),
        (6, {"loss": 0.8, "epoch": 1.0}),
    ]
    assert steps.raised_steps == 1 and steps.dropped_repeats == 2


def test_step_logger_sends_an_integrations_own_metrics_once_without_claiming_a_name(offline_run):
    run = offline_run(system_metrics=False)
    steps = StepLogger(run)
    steps.log({"lr-SGD": 0.1}, step=0)  # another callback, at the batch's start
    steps.log_auto({"loss": 2.0, "step_time": 0.5}, step=0)  # the runwatch callback's, at the batch's end
    steps.log({"train_loss": 2.0, "epoch": 0}, step=0)  # Lightning's: the same loss, not sent again
    steps.log_auto({"loss": 1.5, "lr": 0.2}, step=1)
    steps.log({"train_loss": 1.25}, step=1)  # another quantity under a loss name: kept under its own
    steps.log({"train_loss": 1.0}, step=2)  # a step the callback left: the canonical name is train_loss's
    assert [(e.step, dict(e.metrics)) for e in events(run)] == [
        (0, {"lr": 0.1}),
        (0, {"loss": 2.0, "step_time": 0.5}),
        (0, {"epoch": 0.0}),
        (1, {"loss": 1.5, "lr": 0.2}),
        (1, {"train_loss": 1.25}),
        (2, {"loss": 1.0}),
    ]
    assert steps.dropped_repeats == 0 and run.refused_repeats == 0


def test_step_logger_checks_steps_as_run_log_does(offline_run):
    run = offline_run(system_metrics=False)
    steps = StepLogger(run)
    with pytest.raises(ValueError, match=r"^step must be a whole number, got 2.5 \(float\)"):
        steps.log({"train_loss": 1.0}, step=2.5)
    with pytest.raises(TypeError, match=r"^step must be an int, got True \(bool\)"):
        steps.log({"train_loss": 1.0}, step=True)
    assert events(run) == [] and steps.last_step == -1  # nothing sent, nothing remembered
    steps.log({"train_loss": 1.0}, step=3.0)
    assert [(e.step, dict(e.metrics)) for e in events(run)] == [(3, {"loss": 1.0})]


def test_the_actions_minimum_severity_is_documented_as_it_is():
    import inspect
    from pathlib import Path

    defaults = {
        cls.__name__: inspect.signature(cls).parameters["min_severity"].default
        for cls in (StopOnDivergence, ReduceLROnAnomaly, SkipBatches)
    }
    assert set(defaults.values()) == {"warning"}, defaults
    sdk = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text(encoding="utf-8")
    assert 'default (`min_severity="warning"`): an `INFO` one of their kinds' in sdk
    assert 'pass `min_severity="info"` to react to those too' in sdk


def test_the_sdk_imports_without_lightning_or_transformers():
    code = (
        "import sys\n"
        "for name in ('lightning', 'pytorch_lightning', 'transformers'): sys.modules[name] = None\n"
        "import runwatch.client as rw, runwatch.client.integrations, runwatch.client.importers, runwatch.client.replay\n"
        "for mod in ('runwatch.client.integrations.lightning', 'runwatch.client.integrations.huggingface'):\n"
        "    try:\n"
        "        __import__(mod)\n"
        "    except ImportError as e:\n"
        "        print(mod, 'ImportError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "lightning ImportError runwatch's Lightning integration needs PyTorch Lightning" in out.stdout
    assert "huggingface ImportError runwatch's Hugging Face integration needs transformers" in out.stdout


def _train_watched(run, lr: float, steps: int = 8) -> list[float]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    run.watch(model, every=1)
    losses = []
    for step in range(steps):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        run.log({"loss": loss.item()}, step=step)
    return losses


def test_a_learning_rate_too_high_from_step_0_is_predicted_from_watch_alone(offline_run):
    # Real training through the SDK: the loop logs only its loss; watch() adds the norms and the lr.
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    def predictions(lr: float) -> tuple[list, list[float]]:
        run = offline_run(system_metrics=False)
        losses = _train_watched(run, lr)
        monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
        alerts = []
        for ev in events(run):
            alerts += monitor.observe(ev.step, ev.wall_time, dict(ev.metrics))
        return [a for a in alerts if a.finding.detector == "step_size"], losses

    high, losses = predictions(lr=3.0)
    assert not math.isfinite(losses[-1]) or losses[-1] > 100 * losses[0]  # it did blow up
    (alert,) = high
    assert (alert.finding.kind.name, alert.first_step, alert.finding.key) == ("DIVERGENCE_PREDICTED", 0, "initial_step")
    usual, _ = predictions(lr=0.05)
    assert usual == []
