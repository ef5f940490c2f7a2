"""Small real models whose architecture records are known, for the architecture-capture tests.

Each case gives a fresh model (seeded), an input batch, labels, and the record expected from a
real forward pass: ``(layer name, type, activation)`` in forward order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class SharedActMLP(nn.Module):
    """One activation module reused after every hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.ModuleList([nn.Linear(64, 32), nn.Linear(32, 32)])
        self.act = nn.ReLU()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.head(x)


class FunctionalMLP(nn.Module):
    """Activations called as functions."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


class SmallCNN(nn.Module):
    """F.relu after each convolution, F.max_pool2d after the second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 8, 3, padding=1)
        self.fc_out = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_a(x.view(-1, 1, 8, 8)))
        x = F.max_pool2d(F.relu(self.conv_b(x)), 2)
        return self.fc_out(x.flatten(1))


class RowTransformer(nn.Module):
    """Input projection, learned positions, a 2-layer nn.TransformerEncoder (built-in ReLU), mean-pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.pos = nn.Parameter(torch.zeros(1, 8, 16))
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.cls_head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.view(-1, 8, 8)) + self.pos
        return self.cls_head(self.encoder(h).mean(1))


def _encoder_layer_rows(i: int) -> list[tuple[str, str, str]]:
    p = f"encoder.layers.{i}."
    return [
        (p + "self_attn", "MultiheadAttention", ""),
        (p + "dropout1", "Dropout", ""),
        (p + "norm1", "LayerNorm", ""),
        (p + "linear1", "Linear", "ReLU"),
        (p + "dropout", "Dropout", ""),
        (p + "linear2", "Linear", ""),
        (p + "dropout2", "Dropout", ""),
        (p + "norm2", "LayerNorm", ""),
    ]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    expected: list[tuple[str, str, str]]

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build()


CASES = [
    Case(
        "shared_act_mlp",
        SharedActMLP,
        [("hidden.0", "Linear", "ReLU"), ("hidden.1", "Linear", "ReLU"), ("head", "Linear", "")],
    ),
    Case(
        "functional_mlp",
        FunctionalMLP,
        [("fc1", "Linear", "ReLU"), ("fc2", "Linear", "ReLU"), ("out", "Linear", "")],
    ),
    Case("small_cnn", SmallCNN, [("conv_a", "Conv2d", "ReLU"), ("conv_b", "Conv2d", "ReLU"), ("fc_out", "Linear", "")]),
    Case(
        "transformer",
        RowTransformer,
        [("proj", "Linear", ""), *_encoder_layer_rows(0), *_encoder_layer_rows(1), ("cls_head", "Linear", "")],
    ),
]


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit-shaped inputs (64 features) and labels of 10 classes."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def rows(arch) -> list[tuple[str, str, str]]:
    return [(layer.name, layer.type, layer.activation) for layer in arch.layers]


def train(model: nn.Module, steps: int = 4, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """A few Adam steps on fixed batches (dropout draws from torch's global generator); returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for step in range(steps):
        x, y = batch(seed=step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses
