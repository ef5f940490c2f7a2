"""Activation health: dead ReLU units and saturated tanh / sigmoid units."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics.loss_spike import Streak, observe_columns
from runwatch.models.findings import AnomalyKind, Finding, Severity


def fraction_handler(
    metric: str,
    layer: str,
    kind: AnomalyKind,
    *,
    threshold: float,
    patience: int,
    warmup: int,
    what: str,
    advice: str,
    streak: Streak | None = None,
) -> MetricHandler:
    """Closure firing while a per-layer fraction stays at or above ``threshold``.

    Fires on every value once the fraction has been ``>= threshold`` for
    ``patience`` consecutive observations and more than ``warmup``
    observations were seen (the alert policy merges them into one incident).
    Severity: WARNING, ERROR once the whole layer (fraction >= 0.999) is
    affected. Score: the fraction.

    Examples
    --------
    >>> h = fraction_handler("act/zero_frac/fc1", "fc1", AnomalyKind.DEAD_UNITS, threshold=0.9,
    ...                      patience=2, warmup=0, what="zero", advice="")
    >>> h(0, 0.0, 0.95) is None, h(1, 0.0, 0.97).score
    (True, 0.97)
    """
    st = Streak() if streak is None else streak

    def fraction(step: int, wall_time: float, value: float) -> Finding | None:
        if value - value != 0.0:
            return None
        st.n += 1
        if value < threshold:
            st.run = 0
            return None
        run = st.run = st.run + 1
        if run < patience or st.n <= warmup:
            return None
        return Finding(
            kind,
            Severity.ERROR if value >= 0.999 else Severity.WARNING,
            score=value,
            step=step,
            metric=metric,
            explanation=(
                f"{value:.1%} of {layer}'s activations are {what} (threshold {threshold:.0%}) "
                f"for {run} consecutive observations{advice}"
            ),
            layer=layer,
            key=metric,
        )

    return fraction


class _FractionDiagnostic(Diagnostic):
    """Per-layer "fraction at or above a threshold" check with a vectorised quiet path."""

    kind: ClassVar[AnomalyKind]
    what: ClassVar[str]
    advice: ClassVar[str]

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        super().__init__(config)
        self._streaks: dict[str, Streak] = {}

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if not metric.startswith(cfg.prefix) or len(metric) == len(cfg.prefix):
            return None
        streak = self._streaks[metric] = Streak()
        return fraction_handler(
            metric,
            metric[len(cfg.prefix) :],
            self.kind,
            threshold=cfg.threshold,
            patience=cfg.patience,
            warmup=cfg.warmup,
            what=self.what,
            advice=self.advice,
            streak=streak,
        )

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        """Value by value only if some value reaches the threshold; else one comparison per column."""
        if len(block) < 16:  # numpy calls cost more than a few handler calls
            return observe_columns(self, block)
        cols = self.select(block)
        threshold = self.config.threshold
        for _, col in cols:
            if (col.values >= threshold).any():  # NaN compares False
                return observe_columns(self, block)
        for name, col in cols:
            seen = int(np.isfinite(col.values).sum())
            if seen:
                streak = self._streaks[name]
                streak.n += seen
                streak.run = 0
        return []


class DeadUnitsConfig(DiagnosticConfig):
    """Settings of :class:`DeadUnitsDiagnostic`.

    Parameters
    ----------
    prefix
        Per-layer zero fractions are ``<prefix><layer>``. Default
        ``"act/zero_frac/"``.
    threshold
        Zero fraction of the layer's activations (over batch and units) that
        counts as dead. Default 0.9: a healthy ReLU layer outputs ~50 % zeros
        (SageMaker ``DeadRelu`` flags a layer when 50 % of its units are
        dead; with the live half active ~half the time that is a zero
        fraction of ~0.75, so 0.9 means most units are dead).
    patience
        Consecutive observations. Default 10.
    warmup
        Observations before the first finding. Default 10.
    """

    prefix: str = "act/zero_frac/"
    threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    patience: int = Field(default=10, ge=1)
    warmup: int = Field(default=10, ge=0)


class DeadUnitsDiagnostic(_FractionDiagnostic):
    """Flags ReLU layers whose outputs are (almost) all exactly zero.

    Follows SageMaker Debugger's ``DeadRelu`` rule (a unit is dead when it
    is almost never active; the rule fires when a large share of a layer is
    dead), adapted to the per-layer zero fraction we receive: the layer is
    flagged when at least ``threshold`` of its activations are zero for
    ``patience`` consecutive observations after ``warmup``. Dead units get
    no gradient and never recover (Lu et al. 2019, "Dying ReLU and
    initialization").

    Examples
    --------
    >>> d = DeadUnitsDiagnostic()
    >>> h = d.handler("act/zero_frac/fc1")
    >>> fs = [h(i, 0.0, 1.0) for i in range(20)]
    >>> fs.index(next(f for f in fs if f)), fs[-1].kind.name, fs[-1].severity.name
    (10, 'DEAD_UNITS', 'ERROR')
    >>> fs[-1].explanation
    "100.0% of fc1's activations are zero (threshold 90%) for 20 consecutive observations; check the initialisation / bias and lower the learning rate"
    """

    name = "dead_units"
    version = "1"
    config_class = DeadUnitsConfig
    reference = "SageMaker Debugger DeadRelu; Lu et al. 2019 (dying ReLU)"

    config: DeadUnitsConfig
    kind = AnomalyKind.DEAD_UNITS
    what = "zero"
    advice = "; check the initialisation / bias and lower the learning rate"


class SaturationConfig(DiagnosticConfig):
    """Settings of :class:`SaturationDiagnostic` (SageMaker ``SaturatedActivation`` defaults).

    Parameters
    ----------
    prefix
        Per-layer saturated fractions are ``<prefix><layer>``: the fraction
        of tanh / sigmoid outputs within 0.03 of their bounds (SageMaker's
        ``threshold_tanh`` / ``threshold_sigmoid`` 0.97, computed by the
        training-side hook). Default ``"act/sat_frac/"``.
    threshold
        Saturated fraction that flags the layer. Default 0.5 (SageMaker
        ``threshold_layer`` 50 %).
    patience
        Consecutive observations. Default 10.
    warmup
        Observations before the first finding. Default 10.
    """

    prefix: str = "act/sat_frac/"
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    patience: int = Field(default=10, ge=1)
    warmup: int = Field(default=10, ge=0)


class SaturationDiagnostic(_FractionDiagnostic):
    """Flags tanh / sigmoid layers stuck at their bounds (zero gradient there).

    Follows SageMaker Debugger's ``SaturatedActivation`` rule: outputs beyond
    0.97 of the bound are saturated, and the layer is flagged when more than
    50 % of them are, here for ``patience`` consecutive observations after
    ``warmup``. Saturated units pass almost no gradient (Glorot & Bengio
    2010).

    Examples
    --------
    >>> d = SaturationDiagnostic(SaturationConfig(patience=2, warmup=0))
    >>> h = d.handler("act/sat_frac/fc1")
    >>> h(0, 0.0, 0.7) is None, h(1, 0.0, 0.72).explanation
    (True, "72.0% of fc1's activations are saturated (threshold 50%) for 2 consecutive observations; scale down the initial weights or the inputs")
    """

    name = "saturation"
    version = "1"
    config_class = SaturationConfig
    reference = "SageMaker Debugger SaturatedActivation (threshold 0.97, threshold_layer 50%)"

    config: SaturationConfig
    kind = AnomalyKind.SATURATION
    what = "saturated"
    advice = "; scale down the initial weights or the inputs"
