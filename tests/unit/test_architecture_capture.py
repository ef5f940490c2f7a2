"""Architecture records from a real forward pass: shared activation modules, functional activations,
the SDK's one-shot recording of the training loop's first forward pass, and `runwatch nas run`'s starting model."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from architecture_models import CASES, FunctionalMLP, RowTransformer, SharedActMLP, SmallCNN, batch, rows, train
from torch import nn

import runwatch.client as rw
from runwatch.client import torch_watch
from runwatch.client.sender import START
from runwatch.client.torch_watch import describe_architecture, describe_first_forward
from runwatch.service.nas_command import _describe_as_trained

NOWHERE = "127.0.0.1:1"  # nothing listens: the start records stay queued where the test reads them
CASE_IDS = [c.name for c in CASES]


def no_hooks_left(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def no_function_mode_left() -> bool:
    return not torch.overrides._get_current_function_mode_stack()


def queued_starts(run):
    return [m for _, kind, m, _ in list(run.client._sender._queue) if kind == START]


# -- describe_architecture with an example input ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_traced_description_folds_shared_and_functional_activations(case):
    model = case.model()
    arch = describe_architecture(model, example_input=batch()[0])
    assert rows(arch) == case.expected
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    assert model.training and no_hooks_left(model) and no_function_mode_left()


@pytest.mark.parametrize(
    ("activate", "name"),
    [
        (F.relu, "ReLU"), (torch.relu, "ReLU"), (lambda h: h.relu(), "ReLU"),
        (lambda h: F.relu(h, inplace=True), "ReLU"), (lambda h: h.relu_(), "ReLU"), (torch.tanh, "Tanh"), (lambda h: h.tanh(), "Tanh"), (torch.sigmoid, "Sigmoid"),
        (lambda h: h.sigmoid(), "Sigmoid"), (F.gelu, "GELU"), (F.silu, "SiLU"), (F.elu, "ELU"),
        (F.softplus, "Softplus"), (F.mish, "Mish"), (lambda h: F.leaky_relu(h, 0.2), "LeakyReLU"),
    ],
)  # fmt: skip
def test_each_functional_activation_is_named_like_its_module(activate, name):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.out(activate(self.fc(x)))

    arch = describe_architecture(Net(), example_input=torch.randn(3, 4))
    assert rows(arch) == [("fc", "Linear", name), ("out", "Linear", "")]
    if name == "LeakyReLU":
        assert arch.layers[0].attributes["activation_negative_slope"] == "0.2"


def test_an_activation_not_fed_by_a_layer_is_ignored_and_one_inside_a_layer_is_its_own():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.Tanh()  # a module: a layer of its own where no layer feeds it
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.fc(torch.sigmoid(x))  # a function on the input: nothing to fold into
            return self.out(self.act(h * 2))  # fed by a product, not by fc

    arch = describe_architecture(Net(), example_input=torch.randn(3, 4))
    assert rows(arch) == [("fc", "Linear", ""), ("act", "Tanh", ""), ("out", "Linear", "")]


# -- describe_first_forward: the training loop's own first forward pass --------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_first_training_forward_gives_the_traced_record_and_removes_every_hook(case):
    model = case.model()
    seen = []
    recording = describe_first_forward(model, seen.append)
    assert recording.pending and not seen
    train(model, steps=2)
    assert len(seen) == 1 and rows(seen[0]) == case.expected
    assert not recording.pending and recording.done
    assert no_hooks_left(model) and no_function_mode_left()


def test_first_forward_under_no_grad_in_eval_mode_and_called_with_kwargs():
    class Keyword(FunctionalMLP):
        def forward(self, *, features):
            return super().forward(features)

    model = Keyword().eval()
    seen = []
    describe_first_forward(model, seen.append)
    with torch.no_grad():
        model(features=batch()[0])
    assert rows(seen[0]) == [("fc1", "Linear", "ReLU"), ("fc2", "Linear", "ReLU"), ("out", "Linear", "")]
    assert not model.training and no_hooks_left(model)


def test_a_forward_that_raises_is_skipped_and_the_next_one_is_described():
    model = SmallCNN()
    seen = []
    recording = describe_first_forward(model, seen.append)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 63))  # not a multiple of 8x8
    assert not seen and recording.pending and no_function_mode_left()
    assert all(not m._forward_hooks for m in model.modules() if m is not model)  # layer hooks only while tracing
    model(batch()[0])
    assert rows(seen[0])[0] == ("conv_a", "Conv2d", "ReLU") and no_hooks_left(model)


def test_a_child_holding_every_parameter_counts_as_the_model():
    """A Lightning module's training_step may call self.net(x), never the module itself."""

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = SharedActMLP()

    model, seen = Wrapper(), []
    describe_first_forward(model, seen.append)
    model.net(batch()[0])
    assert rows(seen[0]) == [
        ("net.hidden.0", "Linear", "ReLU"), ("net.hidden.1", "Linear", "ReLU"), ("net.head", "Linear", ""),
    ]  # fmt: skip


def test_failures_of_the_recording_are_logged_and_never_reach_the_loop(monkeypatch, caplog):
    model = FunctionalMLP()
    expected = model(batch()[0])

    def broken(*args):
        raise ValueError("a bug in the trace")

    monkeypatch.setattr(torch_watch._ForwardTrace, "function_called", broken)
    seen = []
    recording = describe_first_forward(model, seen.append)
    with caplog.at_level(logging.ERROR, logger="runwatch.client"):
        assert torch.equal(model(batch()[0]), expected)
    assert not seen and not recording.pending and no_hooks_left(model) and no_function_mode_left()
    assert caplog.text.count("recording the model's architecture") == 1  # logged once, then no more tracing
    monkeypatch.undo()

    def raising_callback(arch):
        raise RuntimeError("the run is gone")

    describe_first_forward(model, raising_callback)
    with caplog.at_level(logging.ERROR, logger="runwatch.client"):
        assert torch.equal(model(batch()[0]), expected)
    assert no_hooks_left(model) and "the run is gone" in caplog.text


@pytest.mark.parametrize("build", [RowTransformer, SmallCNN, SharedActMLP], ids=["transformer", "cnn", "shared_act"])
def test_training_is_bit_identical_with_and_without_the_recording(build, offline_run):
    torch.manual_seed(0)
    plain = build()
    torch.manual_seed(123)  # dropout draws from the global generator: same state for both trainings
    plain_losses = train(plain)

    torch.manual_seed(0)
    recorded = build()
    run = offline_run(model=recorded)  # no example input: the first forward pass below is recorded
    torch.manual_seed(123)
    recorded_losses = train(recorded)

    assert run.start_message.architecture.layers and no_hooks_left(recorded)
    assert recorded_losses == plain_losses
    for (name, a), (_, b) in zip(plain.named_parameters(), recorded.named_parameters(), strict=True):
        assert torch.equal(a, b), name
        assert torch.equal(a.grad, b.grad), name


# -- the SDK ---------------------------------------------------------------------------------------------


def test_init_sends_the_architecture_after_the_first_forward_pass(offline_run):
    model = SharedActMLP()
    run = offline_run(model=model)
    first, = queued_starts(run)
    assert not first.architecture.layers  # registration order would be wrong: nothing sent yet
    run.watch(model, every=1)  # no second recording, no static description
    assert len(queued_starts(run)) == 1
    train(model, steps=2, on_step=lambda step, loss: run.log({"loss": loss}, step=step))
    starts = queued_starts(run)
    assert len(starts) == 2 and rows(starts[1].architecture) == [
        ("hidden.0", "Linear", "ReLU"), ("hidden.1", "Linear", "ReLU"), ("head", "Linear", ""),
    ]  # fmt: skip
    run.finish(timeout=0)  # removes the watcher's hooks; the recording's are gone already
    assert no_hooks_left(model)


def test_sequential_models_and_example_inputs_are_described_at_once(offline_run):
    seq = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    assert [l.activation for l in queued_starts(offline_run(model=seq))[0].architecture.layers] == ["ReLU", ""]
    run = offline_run(model=FunctionalMLP(), example_input=batch()[0])
    assert rows(queued_starts(run)[0].architecture)[0] == ("fc1", "Linear", "ReLU")


def test_without_a_forward_pass_finish_sends_the_static_description():
    model = SmallCNN()
    client = rw.RunwatchClient(NOWHERE, flush_on_exit=False)  # not owned by the run: its queue outlives finish()
    run = client.start_run(project="arch")
    run.set_model(model)
    run.set_model(model)  # the same model again (integrations do this): still one recording
    assert len(queued_starts(run)) == 1
    run.finish(timeout=0)
    starts = queued_starts(run)
    assert len(starts) == 2 and [l.name for l in starts[1].architecture.layers] == ["conv_a", "conv_b", "fc_out"]
    assert no_hooks_left(model)
    client.close(timeout=0)


# -- runwatch nas run: the starting model as the trainer runs it ------------------------------------------


def test_nas_starting_model_is_traced_from_the_trainers_first_forward():
    steps = []

    def trainer(model):
        return train(model, steps=3, on_step=lambda step, loss: steps.append(step))

    model = SharedActMLP()
    before = [p.detach().clone() for p in model.parameters()]
    arch, note = _describe_as_trained(model, trainer)
    assert note == "" and rows(arch)[:2] == [("hidden.0", "Linear", "ReLU"), ("hidden.1", "Linear", "ReLU")]
    assert steps == [] and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # stopped before a step
    assert no_hooks_left(model)


def test_nas_trainer_that_swallows_the_stop_or_never_runs_the_model():
    calls = []

    def swallowing(model):
        for _ in range(3):
            try:
                model(batch()[0])
                calls.append("ran")
            except Exception:
                calls.append("stopped")
        return 1.0

    arch, note = _describe_as_trained(FunctionalMLP(), swallowing)
    assert note == "" and calls == ["stopped", "stopped", "stopped"]
    assert rows(arch)[0] == ("fc1", "Linear", "ReLU")

    arch, note = _describe_as_trained(SmallCNN(), lambda model: 0.5)
    assert "did not run the starting model (it never called the model)" in note
    assert [l.name for l in arch.layers] == ["conv_a", "conv_b", "fc_out"]
