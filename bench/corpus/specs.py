"""Run specifications: every run of the corpus drawn from one seed.

:func:`sample_specs` draws the healthy base configuration of each run
(dataset, architecture, optimizer, schedule, batch size, ...) and then, for
the runs chosen to be faulty, applies one fault. Everything here is
deterministic given the seed; the specs are written next to the runs so a
single run can be re-trained exactly.

``domain="novel"`` draws from datasets and architecture families the default
corpus never uses (``tasks.NOVEL_TABULAR``, ``tasks.NOVEL_SEQUENCE``,
``tasks.NOVEL_ARCHS``), from its own random stream; the default domain's
draws are unchanged by it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.corpus.tasks import NOVEL_SEQUENCE, NOVEL_TABULAR, SEQUENCE, TASKS, lr_multiplier

FAULTS = (
    "divergence",
    "vanishing_gradient",
    "dying_relu",
    "oscillation",
    "slow_convergence",
    "overfitting",
    "data_corruption",
    "bad_batch",
    "nan",
    "stall",
)
"""Fault types (AutoTrainer, DeepDiagnosis and SageMaker Debugger's rule list)."""

DOMAINS = ("default", "novel")
_NOVEL_STREAM = 1  # the novel domain's draws: rng([seed, index, attempt, _NOVEL_STREAM])
_CONTROL_STREAM = 7  # a control's overrides: rng([seed, index, attempt, _CONTROL_STREAM])
CONTROLS = ("long_warmup",)

# A healthy peak learning rate per (optimizer, model family); each run draws
# its own within x0.5..x2 of it.
BASE_LR = {
    ("adam", "ff"): 1e-3,
    ("adam", "rnn"): 3e-3,
    ("adam", "transformer"): 1e-3,
    ("adamw", "ff"): 1e-3,
    ("adamw", "rnn"): 3e-3,
    ("adamw", "transformer"): 1e-3,
    ("rmsprop", "ff"): 5e-4,
    ("rmsprop", "rnn"): 1e-3,
    ("rmsprop", "transformer"): 3e-4,
    ("sgd_momentum", "ff"): 2e-2,
    ("sgd_momentum", "rnn"): 2e-1,
    ("sgd_momentum", "transformer"): 3e-2,
    ("sgd", "ff"): 1e-1,
    ("sgd", "rnn"): 1.0,
    ("sgd", "transformer"): 1e-1,
}


def family(arch: str) -> str:
    """The BASE_LR family of an architecture (the novel ``resmlp`` and ``tcn`` are ``ff``)."""
    return "rnn" if arch in ("gru", "lstm") else "transformer" if arch == "transformer" else "ff"


def base_lr(optimizer: str, arch: str, width: int) -> float:
    """The healthy peak LR of an (optimizer, architecture): ``BASE_LR`` of its family; for SGD on
    the residual MLP scaled by ``min(1, 32 / width)`` (its head reads LayerNorm features whose
    squared norm is the width, so plain SGD's stable step shrinks with it)."""
    lr = BASE_LR[(optimizer, family(arch))]
    if arch == "resmlp" and optimizer in ("sgd", "sgd_momentum"):
        lr *= min(1.0, 32 / width)
    return lr


@dataclass
class RunSpec:
    """Everything that defines one training run of the corpus."""

    run_id: str
    index: int
    seed: int
    dataset: str
    arch: str
    depth: int
    width: int
    activation: str
    dropout: float
    optimizer: str
    lr: float  # peak learning rate as configured
    weight_decay: float
    schedule: str
    warmup: int
    period: int
    batch_size: int
    steps: int
    val_every: int
    watch_every: int
    clip: float  # max grad norm; 0 = no clipping
    train_subset: int = 0
    label_noise: float = 0.0  # static label noise of the (tiny) training set
    init: str = "default"
    init_scale: float = 1.0
    fault: str = "healthy"
    cause: str = ""
    onset: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    pause_at: int = -1  # a healthy pause (checkpoint upload, long evaluation)
    pause_s: float = 0.0
    extra_after_nonfinite: int = 0  # steps still logged after the loss became non-finite
    domain: str = "default"  # "default" or "novel" (datasets / architectures unseen by default)

    @property
    def healthy_lr(self) -> float:
        return float(self.params.get("healthy_lr", self.lr))

    def lr_at(self, step: int) -> float:
        """The learning rate the run uses at ``step``, faults included."""
        p = self.params
        lr = self.lr * lr_multiplier(self.schedule, step, self.steps, self.warmup, self.period)
        if "lr_jump" in p and step >= self.onset:
            lr *= p["lr_jump"]
        if "lr_burst" in p and self.onset <= step < self.onset + p["burst_steps"]:
            lr *= p["lr_burst"]
        return lr

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        return cls(**d)  # specs written before ``domain`` existed load as "default"


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def _base_novel(rng: np.random.Generator) -> tuple[str, str, int, int, str]:
    """Dataset, architecture, depth, width and activation of a novel-domain run."""
    dataset = _pick(rng, NOVEL_TABULAR + NOVEL_SEQUENCE, [0.25, 0.2, 0.25, 0.3])
    if TASKS[dataset].sequence:
        arch, depth = "tcn", int(_pick(rng, (3, 4)))
        width = int(_pick(rng, (32, 48, 64)))
        activation = _pick(rng, ("relu", "gelu", "tanh"), [0.6, 0.25, 0.15])
    else:
        arch, depth = "resmlp", int(rng.integers(1, 5))  # residual blocks
        width = int(_pick(rng, (16, 32, 64, 128)))
        activation = _pick(rng, ("relu", "tanh", "gelu"), [0.6, 0.2, 0.2])
    return dataset, arch, depth, width, activation


def _base(rng: np.random.Generator, index: int, seed: int, domain: str = "default") -> RunSpec:
    if domain == "novel":
        dataset, arch, depth, width, activation = _base_novel(rng)
        return _base_rest(rng, index, seed, domain, dataset, arch, depth, width, activation)
    dataset = _pick(rng, ("digits", "wine", "breast_cancer", "diabetes", "copy", "parity"), [0.26, 0.12, 0.13, 0.12, 0.2, 0.17])
    if dataset == "digits":
        arch = _pick(rng, ("mlp", "cnn"), [0.65, 0.35])
    elif dataset == "copy":
        arch = _pick(rng, ("gru", "lstm", "transformer"), [0.35, 0.3, 0.35])
    elif dataset == "parity":
        arch = _pick(rng, ("gru", "lstm"))
    else:
        arch = "mlp"
    fam = family(arch)
    if arch == "mlp":
        depth, width = int(rng.integers(1, 5)), int(_pick(rng, (16, 32, 64, 128, 256)))
        activation = _pick(rng, ("relu", "tanh", "gelu"), [0.6, 0.25, 0.15])
    elif arch == "cnn":
        depth, width, activation = 2, int(_pick(rng, (64, 128))), "relu"
    elif fam == "rnn":
        depth, width, activation = int(_pick(rng, (1, 1, 2))), int(_pick(rng, (32, 48, 64))), "tanh"
    else:
        depth, width, activation = int(_pick(rng, (1, 2))), int(_pick(rng, (32, 48))), "relu"
    return _base_rest(rng, index, seed, domain, dataset, arch, depth, width, activation)


_DROPOUT_ARCHS = ("mlp", "cnn", "transformer", "resmlp")


def _base_rest(
    rng: np.random.Generator, index: int, seed: int, domain: str, dataset: str, arch: str, depth: int, width: int,
    activation: str,
) -> RunSpec:
    """Optimizer, schedule, batch size, ... (the same draws in both domains)."""
    fam = family(arch)
    optimizer = _pick(rng, ("adam", "adamw", "sgd_momentum", "sgd", "rmsprop"), [0.35, 0.15, 0.3, 0.1, 0.1])
    if fam != "ff" and optimizer == "sgd":
        optimizer = "sgd_momentum"
    healthy_lr = base_lr(optimizer, arch, width) * _loguniform(rng, 0.5, 2.0)
    seq = TASKS[dataset].sequence
    steps = int(rng.integers(300, 701)) if seq else int(rng.integers(300, 901))
    schedule = _pick(
        rng, ("const", "warmup_cosine", "step", "cosine", "sgdr", "warmup_const", "warmup_linear"),
        [0.22, 0.22, 0.14, 0.14, 0.1, 0.09, 0.09],
    )
    n_train = {"wine": 133, "breast_cancer": 426, "diabetes": 331}.get(dataset, 1347)
    sizes = [b for b in (8, 16, 32, 64, 128) if b <= n_train // 2]
    spec = RunSpec(
        run_id=f"run-{index:04d}",
        index=index,
        seed=seed,
        dataset=dataset,
        arch=arch,
        depth=depth,
        width=width,
        activation=activation,
        dropout=float(_pick(rng, (0.0, 0.1, 0.3), [0.6, 0.25, 0.15])) if arch in _DROPOUT_ARCHS else 0.0,
        optimizer=optimizer,
        lr=healthy_lr,
        weight_decay=1e-2 if optimizer == "adamw" else float(_pick(rng, (0.0, 1e-4, 1e-3), [0.5, 0.3, 0.2])),
        schedule=schedule,
        warmup=max(5, int(steps * rng.uniform(0.02, 0.1))),
        period=max(50, steps // int(rng.integers(2, 5))),
        batch_size=int(_pick(rng, sizes)),
        steps=steps,
        val_every=int(_pick(rng, (10, 20, 25, 50))),
        watch_every=int(_pick(rng, (1, 1, 5, 10))),
        clip=1.0 if rng.random() < (0.7 if seq else 0.2) else 0.0,
        params={"healthy_lr": healthy_lr},
        domain=domain,
    )
    if rng.random() < 0.15:  # checkpoint upload / long evaluation: a pause in telemetry
        spec.pause_at = int(rng.integers(20, steps - 20))
        spec.pause_s = _loguniform(rng, 5.0, 900.0)
    if rng.random() < 0.3:
        spec.extra_after_nonfinite = int(rng.integers(1, 30))
    return spec


def _tiny_data_training(rng: np.random.Generator, spec: RunSpec) -> None:
    """The training set-up of an overfitting run (both domains): Adam, no regularisation, long, constant LR."""
    spec.optimizer = "adam"
    spec.lr = spec.params["healthy_lr"] = BASE_LR[("adam", family(spec.arch))] * _loguniform(rng, 0.5, 2.0)
    spec.dropout, spec.weight_decay = 0.0, 0.0
    spec.schedule = _pick(rng, ("const", "warmup_const"))
    spec.batch_size = min(spec.batch_size, max(4, spec.train_subset // 2))
    spec.steps = int(rng.integers(600, 1001))
    spec.onset = 0


def _first_step_above(spec: RunSpec, lr: float) -> int:
    for s in range(spec.steps):
        if spec.lr_at(s) > lr:
            return s
    return 0


def _apply_fault(rng: np.random.Generator, spec: RunSpec, fault: str) -> None:
    spec.fault = fault
    steps = spec.steps
    seq = TASKS[spec.dataset].sequence
    p = spec.params
    mid = lambda lo, hi: int(steps * rng.uniform(lo, hi))

    if spec.domain == "novel" and fault in _NOVEL_FAULTS:
        _NOVEL_FAULTS[fault](rng, spec)
    elif fault == "divergence":
        causes = ["lr_too_high", "warmup_overshoot", "lr_jump"] + (["no_clip"] if family(spec.arch) != "ff" else [])
        spec.cause = _pick(rng, causes)
        spec.clip = 0.0
        # SGD-family optimizers diverge when the LR is too high; Adam's bounded steps need a far larger excess.
        spec.optimizer = _pick(rng, ("sgd_momentum", "sgd", "adam"), [0.5, 0.3, 0.2])
        if family(spec.arch) != "ff" and spec.optimizer == "sgd":
            spec.optimizer = "sgd_momentum"
        spec.lr = p["healthy_lr"] = base_lr(spec.optimizer, spec.arch, spec.width) * _loguniform(rng, 0.5, 2.0)
        excess = (100.0, 2000.0) if spec.optimizer == "adam" else (10.0, 200.0)
        if spec.cause == "lr_too_high":
            spec.lr *= _loguniform(rng, *excess)
            spec.schedule = _pick(rng, ("const", "cosine", "step"))
            spec.onset = 0
        elif spec.cause == "warmup_overshoot":
            spec.lr *= _loguniform(rng, *excess)
            spec.schedule = "warmup_const"
            spec.warmup = int(steps * rng.uniform(0.3, 0.6))
            spec.onset = _first_step_above(spec, spec.healthy_lr)
        elif spec.cause == "lr_jump":
            spec.schedule = _pick(rng, ("const", "warmup_const"))
            spec.onset = mid(0.3, 0.7)
            p["lr_jump"] = _loguniform(rng, *excess)
        else:
            spec.lr *= _loguniform(rng, 10.0, 100.0)
            spec.onset = 0
    elif fault == "vanishing_gradient":
        if spec.dataset in SEQUENCE:
            spec.dataset = _pick(rng, ("digits", "wine", "breast_cancer", "diabetes"))
            spec.batch_size = min(spec.batch_size, 64)
        spec.arch, spec.dropout = "mlp", 0.0
        spec.depth = int(rng.integers(8, 15))
        spec.width = int(_pick(rng, (32, 64, 128)))
        spec.cause = _pick(rng, ("deep_sigmoid", "small_init"))
        spec.activation = "sigmoid" if spec.cause == "deep_sigmoid" else _pick(rng, ("tanh", "sigmoid"))
        if spec.cause == "small_init":
            spec.init, spec.init_scale = "small", _loguniform(rng, 0.005, 0.03)
        spec.optimizer = _pick(rng, ("sgd", "sgd_momentum", "adam"), [0.35, 0.35, 0.3])
        spec.lr = p["healthy_lr"] = BASE_LR[(spec.optimizer, "ff")] * _loguniform(rng, 0.5, 2.0)
        spec.onset = 0
    elif fault == "dying_relu":
        if spec.arch not in ("mlp", "cnn"):
            spec.dataset = _pick(rng, ("digits", "wine", "breast_cancer", "diabetes"))
            spec.arch = "mlp"
            spec.depth, spec.width = int(rng.integers(2, 5)), int(_pick(rng, (32, 64, 128)))
            spec.batch_size = min(spec.batch_size, 64)
        spec.activation = "relu"
        spec.cause = _pick(rng, ("neg_bias_init", "lr_burst"))
        if spec.cause == "neg_bias_init":
            spec.init, spec.init_scale = "neg_bias", rng.uniform(2.0, 6.0)
            spec.onset = 0
        else:
            spec.optimizer = _pick(rng, ("sgd", "sgd_momentum"))
            spec.lr = p["healthy_lr"] = BASE_LR[(spec.optimizer, "ff")] * _loguniform(rng, 0.5, 2.0)
            spec.onset = mid(0.2, 0.5)
            p["lr_burst"] = _loguniform(rng, 100.0, 1000.0)
            p["burst_steps"] = int(rng.integers(1, 4))
            spec.clip = 0.0
    elif fault == "oscillation":
        if spec.dataset in ("wine", "breast_cancer"):  # too easy: they converge at almost any LR
            spec.dataset = _pick(rng, ("digits", "diabetes"))
            spec.batch_size = min(spec.batch_size, 64)
        spec.cause = _pick(rng, ("momentum_too_high", "adam_lr_high"))
        spec.schedule = "const"
        spec.clip = 0.0
        if spec.cause == "momentum_too_high":
            spec.optimizer = "sgd_momentum"
            p["momentum"] = float(rng.uniform(0.985, 0.995))
            spec.lr = BASE_LR[("sgd_momentum", family(spec.arch))] * _loguniform(rng, 1.0, 3.0)
        else:
            spec.optimizer = "adam"
            spec.lr = BASE_LR[("adam", family(spec.arch))] * _loguniform(rng, 30.0, 100.0)
        p["healthy_lr"] = BASE_LR[(spec.optimizer, family(spec.arch))]
        spec.onset = 0
    elif fault == "slow_convergence":
        spec.cause = "lr_too_small"
        spec.lr *= _loguniform(rng, 1e-3, 1e-2)
        spec.onset = 0
    elif fault == "overfitting":
        spec.cause = "tiny_data"
        if spec.dataset == "parity":
            spec.dataset = "copy"
            spec.arch = _pick(rng, ("gru", "lstm", "transformer"))
        if spec.dataset == "copy":
            spec.train_subset = int(rng.integers(8, 33))
            spec.width = 64 if spec.arch != "transformer" else 48
        else:
            spec.arch = "mlp"
            spec.depth, spec.width = int(rng.integers(2, 4)), int(_pick(rng, (256, 512)))
            spec.train_subset = int(rng.integers(20, 61)) if spec.dataset != "digits" else int(rng.integers(30, 101))
            spec.activation = _pick(rng, ("relu", "tanh", "gelu"))
            if spec.dataset != "diabetes" and rng.random() < 0.5:
                spec.label_noise = float(rng.uniform(0.1, 0.25))
                spec.cause = "tiny_data_noisy_labels"
        _tiny_data_training(rng, spec)
    elif fault == "data_corruption":
        spec.onset = mid(0.3, 0.6)
        causes = ["label_noise", "feature_noise"] + ([] if seq else ["feature_scale"])
        spec.cause = _pick(rng, causes)
        if spec.cause == "label_noise":
            p["fraction"] = float(rng.uniform(0.3, 1.0))
        elif spec.cause == "feature_noise":
            p["fraction"] = float(rng.uniform(0.5, 1.0))
        else:
            p["scale"] = _loguniform(rng, 5.0, 50.0)
    elif fault == "bad_batch":
        spec.onset = mid(0.2, 0.8)
        spec.cause = _pick(rng, ("scale", "labels")) if not seq else "tokens"
        if spec.cause == "scale":
            p["scale"] = _loguniform(rng, 10.0, 1000.0)
    elif fault == "nan":
        causes = ["log_zero", "overflow"] + ([] if seq else ["nan_input", "nan_input"])
        spec.cause = _pick(rng, causes)
        if TASKS[spec.dataset].regression and spec.cause != "nan_input":  # no softmax to break
            spec.cause = "nan_input"
        if spec.cause == "nan_input":
            spec.onset = mid(0.2, 0.8)
        else:
            # a temperature bug: logits divided by a small tau inside a hand-written
            # softmax / log that is not numerically stable
            p["tau"] = _loguniform(rng, 0.005, 0.1)
            spec.onset = 0
    elif fault == "stall":
        spec.cause = _pick(rng, ("hang", "hang_resume"))
        spec.onset = mid(0.2, 0.8)
        if spec.cause == "hang_resume":
            p["gap_s"] = _loguniform(rng, 600.0, 7200.0)
        spec.pause_at = -1
    else:
        raise ValueError(f"unknown fault {fault!r}")


def _novel_vanishing_gradient(rng: np.random.Generator, spec: RunSpec) -> None:
    # Residual blocks with LayerNorm do not let gradients vanish; the fault is a config bug
    # that switches skip connections and norms off, leaving a plain deep sigmoid / tanh stack.
    p = spec.params
    if TASKS[spec.dataset].sequence:
        spec.dataset = _pick(rng, NOVEL_TABULAR)
        spec.batch_size = min(spec.batch_size, 64)
    spec.arch, spec.dropout = "resmlp", 0.0
    spec.depth = int(rng.integers(5, 9))  # blocks of two linear layers: 10-16 in a row
    spec.width = int(_pick(rng, (32, 64, 128)))
    p["arch_options"] = {"residual": False, "norm": False}
    spec.cause = _pick(rng, ("no_skip_sigmoid", "no_skip_small_init"))
    spec.activation = "sigmoid" if spec.cause == "no_skip_sigmoid" else _pick(rng, ("tanh", "sigmoid"))
    if spec.cause == "no_skip_small_init":
        spec.init, spec.init_scale = "small", _loguniform(rng, 0.005, 0.03)
    spec.optimizer = _pick(rng, ("sgd", "sgd_momentum", "adam"), [0.35, 0.35, 0.3])
    spec.lr = p["healthy_lr"] = BASE_LR[(spec.optimizer, "ff")] * _loguniform(rng, 0.5, 2.0)
    spec.onset = 0


def _novel_dying_relu(rng: np.random.Generator, spec: RunSpec) -> None:
    # resmlp (fc1 -> ReLU inside each block) and tcn (conv -> ReLU) both keep their layout;
    # negative biases or an LR burst kill the ReLUs, the skip connections keep the run going.
    p = spec.params
    spec.activation = "relu"
    spec.cause = _pick(rng, ("neg_bias_init", "lr_burst"))
    if spec.cause == "neg_bias_init":
        spec.init, spec.init_scale = "neg_bias", rng.uniform(2.0, 6.0)
        spec.onset = 0
    else:
        spec.optimizer = _pick(rng, ("sgd", "sgd_momentum"))
        spec.lr = p["healthy_lr"] = base_lr(spec.optimizer, spec.arch, spec.width) * _loguniform(rng, 0.5, 2.0)
        spec.onset = int(spec.steps * rng.uniform(0.2, 0.5))
        p["lr_burst"] = _loguniform(rng, 100.0, 1000.0)
        p["burst_steps"] = int(rng.integers(1, 4))
        spec.clip = 0.0


def _novel_overfitting(rng: np.random.Generator, spec: RunSpec) -> None:
    p = spec.params
    spec.cause = "tiny_data"
    if TASKS[spec.dataset].sequence:
        spec.train_subset = int(rng.integers(8, 33))
        spec.width = 64
    else:
        if spec.dataset == "friedman":  # a smooth target: tiny-data runs plateau instead of overfitting
            spec.dataset = _pick(rng, ("moons", "hypercube"))
        spec.arch = "resmlp"
        spec.depth, spec.width = int(rng.integers(2, 4)), int(_pick(rng, (128, 256)))
        spec.train_subset = int(rng.integers(20, 61)) if spec.dataset != "hypercube" else int(rng.integers(30, 101))
        spec.activation = _pick(rng, ("relu", "tanh", "gelu"))
        if not TASKS[spec.dataset].regression and rng.random() < 0.5:
            spec.label_noise = float(rng.uniform(0.1, 0.25))
            spec.cause = "tiny_data_noisy_labels"
    _tiny_data_training(rng, spec)


def _novel_oscillation(rng: np.random.Generator, spec: RunSpec) -> None:
    # friedman (regression) and running_max (TCN) mostly settle or blow up under these
    # optimizers instead of oscillating: oscillate on the two classification datasets
    if spec.dataset in ("friedman", "running_max"):
        spec.dataset = _pick(rng, ("moons", "hypercube"))
        spec.batch_size = min(spec.batch_size, 64)
        if spec.arch != "resmlp":
            spec.arch, spec.depth, spec.dropout = "resmlp", int(rng.integers(1, 5)), 0.0
    p = spec.params
    spec.cause = _pick(rng, ("momentum_too_high", "adam_lr_high"))
    spec.schedule = "const"
    spec.clip = 0.0
    if spec.cause == "momentum_too_high":
        spec.optimizer = "sgd_momentum"
        p["momentum"] = float(rng.uniform(0.985, 0.995))
        spec.lr = BASE_LR[("sgd_momentum", "ff")] * _loguniform(rng, 1.0, 3.0)
    else:
        spec.optimizer = "adam"
        spec.lr = BASE_LR[("adam", "ff")] * _loguniform(rng, 30.0, 100.0)
    p["healthy_lr"] = base_lr(spec.optimizer, spec.arch, spec.width)
    spec.onset = 0


def _novel_slow_convergence(rng: np.random.Generator, spec: RunSpec) -> None:
    # the residual MLP's head reads LayerNorm features: even at x0.001-0.01 of a healthy LR it
    # fits a random-features readout within the run, so its LR is cut further
    spec.cause = "lr_too_small"
    spec.lr *= _loguniform(rng, 1e-4, 1e-3) if spec.arch == "resmlp" else _loguniform(rng, 1e-3, 1e-2)
    spec.onset = 0


# Faults whose default-domain injection assumes the default datasets or a plain MLP layout.
_NOVEL_FAULTS = {
    "vanishing_gradient": _novel_vanishing_gradient,
    "dying_relu": _novel_dying_relu,
    "overfitting": _novel_overfitting,
    "oscillation": _novel_oscillation,
    "slow_convergence": _novel_slow_convergence,
}


def fault_plan(n_runs: int, seed: int = 0, faulty_fraction: float = 0.4) -> list[str]:
    """Which fault (or ``"healthy"``) each run index gets: fault types in equal shares, shuffled."""
    n_faulty = round(n_runs * faulty_fraction)
    faults = [FAULTS[i % len(FAULTS)] for i in range(n_faulty)] + ["healthy"] * (n_runs - n_faulty)
    order = np.random.default_rng(seed).permutation(n_runs)
    return [faults[i] for i in order]


def draw_spec(seed: int, index: int, fault: str, attempt: int = 0, domain: str = "default") -> RunSpec:
    """Run ``index``'s spec; ``attempt`` > 0 redraws it (when a draw did not pass its check).

    ``domain="novel"`` draws from the novel datasets and architectures, with its own random
    stream (``[seed, index, attempt, 1]``); the default domain's draws do not depend on it.

    Examples
    --------
    >>> a, b = draw_spec(0, 7, "nan"), draw_spec(0, 7, "nan")
    >>> a.to_dict() == b.to_dict(), a.fault
    (True, 'nan')
    >>> draw_spec(0, 7, "nan", attempt=1).to_dict() == a.to_dict()
    False
    """
    if domain == "default":
        rng = np.random.default_rng([seed, index, attempt])
        spec = _base(rng, index, int(rng.integers(0, 2**31 - 1)))
    elif domain == "novel":
        rng = np.random.default_rng([seed, index, attempt, _NOVEL_STREAM])
        spec = _base(rng, index, int(rng.integers(0, 2**31 - 1)), domain)
    else:
        raise ValueError(f"unknown domain {domain!r}; one of {DOMAINS}")
    if fault != "healthy":
        _apply_fault(rng, spec, fault)
    spec.params["attempt"] = attempt
    return spec


def long_warmup_control(seed: int, index: int, attempt: int) -> RunSpec:
    """The healthy twin of ``warmup_overshoot``: a default-domain healthy draw whose LR warms up over 30-60 % of
    the run, as the overshoot does, but towards a healthy LR (the optimizer mix of the divergence faults).

    Without such runs every long warm-up a model is trained on ends in a divergence, and a forecaster learns
    the warm-up's length, not the run's response to it (healthy runs warm up over 2-10 % of their steps).

    Examples
    --------
    >>> s = long_warmup_control(77, 0, 0)
    >>> s.fault, s.cause, s.schedule.startswith("warmup"), 0.3 <= s.warmup / s.steps <= 0.6
    ('healthy', 'long_warmup_control', True, True)
    """
    spec = draw_spec(seed, index, "healthy", attempt)
    rng = np.random.default_rng([seed, index, attempt, _CONTROL_STREAM])
    spec.optimizer = _pick(rng, ("sgd_momentum", "sgd", "adam", "adamw"), [0.4, 0.2, 0.2, 0.2])
    if family(spec.arch) != "ff" and spec.optimizer == "sgd":
        spec.optimizer = "sgd_momentum"
    spec.lr = spec.params["healthy_lr"] = base_lr(spec.optimizer, spec.arch, spec.width) * _loguniform(rng, 0.5, 2.0)
    spec.schedule = _pick(rng, ("warmup_const", "warmup_cosine", "warmup_linear"))
    spec.warmup = int(spec.steps * rng.uniform(0.3, 0.6))
    spec.cause = "long_warmup_control"
    return spec


def sample_specs(n_runs: int, seed: int = 0, faulty_fraction: float = 0.4, domain: str = "default") -> list[RunSpec]:
    """First-attempt specs of every run of a corpus.

    Examples
    --------
    >>> specs = sample_specs(20, seed=1)
    >>> len(specs), sum(s.fault != "healthy" for s in specs)
    (20, 8)
    """
    plan = fault_plan(n_runs, seed, faulty_fraction)
    return [draw_spec(seed, i, f, domain=domain) for i, f in enumerate(plan)]
