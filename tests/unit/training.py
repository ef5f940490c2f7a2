"""Real, small PyTorch training and inference runs that emit runwatch telemetry.

The diagnostics are tested on what a training loop actually logs, not on
hand-drawn curves: :func:`train` trains an MLP on scikit-learn's bundled
``load_digits`` (no download) and records, each step, the metrics a real loop
would send:

``loss``, ``grad_norm``, ``grad_norm/<layer>`` (``p.grad.norm()`` per Linear),
``update_ratio/<layer>`` (``||w_after - w_before|| / ||w_before||``),
``act/zero_frac/<layer>`` (ReLU outputs exactly zero, via a forward hook),
``act/sat_frac/<layer>`` (tanh / sigmoid outputs within 0.03 of their bounds,
SageMaker's 0.97 threshold), ``lr``, ``step_time`` (whole step, data wait
included) and ``data_time`` (waiting for the batch), both measured with
:func:`time.perf_counter`, ``cpu_mem`` (process RSS in MiB from
``/proc/self/statm``) and ``val/loss`` every ``val_every`` steps.

Faults are injected the way they happen in practice: a learning rate that is
too high, a bad initialisation, one corrupted batch, a list that keeps tensors
alive, a slow data iterator, and so on.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)  # small nets: threads only add noise and contention on CI

Event = tuple[int, float, dict[str, float]]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc/self/statm``)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except OSError:  # pragma: no cover - non-Linux fallback
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@cache
def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``load_digits`` split 80/20 with a fixed permutation and standardised on train."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    x, y = x[idx].astype(np.float32), y[idx]
    n_tr = int(0.8 * len(x))
    mu, sd = x[:n_tr].mean(0), x[:n_tr].std(0) + 1.0
    x = (x - mu) / sd
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    return xt[:n_tr], yt[:n_tr], xt[n_tr:], yt[n_tr:]


@cache
def diabetes(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``load_diabetes`` (regression), split 80/20, inputs and target standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    x, y = x[idx].astype(np.float32), y[idx].astype(np.float32)
    n_tr = int(0.8 * len(x))
    x = (x - x[:n_tr].mean(0)) / x[:n_tr].std(0)
    y = (y - y[:n_tr].mean()) / y[:n_tr].std()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    return xt[:n_tr], yt[:n_tr], xt[n_tr:], yt[n_tr:]


class MLP(nn.Sequential):
    """``fc1 -> act -> fc2 -> act -> ... -> fcN``; layers named ``fc<i>``."""

    def __init__(self, sizes: Sequence[int], activation: str = "relu") -> None:
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(len(sizes) - 1):
            mods[f"fc{i + 1}"] = nn.Linear(sizes[i], sizes[i + 1])
            if i < len(sizes) - 2:
                mods[f"act{i + 1}"] = acts[activation]()
        super().__init__(mods)

    @property
    def linears(self) -> list[tuple[str, nn.Linear]]:
        return [(n, m) for n, m in self.named_children() if isinstance(m, nn.Linear)]


@dataclass
class RunConfig:
    """One training run; defaults are the healthy baseline (Adam 1e-3, digits)."""

    steps: int = 300
    batch_size: int = 128
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    schedule: Callable[[int], float] | None = None  # step -> lr multiplier
    val_every: int = 10
    seed: int = 0
    dataset: str = "digits"  # or "diabetes" (regression, MSE)
    train_subset: int | None = None
    init: Callable[[MLP], None] | None = None
    frozen: tuple[str, ...] = ()  # layers left out of the optimizer (a common wiring bug)
    corrupt_step: int | None = None  # one bad batch at this step
    corrupt: str = "scale"  # "scale" (x * 50) or "labels" (shuffled)
    leak: bool = False  # keep a copy of the weights every step (a real-world leak)
    data_sleep_s: float = 0.0  # slow data iterator
    stop_on_nonfinite: bool = True
    extra_after_nonfinite: int = 0


@dataclass
class Run:
    config: RunConfig
    events: list[Event] = field(default_factory=list)

    @property
    def first_nonfinite_step(self) -> int | None:
        for step, _, m in self.events:
            if not math.isfinite(m.get("loss", 0.0)):
                return step
        return None

    def series(self, metric: str) -> list[tuple[int, float]]:
        return [(s, m[metric]) for s, _, m in self.events if metric in m]


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def cosine_restarts(period: int) -> Callable[[int], float]:
    """SGDR: cosine decay restarted every ``period`` steps."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * (step % period) / period))


def _batches(x: torch.Tensor, y: torch.Tensor, bs: int, gen: torch.Generator, sleep_s: float) -> Iterator:
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - bs + 1 if len(x) >= bs else 1, bs):
            idx = perm[i : i + bs]
            if sleep_s:
                time.sleep(sleep_s)  # e.g. decoding images on the main thread
            yield x[idx], y[idx]


def train(cfg: RunConfig) -> Run:
    """Train an MLP on digits as configured and record its telemetry."""
    torch.manual_seed(cfg.seed)
    xtr, ytr, xva, yva = (diabetes if cfg.dataset == "diabetes" else digits)(0)
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    model = MLP((xtr.shape[1], *cfg.hidden, 10 if cfg.dataset == "digits" else 1), cfg.activation)
    if cfg.init is not None:
        with torch.no_grad():
            cfg.init(model)
    linears = model.linears
    params = [p for name, lin in linears if name not in cfg.frozen for p in lin.parameters()]
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.schedule) if cfg.schedule else None
    loss_fn: nn.Module = nn.CrossEntropyLoss() if cfg.dataset == "digits" else nn.MSELoss()

    act_stats: dict[str, float] = {}
    recording = [True]

    def hook_for(layer: str, kind: str) -> Callable:
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            if not recording[0]:
                return
            with torch.no_grad():
                if kind == "relu":
                    act_stats[f"act/zero_frac/{layer}"] = (out == 0).float().mean().item()
                elif kind == "tanh":
                    act_stats[f"act/sat_frac/{layer}"] = (out.abs() > 0.97).float().mean().item()
                else:
                    act_stats[f"act/sat_frac/{layer}"] = ((out < 0.03) | (out > 0.97)).float().mean().item()

        return hook

    for i in range(len(cfg.hidden)):
        getattr(model, f"act{i + 1}").register_forward_hook(hook_for(f"fc{i + 1}", cfg.activation))

    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(xtr, ytr, cfg.batch_size, gen, cfg.data_sleep_s)
    leaked: list[dict[str, torch.Tensor]] = []
    run = Run(cfg)
    nonfinite_left: int | None = None
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        xb, yb = next(batches)
        t_data = time.perf_counter() - t0
        if step == cfg.corrupt_step:
            if cfg.corrupt == "scale":
                xb = xb * 50.0
            else:
                yb = yb[torch.randperm(len(yb), generator=gen)].roll(1)
        model.train()
        recording[0] = True
        out = model(xb)
        loss = loss_fn(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics: dict[str, float] = {"loss": loss.item()}
        sq_total = 0.0
        for name, lin in linears:
            sq = sum(float(p.grad.norm()) ** 2 for p in lin.parameters() if p.grad is not None)
            sq_total += sq
            metrics[f"grad_norm/{name}"] = math.sqrt(sq)
        metrics["grad_norm"] = math.sqrt(sq_total)
        before = [lin.weight.detach().clone() for _, lin in linears]
        opt.step()
        for (name, lin), w0 in zip(linears, before):
            denom = float(w0.norm())
            metrics[f"update_ratio/{name}"] = float((lin.weight.detach() - w0).norm()) / denom if denom else 0.0
        metrics["lr"] = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        if cfg.leak:
            leaked.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        metrics.update(act_stats)
        if cfg.val_every and step % cfg.val_every == cfg.val_every - 1:
            recording[0] = False
            model.eval()
            with torch.no_grad():
                metrics["val/loss"] = loss_fn(model(xva), yva).item()
        metrics["data_time"] = t_data
        metrics["step_time"] = time.perf_counter() - t0
        metrics["cpu_mem"] = rss_mib()
        run.events.append((step, time.time(), metrics))
        if not math.isfinite(metrics["loss"]) and cfg.stop_on_nonfinite:
            if nonfinite_left is None:
                nonfinite_left = cfg.extra_after_nonfinite
            if nonfinite_left <= 0:
                break
            nonfinite_left -= 1
    del leaked
    return run


def inference_requests(
    n: int = 600,
    *,
    seed: int = 0,
    burst: tuple[int, int] | None = None,
    burst_batch: int = 20000,
    malformed: tuple[int, int] | None = None,
    malformed_frac: float = 0.3,
    window: int = 50,
    leak: bool = False,
) -> list[Event]:
    """Serve a trained digits MLP request by request; emit deployment telemetry.

    Each request is real inference timed with ``perf_counter``
    (``latency_ms``). Requests in ``burst`` carry a ``burst_batch``-row batch
    (a client suddenly sending huge batches); requests in ``malformed`` are,
    with probability ``malformed_frac``, the wrong shape and make the model
    raise. Every ``window`` requests the service reports ``error_rate`` over
    that window. With ``leak`` each request keeps a 96x96 state it never
    evicts and reduces over all of them (a cache scanned per request), so
    requests slow down steadily (~36 MB scanned per request at the end). At
    64x64 the slowdown was too small to tell from a busy CPU: with another
    pytest worker on the machine's 2 cores the drift went unflagged in 3 of 3
    runs (a spike at request ~945 instead), while the test passed alone.
    """
    torch.manual_seed(seed)
    xtr, ytr, xva, _ = digits(0)
    model = MLP((64, 64, 64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    model.eval()
    rng = np.random.default_rng(seed)
    big = xva.repeat(burst_batch // len(xva) + 1, 1)[:burst_batch]
    events: list[Event] = []
    errors = 0
    kept: list[torch.Tensor] = []
    for i in range(n):
        if burst and burst[0] <= i < burst[1]:
            x = big
        else:
            j = int(rng.integers(len(xva)))
            x = xva[j : j + 1]
        if malformed and malformed[0] <= i < malformed[1] and rng.random() < malformed_frac:
            x = x[:, :50]  # a client dropped features
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                model(x).argmax(1)
                if leak:
                    kept.append(torch.full((96, 96), float(i)))
                    torch.cat(kept).sum()
        except RuntimeError:
            errors += 1
        metrics = {"latency_ms": (time.perf_counter() - t0) * 1e3}
        if i % window == window - 1:
            metrics["error_rate"] = errors / window
            errors = 0
        events.append((i, time.time(), metrics))
    return events
