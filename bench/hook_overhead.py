"""Hook overhead: per-step time of a small MLP on CPU (or a small transformer on a GPU) with and without ``run.watch``.

Trains the same model (by default an MLP 784-256-256-10, ReLU, Adam, batch 128,
one torch thread, on the CPU; ``--model transformer --device cuda``: six
pre-norm transformer layers of width 512 over 128 tokens, on a GPU)
on random data in four ways, side by side in one process, in blocks of
``--steps`` steps taken in rotating order, so drift in the machine's load
hits all of them alike:

- ``plain``: no runwatch at all;
- ``log``: ``run = runwatch.client.init(...)`` and ``run.log({"loss", "lr"})``
  every step (system metrics and step timing on, spool on: the defaults);
- ``watch10``: the same plus ``run.watch(model, every=10)``;
- ``watch1``: the same plus ``run.watch(model, every=1)``.

The runs stream to a real ``runwatch serve`` started in a subprocess (it
shares the machine, as it would on one box), unless ``--no-server`` (then
events wait in memory: only the client's hot path is measured).

    python bench/hook_overhead.py --steps 100 --repeats 40
    python bench/hook_overhead.py --model transformer --device cuda --batch 32 --no-server

(The watched variants' optimizer hook is global, so every variant's optimizer
step also calls it and returns at once: a microsecond or two, which slightly
understates the overhead.) Prints, for each variant, the median per-step
time over the blocks (wall clock, with its min-max spread, and CPU time of
the training thread, which a busy machine disturbs less), and the added time against ``log`` (the hooks
alone) and against ``plain`` (everything runwatch adds).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

VARIANTS = ("plain", "log", "watch10", "watch1")


MODELS = ("mlp", "transformer")
#: The transformer variant: a GPT-sized block stack (6 layers of width 512, 8 heads) over 128-token sequences.
VOCAB, SEQ, WIDTH, LAYERS = 8192, 128, 512, 6


class TokenModel(nn.Module):
    """Embedding, pre-norm transformer encoder layers and a vocabulary head: the shape of a small language model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 8, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(tokens))).flatten(0, 1)


def build(seed: int, kind: str = "mlp", device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    if kind == "transformer":
        model = TokenModel()
    else:
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    model = model.to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def make_data(kind: str, batch: int, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """16 random batches (inputs, targets) on ``device``; token targets are flattened like the model's logits."""
    gen = torch.Generator().manual_seed(0)
    if kind == "transformer":
        xs = [torch.randint(0, VOCAB, (batch, SEQ), generator=gen) for _ in range(16)]
        ys = [torch.randint(0, VOCAB, (batch * SEQ,), generator=gen) for _ in range(16)]
    else:
        xs = [torch.randn(batch, 784, generator=gen) for _ in range(16)]
        ys = [torch.randint(0, 10, (batch,), generator=gen) for _ in range(16)]
    return [x.to(device) for x in xs], [y.to(device) for y in ys]


class Variant:
    """One training setup; :meth:`steps` trains it for a block of steps and returns (wall, thread CPU) seconds."""

    def __init__(self, name: str, data, target: str | None, spool: str, kind: str = "mlp", device: str = "cpu") -> None:
        import runwatch.client as rw

        self.name = name
        self.model, self.opt = build(0, kind, device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.data = data
        self.step = 0
        self.run = None
        if name != "plain":
            self.run = rw.init(
                project="bench-hooks",
                config={"variant": name},
                model=self.model,
                target=target or "127.0.0.1:1",
                spool_dir=spool if target else False,
                flush_on_exit=False,
                max_queue=1_000_000,
            )
            if name.startswith("watch"):
                self.run.watch(self.model, every=int(name[len("watch") :]))

    def steps(self, n: int) -> tuple[float, float]:
        xs, ys = self.data
        model, opt, loss_fn, run = self.model, self.opt, self.loss_fn, self.run
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(n):
            i = self.step
            x, y = xs[i % len(xs)], ys[i % len(ys)]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if run is not None:
                run.log({"loss": loss.item(), "lr": 1e-3}, step=i)
            else:
                loss.item()
            self.step += 1
        return time.perf_counter() - t0, time.thread_time() - c0

    def close(self, target: str | None) -> None:
        if self.run is not None:
            self.run.finish(timeout=10 if target else 0)


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "runwatch")
    proc = subprocess.Popen(
        [exe, "serve", "--port", "0", "--data-dir", data_dir, "--log-level", "WARNING"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"serving on (\S+)", line or "")
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("runwatch serve did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=40, help="timed blocks per variant")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--no-server", action="store_true", help="measure the client alone (events are dropped)")
    parser.add_argument("--model", choices=MODELS, default="mlp",
                        help=f"mlp: 784-256-256-10; transformer: {LAYERS} layers of width {WIDTH} over {SEQ} tokens")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (one torch CPU thread either way)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    data = make_data(args.model, args.batch, args.device)
    work = tempfile.mkdtemp(prefix="rw-bench-")
    proc, target = (None, None) if args.no_server else start_server(os.path.join(work, "data"))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}  # per-step seconds of each timed block
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        variants = [Variant(v, data, target, os.path.join(work, "spool"), args.model, args.device) for v in VARIANTS]
        for v in variants:
            v.steps(args.warmup)
        # Blocks of the four variants, in rotating order, so the machine's load hits them alike.
        for r in range(args.repeats):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                wall, thread_cpu = v.steps(args.steps)
                times[v.name].append(wall / args.steps)
                cpu[v.name].append(thread_cpu / args.steps)
        for v in variants:
            v.close(target)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)

    med = {v: statistics.median(ts) for v, ts in times.items()}
    mcpu = {v: statistics.median(ts) for v, ts in cpu.items()}
    shape = "MLP 784-256-256-10" if args.model == "mlp" else f"transformer {LAYERS}x{WIDTH} over {SEQ} tokens"
    device = args.device if args.device == "cpu" else f"{args.device} ({torch.cuda.get_device_name(args.device)})"
    print(
        f"{shape} on {device}, batch {args.batch}, 1 torch thread, {args.repeats} blocks of {args.steps} steps per variant, "
        f"{'real server on loopback' if target else 'no server'}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'variant':9} {'wall ms/step':>12} {'min-max':>13} {'vs log':>7} {'vs plain':>8}"
        f" | {'train-thread CPU ms/step':>24} {'vs log':>7} {'vs plain':>8}"
    )

    def pct(a: float, b: float) -> str:
        return f"{(a / b - 1) * 100:+.1f}%"

    for v in VARIANTS:
        lo, hi = min(times[v]) * 1e3, max(times[v]) * 1e3
        print(
            f"{v:9} {med[v] * 1e3:12.3f} {lo:6.3f}-{hi:<6.3f} {'' if v in ('plain', 'log') else pct(med[v], med['log']):>7}"
            f" {'' if v == 'plain' else pct(med[v], med['plain']):>8}"
            f" | {mcpu[v] * 1e3:24.3f} {'' if v in ('plain', 'log') else pct(mcpu[v], mcpu['log']):>7}"
            f" {'' if v == 'plain' else pct(mcpu[v], mcpu['plain']):>8}"
        )

if __name__ == "__main__":
    main()
