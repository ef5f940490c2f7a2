"""Real training runs that show healthy, diverging and overfitting behaviour.

Each scenario trains a small torch MLP on CPU on scikit-learn's bundled
``load_digits`` (8x8 handwritten digits, 1797 samples; no download) and reports
every step through ``log(step, metrics)`` with runwatch's metric names:
``loss``, ``lr``, ``grad_norm``, per-layer statistics from
:class:`~runwatch.client.torch_watch.ModelWatcher`, ``step_time``,
``data_time``, and ``val/loss`` + ``val/acc`` every few steps.

- ``healthy``: Adam at 1e-3 on cross-entropy; converges (val acc ~0.97).
- ``diverging``: SGD with momentum on an MSE (one-hot regression) head whose
  learning rate warms up linearly to a peak above the stability limit; the
  loss first falls, then creeps up once the LR crosses the limit, then
  explodes to Inf/NaN, where the run stops.
- ``overshooting``: plain SGD on cross-entropy whose learning rate warms up
  linearly from 0 to 4.0 over 240 steps, while this net trains well at a
  constant 0.05-1.0 and diverges at 2.0: the loss falls while the rate is
  small, then climbs once it passes ~2 (around step 100-120) and overflows to
  Inf around step 230. Long before the climb the steps it takes are already
  outsized, which is what the learned divergence forecaster reads.
- ``overfitting``: a wide MLP, no regularization, many epochs over 100
  training samples of which a quarter carry a wrong label; train loss goes to
  ~0 while val loss rises.

All three together take a few seconds on two cores. ``python -m
runwatch.service.demo_training`` prints their loss curves.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runwatch.client.torch_watch import ModelWatcher

__all__ = [
    "CONFIGS",
    "HYPERPARAMETERS",
    "SCENARIOS",
    "LogFn",
    "ScenarioConfig",
    "build_model",
    "diverging",
    "healthy",
    "overfitting",
    "overshooting",
    "run_scenario",
]

LogFn = Callable[[int, dict[str, float]], None]
"""``log(step, metrics)``: receives every step's metrics."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything that defines one scenario's training run.

    Parameters
    ----------
    hidden
        Hidden layer widths of the MLP (input 64, output 10).
    activation
        ``"relu"``, ``"tanh"`` or ``"gelu"``.
    loss
        ``"cross_entropy"``, or ``"mse"`` against one-hot targets.
    optimizer
        ``"adam"`` or ``"sgd"``.
    lr
        Peak learning rate.
    warmup_steps, warmup_start_lr
        Linear warmup from ``warmup_start_lr`` to ``lr`` over this many steps
        (0 = constant ``lr``).
    momentum, weight_decay
        Optimizer settings.
    batch_size
        Mini-batch size (capped at the training set size).
    max_steps
        Steps to train unless the loss becomes non-finite.
    train_subset
        Train on this many samples (stratified) instead of the full split; 0 = all.
    label_noise
        Fraction of training labels replaced by a different, random class.
    val_every
        Compute ``val/loss`` and ``val/acc`` every this many steps (and at the last step).
    """

    hidden: tuple[int, ...]
    activation: str = "relu"
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    lr: float = 1e-3
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 64
    max_steps: int = 300
    train_subset: int = 0
    label_noise: float = 0.0
    val_every: int = 10

    def lr_at(self, step: int) -> float:
        """Learning rate used at ``step``."""
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return self.lr
        return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-like hyperparameters, ready for ``RunStart.hyperparameters``."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["dataset"] = "sklearn.load_digits"
        d["model"] = "mlp"
        return d


CONFIGS: dict[str, ScenarioConfig] = {
    "healthy": ScenarioConfig(
        hidden=(128, 64),
        activation="relu",
        loss="cross_entropy",
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        max_steps=300,
        val_every=10,
    ),
    # The loss is stable up to an LR of ~2.5-3 for this net; warming up to 4.0 over
    # 200 steps crosses that limit around step 120-180, so the loss falls, creeps up
    # for tens of steps, then explodes to Inf/NaN around step 215-260. MSE keeps the
    # loss growing with the outputs (cross-entropy grows only linearly in the
    # logits and would take far longer to overflow).
    "diverging": ScenarioConfig(
        hidden=(64, 64),
        activation="tanh",
        loss="mse",
        optimizer="sgd",
        lr=4.0,
        warmup_steps=200,
        warmup_start_lr=0.05,
        momentum=0.9,
        batch_size=64,
        max_steps=400,
        val_every=10,
    ),
    # Constant rates of 0.05-1.0 train this net to val acc 0.96-0.98 in 400 steps and 2.0 diverges (seed 0),
    # so a warm-up towards 4.0 passes the limit around step 120; cross-entropy grows with the logits and
    # reaches Inf about 110 steps later.
    "overshooting": ScenarioConfig(
        hidden=(256,),
        activation="relu",
        loss="cross_entropy",
        optimizer="sgd",
        lr=4.0,
        warmup_steps=240,
        batch_size=32,
        max_steps=400,
        val_every=10,
    ),
    # Memorizing 100 samples, a quarter of them mislabelled: val loss bottoms out
    # around step 60 and then rises steadily (x1.4-1.6 by step 500) while the
    # train loss keeps falling to ~0.002.
    "overfitting": ScenarioConfig(
        hidden=(512, 512),
        activation="relu",
        loss="cross_entropy",
        optimizer="adam",
        lr=5e-4,
        batch_size=20,
        max_steps=500,
        train_subset=100,
        label_noise=0.25,
        val_every=10,
    ),
    # Plain SGD at 1e-4, about a thousandth of what this net needs: over 600 steps the loss moves from
    # 2.313 to 2.307 (-0.3 %) and validation accuracy stays at chance. Nothing is non-finite or spiky.
    "not_learning": ScenarioConfig(
        hidden=(128, 64),
        activation="relu",
        loss="cross_entropy",
        optimizer="sgd",
        lr=1e-4,
        batch_size=64,
        max_steps=600,
        val_every=10,
    ),
}

HYPERPARAMETERS: dict[str, dict[str, Any]] = {name: cfg.hyperparameters() for name, cfg in CONFIGS.items()}
"""Scenario name to its RunStart-compatible hyperparameters."""


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardized train/val split of load_digits (fixed: 75 % / 25 %, stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0  # border pixels that are always blank
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)
    as_y = lambda a: torch.tensor(a, dtype=torch.long)
    return as_x(x_tr), as_y(y_tr), as_x(x_va), as_y(y_va)


def _subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of a class-stratified subset of ``n`` samples."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    picked = [idx[i] for i in range(math.ceil(n / len(classes))) for idx in per_class if i < len(idx)]
    return torch.tensor(sorted(picked[:n]))


def _corrupt(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Copy of ``y`` with ``fraction`` of the labels moved to another class."""
    gen = torch.Generator().manual_seed(seed + 7919)
    k = round(fraction * len(y))
    flip = torch.randperm(len(y), generator=gen)[:k]
    y = y.clone()
    y[flip] = (y[flip] + torch.randint(1, 10, (k,), generator=gen)) % 10
    return y


def build_model(name: str, seed: int = 0) -> nn.Module:
    """The (freshly initialized) MLP a scenario trains, e.g. to describe it in a RunStart.

    Examples
    --------
    >>> build_model("healthy")
    Sequential(
      (0): Linear(in_features=64, out_features=128, bias=True)
      (1): ReLU()
      (2): Linear(in_features=128, out_features=64, bias=True)
      (3): ReLU()
      (4): Linear(in_features=64, out_features=10, bias=True)
    )
    """
    return _build(CONFIGS[name], seed)


def _loss(cfg: ScenarioConfig, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "mse":
        return F.mse_loss(out, F.one_hot(y, 10).to(out.dtype))
    return F.cross_entropy(out, y)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of index batches (the last short batch is dropped)."""
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_scenario(
    name: str,
    log: LogFn,
    *,
    seed: int = 0,
    config: ScenarioConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train scenario ``name`` (or ``config``), calling ``log(step, metrics)`` every step.

    Parameters
    ----------
    name
        Scenario name (a key of :data:`CONFIGS`).
    log
        Receives ``(step, metrics)``; steps count from 0.
    seed
        Seeds the initialization and the batch order (the data split is fixed).
    config
        Overrides the scenario's configuration.
    should_stop
        Polled after every step; returning True ends the run early (e.g. when
        runwatch asks to stop it).

    Returns
    -------
    dict
        Summary: ``steps`` run, ``first_nonfinite_step`` (or None),
        ``min_loss_step``, ``final_loss``, ``final_val_loss``,
        ``final_val_acc``, ``best_val_loss_step``, ``stopped_early``,
        ``losses`` (per step) and ``val_history`` (``(step, val_loss,
        val_acc)`` tuples), ``wall_time``.
    """
    cfg = config or CONFIGS[name]
    x_tr, y_tr, x_va, y_va = _digits()
    if cfg.train_subset:
        idx = _subset(y_tr, cfg.train_subset, seed)
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if cfg.label_noise:
        y_tr = _corrupt(y_tr, cfg.label_noise, seed)

    started = time.perf_counter()
    with _torch_threads(1):  # tiny nets: one thread is fastest and keeps runs reproducible
        model = _build(cfg, seed)
        if cfg.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(), lr=cfg.lr_at(0), momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_at(0), weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        batches = _batches(len(x_tr), cfg.batch_size, gen)
        watcher = ModelWatcher(model)

        losses: list[float] = []
        val_history: list[tuple[int, float, float]] = []
        first_nonfinite: int | None = None
        stopped_early = False
        try:
            for step in range(cfg.max_steps):
                t0 = time.perf_counter()
                idx = next(batches)
                xb, yb = x_tr[idx], y_tr[idx]
                t1 = time.perf_counter()

                metrics: dict[str, float] = {}
                if step % cfg.val_every == 0 or step == cfg.max_steps - 1:
                    model.eval()
                    with torch.no_grad():
                        out_va = model(x_va)
                        val_loss = _loss(cfg, out_va, y_va).item()
                        val_acc = (out_va.argmax(dim=1) == y_va).float().mean().item()
                    metrics["val/loss"], metrics["val/acc"] = val_loss, val_acc
                    val_history.append((step, val_loss, val_acc))
                    t1b = time.perf_counter()
                else:
                    t1b = t1

                lr = cfg.lr_at(step)
                for group in opt.param_groups:
                    group["lr"] = lr
                model.train()
                opt.zero_grad(set_to_none=True)
                loss = _loss(cfg, model(xb), yb)
                loss.backward()
                metrics.update(watcher.stats())
                loss_value = loss.item()
                finite = math.isfinite(loss_value)
                if finite:
                    opt.step()
                t2 = time.perf_counter()

                metrics["loss"] = loss_value
                metrics["lr"] = lr
                metrics["data_time"] = t1 - t0
                # runwatch's convention: step_time is the whole training step, data wait included
                # (validation excluded), so data_time / step_time is the share spent waiting.
                metrics["step_time"] = (t2 - t0) - (t1b - t1)
                losses.append(loss_value)
                log(step, metrics)
                if not finite:
                    first_nonfinite = step
                    break
                if should_stop is not None and should_stop():
                    stopped_early = True
                    break
        finally:
            watcher.close()

    finite_losses = [v for v in losses if math.isfinite(v)]
    min_loss_step = int(np.argmin(finite_losses)) if finite_losses else None
    best_val = min(val_history, key=lambda r: r[1] if math.isfinite(r[1]) else math.inf) if val_history else None
    return {
        "scenario": name,
        "seed": seed,
        "steps": len(losses),
        "first_nonfinite_step": first_nonfinite,
        "stopped_early": stopped_early,
        "min_loss_step": min_loss_step,
        "final_loss": losses[-1] if losses else math.nan,
        "final_val_loss": val_history[-1][1] if val_history else math.nan,
        "final_val_acc": val_history[-1][2] if val_history else math.nan,
        "best_val_loss_step": best_val[0] if best_val else None,
        "losses": losses,
        "val_history": val_history,
        "wall_time": time.perf_counter() - started,
    }


def _build(cfg: ScenarioConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 64
    for h in cfg.hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[cfg.activation]()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def healthy(log: LogFn, *, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Adam at 1e-3 on cross-entropy: converges, val acc > 0.9, no non-finite loss.

    Examples
    --------
    >>> summary = healthy(lambda step, metrics: None, seed=0)
    >>> summary["first_nonfinite_step"] is None and summary["final_val_acc"] > 0.9
    True
    """
    return run_scenario("healthy", log, seed=seed, should_stop=should_stop)


def diverging(log: LogFn, *, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """LR warmup past the stability limit: the loss falls, climbs, then becomes non-finite.

    The run stops at (and logs) the first non-finite loss.

    Examples
    --------
    >>> summary = diverging(lambda step, metrics: None, seed=0)
    >>> summary["first_nonfinite_step"] - summary["min_loss_step"] >= 20
    True
    """
    return run_scenario("diverging", log, seed=seed, should_stop=should_stop)


def overshooting(log: LogFn, *, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Plain SGD warming up to 40x a good learning rate: the loss falls, then climbs and becomes non-finite.

    Examples
    --------
    >>> summary = overshooting(lambda step, metrics: None, seed=0)
    >>> summary["min_loss_step"] < 120 < summary["first_nonfinite_step"]
    True
    """
    return run_scenario("overshooting", log, seed=seed, should_stop=should_stop)


def overfitting(log: LogFn, *, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """A wide MLP memorizes 100 partly mislabelled samples: train loss goes to ~0 while val loss rises.

    Examples
    --------
    >>> summary = overfitting(lambda step, metrics: None, seed=0)
    >>> best_val_loss = min(val_loss for _, val_loss, _ in summary["val_history"])
    >>> summary["final_loss"] < 0.01 and summary["final_val_loss"] > 1.3 * best_val_loss
    True
    """
    return run_scenario("overfitting", log, seed=seed, should_stop=should_stop)


def not_learning(log: LogFn, *, seed: int = 0, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """SGD with a learning rate far too small: the loss stays at its start (ln 10 = 2.30) and accuracy at chance.

    Examples
    --------
    >>> summary = not_learning(lambda step, metrics: None, seed=0)
    >>> summary["final_loss"] > 0.97 * math.log(10) and summary["final_val_acc"] < 0.2
    True
    """
    return run_scenario("not_learning", log, seed=seed, should_stop=should_stop)


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "healthy": healthy,
    "diverging": diverging,
    "overshooting": overshooting,
    "overfitting": overfitting,
    "not_learning": not_learning,
}
"""Scenario name to its training function ``(log, *, seed) -> summary``."""


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and print their loss curves (every ``--every``-th step)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args(argv)

    summaries = {name: fn(lambda step, metrics: None, seed=args.seed) for name, fn in SCENARIOS.items()}
    longest = max(s["steps"] for s in summaries.values())
    vals = {name: {st: (vl, va) for st, vl, va in s["val_history"]} for name, s in summaries.items()}
    header = f"{'step':>5} " + " ".join(f"{n + ' loss':>16} {n[:4] + ' val':>10}" for n in summaries)
    print(header)
    for step in sorted({*range(0, longest, args.every), *(s["steps"] - 1 for s in summaries.values())}):
        cells = []
        for name, s in summaries.items():
            loss = _fmt(s["losses"][step]) if step < s["steps"] else ""
            val = _fmt(vals[name][step][0]) if step in vals[name] else ""
            cells.append(f"{loss:>16} {val:>10}")
        print(f"{step:>5} " + " ".join(cells))
    print()
    for name, s in summaries.items():
        print(
            f"{name:12} steps={s['steps']:4d} first_nonfinite={s['first_nonfinite_step']} "
            f"min_loss_step={s['min_loss_step']} final_loss={_fmt(s['final_loss'])} "
            f"final_val_loss={_fmt(s['final_val_loss'])} final_val_acc={_fmt(s['final_val_acc'])} "
            f"best_val_loss_step={s['best_val_loss_step']} wall={s['wall_time']:.2f}s"
        )


if __name__ == "__main__":
    main()
