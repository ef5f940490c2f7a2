"""LCBench (34 OpenML tasks, 100 MLP training configurations each): which training configuration to try next.

    python -m bench.nas_lcbench                              # every task, 5 starts each -> bench/RESULTS.md
    python -m bench.nas_lcbench --tasks 2 --out /tmp/R.md    # a quick look

The table (``lcbench_surrogate/SURROGATE_lcbench_curves_34tasks_100cfg_52ep.csv.gz``,
YAHPO Gym's LCBench surrogate, Apache-2.0) gives, for the same 100
configurations on each of 34 OpenML tasks, 52 epochs of validation accuracy
and cross-entropy *predicted by a surrogate trained on real LCBench runs*:
smooth, one value per configuration, no seeds. A configuration is the
training setting of a funnel-shaped MLP: learning rate, batch size, momentum,
weight decay, number of layers, widest layer, largest dropout. Unlike FCNet
(architectures within one training setting) and NAS-Bench-201 (cell
operations), most of its spread comes from the *training* hyperparameters,
and the advisor's surrogate was never developed on it.

A configuration is described to every method as a user's run would describe
itself: its logged hyperparameters through
:func:`runwatch.nas.features.hyperparameter_features` (``hp/log10_lr``,
``hp/log2_batch_size``, ``hp/log10_weight_decay``, the others as they are).

Protocol (minimize the final validation cross-entropy):

- One project per task. Its history: ``--history`` configurations of that task
  drawn at random, with their final val cross-entropy; the rest of the 100 are
  the candidates. Starts: ``--starts`` candidates from the task's worst quarter.
- Every method names ``k`` candidates (never a history configuration or the
  start); the best true value among them counts (k = 1, 3, 10).
  ``advisor`` -- :class:`runwatch.nas.surrogate.Surrogate` (shipped defaults)
  fitted on the history, k candidates ranked by the advisor's risk-adjusted objective
  (``z + risk_aversion * s`` on the log scale) and listed to be tried together as the advisor lists its
  suggestions (:func:`bench.nas_common.advisor_batch`); ``forest`` -- scikit-learn's
  ``RandomForestRegressor`` (defaults) on the same features and the log
  cross-entropy, its top-k; ``tpe_warm`` -- NNI's TPE warm-started with the
  history (deduplication reset) over LCBench's own ranges, each proposal
  taken as the nearest unused candidate (log scale for learning rate, batch
  size, weight decay and width); ``random`` -- k random candidates.
- Interval coverage: the share of the candidates' true values inside the
  fitted surrogate's 80 % interval (issue 14's 75-85 %).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.nas_common import LookupProtocol

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "hpo-benchmarks"
FILE = "lcbench_surrogate/SURROGATE_lcbench_curves_34tasks_100cfg_52ep.csv.gz"
TARGET = "val/loss"
HYPERPARAMETERS = ("learning_rate", "batch_size", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
# LCBench's search space (Zimmer et al., 2021), in NNI's format; log-scaled where the space is.
TPE_SPACE = {
    "learning_rate": {"_type": "loguniform", "_value": [1e-4, 1e-1]},
    "batch_size": {"_type": "loguniform", "_value": [16, 512]},
    "momentum": {"_type": "uniform", "_value": [0.1, 0.99]},
    "weight_decay": {"_type": "loguniform", "_value": [1e-5, 1e-1]},
    "num_layers": {"_type": "randint", "_value": [1, 6]},
    "max_units": {"_type": "loguniform", "_value": [64, 1024]},
    "max_dropout": {"_type": "uniform", "_value": [0.0, 1.0]},
}
LABELS = {
    "advisor": "runwatch advisor's surrogate (shipped defaults)",
    "forest": "scikit-learn RandomForest on the history, its top-k",
    "tpe_warm": "NNI TPE warm-started with the history (dedup reset)",
    "random": "random candidates",
}

__all__ = ["LCBenchProtocol", "LCBenchTable", "evaluate", "load_lcbench", "nearest_unused", "scaled_config"]


class MissingDataError(FileNotFoundError):
    """The LCBench table is not where the benchmark looks for it."""


@dataclass
class LCBenchTable:
    """``configs`` [C] hyperparameter dicts shared by every task; ``loss`` [T, C] final val cross-entropy."""

    task_ids: list[int]
    configs: list[dict[str, float]]
    loss: np.ndarray

    @cached_property
    def scaled(self) -> np.ndarray:
        """[C, 7] every configuration through :func:`scaled_config` (computed once)."""
        return np.stack([scaled_config(c) for c in self.configs])


def scaled_config(config: dict[str, float]) -> np.ndarray:
    """The 7 hyperparameters on the scale TPE samples them (log where LCBench's space is), each in [0, 1].

    Examples
    --------
    >>> cfg = {"learning_rate": 1e-4, "batch_size": 512, "momentum": 0.545, "weight_decay": 1e-5,
    ...        "num_layers": 6, "max_units": 64, "max_dropout": 0.25}
    >>> scaled_config(cfg).round(3).tolist()
    [0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 0.25]
    """
    out = []
    for name in HYPERPARAMETERS:
        v = float(config[name])
        low, high = TPE_SPACE[name]["_value"]
        if TPE_SPACE[name]["_type"] == "loguniform":
            v, low, high = math.log(v), math.log(low), math.log(high)
        out.append((v - low) / (high - low))
    return np.array(out)


def load_lcbench(path: str | Path, epoch: int | None = None) -> LCBenchTable:
    """Read the table at ``epoch`` (default: the last); raises :class:`MissingDataError` when absent."""
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"LCBench table not found: {path} (YAHPO Gym lcbench, Apache-2.0; --data-dir)")
    configs: dict[int, dict[str, float]] = {}
    final: dict[tuple[int, int], tuple[int, float]] = {}
    with gzip.open(path, "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            task, cfg, ep = int(r["task_id"]), int(r["config_idx"]), int(r["epoch"])
            configs.setdefault(cfg, {name: float(r[name]) for name in HYPERPARAMETERS})
            if (epoch is None or ep == epoch) and ep >= final.get((task, cfg), (-1, 0.0))[0]:
                final[(task, cfg)] = (ep, float(r["val_cross_entropy"]))
    tasks = sorted({t for t, _ in final})
    cfgs = sorted(configs)
    loss = np.full((len(tasks), len(cfgs)), np.nan)
    for (t, c), (_, v) in final.items():
        loss[tasks.index(t), cfgs.index(c)] = v
    return LCBenchTable(tasks, [configs[c] for c in cfgs], loss)


def nearest_unused(point: np.ndarray, scaled: np.ndarray, candidates: Sequence[int], used: set[int]) -> int:
    """The candidate row nearest to ``point`` (Euclidean on the scaled space) that is not in ``used``; -1 if none.

    Examples
    --------
    >>> grid = np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    >>> nearest_unused(np.array([0.4, 0.4]), grid, [0, 1, 2], set()), nearest_unused(np.array([0.4, 0.4]), grid, [0, 1, 2], {1})
    (1, 0)
    """
    best, best_d = -1, math.inf
    for r in candidates:
        if r in used:
            continue
        d = float(np.sum((scaled[r] - point) ** 2))
        if d < best_d:
            best, best_d = int(r), d
    return best


@dataclass
class LCBenchProtocol(LookupProtocol):
    """Settings of one evaluation (JSON round trip). Starts: truth >= ``start_quantile`` of the task's loss (its
    worst quarter); ``split``: ``dev`` the first half of the task ids in sorted order, ``test`` the second, ``all``.

    Examples
    --------
    >>> p = LCBenchProtocol(tasks=3)
    >>> LCBenchProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    True
    """

    starts: int = 5
    start_quantile: float = 0.75
    history_size: int = 40
    tasks: int = 34
    split: str = "all"


def task_indices(n: int, split: str) -> list[int]:
    """Indices of the tasks of ``split``: ``dev`` the first half in task-id order, ``test`` the rest, ``all``.

    The advisor is only ever changed after looking at ``dev``; ``test`` is the check that a change carries
    over to tasks it was not made on.

    Examples
    --------
    >>> task_indices(5, "dev"), task_indices(5, "test"), task_indices(3, "all")
    ([0, 1], [2, 3, 4], [0, 1, 2])
    """
    if split not in ("dev", "test", "all"):
        raise ValueError(f"split: {split!r} is not one of dev, test, all")
    half = n // 2
    return list(range(half)) if split == "dev" else list(range(half, n)) if split == "test" else list(range(n))


def _lowest(scores: np.ndarray, candidates: Sequence[int], k: int) -> list[int]:
    """The ``k`` candidates with the lowest scores (ties by row)."""
    return [int(candidates[i]) for i in np.lexsort((np.asarray(candidates), scores))[:k]]


def _advisor_surrogate(feats: list[dict], rows: np.ndarray, y: np.ndarray, seed: int, cfg: dict):
    from runwatch.nas.surrogate import Surrogate, SurrogateConfig

    return Surrogate(SurrogateConfig.from_dict({**cfg, "seed": seed})).fit_rows([feats[r] for r in rows], y, TARGET)


def _tpe_warm(table: LCBenchTable, task: int, rows: np.ndarray, candidates: list[int], k: int, seed: int) -> list[int]:
    from runwatch.nas.nni_adapter import warm_tpe_proposals

    scaled = table.scaled
    truth = table.loss[task]
    picked: list[int] = []

    def objective(params: dict) -> float:  # TPE sees each pick's true value before its next proposal
        row = nearest_unused(scaled_config(params), scaled, candidates, set(picked))
        picked.append(row)
        return float(truth[row]) if row >= 0 else math.inf

    history = [
        ({n: int(v) if n == "num_layers" else v for n, v in table.configs[r].items()}, float(truth[r])) for r in rows
    ]  # NNI treats randint as a choice of integers
    warm_tpe_proposals(TPE_SPACE, history, objective, k, seed)
    return picked


def _picks(
    method: str,
    seed: int,
    table: LCBenchTable,
    ti: int,
    x: np.ndarray,
    feats: list[dict],
    rows: np.ndarray,
    candidates: list[int],
    k: int,
    p: LCBenchProtocol,
):
    """``k`` candidates named by ``method`` from the history ``rows``; also the advisor's fitted surrogate."""
    from sklearn.ensemble import RandomForestRegressor

    from bench.nas_common import advisor_batch

    y = table.loss[ti][rows]
    if method == "advisor":  # ranked and listed as the advisor lists its suggestions
        s = _advisor_surrogate(feats, rows, y, seed, p.surrogate_config)
        return [int(candidates[i]) for i in advisor_batch(s, [feats[r] for r in candidates], k, sign=1.0)], s
    if method == "forest":
        rf = RandomForestRegressor(random_state=seed, n_jobs=1).fit(x[rows], np.log(y))
        return _lowest(rf.predict(x[candidates]), candidates, k), None
    if method == "tpe_warm":
        return _tpe_warm(table, ti, rows, candidates, k, seed), None
    rng = np.random.default_rng([seed, table.task_ids[ti], int(rows.sum())])
    return rng.choice(candidates, size=k, replace=False).tolist(), None


def evaluate(table: LCBenchTable, protocol: LCBenchProtocol, *, progress: bool = False):
    """Every method on every start; returns (outcomes, coverage per task, seconds per method).

    Each start gets its own project history (``history_size`` random other configurations of its task), so
    the starts are independent draws, not one fitted model's ranking seen five times.
    """
    from bench.nas_common import Outcome, best_of_first
    from runwatch.nas.features import hyperparameter_features

    p = protocol
    feats = [hyperparameter_features(c) for c in table.configs]
    x = np.array([[f[name] for name in sorted(feats[0])] for f in feats])
    k_max = max(p.ks)
    outcomes, coverage, seconds = [], {}, {m: 0.0 for m in p.methods}
    for ti in task_indices(len(table.task_ids), p.split)[: p.tasks]:
        truth, task = table.loss[ti], table.task_ids[ti]
        rng = np.random.default_rng([p.seed, task])
        poor = np.flatnonzero(truth >= np.quantile(truth, p.start_quantile))
        starts = sorted(rng.choice(poor, size=min(p.starts, poor.size), replace=False).tolist())
        inside = []
        for start in starts:
            others = np.array([r for r in range(truth.size) if r != start])
            rows = np.sort(rng.choice(others, size=p.history_size, replace=False))
            candidates = sorted(set(others.tolist()) - set(rows.tolist()))
            space_best = float(np.min(truth[candidates]))
            for method in p.methods:
                for seed in range(p.baseline_seeds) if method in ("tpe_warm", "random") else (p.seed,):
                    t0 = time.perf_counter()
                    picks, surrogate = _picks(method, seed, table, ti, x, feats, rows, candidates, k_max, p)
                    seconds[method] += time.perf_counter() - t0
                    if surrogate is not None:
                        _, lo, hi = surrogate.interval_rows([feats[r] for r in candidates])
                        inside += ((truth[candidates] >= lo) & (truth[candidates] <= hi)).tolist()
                    values = [float(truth[r]) if r >= 0 else math.inf for r in picks]
                    for k in p.ks:
                        outcome = Outcome(
                            f"{task}/{start}",
                            method,
                            k,
                            float(truth[start]),
                            best_of_first(values, k),
                            space_best,
                            bool(space_best < truth[start]),
                            seed,
                            f"lcbench-{task}",
                        )
                        outcomes.append(outcome)
        if inside:
            coverage[task] = float(np.mean(inside))
        if progress:
            print(f"  lcbench: task {task} ({ {m: round(s, 1) for m, s in seconds.items()} })", file=sys.stderr)
    return outcomes, coverage, seconds


def report(
    outcomes, coverage: dict[int, float], seconds: dict[str, float], p: LCBenchProtocol, command: str, wall_s: float
) -> str:
    """The RESULTS.md subsection: regret table, per-task wins, interval coverage."""
    from bench.nas_fcnet import regret_table

    tasks = sorted({o.group for o in outcomes})
    lines = [
        f"### LCBench, 34 OpenML tasks, {p.split} tasks (`bench/nas_lcbench.py`)",
        "",
        (
            f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {wall_s:.0f} s. YAHPO Gym's "
            "LCBench surrogate (Apache-2.0): the same 100 MLP training configurations (learning rate, batch size, "
            "momentum, weight decay, layers, widest layer, largest dropout) on each task, final (epoch 52) val "
            f"cross-entropy as truth. {len(tasks)} tasks ({p.split}: "
            f"{'all' if p.split == 'all' else ('first' if p.split == 'dev' else 'second') + ' half of the task ids'}); "
            f"{p.starts} starts per task from its worst quarter (seed {p.seed}), each with its own project history of "
            f"{p.history_size} random other configurations; every method names k of the task's remaining "
            "configurations (never the start or one of the history); randomised methods "
            f"averaged over {p.baseline_seeds} seeds. Normalised regret = (best found − best candidate) / (start − "
            "best candidate). "
            + (
                "The test tasks were never used to develop the advisor: each change is scored on them once, after "
                "it was chosen."
                if p.split == "test"
                else "The dev tasks have been development data since 2026-12-07 (the surrogate's family averaging "
                "and its list of suggestions were compared on them); the test tasks are the out-of-sample numbers."
            )
        ),
        "",
    ]
    lines += regret_table(outcomes, p.methods, p.ks, LABELS)
    if coverage:
        cov = np.array(list(coverage.values()))
        lines += [
            "",
            (
                "80 % interval coverage of the advisor's surrogate on the configurations each history did not hold "
                f"(per task, pooled over its starts): mean {cov.mean():.1%}, median {np.median(cov):.1%}, range "
                f"{cov.min():.0%}–{cov.max():.0%} over {cov.size} tasks (target 75–85 %)."
            ),
        ]
    lines += ["", "Method time (s): " + ", ".join(f"{LABELS[m]} {s:.1f}" for m, s in seconds.items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.nas_common import add_lookup_arguments, lookup_protocol_fields, write_subsection

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lookup_arguments(ap, LCBenchProtocol, DEFAULT_DATA, ROOT / "RESULTS.md")
    ap.add_argument("--tasks", type=int, default=LCBenchProtocol.tasks)
    ap.add_argument("--split", choices=("dev", "test", "all"), default=LCBenchProtocol.split)
    args = ap.parse_args(argv)
    p = LCBenchProtocol(tasks=args.tasks, split=args.split, **lookup_protocol_fields(args))
    t0 = time.perf_counter()
    try:
        table = load_lcbench(args.data_dir / FILE)
    except MissingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outcomes, coverage, seconds = evaluate(table, p, progress=True)
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m bench.nas_lcbench" + (" " + " ".join(given) if given else "")
    text = report(outcomes, coverage, seconds, p, command, time.perf_counter() - t0)
    write_subsection(args.out, f"lcbench-{p.split}", text)
    if args.json:
        payload = {"protocol": p.to_dict(), "coverage": coverage, "outcomes": [asdict(o) for o in outcomes]}
        args.json.write_text(json.dumps(payload))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
