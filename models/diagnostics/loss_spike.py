"""Sudden upward spikes of the training loss (robust z-score against an EWMA baseline).

Also home of the small building blocks the other diagnostics share: the
robust spike closure (latency, error rate), severity from a score, a streak
counter, and the column-wise block path for per-metric handlers.
"""

# ruff: noqa: PLR1730  (hot path: a comparison costs ~1/8 of a min()/max() call)

from __future__ import annotations

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity

MAD_TO_SIGMA = 1.2533
"""Gaussian sigma per unit of mean absolute deviation (sqrt(pi/2)), as in :class:`EwmStats`."""


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


class Streak:
    """Finite observations seen (``n``) and the current run of consecutive hits (``run``)."""

    __slots__ = ("n", "run")

    def __init__(self) -> None:
        self.n = 0
        self.run = 0


def observe_columns(diag: Diagnostic, block: MetricBlock) -> list[Finding]:
    """Block path for diagnostics whose handlers keep per-metric state only.

    Feeds each watched column to its handler in one pass, then orders the
    findings by step. Equivalent to :meth:`Diagnostic.observe_block` (which
    interleaves all watched columns by step, as diagnostics with state shared
    across metrics need) but without building and sorting one tuple per value.

    Examples
    --------
    >>> d = LossSpikeDiagnostic(LossSpikeConfig(metrics=("loss", "aux_loss"), warmup=5))
    >>> rows = [{"loss": 1.0 + 0.01 * (i % 2), "aux_loss": 0.5} for i in range(20)] + [{"loss": 1.0, "aux_loss": 5.0}]
    >>> block = MetricBlock.from_rows(list(range(21)), [0.0] * 21, rows)
    >>> [(f.metric, f.step) for f in observe_columns(d, block)]
    [('aux_loss', 20)]
    """
    findings: list[Finding] = []
    for name, col in diag.select(block):
        handle = diag._handler_for(name)
        if handle is None:
            continue
        for step, wall_time, value in zip(col.steps.tolist(), col.wall_times.tolist(), col.values.tolist()):
            f = handle(step, wall_time, value)
            if f is not None:
                findings.append(f)
    if len(findings) > 1:
        findings.sort(key=lambda f: f.step)
    return findings


def robust_spike_handler(
    metric: str,
    kind: AnomalyKind,
    *,
    alpha: float,
    warmup: int,
    z_threshold: float,
    clip_z: float,
    rel_floor: float = 0.0,
    abs_floor: float = 0.0,
    level_floor: float = 0.0,
    min_value: float = float("-inf"),
    patience: int = 1,
    unit: str = "",
    layer: str = "",
) -> MetricHandler:
    """Closure scoring upward spikes of one metric against an EWMA / MAD baseline.

    The baseline is the estimator of :class:`runwatch.models.stats.EwmStats`
    (EWMA mean, EWMA mean absolute deviation, robust scale ``1.2533 * mad``),
    inlined so the quiet path is a handful of float operations. The robust
    scale is floored at ``max(abs_floor, rel_floor * |mean|, level_floor *
    peak)`` where ``peak`` is the highest baseline mean seen so far: a
    near-constant series does not fire on tiny wiggles, and a series that has
    converged far below its starting level (a loss near zero) does not fire on
    wiggles that are large only relative to its tiny current value.

    A value above ``mean + clip_z * scale`` updates the baseline as if it were
    exactly at that bound (winsorised), so a spike is not absorbed at full
    weight and cannot hide the next one; downward moves are absorbed at full
    weight so the baseline keeps up with an improving loss.

    The handler fires once at least ``warmup`` finite values were seen, while
    ``z >= z_threshold`` and ``value >= min_value`` have held for ``patience``
    consecutive values. Non-finite values are ignored.

    Examples
    --------
    >>> h = robust_spike_handler("loss", AnomalyKind.LOSS_SPIKE, alpha=0.1, warmup=5,
    ...                          z_threshold=6.0, clip_z=3.0, rel_floor=0.05)
    >>> [h(i, 0.0, 1.0 + 0.01 * (i % 3)) for i in range(10)].count(None)
    10
    >>> f = h(10, 0.0, 3.0)
    >>> f.kind.name, round(f.score, 1)
    ('LOSS_SPIKE', 39.6)
    """
    mean = 0.0
    mad = 0.0
    peak = float("-inf")
    n = 0
    run = 0
    inf = float("inf")

    def spike(step: int, wall_time: float, value: float) -> Finding | None:
        nonlocal mean, mad, peak, n, run
        if value - value != 0.0:  # NaN / +-Inf: reported by the nonfinite diagnostic
            return None
        if n == 0:
            mean = peak = value
            n = 1
            return None
        scale = MAD_TO_SIGMA * mad
        floor = rel_floor * (mean if mean >= 0.0 else -mean)
        if floor < abs_floor:
            floor = abs_floor
        lf = level_floor * peak
        if floor < lf:
            floor = lf
        if scale < floor:
            scale = floor
        dev = value - mean
        if scale > 0.0:
            z = dev / scale
            lim = clip_z * scale
            if dev > lim:
                dev = lim
        else:  # no spread and no floor yet: only an exact repeat is unsurprising
            z = 0.0 if dev <= 0.0 else inf
        mad += alpha * ((dev if dev >= 0.0 else -dev) - mad)
        base = mean
        mean += alpha * dev
        if mean > peak:
            peak = mean
        n += 1
        if z < z_threshold or n <= warmup or value < min_value:
            run = 0
            return None
        run += 1
        if run < patience:
            return None
        held = f" for {run} consecutive values" if patience > 1 else ""
        return Finding(
            kind,
            severity_for(z, z_threshold),
            score=z,
            step=step,
            metric=metric,
            explanation=(
                f"{metric} = {value:.4g}{unit} is {z:.3g} robust SDs above its baseline "
                f"{base:.4g}{unit} (scale {scale:.3g}){held}"
            ),
            layer=layer,
        )

    return spike


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
    """

    metrics: tuple[str, ...] = ("loss",)
    alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    warmup: int = Field(default=50, ge=1)
    z_threshold: float = Field(default=8.0, gt=0.0)
    clip_z: float = Field(default=3.0, gt=0.0)
    rel_floor: float = Field(default=0.05, ge=0.0)
    level_floor: float = Field(default=0.02, ge=0.0)


class LossSpikeDiagnostic(Diagnostic):
    """Flags a loss value far above its recent robust baseline.

    The spike score is a robust z-score against an EWMA mean and EWMA mean
    absolute deviation (:class:`~runwatch.models.stats.EwmStats`), with the
    scale floored so a near-constant or converged loss does not fire on tiny
    wiggles, and spikes winsorised before they enter the baseline. Loss
    spikes of this kind are the instability documented for large-model
    training (PaLM, Chowdhery et al. 2022, sec. 5.1; the OPT-175B logbook),
    and a bad batch or a too-high learning rate in small ones.

    Severity: WARNING at ``z_threshold``, ERROR at 2x, CRITICAL at 4x.

    Examples
    --------
    >>> d = LossSpikeDiagnostic(LossSpikeConfig(warmup=10))
    >>> h = d.handler("loss")
    >>> quiet = [h(i, 0.0, 2.0 - 0.01 * i + 0.02 * (i % 2)) for i in range(30)]
    >>> quiet.count(None)
    30
    >>> f = h(30, 0.0, 9.0)
    >>> f.kind.name, f.severity.name, round(f.score)
    ('LOSS_SPIKE', 'CRITICAL', 66)
    >>> d.handler("accuracy") is None
    True
    """

    name = "loss_spike"
    version = "1"
    config_class = LossSpikeConfig
    reference = "Robust (EWMA/MAD) z-score; loss spikes as in PaLM (Chowdhery et al. 2022, sec. 5.1)"

    config: LossSpikeConfig
    observe_block = observe_columns

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric not in cfg.metrics:
            return None
        return robust_spike_handler(
            metric,
            AnomalyKind.LOSS_SPIKE,
            alpha=cfg.alpha,
            warmup=cfg.warmup,
            z_threshold=cfg.z_threshold,
            clip_z=cfg.clip_z,
            rel_floor=cfg.rel_floor,
            level_floor=cfg.level_floor,
        )
