"""Robust per-feature scaling shared by the learned models (median and spread of healthy training rows).

Examples
--------
>>> import numpy as np
>>> s = RobustScaling.fit(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, np.nan]]))
>>> z, mask = s.transform(np.array([[2.0, np.nan]]))
>>> z.tolist(), mask.tolist()
([[0.0, 0.0]], [[1.0, 0.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP = 10.0


@dataclass
class RobustScaling:
    """``(x - center) / spread`` per feature, clipped to ±10; NaN becomes 0 with mask 0."""

    center: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> RobustScaling:
        center = np.nan_to_num(np.nanmedian(x, axis=0))
        q75, q25 = np.nanpercentile(x, 75, axis=0), np.nanpercentile(x, 25, axis=0)
        std = np.nanstd(x, axis=0)
        spread = np.nan_to_num((q75 - q25) / 1.349)
        # features that are constant for most healthy rows (e.g. lr_vs_max) fall back to their std
        spread = np.where(spread > 1e-6, spread, np.nan_to_num(std))
        spread = np.where(spread > 1e-6, spread, 1.0)
        return cls(center.astype(np.float64), spread.astype(np.float64))

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        finite = np.isfinite(x)
        # Non-finite entries become 0 below whatever they scale to, so they need no nan_to_num first.
        z = (x - self.center) / self.spread
        np.minimum(np.maximum(z, -CLIP, out=z), CLIP, out=z)  # np.clip, without its Python wrapper
        z = np.where(finite, z, 0.0).astype(np.float32)
        return z, finite.astype(np.float32)

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.center": self.center, f"{prefix}.spread": self.spread}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> RobustScaling:
        return cls(tensors[f"{prefix}.center"].astype(np.float64), tensors[f"{prefix}.spread"].astype(np.float64))


def pack(prefix: str, weights: dict[str, np.ndarray], scaling: RobustScaling | None, model: str) -> dict[str, np.ndarray]:
    """A fitted model's weights and scaling as flat, prefixed tensors for the artifact."""
    if scaling is None:
        raise RuntimeError(f"{model} is not fitted")
    return {**{f"{prefix}.{k}": v for k, v in weights.items()}, **scaling.tensors(f"{prefix}.scaling")}


def unpack(tensors: dict[str, np.ndarray], prefix: str) -> tuple[dict[str, np.ndarray], RobustScaling]:
    """Inverse of :func:`pack`: the weights (float64) and the scaling stored under ``prefix``."""
    head, scale_head = f"{prefix}.", f"{prefix}.scaling."
    weights = {
        k[len(head):]: v.astype(np.float64) for k, v in tensors.items() if k.startswith(head) and not k.startswith(scale_head)
    }
    return weights, RobustScaling.from_tensors(tensors, f"{prefix}.scaling")


def fit_minibatches(model, batch_loss, n: int, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
                    weight_decay: float = 0.0) -> dict[str, np.ndarray]:
    """Adam over shuffled minibatches (seeded); ``batch_loss(model, idx)`` gives a batch's loss. Returns float64 weights."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            loss = batch_loss(model, order[i : i + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
