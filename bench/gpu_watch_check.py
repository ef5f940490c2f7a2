"""``run.watch`` on a GPU: its statistics against torch's own on the device, and where a collecting step's time goes.

Needs a CUDA device (the project never does; run it where one is lent)::

    python bench/gpu_watch_check.py            # then bench/hook_overhead.py --model transformer --device cuda

1. **Correctness.** An MLP with ReLU and Tanh layers and a transformer block
   train one step on the GPU under a :class:`~runwatch.client.torch_watch.ModelWatcher`;
   every ``act/*`` statistic, the global and per-layer gradient norms are
   compared with values computed directly from the same tensors (captured by
   separate forward hooks) in float64. Prints the largest relative error.
2. **Cost.** The transformer of ``hook_overhead.py`` (6 layers of width 512, 128 tokens, batch 32):
   forward, backward, ``stats()`` and optimizer time of plain and collecting
   steps (synchronised per phase, medians of 30), and the kernel launches of each.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hook_overhead as H

from runwatch.client.torch_watch import ModelWatcher

DEV = "cuda"


def _check_statistics() -> float:
    """Largest relative error of the watcher's statistics against direct float64 computations on the device."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10)).to(DEV)
    captured: dict[str, torch.Tensor] = {}
    for name in ("1", "3"):  # the activations' outputs, filed under the layer before them
        model[int(name)].register_forward_hook(lambda m, a, out, n=str(int(name) - 1): captured.__setitem__(n, out.detach()))
    watcher = ModelWatcher(model)
    x, y = torch.randn(256, 64, device=DEV) * 3, torch.randint(0, 10, (256,), device=DEV)
    nn.functional.cross_entropy(model(x), y).backward()
    stats = watcher.stats()
    worst = 0.0

    def compare(key: str, want: float) -> None:
        nonlocal worst
        got = stats[key]
        err = abs(got - want) / max(abs(want), 1e-12)
        worst = max(worst, err)
        if err > 1e-4:
            print(f"  MISMATCH {key}: watcher {got!r}, torch {want!r}")

    for layer, h in captured.items():
        h = h.double()
        compare(f"act/mean/{layer}", h.mean().item())
        compare(f"act/std/{layer}", h.std(correction=0).item())
        compare(f"act/zero_frac/{layer}", (h == 0).double().mean().item())
    compare("act/sat_frac/2", (captured["2"].double().abs() >= 1 - 0.01).double().mean().item())
    grads = [p.grad.double() for p in model.parameters()]
    compare("grad_norm", math.sqrt(sum(float(g.square().sum()) for g in grads)))
    compare("grad_norm/0", math.sqrt(sum(float(p.grad.double().square().sum()) for p in model[0].parameters())))
    watcher.close()
    return worst


def _timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t) * 1e3


def _cost() -> None:
    model, opt = H.build(0, "transformer", DEV)
    xs, ys = H.make_data("transformer", 32, DEV)
    loss_fn = nn.CrossEntropyLoss()
    watcher = ModelWatcher(model, every=1)

    def step(i: int, watch: bool) -> tuple[float, ...]:
        opt.zero_grad(set_to_none=True)
        watcher._attach() if watch else watcher._detach()
        loss, t_fwd = _timed(lambda: loss_fn(model(xs[i % 16]), ys[i % 16]))
        _, t_bwd = _timed(loss.backward)
        _, t_stats = _timed(watcher.stats) if watch else (None, 0.0)
        _, t_opt = _timed(opt.step)
        return t_fwd, t_bwd, t_stats, t_opt

    for i in range(20):
        step(i, i % 2 == 0)
    for watch in (False, True):
        rows = [step(i, watch) for i in range(30)]
        med = [sorted(col)[len(col) // 2] for col in zip(*rows)]
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(0, watch)
        launches = sum(e.count for e in prof.key_averages() if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
        print(f"{'collecting' if watch else 'plain':10} step: forward {med[0]:.2f} ms, backward {med[1]:.2f}, "
              f"stats() {med[2]:.2f}, optimizer {med[3]:.2f}; {launches} kernel launches")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    worst = _check_statistics()
    print(f"statistics vs torch on the device: largest relative error {worst:.2e} ({'ok' if worst <= 1e-4 else 'FAILED'})")
    _cost()
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
