"""Datasets and models of the benchmark corpus: small, real, CPU-trainable, no download.

Datasets ship with scikit-learn (``load_digits``, ``load_wine``,
``load_breast_cancer``, ``load_diabetes``; BSD-3-Clause, data from the UCI
repository) or are generated exactly from a seed (``copy``: reproduce the
input token sequence delayed by ``COPY_DELAY`` positions; ``parity``: the
running parity of a bit string). Models are MLPs of several depths and
widths, a small CNN (digits as 8x8 images), a GRU or LSTM and a tiny
transformer encoder (sequence tasks).

The *novel* domain (``--domain novel``; test data for detectors developed on
the default corpus) has datasets and architecture families the default
corpus never uses: scikit-learn's generators ``make_moons`` (lifted to 12
features), ``make_friedman1`` (regression) and ``make_classification``
(``hypercube``: 4 classes), each drawn once (3000 samples) with a fixed seed; the exact
sequence task ``running_max`` (the running maximum of 12 tokens of a
10-symbol vocabulary); residual MLPs with LayerNorm (``resmlp``) and causal
dilated 1-D convolutions (``tcn``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

TABULAR = ("digits", "wine", "breast_cancer", "diabetes")
SEQUENCE = ("copy", "parity")
SEQ_LEN = 12
COPY_VOCAB = 8  # tokens 1..8; 0 is the blank the first COPY_DELAY targets ask for
COPY_DELAY = 3

# the novel domain: datasets and architecture families the default corpus never uses
NOVEL_TABULAR = ("moons", "friedman", "hypercube")
NOVEL_SEQUENCE = ("running_max",)
NOVEL_ARCHS = ("resmlp", "tcn")
RUNMAX_VOCAB = 10  # tokens 0..9
GENERATED_N = 3000  # samples drawn from each scikit-learn generator (fewer: healthy runs overfit)
FRIEDMAN_NOISE = 0.5


@dataclass(frozen=True)
class Task:
    """What a dataset looks like to a model."""

    name: str
    n_in: int  # features (tabular) or vocabulary size (sequence)
    n_out: int  # classes; 1 for regression
    regression: bool
    sequence: bool


TASKS = {
    "digits": Task("digits", 64, 10, False, False),
    "wine": Task("wine", 13, 3, False, False),
    "breast_cancer": Task("breast_cancer", 30, 2, False, False),
    "diabetes": Task("diabetes", 10, 1, True, False),
    "copy": Task("copy", COPY_VOCAB + 1, COPY_VOCAB + 1, False, True),
    "parity": Task("parity", 2, 2, False, True),
    "moons": Task("moons", 12, 2, False, False),
    "friedman": Task("friedman", 10, 1, True, False),
    "hypercube": Task("hypercube", 16, 4, False, False),
    "running_max": Task("running_max", RUNMAX_VOCAB, RUNMAX_VOCAB, False, True),
}


def _generated(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A novel-domain tabular dataset, drawn once from a fixed seed (scikit-learn's generators)."""
    from sklearn import datasets

    if name == "moons":
        # two interleaved half circles with noise, lifted to 12 features: 6 fixed random linear
        # mixtures of the two coordinates, plus 6 pure-noise features
        x2, y = datasets.make_moons(GENERATED_N, noise=0.2, random_state=0)
        g = np.random.default_rng(1)
        x = np.concatenate([x2 @ g.normal(size=(2, 6)) + 0.1 * g.normal(size=(GENERATED_N, 6)),
                            g.normal(size=(GENERATED_N, 6))], axis=1)
        return x, y
    if name == "friedman":
        return datasets.make_friedman1(GENERATED_N, n_features=10, noise=FRIEDMAN_NOISE, random_state=0)
    if name == "hypercube":
        return datasets.make_classification(
            GENERATED_N, n_features=16, n_informative=8, n_redundant=4, n_classes=4, n_clusters_per_class=2,
            class_sep=1.5, flip_y=0.01, random_state=0,
        )
    raise ValueError(f"unknown dataset {name!r}")


@cache
def tabular(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed 75/25 split (permutation seed 0), features standardised on the train part."""
    from sklearn import datasets

    if name in NOVEL_TABULAR:
        x, y = _generated(name)
    else:
        loader = {
            "digits": datasets.load_digits,
            "wine": datasets.load_wine,
            "breast_cancer": datasets.load_breast_cancer,
            "diabetes": datasets.load_diabetes,
        }[name]
        x, y = loader(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(x))
    x = x[idx].astype(np.float32)
    n_tr = int(0.75 * len(x))
    mu, sd = x[:n_tr].mean(0), x[:n_tr].std(0)
    sd[sd == 0] = 1.0  # digits' always-blank border pixels
    x = (x - mu) / sd
    if TASKS[name].regression:
        yt = y[idx].astype(np.float32)
        yt = (yt - yt[:n_tr].mean()) / yt[:n_tr].std()
        ys = torch.from_numpy(yt)[:, None]
    else:
        ys = torch.from_numpy(y[idx]).long()
    xs = torch.from_numpy(x)
    return xs[:n_tr], ys[:n_tr], xs[n_tr:], ys[n_tr:]


def sequences(name: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` exact examples of a sequence task: (tokens [n, L], targets [n, L])."""
    if name == "copy":
        x = torch.randint(1, COPY_VOCAB + 1, (n, SEQ_LEN), generator=gen)
        y = torch.zeros_like(x)
        y[:, COPY_DELAY:] = x[:, :-COPY_DELAY]
        return x, y
    if name == "running_max":
        x = torch.randint(0, RUNMAX_VOCAB, (n, SEQ_LEN), generator=gen)
        return x, torch.cummax(x, dim=1).values
    x = torch.randint(0, 2, (n, SEQ_LEN), generator=gen)
    return x, torch.cumsum(x, dim=1) % 2


@cache
def sequence_validation(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation set of a sequence task (512 examples, seed 12345)."""
    return sequences(name, 512, torch.Generator().manual_seed(12345))


_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def mlp(n_in: int, n_out: int, depth: int, width: int, activation: str, dropout: float) -> nn.Sequential:
    """``fc1 -> act1 [-> drop1] -> ... -> fc<depth+1>``; ``depth`` hidden layers."""
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    prev = n_in
    for i in range(1, depth + 1):
        mods[f"fc{i}"] = nn.Linear(prev, width)
        mods[f"act{i}"] = _ACTS[activation]()
        if dropout:
            mods[f"drop{i}"] = nn.Dropout(dropout)
        prev = width
    mods[f"fc{depth + 1}"] = nn.Linear(prev, n_out)
    return nn.Sequential(mods)


def cnn(n_out: int, width: int, activation: str, dropout: float) -> nn.Sequential:
    """Two 3x3 conv layers and a linear head over digits' 8x8 images."""
    c = max(4, width // 8)
    mods: OrderedDict[str, nn.Module] = OrderedDict(
        image=nn.Unflatten(1, (1, 8, 8)),
        conv1=nn.Conv2d(1, c, 3, padding=1),
        act1=_ACTS[activation](),
        conv2=nn.Conv2d(c, 2 * c, 3, padding=1),
        act2=_ACTS[activation](),
        pool=nn.MaxPool2d(2),
        flat=nn.Flatten(),
    )
    if dropout:
        mods["drop"] = nn.Dropout(dropout)
    mods["fc"] = nn.Linear(2 * c * 16, n_out)
    return nn.Sequential(mods)


class RecurrentTagger(nn.Module):
    """Embedding -> GRU/LSTM -> per-position linear head."""

    def __init__(self, kind: str, vocab: int, n_out: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        rnn = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = rnn(16, width, num_layers=depth, batch_first=True, dropout=dropout if depth > 1 else 0.0)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0])


class TinyTransformer(nn.Module):
    """Token + learned position embeddings -> pre-norm transformer encoder -> per-position head."""

    def __init__(self, vocab: int, n_out: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        d = max(16, min(width, 64))
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(SEQ_LEN, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, 2, 2 * d, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x) + self.pos))


class ResBlock(nn.Module):
    """Pre-norm residual MLP block: ``LayerNorm -> fc1 (width -> 2 width) -> act [-> drop] -> fc2``."""

    def __init__(self, width: int, activation: str, dropout: float, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = _ACTS[activation]()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class ResMLP(nn.Module):
    """``inp -> depth x (h + block(h)) -> LayerNorm -> head``.

    ``residual=False`` / ``norm=False`` switch the skip connections / LayerNorms off (the
    vanishing-gradient fault: a plain deep stack).
    """

    def __init__(self, n_in: int, n_out: int, depth: int, width: int, activation: str, dropout: float,
                 residual: bool = True, norm: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(ResBlock(width, activation, dropout, norm) for _ in range(depth))
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h) if self.residual else block(h)
        return self.head(self.norm(h))


class TCN(nn.Module):
    """Temporal convolutional tagger: embedding -> ``depth`` causal dilated 1-D convolutions
    (kernel 3, dilation 1, 2, 4, 8, ...; left padding only, residual where the widths match)
    -> per-position linear head. Three layers see 15 positions back, more than ``SEQ_LEN``."""

    KERNEL = 3

    def __init__(self, vocab: int, n_out: int, width: int, depth: int, activation: str, dropout: float,
                 residual: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.depth, self.residual = depth, residual
        prev = 16
        for i in range(1, depth + 1):
            dilation = 2 ** (i - 1)
            self.add_module(f"pad{i}", nn.ConstantPad1d(((self.KERNEL - 1) * dilation, 0), 0.0))
            self.add_module(f"conv{i}", nn.Conv1d(prev, width, self.KERNEL, dilation=dilation))
            act = _ACTS[activation]()
            act.channels_first = True  # its input is [batch, channels, time] (DebuggerTensors reads this)
            self.add_module(f"act{i}", act)
            if dropout:
                self.add_module(f"drop{i}", nn.Dropout(dropout))
            prev = width
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).transpose(1, 2)  # [batch, channels, time]
        for i in range(1, self.depth + 1):
            y = getattr(self, f"act{i}")(getattr(self, f"conv{i}")(getattr(self, f"pad{i}")(h)))
            if hasattr(self, f"drop{i}"):
                y = getattr(self, f"drop{i}")(y)
            h = h + y if self.residual and y.shape == h.shape else y
        return self.head(h.transpose(1, 2))


def build(arch: str, task: Task, depth: int, width: int, activation: str, dropout: float, **options) -> nn.Module:
    """The model of a run (freshly initialised from torch's current RNG state).

    ``options`` go to the novel families (``residual``, ``norm``: see :class:`ResMLP`).
    """
    if arch == "mlp":
        return mlp(task.n_in, task.n_out, depth, width, activation, dropout)
    if arch == "cnn":
        return cnn(task.n_out, width, activation, dropout)
    if arch in ("gru", "lstm"):
        return RecurrentTagger(arch, task.n_in, task.n_out, width, depth, dropout)
    if arch == "transformer":
        return TinyTransformer(task.n_in, task.n_out, width, depth, dropout)
    if arch == "resmlp":
        return ResMLP(task.n_in, task.n_out, depth, width, activation, dropout, **options)
    if arch == "tcn":
        return TCN(task.n_in, task.n_out, width, depth, activation, dropout, **options)
    raise ValueError(f"unknown arch {arch!r}")


def initialise(model: nn.Module, init: str, scale: float) -> None:
    """Apply a (possibly bad) initialisation: ``small`` (N(0, scale) weights), ``large``
    (default weights x scale) or ``neg_bias`` (hidden biases set to -scale)."""
    if init == "default":
        return
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        for i, m in enumerate(linears):
            last = i == len(linears) - 1
            if init == "small":
                m.weight.normal_(0.0, scale)
                m.bias.zero_()
            elif init == "large":
                m.weight.mul_(scale)
            elif init == "neg_bias" and not last:
                m.bias.fill_(-scale)


def lr_multiplier(schedule: str, step: int, steps: int, warmup: int, period: int) -> float:
    """Learning-rate multiplier of a schedule at ``step`` (1.0 = the run's peak LR)."""
    if schedule == "const":
        return 1.0
    if schedule in ("warmup_cosine", "warmup_const", "warmup_linear") and step < warmup:
        return (step + 1) / warmup
    if schedule == "warmup_const":
        return 1.0
    if schedule == "warmup_cosine":
        t = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if schedule == "warmup_linear":
        return max(0.0, 1.0 - (step - warmup) / max(1, steps - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps)))
    if schedule == "step":
        return 0.1 ** (int(step >= steps // 2) + int(step >= 3 * steps // 4))
    if schedule == "sgdr":  # cosine with warm restarts (SGDR)
        return 0.5 * (1.0 + math.cos(math.pi * (step % period) / period))
    raise ValueError(f"unknown schedule {schedule!r}")
