"""Real multi-trial NAS: tiny MLPs trained on scikit-learn's digits through NNI's in-process engine."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

pytest.importorskip("nni")
pytest.importorskip("sklearn")

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.space import SearchSpace, within
from runwatch.nas.trials import Trial, TrialsResult, load_callable, run_trials

# A user's trainer module, as `runwatch nas run --trainer digits_trainer:train` would load it.
TRAINER = textwrap.dedent(
    """
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    _digits = load_digits()
    _x = torch.tensor(_digits.data / 16.0, dtype=torch.float32)
    _y = torch.tensor(_digits.target)
    SEEN = []

    def train(model, steps=60):
        SEEN.append(sum(p.numel() for p in model.parameters()))
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(steps):
            idx = torch.randint(0, 1400, (64,))
            loss = torch.nn.functional.cross_entropy(model(_x[idx]), _y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(_x[1400:]), _y[1400:]).item()

    CALLS = []

    def flaky(model):
        CALLS.append(1)
        if len(CALLS) == 2:
            raise RuntimeError("out of memory (pretend)")
        if len(CALLS) == 3:
            return float("nan")  # diverged
        return train(model, steps=5)
    """
)

BASE = Genome(64, 10, (Block("fc1", "linear", 32, "relu"), Block("fc2", "linear", 32, "relu")))
SPACE = SearchSpace(max_changes=2)


@pytest.fixture
def trainer_module(tmp_path, monkeypatch):
    (tmp_path / "digits_trainer.py").write_text(TRAINER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("digits_trainer")
    yield module
    import sys

    sys.modules.pop("digits_trainer", None)


def test_three_real_trials_report_metrics_and_the_best_genome(trainer_module):
    train = load_callable("digits_trainer:train")
    result = run_trials(BASE, SPACE, train, budget=3, strategy="evolution", seed=0)
    assert len(result.trials) == 3
    assert result.trials[0].genome == BASE  # the reference trial
    # every trial really trained the architecture it reports
    assert trainer_module.SEEN == [t.params for t in result.trials] == [t.genome.params() for t in result.trials]
    assert all(within(t.genome, BASE, SPACE) for t in result.trials)
    assert len({t.genome.key() for t in result.trials}) >= 2
    for t in result.trials:
        assert math.isfinite(t.value) and 0.0 < t.value < math.log(10)  # learned something in 60 steps
        assert t.seconds > 0 and t.flops == t.genome.flops()
    assert result.best.value == min(t.value for t in result.trials)
    assert result.best_genome == result.best.genome
    again = TrialsResult.from_dict(json.loads(result.to_json()))
    assert again == result
    # weights are initialised from the seed: the same search trains to the same numbers
    repeat = run_trials(BASE, SPACE, train, budget=3, strategy="evolution", seed=0)
    assert [t.value for t in repeat.trials] == [t.value for t in result.trials]


def test_random_strategy_without_base(trainer_module):
    result = run_trials(BASE, SPACE, trainer_module.train, budget=2, strategy="random", seed=1, include_base=False)
    assert [t.index for t in result.trials] == [0, 1] and result.strategy == "random"
    assert trainer_module.SEEN == [t.params for t in result.trials]
    assert all(math.isfinite(t.value) and within(t.genome, BASE, SPACE) for t in result.trials)


def test_failing_and_diverging_trials_become_nan_and_the_search_goes_on(trainer_module):
    result = run_trials(BASE, SearchSpace(max_changes=1), trainer_module.flaky, budget=4, seed=2)
    assert [math.isfinite(t.value) for t in result.trials] == [True, False, False, True]
    assert result.best.index in (0, 3)
    failed = result.trials[1]
    assert failed.to_dict()["value"] is None
    assert math.isnan(Trial.from_dict(json.loads(json.dumps(failed.to_dict()))).value)
    all_failed = TrialsResult(BASE, "evolution", 0, (failed,))
    with pytest.raises(ValueError, match="none of 1 trials"):
        _ = all_failed.best


def test_load_callable_names_what_is_wrong(trainer_module):
    assert load_callable("digits_trainer:train") is trainer_module.train
    with pytest.raises(ValueError, match="expected 'module:function'"):
        load_callable("digits_trainer.train")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_callable("no_such_module_xyz:train")
    with pytest.raises(ValueError, match="has no attribute 'trian'"):
        load_callable("digits_trainer:trian")
    with pytest.raises(TypeError, match="is a list, not a callable"):
        load_callable("digits_trainer:SEEN")


def test_run_trials_rejects_what_it_cannot_train():
    with pytest.raises(ValueError, match="strategy"):
        run_trials(BASE, SPACE, lambda m: 0.0, budget=2, strategy="hyperband")
    with pytest.raises(ValueError, match="budget"):
        run_trials(BASE, SPACE, lambda m: 0.0, budget=0)
    tcn = Genome(3, 10, (Block("c", "conv", 8, "relu", layer_type="Conv1d"),), family="cnn")
    with pytest.raises(ValueError, match="family 'cnn'.*only Conv2d"):
        run_trials(tcn, SPACE, lambda m: 0.0, budget=2)
