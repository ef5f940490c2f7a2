"""describe_architecture and ModelWatcher on real modules and real training steps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runwatch.client.torch_watch import ModelWatcher, describe_architecture


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(32, 16),
        nn.Tanh(),
        nn.Linear(16, 10),
    )


class ConvNet(nn.Module):
    """Activation registered before the layers that use it, and reused."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        return self.head(x)


def batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, watcher: ModelWatcher, x, y) -> dict[str, float]:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    opt.step()
    return stats


# -- describe_architecture ----------------------------------------------------------------------


def test_sequential_layers_sizes_activations_and_params():
    model = mlp()
    arch = describe_architecture(model)
    rows = [(l.name, l.type, l.in_size, l.out_size, l.activation) for l in arch.layers]
    assert rows == [
        ("0", "Linear", 64, 32, "ReLU"),
        ("2", "Dropout", 0, 0, ""),
        ("3", "Linear", 32, 16, "Tanh"),
        ("5", "Linear", 16, 10, ""),
    ]
    by_name = {l.name: l for l in arch.layers}
    assert by_name["2"].attributes["p"] == "0.2"
    assert by_name["0"].param_count == 64 * 32 + 32
    assert by_name["0"].attributes["bias"] == "true"
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    assert sum(l.param_count for l in arch.layers) == arch.total_params


def test_custom_conv_module_static_and_traced():
    model = ConvNet()
    static = describe_architecture(model)
    names = [l.name for l in static.layers]
    # Without a forward pass only registration order is known: the shared ReLU stays a layer.
    assert names == ["act", "conv1", "bn", "conv2", "pool", "head.0", "head.1"]
    conv1 = static.layers[1]
    assert (conv1.type, conv1.in_size, conv1.out_size) == ("Conv2d", 1, 8)
    expected = {"kernel_size": "3x3", "padding": "1x1", "stride": "1x1", "groups": "1", "bias": "true"}
    assert expected.items() <= dict(conv1.attributes).items()
    assert static.layers[3].attributes["stride"] == "2x2"
    assert (static.layers[2].type, static.layers[2].in_size, static.layers[2].out_size) == ("BatchNorm2d", 8, 8)
    assert static.total_params == sum(p.numel() for p in model.parameters())

    traced = describe_architecture(model, example_input=torch.randn(2, 1, 8, 8))
    rows = [(l.name, l.activation) for l in traced.layers]
    # The forward pass shows the ReLU consuming bn's and conv2's outputs.
    assert rows == [("conv1", ""), ("bn", "ReLU"), ("conv2", "ReLU"), ("pool", ""), ("head.0", ""), ("head.1", "")]
    assert model.training  # tracing restores the mode


def test_rnn_embedding_and_frozen_layers():
    model = nn.Sequential(nn.Embedding(100, 16), nn.LSTM(16, 32, num_layers=2, bidirectional=True))
    model[0].weight.requires_grad_(False)
    arch = describe_architecture(model)
    emb, lstm = arch.layers
    assert (emb.type, emb.in_size, emb.out_size, emb.attributes["frozen"]) == ("Embedding", 100, 16, "true")
    assert (lstm.type, lstm.in_size, lstm.out_size) == ("LSTM", 16, 64)
    assert lstm.attributes["num_layers"] == "2" and lstm.attributes["bidirectional"] == "true"
    assert arch.total_params == sum(p.numel() for p in model[1].parameters())  # trainable only


# -- ModelWatcher -----------------------------------------------------------------------------


def test_stats_on_a_real_training_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    with ModelWatcher(model) as watcher:
        first = train_step(model, opt, watcher, x, y)
        second = train_step(model, opt, watcher, x, y)

    for layer in ("0", "3", "5"):
        for key in ("grad_norm", "weight_norm", "act/mean", "act/std", "act/zero_frac"):
            assert f"{key}/{layer}" in first
        assert f"update_ratio/{layer}" not in first  # no snapshot to compare with yet
        assert f"update_ratio/{layer}" in second
    assert "act/sat_frac/3" in first  # tanh output
    assert "act/sat_frac/0" not in first and "act/sat_frac/5" not in first
    assert "act/mean/1" not in first and "act/mean/4" not in first  # activations filed under their layer
    assert all(math.isfinite(v) for v in first.values())

    # ReLU output: about half the units are zero; values are post-activation.
    assert 0.2 < first["act/zero_frac/0"] < 0.8
    assert first["act/mean/0"] > 0
    assert 0.0 <= first["act/sat_frac/3"] <= 1.0
    assert first["act/zero_frac/5"] == 0.0  # raw logits
    assert all(first[f"act/std/{l}"] > 0 for l in ("0", "3", "5"))


def test_norms_match_torch():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = batch()
    watcher = ModelWatcher(model)
    before = [p.detach().clone() for p in model[0].parameters()]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert stats["grad_norm"] == pytest.approx(total.item(), rel=1e-5)
    layer0 = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model[0].parameters()]))
    assert stats["grad_norm/0"] == pytest.approx(layer0.item(), rel=1e-5)
    opt.step()

    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    after = list(model[0].parameters())
    delta = torch.linalg.vector_norm(torch.stack([(a - b).norm() for a, b in zip(after, before)]))
    norm = torch.linalg.vector_norm(torch.stack([a.detach().norm() for a in after]))
    assert stats["weight_norm/0"] == pytest.approx(norm.item(), rel=1e-5)
    assert stats["update_ratio/0"] == pytest.approx((delta / norm).item(), rel=1e-4)
    assert 0 < stats["update_ratio/0"] < 1


def test_zero_and_saturation_fractions_respond():
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every ReLU unit dead
        model[3].weight.mul_(1000.0)  # tanh pinned at +-1
        model[3].bias.fill_(5.0)
    watcher = ModelWatcher(model)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    assert stats["act/zero_frac/0"] == 1.0
    assert stats["act/sat_frac/3"] == 1.0


def test_every_collects_only_every_nth_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    watcher = ModelWatcher(model, every=3)
    seen = []
    for _ in range(7):
        collecting = watcher.collecting
        seen.append((collecting, train_step(model, opt, watcher, x, y)))
    assert [c for c, _ in seen] == [True, False, False, True, False, False, True]
    for collecting, stats in seen:
        if collecting:
            assert "act/zero_frac/0" in stats and "grad_norm/0" in stats
        else:
            assert set(stats) == {"grad_norm"}
    # Ratios span the three updates since the previous collection.
    assert "update_ratio/0" not in seen[0][1] and "update_ratio/0" in seen[3][1]

    quiet = ModelWatcher(mlp(), every=2, always_grad_norm=False)
    quiet.stats()
    assert quiet.stats() == {}


def test_eval_forwards_are_ignored_and_passes_pool():
    model = mlp()
    watcher = ModelWatcher(model)
    x, _ = batch()
    model.eval()
    with torch.no_grad():
        model(x)
    model.train()
    assert not any(k.startswith("act/") for k in watcher.stats())

    # Two training forwards in one step (gradient accumulation) pool into one statistic.
    model(x[:16]).sum().backward()
    model(x[16:]).sum().backward()
    pooled = watcher.stats()
    with torch.no_grad():
        h = torch.relu(model[0](x))
    assert pooled["act/mean/0"] == pytest.approx(h.mean().item(), rel=1e-4)
    assert pooled["act/std/0"] == pytest.approx(h.std(correction=0).item(), rel=1e-4)
    assert pooled["act/zero_frac/0"] == pytest.approx((h == 0).float().mean().item())


def test_passes_pool_whichever_spread_each_device_reports():
    # A GPU pass reports its variance (one var_mean kernel), a CPU pass its sum of squared deviations; the
    # host pools both kinds alike. The first two passes are the CPU path for real, the third a GPU-shaped pass.
    from runwatch.client.torch_watch import _ActStats

    a, b, c = torch.randn(40), torch.relu(torch.randn(24)), torch.tensor([0.0, 3.0, -1.0, 0.0])
    acts = _ActStats()
    acts.add(a, None)
    acts.add(b, None)
    var, mean = torch.var_mean(c, correction=0)
    acts.passes.append((c.numel(), True, (mean, var, (c == 0).sum())))
    floats, counts = acts.tensors()
    mean_all, std, zero_frac, _ = acts.combine([float(t) for t in floats], [float(t) for t in counts])
    every = torch.cat([a, b, c]).double()
    assert mean_all == pytest.approx(every.mean().item(), rel=1e-6)
    assert std == pytest.approx(every.std(correction=0).item(), rel=1e-6)
    assert zero_frac == pytest.approx((every == 0).double().mean().item())


def test_conv_module_names_and_close():
    model = ConvNet()
    watcher = ModelWatcher(model)
    out = model(torch.randn(4, 1, 8, 8))
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    stats = watcher.stats()
    # bn consumes conv1's output, the shared ReLU consumes bn's and conv2's.
    for layer in ("conv1", "bn", "conv2", "head.1"):
        assert f"act/mean/{layer}" in stats
    assert stats["act/zero_frac/conv1"] == 0.0  # raw conv output
    assert stats["act/zero_frac/bn"] > 0.2  # post-ReLU
    assert "act/mean/act" not in stats
    assert {"grad_norm/conv1", "grad_norm/bn", "grad_norm/conv2", "grad_norm/head.1"} <= set(stats)
    watcher.close()
    assert all(not m._forward_hooks for m in model.modules())


def test_non_finite_values_are_reported_not_raised():
    model = mlp()
    watcher = ModelWatcher(model)
    x, y = batch()
    x[0, 0] = float("nan")
    F.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    assert math.isnan(stats["act/mean/0"])
    assert math.isnan(stats["grad_norm"])


def test_large_finite_gradients_give_a_finite_norm():
    layer = nn.Linear(4, 4)
    watcher = ModelWatcher(layer)
    layer(torch.ones(1, 4)).sum().backward()
    layer.weight.grad.fill_(1e20)  # its float32 sum of squares would overflow
    stats = watcher.stats()
    assert math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 1e20
    assert "grad_norm/model" in stats and "act/mean/model" in stats
