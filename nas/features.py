"""Numbers that describe a run: its architecture, its hyperparameters and its early logs.

The surrogate learns from these. Feature names carry a group prefix so a
caller can swap one group (``arch/``) while keeping the others (``hp/``,
``log/``, ``diag/``): that is how candidate edits of one run are scored.

- ``arch/``: depth, log2 width statistics, log10 parameter count, the fraction
  of blocks with each activation / normalization, dropout and residual stats;
  and ``arch/pos/``: the same per block for the first four blocks and the last
  (log2 width, dropout, activation, normalization, residual), so that dropout
  on the first block and dropout on the second are different architectures to
  the surrogate (absent blocks read 0).
- ``hp/``: log10 learning rate, log2 batch size, log10 weight decay, other
  numeric hyperparameters as they are, strings one-hot (``hp/optimizer=adam``).
- ``log/``: the training loss (log10) around 10 %, 25 % and 50 % of the logged
  steps and the slopes between them, the validation loss and the val/train gap
  at the 50 % point, global and per-layer gradient-norm statistics, dead and
  saturated unit fractions, and a non-finite flag -- all from the first
  ``early_fraction`` of the logged steps only, so a run in progress and a
  finished one are described alike.
- ``diag/``: how many findings of each kind runwatch raised for the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runwatch.nas.architecture import Genome
from runwatch.nas.history import RunObservation

__all__ = [
    "ARCH_PREFIX",
    "FeatureEncoder",
    "architecture_features",
    "diagnosis_features",
    "hyperparameter_features",
    "log_features",
    "run_features",
    "train_loss_name",
]

ARCH_PREFIX = "arch/"
POS_PREFIX = "arch/pos/"  # per-block features of the first POSITIONS blocks and the last
POSITIONS = 4
KNOWN_ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "sigmoid", "leakyrelu", "elu")
KNOWN_NORMALIZATIONS = ("layernorm", "batchnorm")

# Hyperparameter spellings folded into one feature each, with the transform that makes them comparable.
_HP_ALIASES: dict[str, tuple[tuple[str, ...], str]] = {
    "hp/log10_lr": (("lr", "learning_rate", "learning-rate", "optimizer.lr", "optim.lr"), "log10"),
    "hp/log2_batch_size": (("batch_size", "batch-size", "bs", "train_batch_size", "batch"), "log2"),
    "hp/log10_weight_decay": (("weight_decay", "weight-decay", "wd", "optimizer.weight_decay"), "log10_eps"),
    "hp/log10_steps": (("steps", "max_steps", "total_steps", "num_steps", "iterations"), "log10"),
    "hp/log10_epochs": (("epochs", "max_epochs", "num_epochs"), "log10"),
}
_MAX_CATEGORY_LEN = 32


def _log(x: float, base: str) -> float:
    if base == "log10_eps":
        return math.log10(max(x, 0.0) + 1e-8)
    if x <= 0 or not math.isfinite(x):
        return math.nan
    return math.log10(x) if base == "log10" else math.log2(x)


def architecture_features(genome: Genome) -> dict[str, float]:
    """Describe an architecture by a fixed set of ``arch/`` numbers.

    Parameters
    ----------
    genome
        The architecture.

    Returns
    -------
    dict[str, float]
        ``arch/depth``, ``arch/log2_width_{mean,min,max,first,last}``,
        ``arch/log10_params``, ``arch/act/<name>`` and ``arch/norm/<name>``
        (fractions of blocks; unknown names count as ``other``),
        ``arch/dropout_{mean,max}``, ``arch/residual_frac``,
        ``arch/log2_input`` and ``arch/log2_output``; per block
        (``arch/pos/1/`` .. ``arch/pos/4/`` and ``arch/pos/last/``):
        ``log2_width``, ``dropout``, ``norm``, ``residual`` and ``act/<name>``.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block, Genome
    >>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"), Block("fc2", "linear", 32, "tanh", dropout=0.2)))
    >>> f = architecture_features(g)
    >>> f["arch/depth"], f["arch/log2_width_max"], f["arch/act/relu"], f["arch/dropout_max"]
    (2.0, 7.0, 0.5, 0.2)
    >>> f["arch/pos/1/dropout"], f["arch/pos/2/dropout"], f["arch/pos/2/act/tanh"], f["arch/pos/3/log2_width"]
    (0.0, 0.2, 1.0, 0.0)
    """
    blocks = genome.blocks
    depth = len(blocks)
    f: dict[str, float] = {"arch/depth": float(depth)}
    if depth:
        lw = np.log2(np.maximum([b.width for b in blocks], 1).astype(float))
        f.update(
            {
                "arch/log2_width_mean": float(lw.mean()),
                "arch/log2_width_min": float(lw.min()),
                "arch/log2_width_max": float(lw.max()),
                "arch/log2_width_first": float(lw[0]),
                "arch/log2_width_last": float(lw[-1]),
            }
        )
    f["arch/log10_params"] = math.log10(max(int(genome.params()), 1))
    for name in (*KNOWN_ACTIVATIONS, "none", "other"):
        f[f"arch/act/{name}"] = 0.0
    for name in (*KNOWN_NORMALIZATIONS, "other"):
        f[f"arch/norm/{name}"] = 0.0
    share = 1.0 / depth if depth else 0.0
    for b in blocks:
        act = b.activation or "none"
        f[f"arch/act/{act if act in KNOWN_ACTIVATIONS or act == 'none' else 'other'}"] += share
        if b.normalization:
            norm = b.normalization if b.normalization in KNOWN_NORMALIZATIONS else "other"
            f[f"arch/norm/{norm}"] += share
    drops = [b.dropout for b in blocks] or [0.0]
    f["arch/dropout_mean"] = float(np.mean(drops))
    f["arch/dropout_max"] = float(np.max(drops))
    f["arch/residual_frac"] = float(np.mean([b.residual for b in blocks])) if depth else 0.0
    f["arch/log2_input"] = math.log2(max(genome.input_size, 1))
    f["arch/log2_output"] = math.log2(max(genome.output_size, 1))
    for label, i in [*((str(j + 1), j) for j in range(POSITIONS)), ("last", depth - 1)]:
        b = blocks[i] if 0 <= i < depth else None
        pre = f"{POS_PREFIX}{label}/"
        f[pre + "log2_width"] = math.log2(max(b.width, 1)) if b is not None else 0.0
        f[pre + "dropout"] = float(b.dropout) if b is not None else 0.0
        f[pre + "norm"] = float(bool(b.normalization)) if b is not None else 0.0
        f[pre + "residual"] = float(b.residual) if b is not None else 0.0
        act = (b.activation or "none") if b is not None else ""
        for name in (*KNOWN_ACTIVATIONS, "none"):
            f[pre + f"act/{name}"] = float(act == name)
    return f


def hyperparameter_features(hyperparameters: Mapping[str, Any]) -> dict[str, float]:
    """Turn logged hyperparameters into ``hp/`` numbers.

    Learning rate, batch size, weight decay, steps and epochs are recognised
    under their common spellings and put on a log scale; other numbers are
    kept as they are (booleans as 0/1); short strings become one-hot columns.

    Examples
    --------
    >>> f = hyperparameter_features({"lr": 0.01, "batch_size": 64, "optimizer": "adam", "seed": 3})
    >>> f["hp/log10_lr"], f["hp/log2_batch_size"], f["hp/optimizer=adam"], f["hp/seed"]
    (-2.0, 6.0, 1.0, 3.0)
    """
    f: dict[str, float] = {}
    used: set[str] = set()
    lowered = {str(k).lower(): v for k, v in hyperparameters.items()}
    for feature, (aliases, transform) in _HP_ALIASES.items():
        for alias in aliases:
            v = lowered.get(alias)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                f[feature] = _log(float(v), transform)
                used.add(alias)
                break
    for key, v in lowered.items():
        if key in used:
            continue
        if isinstance(v, (bool, int, float)):
            f[f"hp/{key}"] = float(v)
        elif isinstance(v, str) and 0 < len(v) <= _MAX_CATEGORY_LEN:
            f[f"hp/{key}={v.lower()}"] = 1.0
    return f


def train_loss_name(series: Mapping[str, object]) -> str:
    """The training-loss series of a run: ``loss``, else ``train/loss``, else ``train_loss`` ("" if none)."""
    for name in ("loss", "train/loss", "train_loss"):
        if name in series:
            return name
    return ""


def _value_near(steps: np.ndarray, values: np.ndarray, at_step: float, window: int) -> float:
    """Median of the finite values among the ``window`` points logged at or before ``at_step``."""
    idx = int(np.searchsorted(steps, at_step, side="right"))
    if idx == 0:
        return math.nan
    chunk = values[max(0, idx - window) : idx]
    chunk = chunk[np.isfinite(chunk)]
    return float(np.median(chunk)) if chunk.size else math.nan


def _log10_pos(x: float) -> float:
    return math.log10(x) if x > 0 and math.isfinite(x) else math.nan


def log_features(series: Mapping[str, tuple[np.ndarray, np.ndarray]], early_fraction: float = 0.5) -> dict[str, float]:
    """Features of the first ``early_fraction`` of a run's logged steps.

    The horizon is ``first_step + early_fraction * (last_step - first_step)``
    of the training loss (or of all series when there is none). Loss values
    are medians over the last ~5 % of points before each mark (mini-batch
    noise), on a log10 scale; slopes are log10 loss per unit of run fraction.

    Examples
    --------
    >>> import numpy as np
    >>> steps = np.arange(100)
    >>> f = log_features({"loss": (steps, 10.0 ** (-steps / 50)), "val/loss": (steps[::10], np.full(10, 0.5))})
    >>> round(f["log/loss@50"], 2), round(f["log/loss_slope_10_25"], 2), round(f["log/gap@50"], 2)
    (-0.94, -2.0, 0.39)
    """
    f: dict[str, float] = {}
    if not series:
        return f
    train = train_loss_name(series)
    ref_steps = np.asarray(series[train][0] if train else np.concatenate([s for s, _ in series.values()]))
    if ref_steps.size == 0:
        return f
    first, last = float(ref_steps.min()), float(ref_steps.max())
    horizon = first + early_fraction * (last - first)

    def mark(frac: float) -> float:
        return first + frac * (last - first)

    nonfinite = 0.0
    if train:
        steps, values = (np.asarray(a, dtype=float) for a in series[train])
        window = max(1, round(0.05 * steps.size))
        marks = {p: min(mark(p / 100), horizon) for p in (10, 25, 50)}
        levels = {p: _log10_pos(_value_near(steps, values, s, window)) for p, s in marks.items()}
        for p, lv in levels.items():
            f[f"log/loss@{p}"] = lv
        f["log/loss_slope_10_25"] = (levels[25] - levels[10]) / 0.15
        f["log/loss_slope_25_50"] = (levels[50] - levels[25]) / 0.25
        early = values[steps <= horizon]
        nonfinite = max(nonfinite, float(np.any(~np.isfinite(early))))
        val_name = "val/loss" if "val/loss" in series else ("val_loss" if "val_loss" in series else "")
        if val_name:
            vs, vv = (np.asarray(a, dtype=float) for a in series[val_name])
            val = _value_near(vs, vv, horizon, 1)
            tr = _value_near(steps, values, horizon, window)
            f["log/val_loss@50"] = _log10_pos(val)
            f["log/gap@50"] = val - tr
            f["log/gap_ratio@50"] = val / tr if tr > 0 else math.nan
            nonfinite = max(nonfinite, float(np.any(~np.isfinite(vv[vs <= horizon]))))
    if "grad_norm" in series:
        gs, gv = (np.asarray(a, dtype=float) for a in series["grad_norm"])
        g = gv[(gs <= horizon) & np.isfinite(gv) & (gv > 0)]
        if g.size:
            lg = np.log10(g)
            f["log/grad_norm_median"] = float(np.median(lg))
            f["log/grad_norm_max"] = float(lg.max())
    layer_medians = []
    for prefix, out in (("act/zero_frac/", "log/dead_frac_max"), ("act/sat_frac/", "log/sat_frac_max")):
        vals = [_early_median(series[k], horizon) for k in series if k.startswith(prefix)]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            f[out] = max(vals)
    for k in series:
        if k.startswith("grad_norm/"):
            m = _early_median(series[k], horizon)
            if m > 0 and math.isfinite(m):
                layer_medians.append(math.log10(m))
    if layer_medians:
        f["log/layer_grad_norm_min"] = min(layer_medians)
        f["log/layer_grad_norm_spread"] = max(layer_medians) - min(layer_medians)
    f["log/nonfinite"] = nonfinite
    return f


def _early_median(series: tuple[np.ndarray, np.ndarray], horizon: float) -> float:
    steps, values = (np.asarray(a, dtype=float) for a in series)
    v = values[(steps <= horizon) & np.isfinite(values)]
    return float(np.median(v)) if v.size else math.nan


def diagnosis_features(obs: RunObservation) -> dict[str, float]:
    """``diag/<kind>``: how many findings of each kind the run has (kinds it lacks are missing, read as 0)."""
    f: dict[str, float] = {}
    for d in obs.diagnoses:
        key = f"diag/{d.kind}"
        f[key] = f.get(key, 0.0) + 1.0
    return f


def run_features(obs: RunObservation, early_fraction: float = 0.5) -> dict[str, float]:
    """All features of one run: ``arch/`` (when it has a genome), ``hp/``, ``log/`` and ``diag/``.

    Examples
    --------
    >>> from runwatch.nas.history import Diagnosis
    >>> obs = RunObservation("r1", None, hyperparameters={"lr": 1e-3}, diagnoses=[Diagnosis("plateau")])
    >>> run_features(obs)
    {'hp/log10_lr': -3.0, 'diag/plateau': 1.0}
    """
    f: dict[str, float] = {}
    if obs.genome is not None:
        f.update(architecture_features(obs.genome))
    f.update(hyperparameter_features(obs.hyperparameters))
    f.update(log_features(obs.series, early_fraction))
    f.update(diagnosis_features(obs))
    return f


@dataclass
class FeatureEncoder:
    """Fixed column order for feature dicts; missing features become NaN.

    ``diag/`` columns are counts, so a run without a finding of that kind gets
    0 rather than NaN.

    Examples
    --------
    >>> enc = FeatureEncoder().fit([{"a": 1.0}, {"b": 2.0, "diag/plateau": 1.0}])
    >>> enc.columns
    ['a', 'b', 'diag/plateau']
    >>> enc.transform([{"a": 3.0}]).tolist()
    [[3.0, nan, 0.0]]
    >>> FeatureEncoder.from_dict(enc.to_dict()) == enc
    True
    """

    columns: list[str] = field(default_factory=list)

    def fit(self, rows: Iterable[Mapping[str, float]]) -> FeatureEncoder:
        names: set[str] = set()
        for r in rows:
            names.update(r)
        self.columns = sorted(names)
        return self

    def transform(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.columns)}
        x = np.full((len(rows), len(self.columns)), np.nan)
        counts = [i for c, i in index.items() if c.startswith("diag/")]
        x[:, counts] = 0.0
        for r, row in enumerate(rows):
            for k, v in row.items():
                i = index.get(k)
                if i is not None:
                    x[r, i] = float(v)
        return x

    def fit_transform(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        return self.fit(rows).transform(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureEncoder:
        return cls(columns=list(d.get("columns", [])))
