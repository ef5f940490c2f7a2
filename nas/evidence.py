"""How a run compares with its peers, in sentences a user can check against the logs.

:func:`run_summary` reduces a run to a few end-of-run numbers (final training
loss, val/train gap, smallest layer gradient norm, ...); :class:`PeerSummary`
holds those numbers for the other runs of the history and words a comparison:
``"val/train gap 0.42 vs peers' median 0.05 (IQR 0.03–0.08, n=37)"``.

Rules that keep the evidence honest (every number can be recomputed from the
store: the peers are the other runs of the project, or of the run's task, and
each summary is defined in :func:`run_summary`):

- Runs that diverged (:func:`~runwatch.nas.risk.diverged`: a non-finite final
  loss or target, or a ``nonfinite`` finding) are not peers for these
  statistics, and non-finite values are ignored: an exploded run's 1e28 is not
  a reference level.
- A statistic is a *reason* only when it separates the run from its peers
  (:meth:`PeerSummary.separation`): a robust z-score ``|value - median| /
  (1.4826 * MAD)`` above 2 (``MAD`` = median absolute deviation; when it is 0,
  the interquartile range / 1.349 stands in; when that is 0 too, most peers
  share one value and any other value separates), among at least 3 peers.
  The advisor also requires the side that supports the edit (a larger
  parameter count backs making the net smaller, not larger).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from runwatch.nas.features import train_loss_name
from runwatch.nas.history import RunObservation

__all__ = ["SUMMARY_LABELS", "TASK_KEYS", "PeerSummary", "run_summary", "task_of"]

# summary name -> how it reads in a sentence
SUMMARY_LABELS: dict[str, str] = {
    "final_train_loss": "final train loss",
    "final_val_loss": "final val/loss",
    "gap": "val/train gap",
    "rel_gap": "val/train gap relative to the train loss",
    "params": "parameters",
    "min_layer_grad_norm": "smallest layer grad norm",
    "max_dead_frac": "largest dead-unit fraction",
    "max_sat_frac": "largest saturated fraction",
    "max_grad_norm": "largest grad_norm",
}


MIN_PEERS = 3
ROBUST_Z = 2.0
_MAD_TO_STD = 1.4826
_IQR_TO_STD = 1.349


def _tail_median(values: np.ndarray, frac: float = 0.1) -> float:
    v = values[-max(1, round(frac * values.size)) :]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def run_summary(obs: RunObservation) -> dict[str, float]:
    """End-of-run numbers of one run (absent when the run did not log what they need).

    ``final_train_loss`` is the median of the last 10 % of training-loss
    points (mini-batch noise); ``final_val_loss`` the last finite validation
    loss; ``gap`` their difference, ``rel_gap`` that over the training loss
    (the gap on the run's own loss scale); layer statistics are medians over the last
    half of the run, then the extreme layer.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(100)
    >>> obs = RunObservation("r", None, series={"loss": (s, np.full(100, 0.1)), "val/loss": (s[::10], np.full(10, 0.5))})
    >>> run_summary(obs)["gap"]
    0.4
    """
    out: dict[str, float] = {}
    series = obs.series
    train = train_loss_name(series)
    diverged = False
    if train:
        tv = np.asarray(series[train][1], dtype=float)
        diverged = bool(tv.size and not np.isfinite(tv[-1]))
        if not diverged:  # a diverged run has no final loss to compare
            out["final_train_loss"] = _tail_median(tv)
    val_name = "val/loss" if "val/loss" in series else ("val_loss" if "val_loss" in series else "")
    if val_name:
        vv = np.asarray(series[val_name][1], dtype=float)
        vv = vv[np.isfinite(vv)]
        if vv.size:
            out["final_val_loss"] = float(vv[-1])
    if "final_train_loss" in out and "final_val_loss" in out:
        out["gap"] = round(out["final_val_loss"] - out["final_train_loss"], 12)
        if out["final_train_loss"] > 0:  # the gap on the run's own loss scale
            out["rel_gap"] = round(out["gap"] / out["final_train_loss"], 12)
    if obs.genome is not None:
        out["params"] = float(obs.genome.params())
    grads, dead, sat = [], [], []
    for name, (steps, values) in series.items():
        v = np.asarray(values, dtype=float)
        v = v[v.size // 2 :]
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        med = float(np.median(v))
        if name.startswith("grad_norm/"):
            grads.append(med)
        elif name.startswith("act/zero_frac/"):
            dead.append(med)
        elif name.startswith("act/sat_frac/"):
            sat.append(med)
        elif name == "grad_norm":
            out["max_grad_norm"] = float(v.max())
    if grads:
        out["min_layer_grad_norm"] = min(grads)
    if dead:
        out["max_dead_frac"] = max(dead)
    if sat:
        out["max_sat_frac"] = max(sat)
    return out


TASK_KEYS = ("task", "dataset", "dataset_name", "data")


def task_of(run: RunObservation) -> str:
    """The run's task as ``"key=value"`` from its hyperparameters (``task``, ``dataset``, ...); "" when none is logged.

    Runs of one task share a loss scale; runs of different tasks do not (a
    10-class cross-entropy starts near 2.3, a 2-class one near 0.69).

    Examples
    --------
    >>> task_of(RunObservation("r", None, hyperparameters={"lr": 0.1, "dataset": "digits"}))
    'dataset=digits'
    >>> task_of(RunObservation("r", None, hyperparameters={"lr": 0.1}))
    ''
    """
    lowered = {str(k).lower(): v for k, v in run.hyperparameters.items()}
    for key in TASK_KEYS:
        v = lowered.get(key)
        if isinstance(v, str) and v:
            return f"{key}={v}"
    return ""


@dataclass
class PeerSummary:
    """End-of-run numbers of the peer runs, per run id, to compare one run against.

    ``tasks`` maps run ids to :func:`task_of`; :meth:`for_task` keeps the
    peers of one task (same loss scale), and its comparisons say so
    (``scope``).

    Examples
    --------
    >>> peers = PeerSummary({"a": {"gap": 0.05}, "b": {"gap": 0.07}, "c": {"gap": 0.03}})
    >>> peers.compare("gap", 0.42)
    "val/train gap 0.42 vs peers' median 0.05 (IQR 0.04–0.06, n=3)"
    >>> peers.without("a").n("gap")
    2
    >>> tasked = PeerSummary(peers.by_run, {"a": "dataset=wine", "b": "dataset=wine", "c": "dataset=iris"})
    >>> tasked.for_task("dataset=wine").compare("gap", 0.42)
    "val/train gap 0.42 vs dataset=wine peers' median 0.06 (n=2)"
    """

    by_run: dict[str, dict[str, float]] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    scope: str = ""
    flagged: frozenset[str] = frozenset()
    diverged: frozenset[str] = frozenset()
    families: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_history(cls, history: Iterable[RunObservation]) -> PeerSummary:
        from runwatch.nas.risk import diverged

        runs = list(history)
        return cls(
            {obs.run_id: run_summary(obs) for obs in runs},
            {obs.run_id: task_of(obs) for obs in runs},
            flagged=frozenset(obs.run_id for obs in runs if obs.diagnoses),
            diverged=frozenset(obs.run_id for obs in runs if diverged(obs)),
            families={obs.run_id: obs.genome.family for obs in runs if obs.genome is not None},
        )

    def without(self, run_id: str) -> PeerSummary:
        """The same peers minus one run (a run is never its own peer)."""
        return PeerSummary(
            {k: v for k, v in self.by_run.items() if k != run_id},
            {k: v for k, v in self.tasks.items() if k != run_id},
            self.scope,
            self.flagged - {run_id},
            self.diverged - {run_id},
            {k: v for k, v in self.families.items() if k != run_id},
        )

    def for_task(self, task: str) -> PeerSummary:
        """The peers that ran ``task`` (all peers when ``task`` is "")."""
        if not task:
            return self
        keep = {k for k, t in self.tasks.items() if t == task}
        return PeerSummary(
            {k: v for k, v in self.by_run.items() if k in keep},
            {k: task for k in keep if k in self.by_run},
            task,
            self.flagged & keep,
            self.diverged & keep,
            {k: v for k, v in self.families.items() if k in keep},
        )

    def for_family(self, family: str) -> PeerSummary:
        """The peers whose architecture is of ``family`` (``mlp``, ``cnn``, ``rnn``, ``transformer``).

        A GRU tagger and an MLP on one task do not reach the same training
        loss; a run is judged against nets like it. The scope names the
        family (``"cnn dataset=digits"``).

        Examples
        --------
        >>> peers = PeerSummary({"a": {"gap": 0.1}, "b": {"gap": 0.3}}, families={"a": "cnn", "b": "mlp"})
        >>> peers.for_family("cnn").compare("gap", 0.42)
        "val/train gap 0.42 vs cnn peers' median 0.1 (n=1)"
        """
        keep = {k for k, f in self.families.items() if f == family}
        return PeerSummary(
            {k: v for k, v in self.by_run.items() if k in keep},
            {k: t for k, t in self.tasks.items() if k in keep},
            f"{family} {self.scope}".strip(),
            self.flagged & keep,
            self.diverged & keep,
            {k: family for k in keep},
        )

    def healthy(self) -> PeerSummary:
        """The peers runwatch raised no finding for (``flagged`` holds the others).

        A reference level read from these cannot be lifted by faulty runs
        (a corpus where most runs diverged or stalled would otherwise make a
        stalled run look ordinary).

        Examples
        --------
        >>> peers = PeerSummary({"a": {"gap": 0.05}, "b": {"gap": 3.0}}, flagged=frozenset({"b"}))
        >>> peers.healthy().compare("gap", 0.42)
        "val/train gap 0.42 vs healthy-looking peers' median 0.05 (n=1)"
        """
        keep = {k for k in self.by_run if k not in self.flagged}
        if len(keep) == len(self.by_run):  # nothing flagged: the same peers, said the same way
            return self
        scope = f"healthy-looking {self.scope}" if self.scope else "healthy-looking"
        return PeerSummary(
            {k: v for k, v in self.by_run.items() if k in keep},
            {k: t for k, t in self.tasks.items() if k in keep},
            scope,
            diverged=self.diverged & keep,
            families={k: f for k, f in self.families.items() if k in keep},
        )

    def values(self, name: str) -> np.ndarray:
        """The finite values of ``name`` among the peers that did not diverge.

        Examples
        --------
        >>> peers = PeerSummary({"a": {"gap": 0.1}, "b": {"gap": 0.3}, "c": {"gap": 1.2e28}}, diverged=frozenset({"c"}))
        >>> peers.values("gap").tolist(), peers.median("gap")
        ([0.1, 0.3], 0.2)
        """
        v = np.array([s[name] for k, s in self.by_run.items() if name in s and k not in self.diverged], dtype=float)
        return v[np.isfinite(v)]

    def n(self, name: str) -> int:
        return int(self.values(name).size)

    def median(self, name: str) -> float:
        v = self.values(name)
        return float(np.median(v)) if v.size else math.nan

    def quantile(self, name: str, q: float) -> float:
        v = self.values(name)
        return float(np.quantile(v, q)) if v.size else math.nan

    def robust_z(self, name: str, value: float) -> float:
        """``(value - median) / scale`` against the peers (module docstring); NaN with fewer than 3 peers.

        ``scale`` is 1.4826 x the median absolute deviation, else the
        interquartile range / 1.349; when both are 0, ``±inf`` for a value
        that differs from the shared one and 0 for one that does not.

        Examples
        --------
        >>> peers = PeerSummary({k: {"gap": v} for k, v in zip("abcde", [0.1, 0.2, 0.2, 0.3, 0.4])})
        >>> round(peers.robust_z("gap", 0.6), 2), round(peers.robust_z("gap", 0.25), 2)
        (2.7, 0.34)
        """
        v = self.values(name)
        if v.size < MIN_PEERS or not math.isfinite(value):
            return math.nan
        med = float(np.median(v))
        scale = _MAD_TO_STD * float(np.median(np.abs(v - med)))
        if scale <= 0:
            q1, q3 = np.quantile(v, [0.25, 0.75])
            scale = float(q3 - q1) / _IQR_TO_STD
        diff = value - med
        if scale <= 0:
            if math.isclose(value, med, rel_tol=1e-6, abs_tol=1e-12):
                return 0.0
            return math.copysign(math.inf, diff)
        return diff / scale

    def separation(self, name: str, value: float) -> str:
        """``"above"`` / ``"below"`` when ``value`` separates the run from its peers (robust z beyond ±2), else "".

        Examples
        --------
        >>> peers = PeerSummary({k: {"max_dead_frac": v} for k, v in zip("abcdef", [0.45, 0.49, 0.5, 0.52, 0.48, 0.6])})
        >>> peers.separation("max_dead_frac", 0.487), peers.separation("max_dead_frac", 0.95)
        ('', 'above')
        """
        z = self.robust_z(name, value)
        if math.isnan(z) or abs(z) <= ROBUST_Z:  # NaN: too few peers
            return ""
        return "above" if z > 0 else "below"

    def compare(self, name: str, value: float) -> str:
        """``"<label> <value> vs peers' median <median> (IQR <q1>–<q3>, n=<peers>)"``, or a note that there are no peers."""
        label = SUMMARY_LABELS.get(name, name)
        fmt = _fmt_count if name == "params" else _fmt
        n = self.n(name)
        who = f"{self.scope} peers'" if self.scope else "peers'"
        if not n:
            return f"{label} {fmt(value)} (no {self.scope + ' ' if self.scope else ''}peer run logged it)"
        spread = ""
        if n >= MIN_PEERS:
            spread = f"IQR {fmt(self.quantile(name, 0.25))}–{fmt(self.quantile(name, 0.75))}, "
        return f"{label} {fmt(value)} vs {who} median {fmt(self.median(name))} ({spread}n={n})"

    def compare_all(
        self, names: Iterable[str], summary: Mapping[str, float], sides: Mapping[str, str] | None = None
    ) -> list[str]:
        """:meth:`compare` for each name on which the run separates from its peers (:meth:`separation`).

        ``sides`` maps a name to the side (``"above"`` / ``"below"``) that counts
        as a reason; names it lists on another side are left out.

        Examples
        --------
        >>> peers = PeerSummary({k: {"params": v} for k, v in zip("abcde", [900, 1000, 1100, 1000, 950])})
        >>> peers.compare_all(["params"], {"params": 50000}, {"params": "above"})
        ["parameters 50,000 vs peers' median 1,000 (IQR 950–1,000, n=5)"]
        >>> peers.compare_all(["params"], {"params": 50000}, {"params": "below"}), peers.compare_all(["params"], {"params": 990})
        ([], [])
        """
        out = []
        for k in names:
            v = summary.get(k, math.nan)
            side = self.separation(k, v)
            if side and (sides is None or sides.get(k, side) == side):
                out.append(self.compare(k, v))
        return out


def _fmt_count(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else str(x)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2g}"
    return f"{x:.3g}"
