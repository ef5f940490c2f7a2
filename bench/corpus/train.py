"""Train one corpus run on CPU and record what the SDK would send, step by step.

Every step logs ``loss``, ``lr``, ``grad_norm``, ``step_time`` and
``data_time``; every ``watch_every`` steps the per-layer statistics of
:class:`~runwatch.client.torch_watch.ModelWatcher` (``grad_norm/<layer>``,
``weight_norm/``, ``update_ratio/``, ``act/mean|std|zero_frac|sat_frac/``);
every ``val_every`` steps ``val/loss`` (and ``val/acc`` for classification).
These are exactly the dicts a training loop passes to ``Run.log(metrics,
step)``.

On the same collecting steps the run also records, under ``dbg/``, the
tensor reductions SageMaker Debugger's hook would save for its built-in rules
(mean |gradient| per parameter tensor, per-unit ReLU activity, per-unit tanh /
sigmoid input saturation, variance of activation inputs). They are not part
of the SDK's telemetry: the harness strips them before runwatch sees a run
and gives them only to the SageMaker baseline.

Wall times are real (``perf_counter``) plus virtual pauses: a healthy pause
(checkpoint upload, long evaluation) or a stall adds its seconds to the clock
instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.corpus.specs import RunSpec
from bench.corpus.tasks import TASKS, build, initialise, sequence_validation, sequences, tabular
from runwatch.client.torch_watch import ModelWatcher

Event = tuple[int, float, dict[str, float]]

# SageMaker SaturatedActivation defaults: input bounds of tanh / sigmoid.
SAT_BOUNDS = {"tanh": (-9.4999, 9.4999), "sigmoid": (-23.0, 16.99999)}
INACTIVITY = 0.01  # threshold_inactivity = 1 %


class DebuggerTensors:
    """SageMaker-Debugger-style reductions of activation inputs, per activation module."""

    def __init__(self, model: nn.Module) -> None:
        self.stats: dict[str, float] = {}
        self.on = False
        self.handles = []
        for name, mod in model.named_modules():
            kind = "relu" if isinstance(mod, nn.ReLU) else "tanh" if isinstance(mod, nn.Tanh) else (
                "sigmoid" if isinstance(mod, nn.Sigmoid) else None
            )
            if kind:
                self.handles.append(mod.register_forward_hook(self._hook(name, kind)))

    def _hook(self, name: str, kind: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if not self.on or not mod.training:
                return
            x = args[0].detach()
            channels_first = x.dim() == 4 or getattr(mod, "channels_first", False)  # Conv2d; the TCN's Conv1d
            units = x.transpose(0, 1).reshape(x.shape[1], -1) if channels_first else x.reshape(-1, x.shape[-1]).T
            if kind == "relu":
                active = (units > 0).float().mean(dim=1)
                self.stats[f"dbg/relu_dead_pct/{name}"] = 100.0 * float((active < INACTIVITY).float().mean())
            else:
                lo, hi = SAT_BOUNDS[kind]
                active = ((units > lo) & (units < hi)).float().mean(dim=1)
                self.stats[f"dbg/sat_pct/{name}"] = 100.0 * float((active < INACTIVITY).float().mean())
            self.stats[f"dbg/act_in_var/{name}"] = float(x.float().var())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    lr, wd = spec.lr_at(0), spec.weight_decay
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    momentum = spec.params.get("momentum", 0.9) if spec.optimizer == "sgd_momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)


def _unstable_ce(logits: torch.Tensor, y: torch.Tensor, tau: float, cause: str) -> torch.Tensor:
    """Cross-entropy written the naive way, with a temperature bug (logits / tau)."""
    z = logits / tau
    if cause == "overflow":  # softmax without subtracting the max: exp overflows to inf, inf/inf = NaN
        e = torch.exp(z)
        p = e / e.sum(dim=-1, keepdim=True)
        return -torch.log(p.gather(-1, y[..., None])).mean()
    # log_zero: a stable softmax, but log() of probabilities that underflow to exactly 0
    p = torch.softmax(z, dim=-1)
    return -torch.log(p.gather(-1, y[..., None])).mean()


class _Data:
    """Training batches of a run, with the run's data faults applied."""

    def __init__(self, spec: RunSpec, gen: torch.Generator) -> None:
        self.spec, self.gen = spec, gen
        self.task = TASKS[spec.dataset]
        if self.task.sequence:
            if spec.train_subset:
                self.x, self.y = sequences(spec.dataset, spec.train_subset, torch.Generator().manual_seed(spec.seed))
            else:
                self.x = self.y = None
            self.xv, self.yv = sequence_validation(spec.dataset)
        else:
            x, y, self.xv, self.yv = tabular(spec.dataset)
            if spec.train_subset:
                idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(spec.seed))[: spec.train_subset]
                x, y = x[idx], y[idx]
            if spec.label_noise and not self.task.regression:
                y = y.clone()
                g = torch.Generator().manual_seed(spec.seed + 1)
                flip = torch.randperm(len(y), generator=g)[: round(spec.label_noise * len(y))]
                y[flip] = (y[flip] + torch.randint(1, self.task.n_out, (len(flip),), generator=g)) % self.task.n_out
            self.x, self.y = x, y
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def _next_clean(self) -> tuple[torch.Tensor, torch.Tensor]:
        bs = self.spec.batch_size
        if self.x is None:  # infinite fresh sequence data
            return sequences(self.spec.dataset, bs, self.gen)
        bs = min(bs, len(self.x))
        if self.perm is None or self.pos + bs > len(self.x):
            self.perm, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + bs]
        self.pos += bs
        return self.x[idx], self.y[idx]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._next_clean()
        spec, p, task = self.spec, self.spec.params, self.task
        g = self.gen
        if spec.fault == "data_corruption" and step >= spec.onset:
            n = len(x)
            if spec.cause == "label_noise":
                k = round(p["fraction"] * n)
                idx = torch.randperm(n, generator=g)[:k]
                y = y.clone()
                if task.regression:
                    y[idx] = torch.randn(k, 1, generator=g)
                elif task.sequence:
                    y[idx] = torch.randint(0, task.n_out, y[idx].shape, generator=g)
                else:
                    y[idx] = torch.randint(0, task.n_out, (k,), generator=g)
            elif spec.cause == "feature_noise":
                k = round(p["fraction"] * n)
                idx = torch.randperm(n, generator=g)[:k]
                x = x.clone()
                if task.sequence:
                    lo = 1 if spec.dataset == "copy" else 0
                    x[idx] = torch.randint(lo, task.n_in, x[idx].shape, generator=g)
                else:
                    x[idx] = torch.randn(x[idx].shape, generator=g) * 3.0
            else:
                x = x * p["scale"]
        if spec.fault == "bad_batch" and step == spec.onset:
            if spec.cause == "scale":
                x = x * p["scale"]
            elif spec.cause == "labels":
                y = (y + 1) % task.n_out if not task.regression else -y * 10.0
            else:  # tokens: a batch of garbage sequences with shuffled targets
                x = torch.randint(0, task.n_in, x.shape, generator=g)
                y = torch.randint(0, task.n_out, y.shape, generator=g)
        if spec.fault == "nan" and spec.cause == "nan_input" and step == spec.onset:
            x = x.clone()
            x[0, : max(1, x.shape[1] // 4)] = float("nan")  # a record with missing values
        return x, y


def _loss(spec: RunSpec, out: torch.Tensor, y: torch.Tensor, training: bool) -> torch.Tensor:
    task = TASKS[spec.dataset]
    if task.regression:
        return F.mse_loss(out, y)
    if training and spec.fault == "nan" and spec.cause in ("log_zero", "overflow"):
        return _unstable_ce(out, y, spec.params["tau"], spec.cause)
    if task.sequence:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy(out, y)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(dim=-1) == y).float().mean())


def train_run(
    spec: RunSpec, base_time: float | None = None, build_model: Callable[[], nn.Module] | None = None
) -> tuple[list[Event], dict]:
    """Train ``spec``; return its events ``(step, wall_time, metrics)`` and run facts.

    The facts say whether the run ended normally (``ended``: a ``RunEnd``
    would be sent; False for a run that hangs) and its final status.
    ``build_model`` replaces the spec's model (same seed, data, optimizer and
    steps; the architecture advisor's benchmark retrains suggested genomes
    with it); it is called right after ``torch.manual_seed(spec.seed)``.
    """
    torch.manual_seed(spec.seed)
    task = TASKS[spec.dataset]
    if build_model is None:
        model = build(spec.arch, task, spec.depth, spec.width, spec.activation, spec.dropout,
                      **spec.params.get("arch_options", {}))
    else:
        model = build_model()
    initialise(model, spec.init, spec.init_scale)
    opt = _optimizer(spec, model.parameters())
    gen = torch.Generator().manual_seed(spec.seed)
    data = _Data(spec, gen)
    watcher = ModelWatcher(model, every=spec.watch_every)
    dbg = DebuggerTensors(model)
    named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    events: list[Event] = []
    base = 1.75e9 + spec.index * 86400.0 if base_time is None else base_time
    offset = 0.0
    started = time.perf_counter()
    ended, status, nonfinite_left = True, "completed", None
    try:
        for step in range(spec.steps):
            if spec.fault == "stall" and step == spec.onset:
                if spec.cause == "hang":
                    ended, status = False, "hung"
                    break
                offset += spec.params["gap_s"]
            if step == spec.pause_at:
                offset += spec.pause_s
            t0 = time.perf_counter()
            xb, yb = data.batch(step)
            t1 = time.perf_counter()
            lr = spec.lr_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
            collecting = watcher.collecting
            dbg.on = collecting
            model.train()
            loss = _loss(spec, model(xb), yb, training=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            metrics: dict[str, float] = {"loss": float(loss.item()), "lr": lr}
            metrics.update(watcher.stats())
            if collecting:
                metrics.update(dbg.stats)
                for n, p in named_params:
                    if p.grad is not None:
                        metrics[f"dbg/grad_abs_mean/{n}"] = float(p.grad.abs().mean())
                dbg.stats = {}
            finite = math.isfinite(metrics["loss"])
            if spec.clip:
                nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            opt.step()
            t2 = time.perf_counter()
            metrics["data_time"] = t1 - t0
            metrics["step_time"] = t2 - t0
            if step % spec.val_every == spec.val_every - 1 or step == spec.steps - 1:
                model.eval()
                with torch.no_grad():
                    out = model(data.xv)
                    metrics["val/loss"] = float(_loss(spec, out, data.yv, training=False).item())
                    if not task.regression:
                        metrics["val/acc"] = _accuracy(out, data.yv)
            events.append((step, base + (time.perf_counter() - started) + offset, metrics))
            if not finite:
                if nonfinite_left is None:
                    nonfinite_left = spec.extra_after_nonfinite
                if nonfinite_left <= 0:
                    status = "crashed: non-finite loss"
                    break
                nonfinite_left -= 1
    finally:
        watcher.close()
        dbg.close()
    return events, {"ended": ended, "status": status, "train_seconds": time.perf_counter() - started}


def summarize(events: list[Event]) -> dict[str, float]:
    """A few outcome numbers of a run (used to label and to sanity-check it)."""
    loss = np.array([m.get("loss", np.nan) for _, _, m in events], dtype=np.float64)
    val = np.array([m["val/loss"] for _, _, m in events if "val/loss" in m], dtype=np.float64)
    fin = loss[np.isfinite(loss)]
    k = max(1, min(20, len(fin) // 10))
    return {
        "first_loss": float(fin[:k].mean()) if len(fin) else math.nan,
        "final_loss": float(fin[-k:].mean()) if len(fin) else math.nan,
        "best_val": float(np.nanmin(val)) if len(val) and np.isfinite(val).any() else math.nan,
        "final_val": float(val[-1]) if len(val) else math.nan,
    }
