"""Activation health: dead ReLU units and saturated tanh / sigmoid units."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.block import Column
from runwatch.models.diagnostics.loss_spike import ColumnsDiagnostic
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import fraction_streak


class _FractionDiagnostic(ColumnsDiagnostic):
    """Per-layer "fraction at or above a threshold" check.

    The ``<prefix><layer>`` columns of a block run through the compiled
    :func:`~runwatch.models.kernels.fraction_streak` kernel, which fires on
    every value once the fraction has been ``>= threshold`` for ``patience``
    consecutive observations and more than ``warmup`` observations were seen
    (the alert policy merges them into one incident). Severity: WARNING,
    ERROR once the whole layer (fraction >= 0.999) is affected. Score: the
    fraction.
    """

    kind: ClassVar[AnomalyKind]
    what: ClassVar[str]
    advice: ClassVar[str]

    def __init__(self, config: DiagnosticConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._params = (float(cfg.threshold), int(cfg.patience), int(cfg.warmup))

    def watches(self, metric: str) -> bool:
        prefix = self.config.prefix
        return metric.startswith(prefix) and len(metric) > len(prefix)

    def initial_state(self) -> np.ndarray:
        return np.zeros(2)  # finite values seen, streak

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
        return fraction_streak(values, offsets, rows, states, *self._params, out)

    def finding(self, metric: str, col: Column, row: list[float]) -> Finding:
        i = int(row[1])
        value, run = row[2], int(row[3])
        layer = metric[len(self.config.prefix) :]
        return Finding(
            self.kind,
            Severity.ERROR if value >= 0.999 else Severity.WARNING,
            score=value,
            step=int(col.steps[i]),
            metric=metric,
            explanation=(
                f"{value:.1%} of {layer}'s activations are {self.what} (threshold {self.config.threshold:.0%}) "
                f"for {run} consecutive observations{self.advice}"
            ),
            layer=layer,
            key=metric,
            wall_time=float(col.wall_times[i]),
        )


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
    >>> from runwatch.models.block import MetricBlock
    >>> d = DeadUnitsDiagnostic()
    >>> fs = d.observe_block(MetricBlock.from_rows(list(range(20)), [0.0] * 20, [{"act/zero_frac/fc1": 1.0}] * 20))
    >>> fs[0].step, fs[-1].kind.name, fs[-1].severity.name
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
    >>> from runwatch.models.block import MetricBlock
    >>> d = SaturationDiagnostic(SaturationConfig(patience=2, warmup=0))
    >>> d.observe_block(MetricBlock.single(0, 0.0, {"act/sat_frac/fc1": 0.7}))
    []
    >>> d.observe_block(MetricBlock.single(1, 0.0, {"act/sat_frac/fc1": 0.72}))[0].explanation
    "72.0% of fc1's activations are saturated (threshold 50%) for 2 consecutive observations; scale down the initial weights or the inputs"
    """

    name = "saturation"
    version = "1"
    config_class = SaturationConfig
    reference = "SageMaker Debugger SaturatedActivation (threshold 0.97, threshold_layer 50%)"

    config: SaturationConfig
    kind = AnomalyKind.SATURATION
    what = "saturated"
    advice = "; scale down the initial weights or the inputs"
