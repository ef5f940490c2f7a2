"""A user's model factories and trainers for `runwatch nas run` tests: a small MLP on sklearn digits, a GRU tagger."""

from __future__ import annotations

import torch
from torch import nn

torch.set_num_threads(1)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


def train(model: nn.Module) -> float:
    """40 Adam steps on 1,437 digits; returns the validation cross-entropy (lower is better)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=gen)
    train_idx, val_idx = order[:1437], order[1437:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for step in range(40):
        batch = train_idx[torch.randint(len(train_idx), (64,), generator=gen)]
        opt.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(loss_fn(model(x[val_idx]), y[val_idx]))


not_callable = 3


class CopyTagger(nn.Module):
    """A user's GRU tagger: token embedding -> 2-layer GRU -> per-position head (copy task, delay 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 8)
        self.encoder = nn.GRU(8, 24, num_layers=2, batch_first=True)
        self.head = nn.Linear(24, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x))[0])


def make_gru() -> nn.Module:
    return CopyTagger()


def _copy_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(1, 6, (n, 10), generator=gen)
    y = torch.zeros_like(x)
    y[:, 2:] = x[:, :-2]
    return x, y


def train_copy(model: nn.Module) -> float:
    """30 Adam steps on fresh copy sequences; returns the validation cross-entropy."""
    gen = torch.Generator().manual_seed(0)
    xv, yv = _copy_batch(128, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        x, y = _copy_batch(32, gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 6), y.reshape(-1)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(xv).reshape(-1, 6), yv.reshape(-1)))
