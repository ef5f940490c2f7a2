"""Sudden upward spikes of the training loss (robust z-score against an EWMA baseline).

Also home of the small building blocks the other diagnostics share: severity
from a score, column selection memoised per set of metric names, gathering a
block's watched columns for one kernel call, per-metric kernel state
(:class:`MetricTable`), the base of diagnostics with independent state per
metric (:class:`ColumnsDiagnostic`) and the robust-spike diagnostic base
(latency, error rate) over the compiled
:func:`~runwatch.models.kernels.robust_spike` kernel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import MAD_TO_SIGMA, robust_spike, scratch, spike_state

__all__ = [
    "MAD_TO_SIGMA",
    "ColumnsDiagnostic",
    "LossSpikeConfig",
    "LossSpikeDiagnostic",
    "MetricTable",
    "SpikeDiagnostic",
    "by_step",
    "gather",
    "names_id",
    "select_columns",
    "selected_names",
    "severity_for",
]


def severity_for(z: float, threshold: float) -> Severity:
    """WARNING at the threshold, ERROR at twice it, CRITICAL at four times it.

    Examples
    --------
    >>> severity_for(7.0, 6.0).name, severity_for(13.0, 6.0).name, severity_for(30.0, 6.0).name
    ('WARNING', 'ERROR', 'CRITICAL')
    """
    if z >= 4.0 * threshold:
        return Severity.CRITICAL
    if z >= 2.0 * threshold:
        return Severity.ERROR
    return Severity.WARNING


_last_block: tuple[object, int, int] = (None, -1, 0)  # columns of the last block seen, id of its names, count
_name_sets: dict[tuple[str, ...], int] = {}
_new_id = itertools.count()


def names_id(block: MetricBlock) -> int:
    """An id of the block's metric names (in column order), computed once per block for all diagnostics.

    Every diagnostic of a run looks at the same block in turn: the first
    builds the name tuple and looks up its id, the others find the block's
    columns in a one-entry memo (which keeps the last block's columns alive
    until the next block, so an identity match cannot be a recycled object).

    Examples
    --------
    >>> a = MetricBlock.single(1, 0.0, {"loss": 1.0, "lr": 0.1})
    >>> names_id(a) == names_id(MetricBlock.single(2, 0.0, {"loss": 0.9, "lr": 0.1})) != names_id(
    ...     MetricBlock.single(3, 0.0, {"loss": 0.8}))
    True
    """
    global _last_block
    cols = block.columns
    last = _last_block
    if last[0] is cols and last[2] == len(cols):
        return last[1]
    key = tuple(cols)
    i = _name_sets.get(key)
    if i is None:
        if len(_name_sets) >= 4096:  # ids stay unique: stale ones only miss in the diagnostics' memos
            _name_sets.clear()
        i = _name_sets[key] = next(_new_id)
    _last_block = (cols, i, len(cols))
    return i


def selected_names(diag: Diagnostic, block: MetricBlock) -> tuple[str, ...]:
    """Names of the block's columns ``diag`` watches, in name order, memoised by the block's metric names.

    The same as the names of ``diag.select(block)``. Consecutive blocks of a
    run nearly always carry the same metrics, so the scan over every name
    runs once per distinct set of names (:func:`names_id`), not once per
    block.

    Examples
    --------
    >>> d = LossSpikeDiagnostic(LossSpikeConfig(metrics=("loss", "aux_loss")))
    >>> selected_names(d, MetricBlock.from_rows([1], [0.0], [{"loss": 1.0, "lr": 0.1, "aux_loss": 0.5}]))
    ('aux_loss', 'loss')
    """
    key = names_id(block)
    try:
        cache = diag._selected  # type: ignore[attr-defined]
    except AttributeError:
        cache = diag._selected = {}  # type: ignore[attr-defined]
    names = cache.get(key)
    if names is None:
        if len(cache) >= 64:  # a run whose metric sets keep changing: do not grow without bound
            cache.clear()
        names = cache[key] = tuple(name for name, _ in Diagnostic.select(diag, block))
    return names


def select_columns(diag: Diagnostic, block: MetricBlock) -> list[tuple[str, Column]]:
    """``diag.select(block)``: the watched ``(name, column)`` pairs in name order, via :func:`selected_names`."""
    cols = block.columns
    return [(name, cols[name]) for name in selected_names(diag, block)]


def by_step(findings: list[Finding]) -> list[Finding]:
    """Sort per-column findings by step (stable: equal steps keep metric-name order)."""
    if len(findings) > 1:
        findings.sort(key=lambda f: f.step)
    return findings


def gather(cols: list[Column]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Concatenate columns for one kernel call: ``(steps, values, offsets, aligned)``.

    ``offsets`` (length ``len(cols) + 1``) delimits the columns in
    ``values``. When every column comes from every event of the block (they
    share one step array) the columns are *aligned* and ``steps`` is that
    array; otherwise it is the concatenation of the columns' steps (see
    :func:`~runwatch.models.kernels.merge_order`).

    Examples
    --------
    >>> b = MetricBlock.from_rows([1, 2], [0.0, 0.0], [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}])
    >>> steps, values, offsets, aligned = gather([b.columns["a"], b.columns["b"]])
    >>> steps.tolist(), values.tolist(), offsets.tolist(), aligned
    ([1, 2], [1.0, 3.0, 2.0, 4.0], [0, 2, 4], True)
    """
    first = cols[0]
    k, n = len(cols), len(first)
    s0 = first.steps
    for c in cols:
        if c.steps is not s0:
            break
    else:
        offsets = _aligned_offsets.get((k, n))
        if offsets is None:
            if len(_aligned_offsets) >= 256:
                _aligned_offsets.clear()
            offsets = _aligned_offsets[k, n] = np.arange(k + 1, dtype=np.int64) * n  # never written to
        return s0, first.values if k == 1 else np.concatenate([c.values for c in cols]), offsets, True
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum([len(c) for c in cols], out=offsets[1:])
    return np.concatenate([c.steps for c in cols]), np.concatenate([c.values for c in cols]), offsets, False


_aligned_offsets: dict[tuple[int, int], np.ndarray] = {}


class MetricTable:
    """Per-metric rows of a kernel's state, stable for the life of the run.

    :meth:`rows_for` maps a block's watched metrics to their rows (the
    ``rows`` argument of the multi-column kernels), adding a row, initialised
    to ``init``, for each metric seen for the first time.

    Examples
    --------
    >>> t = MetricTable(np.array([0.0, 1.0]))
    >>> t.rows_for(("b", "c")).tolist(), t.rows_for(("a", "b")).tolist(), t.state.tolist()
    ([0, 1], [2, 0], [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    """

    __slots__ = ("_by_names", "init", "labels", "rows", "state")

    def __init__(self, init: np.ndarray) -> None:
        self.init = init
        self.rows: dict[str, int] = {}
        self.labels: list[str] = []  # per row: the label of its metric (e.g. a layer name)
        self.state = np.zeros((0, len(init)))
        self._by_names: dict[tuple[str, ...], np.ndarray] = {}

    def rows_for(self, metrics: tuple[str, ...], label: Callable[[str], str | None] = str) -> np.ndarray:
        """Row of each metric, in order (-1 for metrics whose ``label`` is None); memoised per tuple."""
        rows = self._by_names.get(metrics)
        if rows is None:
            out = []
            for metric in metrics:
                name = label(metric)
                if name is None:
                    out.append(-1)
                    continue
                row = self.rows.get(metric)
                if row is None:
                    row = self.rows[metric] = len(self.labels)
                    self.labels.append(name)
                out.append(row)
            grow = len(self.labels) - len(self.state)
            if grow > 0:
                self.state = np.concatenate([self.state, np.tile(self.init, (grow, 1))])
            if len(self._by_names) >= 64:
                self._by_names.clear()
            rows = self._by_names[metrics] = np.array(out, dtype=np.int64)
        return rows


class ColumnsDiagnostic(Diagnostic):
    """Base of diagnostics with independent state per watched metric.

    All watched columns of a block go through one call of a compiled
    multi-column kernel (:func:`gather`, :class:`MetricTable`); subclasses
    implement :meth:`watches`, :meth:`initial_state`, :meth:`run_kernel` and
    :meth:`finding`. Findings are returned in step order, equal steps in
    metric-name order, as value-by-value feeding produces them.
    """

    state_attributes = ("_table",)

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        super().__init__(config)
        self._table = MetricTable(self.initial_state())

    def initial_state(self) -> np.ndarray:
        """The kernel state of a metric before its first value."""
        raise NotImplementedError

    def run_kernel(
        self,
        steps: np.ndarray,
        values: np.ndarray,
        offsets: np.ndarray,
        aligned: bool,
        rows: np.ndarray,
        states: np.ndarray,
        out: np.ndarray,
    ) -> int:
        """Call the kernel; return the number of rows it wrote to ``out`` (column, index, ...)."""
        raise NotImplementedError

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        """The finding of one kernel output row (``row[1]`` is the index in ``col``)."""
        raise NotImplementedError

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        names = selected_names(self, block)
        if not names:
            return []
        table = self._table
        rows = table.rows_for(names)
        cols = [block.columns[name] for name in names]
        steps, values, offsets, aligned = gather(cols)
        out = scratch(len(values))
        nf = self.run_kernel(steps, values, offsets, aligned, rows, table.state, out)
        if not nf:
            return []
        return by_step([self.finding(names[j], cols[j], row) for row in out[:nf].tolist() for j in (int(row[0]),)])


class SpikeDiagnostic(ColumnsDiagnostic):
    """Base of the robust-spike diagnostics: one compiled baseline per watched metric.

    Each watched column runs through :func:`~runwatch.models.kernels.robust_spike`
    (EWMA mean and MAD baseline, floored scale, winsorised spikes; see
    :class:`LossSpikeDiagnostic`). Subclasses set ``kind`` and ``unit`` and
    implement :meth:`watches` and :meth:`spike_params`.
    """

    kind: ClassVar[AnomalyKind]
    unit: ClassVar[str] = ""

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        super().__init__(config)
        self._params = self.spike_params()
        self._threshold, self._patience, self._early_ratio = self._params[2], self._params[8], self._params[9]

    def spike_params(self) -> tuple:
        """``(alpha, warmup, z_threshold, clip_z, rel_floor, abs_floor, level_floor, min_value, patience,
        early_ratio)`` (``early_ratio`` 0: no finding within the warm-up)."""
        raise NotImplementedError

    def initial_state(self) -> np.ndarray:
        return spike_state()

    def run_kernel(
        self,
        steps: np.ndarray,
        values: np.ndarray,
        offsets: np.ndarray,
        aligned: bool,
        rows: np.ndarray,
        states: np.ndarray,
        out: np.ndarray,
    ) -> int:
        return robust_spike(values, offsets, rows, states, *self._params, out)

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        z, base, scale, run = row[2], row[3], row[4], int(row[5])
        value = float(col.values[i])
        unit = self.unit
        if run < 0:  # within the warm-up: the jump over the highest baseline so far
            severity = Severity.CRITICAL
            explanation = (
                f"{metric} = {value:.4g}{unit} is {z:.3g}x its highest smoothed level so far {base:.4g}{unit}, within "
                f"its first values (a jump over {self._early_ratio:.3g}x counts before the noise is known)"
            )
        else:
            held = f" for {run} consecutive values" if self._patience > 1 else ""
            severity = severity_for(z, self._threshold)
            explanation = (
                f"{metric} = {value:.4g}{unit} is {z:.3g} robust SDs above its baseline "
                f"{base:.4g}{unit} (scale {scale:.3g}){held}"
            )
        return Finding(
            self.kind, severity, score=z, step=int(col.steps[i]), metric=metric, explanation=explanation,
            wall_time=float(col.wall_times[i]),
        )


class LossSpikeConfig(DiagnosticConfig):
    """Settings of :class:`LossSpikeDiagnostic`.

    Parameters
    ----------
    metrics
        Exact metric names to watch. Default ``("loss",)``.
    alpha
        EWMA weight of the baseline. Default 0.05 (an effective memory of
        ~20 steps: fast enough to follow a decreasing loss, slow enough that a
        few noisy mini-batches do not move it).
    warmup
        Finite values seen before the first finding. Default 50: the MAD
        starts at zero and needs ~1/alpha values to be meaningful, and the
        first steps of training move the loss fastest.
    z_threshold
        Robust z (deviations in Gaussian-SD units of the EWMA MAD) that counts
        as a spike. Default 8: mini-batch losses are heavy-tailed, and in
        healthy Adam runs on digits with batch size 16 (1,000 steps, 9 seeds)
        the largest z was 5.8; in 78 healthy GPT-2 speedrun logs one odd data
        batch reaches z 6.6-6.8 in every run. A corrupted batch scores 35-100.
    clip_z
        Values above ``mean + clip_z * scale`` update the baseline at that
        bound. Default 3.
    rel_floor
        Scale floor as a fraction of the baseline. Default 0.05: a loss
        holding at 2.000 +- 0.001 needs to move by 0.6 (30 %) to fire, not by
        0.01.
    level_floor
        Scale floor as a fraction of the highest baseline seen (usually the
        initial loss). Default 0.02: once a cross-entropy has converged from
        2.3 to 0.03, a mini-batch at 0.25 is not a spike (z < 5), one at 2.0
        is (z 43).
    alert_z
        Spikes from ``z_threshold`` up to ``alert_z`` are reported as INFO
        (context on the dashboard, no alert); from ``alert_z`` on they are
        WARNING, ERROR at 2x, CRITICAL at 4x. Default 32: in the corpus's
        training split, 30 of 252 healthy runs had a mini-batch loss 8-54
        robust SDs above its baseline (small batches on hard tasks are heavy
        tailed), 2 of them at 32 or more, while 15 of 19 single bad batches
        scored 36-1,355.
    early_jump_ratio
        Within the warm-up, before the noise is known, a loss this multiple
        of its highest level so far is a spike already (CRITICAL; 0 turns it
        off). Default 1e4: a sparse log (a Trainer logging every 500 steps
        has 10-50 values) or an excerpt can blow up within its first 50
        values (mmdetection: 0.62, 1.01, then 225,193); no healthy run on
        this machine's real logs jumps more than 852x its highest earlier
        value (a PINN's loss), the corpus's healthy runs 3.8x.
    """

    metrics: tuple[str, ...] = ("loss",)
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=50, ge=1)
    z_threshold: float = Field(default=8.0, gt=0.0)
    clip_z: float = Field(default=3.0, gt=0.0)
    rel_floor: float = Field(default=0.05, ge=0.0)
    level_floor: float = Field(default=0.02, ge=0.0)
    alert_z: float = Field(default=32.0, gt=0.0)
    early_jump_ratio: float = Field(default=1e4, ge=0.0)

    @model_validator(mode="after")
    def _alert_above_detection(self) -> LossSpikeConfig:
        if self.alert_z < self.z_threshold:
            raise ValueError(f"alert_z ({self.alert_z:g}) must be at least z_threshold ({self.z_threshold:g})")
        return self


class LossSpikeDiagnostic(SpikeDiagnostic):
    """Flags a loss value far above its recent robust baseline.

    The spike score is a robust z-score against an EWMA mean and EWMA mean
    absolute deviation (the EWMA mean / mean-absolute-deviation estimator of :func:`~runwatch.models.kernels.robust_spike`), with the
    scale floored so a near-constant or converged loss does not fire on tiny
    wiggles, and spikes winsorised before they enter the baseline. Loss
    spikes of this kind are the instability documented for large-model
    training (PaLM, Chowdhery et al. 2022, sec. 5.1; the OPT-175B logbook),
    and a bad batch or a too-high learning rate in small ones.

    The robust scale is floored at ``max(rel_floor * |mean|, level_floor *
    peak)`` where ``peak`` is the highest baseline mean seen so far: a
    near-constant series does not fire on tiny wiggles, and a series that has
    converged far below its starting level (a loss near zero) does not fire
    on wiggles that are large only relative to its tiny current value. A
    value above ``mean + clip_z * scale`` updates the baseline as if it were
    exactly at that bound (winsorised), so a spike is not absorbed at full
    weight and cannot hide the next one; downward moves are absorbed at full
    weight so the baseline keeps up with an improving loss. Non-finite values
    are ignored. Per-value work runs in the compiled
    :func:`~runwatch.models.kernels.robust_spike` kernel, one baseline per
    watched metric.

    Severity: INFO from ``z_threshold``; WARNING at ``alert_z``, ERROR at 2x,
    CRITICAL at 4x.

    Examples
    --------
    >>> d = LossSpikeDiagnostic(LossSpikeConfig(warmup=10, alert_z=16))
    >>> rows = [{"loss": 2.0 - 0.01 * i + 0.02 * (i % 2), "accuracy": 0.5} for i in range(30)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(30)), [0.0] * 30, rows))
    []
    >>> (f,) = d.observe_block(MetricBlock.single(30, 0.0, {"loss": 9.0}))
    >>> f.kind.name, f.severity.name, round(f.score)
    ('LOSS_SPIKE', 'CRITICAL', 66)
    >>> f.explanation
    'loss = 9 is 66.3 robust SDs above its baseline 1.865 (scale 0.108)'
    >>> (f,) = d.observe_block(MetricBlock.single(31, 0.0, {"loss": 3.0}))
    >>> f.severity.name, round(f.score)
    ('INFO', 9)
    >>> d.watches("accuracy")
    False
    """

    name = "loss_spike"
    version = "1"
    config_class = LossSpikeConfig
    reference = "Robust (EWMA/MAD) z-score; loss spikes as in PaLM (Chowdhery et al. 2022, sec. 5.1)"

    config: LossSpikeConfig
    kind = AnomalyKind.LOSS_SPIKE

    def watches(self, metric: str) -> bool:
        return metric in self.config.metrics

    def spike_params(self) -> tuple:
        cfg = self.config
        return (
            float(cfg.alpha),
            int(cfg.warmup),
            float(cfg.z_threshold),
            float(cfg.clip_z),
            float(cfg.rel_floor),
            0.0,
            float(cfg.level_floor),
            -math.inf,
            1,
            float(cfg.early_jump_ratio),
        )

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        f = super().finding(metric, col, row)
        if row[5] < 0:
            return f
        alert_z = self.config.alert_z
        if f.score < alert_z:
            f.severity = Severity.INFO
            f.explanation += f" [INFO: below {alert_z:g} robust SDs, within the heavy tail of mini-batch losses]"
        else:
            f.severity = severity_for(f.score, alert_z)
        return f
