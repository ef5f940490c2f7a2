"""The SDK records a model's architecture from the training loop's first forward pass, read back from a real server.

The server fills a run's architecture in once, so the first one sent must be the right one: these
runs pass no example input (the common case) and their stored record must match the traced one.
"""

from __future__ import annotations

import pytest
import torch
from architecture_models import CASES, FunctionalMLP, SharedActMLP, SmallCNN, batch, rows, train

import runwatch.client as rw
from runwatch.nas.architecture import Genome
from runwatch.v1 import service_pb2


def stored_architecture(stubs, run_id: str):
    return stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).run.start.architecture


@pytest.fixture
def open_run(server):
    srv, _ = server
    runs = []

    def make(run_id: str, **kw):
        run = rw.init(
            project="arch-sdk", run_id=run_id, target=srv.target, spool_dir=False, flush_on_exit=False,
            capture_env=False, system_metrics=False, **kw,
        )  # fmt: skip
        runs.append(run)
        return run

    yield make
    for run in runs:
        if not run.finished:
            run.finish(timeout=5)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_init_with_a_model_stores_the_architecture_of_its_first_forward_pass(case, server, open_run):
    _, stubs = server
    model = case.model()
    run = open_run(f"arch-{case.name}", model=model)
    run.watch(model, every=2)
    train(model, steps=3, on_step=lambda step, loss: run.log({"loss": loss}, step=step))
    assert run.finish(timeout=20)  # nothing rejected: no second, different architecture was sent
    assert run.client.violations == []
    arch = stored_architecture(stubs, run.run_id)
    assert rows(arch) == case.expected
    assert arch.total_params == sum(p.numel() for p in model.parameters())


def test_the_advisor_rebuilds_a_functional_relu_net_with_its_activations(server, open_run):
    _, stubs = server
    model = FunctionalMLP()
    run = open_run("arch-functional-genome", model=model)
    train(model, steps=1)
    assert run.finish(timeout=20)
    genome = Genome.from_architecture(stored_architecture(stubs, run.run_id))
    assert [(b.name, b.activation) for b in genome.blocks] == [("fc1", "relu"), ("fc2", "relu")]


def test_watch_alone_and_a_first_forward_under_no_grad(server, open_run):
    _, stubs = server
    model = SharedActMLP().eval()
    run = open_run("arch-watch-no-grad")
    run.watch(model)
    with torch.no_grad():
        model(batch()[0])  # an evaluation first: it shows the architecture as well as a training step would
    assert run.finish(timeout=20)
    assert [a for _, _, a in rows(stored_architecture(stubs, run.run_id))] == ["ReLU", "ReLU", ""]


def test_a_run_whose_model_never_runs_still_gets_the_static_description(server, open_run):
    _, stubs = server
    run = open_run("arch-never-ran", model=SmallCNN())
    run.log({"loss": 1.0}, step=0)
    assert run.finish(timeout=20)
    assert [layer.name for layer in stored_architecture(stubs, run.run_id).layers] == ["conv_a", "conv_b", "fc_out"]
