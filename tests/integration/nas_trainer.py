"""A user's model factory and trainer for `runwatch nas run` tests: a small MLP on sklearn digits."""

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
