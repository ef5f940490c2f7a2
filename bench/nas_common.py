"""Shared pieces of the architecture-advisor benchmarks: outcome metrics and the RESULTS.md section.

Definitions (every loss here: lower = better):

- A *start* is a run the advisor (or a baseline) tries to improve; its *truth*
  is its true outcome (FCNet: the mean val loss over the table's 4 seeds;
  retraining: the final val loss of the run as trained).
- A method gets ``k`` *look-ups*: it names ``k`` candidates, each is evaluated
  and the best of them counts (``best_of_first``). A candidate that cannot be
  evaluated counts as ``inf`` (a wasted look-up).
- *Improved*: the best found beats the start's truth strictly.
- *Improvable*: some candidate the method may propose beats the start.
- *Regret*: best found - best truth of the search space (0 = optimum found).
- *Normalised regret*: regret / (start truth - space best): the share of the
  possible improvement left on the table (0 = optimum, 1 = no better than the
  start, > 1 = worse than the start). Scale-free, so starts whose losses differ
  by orders of magnitude can be averaged; defined on improvable starts only.

This module imports neither torch nor NNI (``bench/evaluate.py`` imports it to
keep the advisor section of RESULTS.md).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

NAS_BEGIN = "<!-- nas:begin -->"
NAS_END = "<!-- nas:end -->"
NAS_TITLE = "## Architecture advisor"

__all__ = [
    "NAS_BEGIN",
    "NAS_END",
    "LookupProtocol",
    "MethodSummary",
    "Outcome",
    "add_lookup_arguments",
    "best_of_first",
    "fmt",
    "improved",
    "lookup_protocol_fields",
    "markdown_table",
    "nas_section",
    "normalized_regret",
    "paired_comparison",
    "pct",
    "regret",
    "replace_subsection",
    "summarize",
    "with_nas_section",
    "write_subsection",
]


# -- metrics ------------------------------------------------------------------------------------


def advisor_batch(surrogate, rows: Sequence[dict], k: int, sign: float, excluded: Iterable[int] = ()) -> list[int]:
    """The advisor's ``k`` picks among feature ``rows`` from a fitted surrogate, as ``Advisor.suggest`` makes them.

    Ranked by the risk-adjusted objective on the model's scale (``sign * centre + risk_aversion * s``, ``sign``
    -1 for a metric to maximise), then listed to be tried together (:func:`runwatch.nas.portfolio.batch_order`
    over the surrogate's members, ``AdvisorConfig().portfolio_pool`` best-ranked). ``excluded`` rows are never
    named.
    """
    from runwatch.nas.advisor import AdvisorConfig
    from runwatch.nas.portfolio import batch_order

    cfg = AdvisorConfig()
    centre, spread = surrogate.model_stats(rows)
    ranking = sign * centre + cfg.risk_aversion * spread
    ranking[list(excluded)] = np.inf
    open_rows = int(np.isfinite(ranking).sum())
    if cfg.portfolio_pool <= 0:
        return [int(i) for i in np.lexsort((np.arange(ranking.size), ranking))[: min(k, open_rows)]]
    members = sign * surrogate.members(rows)
    return batch_order(ranking, members, k, min(cfg.portfolio_pool, open_rows))


def best_of_first(values: Sequence[float], k: int) -> float:
    """Best (lowest) of the first ``k`` looked-up values; ``inf`` when there are none.

    Non-finite values (a diverged or unevaluable candidate) never win.

    Examples
    --------
    >>> best_of_first([0.5, 0.2, 0.9], 1), best_of_first([0.5, 0.2, 0.9], 3), best_of_first([], 3)
    (0.5, 0.2, inf)
    >>> best_of_first([float("nan"), 0.7], 2)
    0.7
    """
    vals = [float(v) for v in values[:k] if math.isfinite(float(v))]
    return min(vals) if vals else math.inf


def improved(best_found: float, start_truth: float) -> bool:
    """Whether the best found beats the start strictly (minimize).

    Examples
    --------
    >>> improved(0.3, 0.5), improved(0.5, 0.5), improved(math.inf, 0.5)
    (True, False, False)
    """
    return bool(best_found < start_truth)


def regret(best_found: float, space_best: float) -> float:
    """``best_found - space_best`` (>= 0 when ``space_best`` really is the best; minimize).

    Examples
    --------
    >>> round(regret(0.25, 0.2), 6), regret(math.inf, 0.2)
    (0.05, inf)
    """
    return float(best_found - space_best)


def normalized_regret(best_found: float, start_truth: float, space_best: float) -> float:
    """Regret as a share of the possible improvement ``start_truth - space_best``.

    0 = the optimum was found, 1 = nothing better than the start, > 1 = worse than
    the start. NaN when the start cannot be improved (no possible improvement).
    An unevaluable best found (``inf``) is capped to "no better than the start" (1.0)
    so that one wasted look-up does not dominate a mean.

    Examples
    --------
    >>> normalized_regret(0.25, 1.0, 0.25), normalized_regret(0.625, 1.0, 0.25), normalized_regret(1.375, 1.0, 0.25)
    (0.0, 0.5, 1.5)
    >>> normalized_regret(math.inf, 1.0, 0.2), math.isnan(normalized_regret(0.3, 0.2, 0.2))
    (1.0, True)
    """
    gap = start_truth - space_best
    if not gap > 0:
        return math.nan
    if not math.isfinite(best_found):
        return 1.0
    return float((best_found - space_best) / gap)


@dataclass(frozen=True)
class Outcome:
    """What one method achieved on one start with ``k`` look-ups (one seed of a randomised method)."""

    start_id: str
    method: str
    k: int
    start_truth: float
    best_found: float
    space_best: float
    improvable: bool
    seed: int = 0
    group: str = ""  # e.g. the dataset or the problem type

    @property
    def improved(self) -> bool:
        return improved(self.best_found, self.start_truth)

    @property
    def regret(self) -> float:
        return regret(self.best_found, self.space_best)

    @property
    def normalized_regret(self) -> float:
        return normalized_regret(self.best_found, self.start_truth, self.space_best)


@dataclass(frozen=True)
class MethodSummary:
    """Outcomes of one method at one ``k``, pooled over starts (and seeds, equally weighted)."""

    method: str
    k: int
    n: int  # outcomes (starts x seeds)
    starts: int
    improvement_rate: float  # share of all outcomes that improved their start
    improvable: int  # outcomes whose start was improvable
    improved_of_improvable: float  # share of those that were improved
    mean_regret: float  # over outcomes with a finite best found
    median_regret: float
    mean_normalized_regret: float  # over improvable outcomes
    unevaluable: int  # outcomes where no look-up could be evaluated
    median_normalized_regret: float = math.nan  # over improvable outcomes
    capped_mean_normalized_regret: float = math.nan  # each capped at 1 ("no better than the start")

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(outcomes: Iterable[Outcome]) -> MethodSummary:
    """Pool the outcomes of one method at one ``k``.

    Examples
    --------
    >>> o = [Outcome("a", "m", 3, 1.0, 0.5, 0.2, True), Outcome("b", "m", 3, 1.0, 1.2, 0.4, True),
    ...      Outcome("c", "m", 3, 0.1, 0.3, 0.1, False)]
    >>> s = summarize(o)
    >>> s.improvement_rate, s.improvable, s.improved_of_improvable, round(s.mean_regret, 4)
    (0.3333333333333333, 2, 0.5, 0.4333)
    """
    outs = list(outcomes)
    if not outs:
        raise ValueError("no outcomes to summarize")
    methods, ks = {o.method for o in outs}, {o.k for o in outs}
    if len(methods) != 1 or len(ks) != 1:
        raise ValueError(f"summarize one method at one k, got methods {sorted(methods)} and k {sorted(ks)}")
    imp = [o for o in outs if o.improvable]
    finite = [o.regret for o in outs if math.isfinite(o.best_found)]
    norm = [o.normalized_regret for o in imp]
    return MethodSummary(
        method=outs[0].method,
        k=outs[0].k,
        n=len(outs),
        starts=len({o.start_id for o in outs}),
        improvement_rate=sum(o.improved for o in outs) / len(outs),
        improvable=len(imp),
        improved_of_improvable=sum(o.improved for o in imp) / len(imp) if imp else math.nan,
        mean_regret=float(np.mean(finite)) if finite else math.nan,
        median_regret=float(np.median(finite)) if finite else math.nan,
        mean_normalized_regret=float(np.nanmean(norm)) if norm else math.nan,
        unevaluable=sum(not math.isfinite(o.best_found) for o in outs),
        median_normalized_regret=float(np.nanmedian(norm)) if norm else math.nan,
        capped_mean_normalized_regret=float(np.nanmean(np.minimum(norm, 1.0))) if norm else math.nan,
    )


def paired_comparison(outcomes: Iterable[Outcome], method_a: str, method_b: str, k: int) -> tuple[int, int, int]:
    """Starts where ``method_a`` found a better / equal / worse best than ``method_b`` at ``k`` look-ups.

    A randomised method's best found is averaged over its seeds first (an
    ``inf`` seed makes the mean ``inf``). Only starts both methods ran count.

    Examples
    --------
    >>> o = [Outcome("s1", "a", 3, 1.0, 0.2, 0.1, True), Outcome("s1", "b", 3, 1.0, 0.1, 0.1, True, seed=0),
    ...      Outcome("s1", "b", 3, 1.0, 0.5, 0.1, True, seed=1), Outcome("s2", "a", 3, 1.0, 0.4, 0.1, True),
    ...      Outcome("s2", "b", 3, 1.0, 0.4, 0.1, True)]
    >>> paired_comparison(o, "a", "b", 3)  # s1: 0.2 < mean(0.1, 0.5) = 0.3; s2: a tie
    (1, 1, 0)
    """
    by: dict[tuple[str, str], list[float]] = {}
    for o in outcomes:
        if o.k == k and o.method in (method_a, method_b):
            by.setdefault((o.method, o.start_id), []).append(o.best_found)
    wins = ties = losses = 0
    for (method, start), values in by.items():
        if method != method_a or (method_b, start) not in by:
            continue
        a, b = float(np.mean(values)), float(np.mean(by[(method_b, start)]))
        if a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0):
            ties += 1
        elif a < b:
            wins += 1
        else:
            losses += 1
    return wins, ties, losses


# -- the RESULTS.md section ---------------------------------------------------------------------


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"subsection name must be lower-case letters, digits, '_' or '-': {name!r}")
    return f"<!-- nas:{name}:begin -->", f"<!-- nas:{name}:end -->"


def nas_section(text: str) -> str:
    """The advisor section of a RESULTS.md text, markers included ("" when absent).

    Examples
    --------
    >>> nas_section("# R\\n<!-- nas:begin -->\\nx\\n<!-- nas:end -->\\ntail")
    '<!-- nas:begin -->\\nx\\n<!-- nas:end -->'
    >>> nas_section("# R")
    ''
    """
    lo, hi = text.find(NAS_BEGIN), text.find(NAS_END)
    if lo < 0 or hi < lo:
        return ""
    return text[lo : hi + len(NAS_END)]


def with_nas_section(text: str, previous: str) -> str:
    """``text`` with the advisor section of ``previous`` appended (what a regenerated RESULTS.md keeps).

    Examples
    --------
    >>> old = "# Old\\n<!-- nas:begin -->\\nkeep\\n<!-- nas:end -->\\n"
    >>> with_nas_section("# New\\n", old)
    '# New\\n\\n<!-- nas:begin -->\\nkeep\\n<!-- nas:end -->\\n'
    >>> with_nas_section("# New\\n", "# Old\\n")
    '# New\\n'
    """
    section = nas_section(previous)
    if not section:
        return text
    return text.rstrip("\n") + "\n\n" + section + "\n"


def replace_subsection(text: str, name: str, body: str) -> str:
    """``text`` with the advisor subsection ``name`` replaced by ``body`` (created if absent).

    The advisor section (``<!-- nas:begin -->`` ... ``<!-- nas:end -->``) is
    appended to ``text`` when it is missing; inside it, the subsection between
    ``<!-- nas:NAME:begin -->`` and ``<!-- nas:NAME:end -->`` is replaced, or
    appended at the end of the section. Everything else is kept byte for byte.

    Examples
    --------
    >>> t = replace_subsection("# R\\n", "fcnet", "one")
    >>> t = replace_subsection(t, "retrain", "two")
    >>> t = replace_subsection(t, "fcnet", "ONE")
    >>> print(t)
    # R
    <BLANKLINE>
    <!-- nas:begin -->
    ## Architecture advisor
    <BLANKLINE>
    <!-- nas:fcnet:begin -->
    ONE
    <!-- nas:fcnet:end -->
    <!-- nas:retrain:begin -->
    two
    <!-- nas:retrain:end -->
    <!-- nas:end -->
    <BLANKLINE>
    """
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    section = nas_section(text)
    if not section:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{sep}{NAS_BEGIN}\n{NAS_TITLE}\n\n{block}\n{NAS_END}\n"
    lo, hi = section.find(begin), section.find(end)
    if lo >= 0 and hi > lo:
        new = section[:lo] + block + section[hi + len(end) :]
    else:
        inner_end = section.rfind(NAS_END)
        new = section[:inner_end].rstrip("\n") + "\n" + block + "\n" + NAS_END
    return text.replace(section, new, 1)


def write_subsection(path: str | Path, name: str, body: str) -> None:
    """Replace (or add) the advisor subsection ``name`` of the markdown file at ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_subsection(text, name, body))


@dataclass
class LookupProtocol:
    """Settings a look-up benchmark over a table shares (JSON round trip through ``to_dict`` / ``from_dict``).

    Each method names ``k`` entries of the table for each of ``starts`` poor starts (``start_quantile`` says
    which), having seen a history of ``history_size`` entries; randomised methods run ``baseline_seeds`` times.

    Examples
    --------
    >>> p = LookupProtocol(starts=5, ks=(1, 3))
    >>> LookupProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    True
    """

    starts: int = 100
    start_quantile: float = 0.25
    history_size: int = 400
    ks: tuple[int, ...] = (1, 3, 10)
    seed: int = 0
    baseline_seeds: int = 3
    methods: tuple[str, ...] = ("advisor", "forest", "tpe_warm", "random")
    surrogate_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        for k in ("ks", "methods"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def add_lookup_arguments(ap, defaults, data_dir: Path, out: Path) -> None:
    """The options every look-up benchmark over a table shares (NAS-Bench-201, LCBench); defaults from ``defaults``,
    a protocol dataclass with ``starts``, ``history_size``, ``ks``, ``baseline_seeds``, ``methods``."""
    ap.add_argument("--data-dir", type=Path, default=data_dir)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--starts", type=int, default=defaults.starts)
    ap.add_argument("--history", type=int, default=defaults.history_size)
    ap.add_argument("--ks", type=int, nargs="+", default=list(defaults.ks))
    ap.add_argument("--baseline-seeds", type=int, default=defaults.baseline_seeds)
    ap.add_argument("--methods", nargs="+", default=list(defaults.methods))
    ap.add_argument("--surrogate-config", type=str, default="{}")
    ap.add_argument("--seed", type=int, default=0)


def lookup_protocol_fields(args) -> dict:
    """The protocol fields of :func:`add_lookup_arguments`' options, as keyword arguments."""
    return {
        "starts": args.starts,
        "history_size": args.history,
        "ks": tuple(sorted(args.ks)),
        "seed": args.seed,
        "baseline_seeds": args.baseline_seeds,
        "methods": tuple(args.methods),
        "surrogate_config": json.loads(args.surrogate_config),
    }


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """A GitHub markdown table; ``align`` one char per column ('l' or 'r', default: first l, rest r).

    Examples
    --------
    >>> markdown_table(["a", "b"], [[1, 2]])
    ['| a | b |', '|---|---:|', '| 1 | 2 |']
    """
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def fmt(x: float, nd: int = 3) -> str:
    """A number for a table: ``–`` for NaN, ``inf`` kept, ``nd`` significant digits otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{nd}g}"


def pct(x: float) -> str:
    """A share as a percentage for a table."""
    return "–" if x is None or math.isnan(x) else f"{100 * x:.0f}%"
