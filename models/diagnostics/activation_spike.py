"""A layer's activation scale that jumps tenfold from one logged value to the next: a bad input batch."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class ActivationSpikeConfig(DiagnosticConfig):
    """Settings of :class:`ActivationSpikeDiagnostic`.

    Parameters
    ----------
    prefix
        Metrics ``<prefix><layer>`` hold a layer's activation standard
        deviation (what ``run.watch(model)`` logs). Default ``"act/std/"``.
    jump
        A value at least this multiple of both the layer's previous value and
        the median of its last ``window`` values. Default 10: the largest such
        jump in 828 healthy runs of the tuning sets (the corpus training split
        and novel-21/22/27/39; MLPs, CNNs, transformers, residual MLPs and
        temporal conv nets, logged every 5-50 steps) was 3.4x; single input
        batches scaled 10-1,000x scored 11-640x. Comparing with the previous
        value as well as the median keeps a layer whose scale grows steadily
        (an output layer's logits, 40x over its first 20 values) quiet.
    window
        Values the median is taken over. Default 20.
    warmup
        A layer's values seen before it is judged. Default 10: the first
        updates move activation scales fastest.
    floor
        The reference (the larger of the previous value and the median) is at
        least this fraction of the largest value the layer has had, so a
        layer that died (std near 0) and twitches is not a jump. Default 1e-3.
    """

    prefix: str = "act/std/"
    jump: float = Field(default=10.0, gt=1.0)
    window: int = Field(default=20, ge=1)
    warmup: int = Field(default=10, ge=1)
    floor: float = Field(default=1e-3, ge=0.0, lt=1.0)


class ActivationSpikeDiagnostic(Diagnostic):
    """Flags a step at which a layer's activation scale jumps far above its recent values.

    A batch whose inputs are on another scale (unnormalised, a corrupted
    record, a unit change upstream) multiplies the first layers' activation
    spread at that step, while a healthy run's activation statistics move
    smoothly from one logged value to the next. The loss may hardly move:
    a normalisation layer absorbs the scale, or the loss is already large
    and noisy, so a loss spike rule sees only the heavy tail of mini-batch
    losses (on the novel-domain tuning corpora, 7 of the 16 bad batches that
    no other rule alerted on had their inputs scaled and showed this jump).
    One finding per step names the layer that jumped most; the other layers
    that jumped at that step are in ``related``.

    Raises ``ACTIVATION_SPIKE``: WARNING, ERROR from 10x ``jump``. Score:
    the jump (the value over the reference).

    Examples
    --------
    >>> d = ActivationSpikeDiagnostic()
    >>> rows = [{"act/std/fc1": 1.0 + 0.01 * (i % 3), "act/std/fc2": 0.5} for i in range(12)]
    >>> d.observe_block(MetricBlock.from_rows(list(range(0, 120, 10)), [0.0] * 12, rows))
    []
    >>> (f,) = d.observe_block(MetricBlock.single(120, 0.0, {"act/std/fc1": 38.0, "act/std/fc2": 0.6}))
    >>> f.kind.name, f.severity.name, f.layer, round(f.score)
    ('ACTIVATION_SPIKE', 'WARNING', 'fc1', 37)
    >>> f.explanation[:66]
    "fc1's activation std jumped 37x at step 120 (1.02 -> 38; median of"
    """

    name = "activation_spike"
    version = "1"
    config_class = ActivationSpikeConfig
    reference = "Input-scale shifts and bad batches as activation-statistics outliers (SageMaker Debugger's tensor variance rules)"
    state_attributes = ("layers",)

    config: ActivationSpikeConfig

    def __init__(self, config: ActivationSpikeConfig | None = None) -> None:
        super().__init__(config)
        # per metric: [values seen, the largest value so far, the last `window` finite values (oldest first)]
        self.layers: dict[str, list] = {}

    def watches(self, metric: str) -> bool:
        prefix = self.config.prefix
        return metric.startswith(prefix) and len(metric) > len(prefix)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        selected = self.select(block)
        if not selected:
            return []
        jumps: dict[int, list[tuple[float, str, float, float, float, float]]] = {}
        for metric, col in selected:
            state = self.layers.get(metric)
            if state is None:
                state = self.layers[metric] = [0, 0.0, []]
            for i, value in enumerate(col.values.tolist()):
                found = self._judge(state, value)
                if found is not None:
                    step = int(col.steps[i])
                    jumps.setdefault(step, []).append((found[0], metric, found[1], found[2], value, float(col.wall_times[i])))
        return [self._finding(step, sorted(jumped, reverse=True)) for step, jumped in sorted(jumps.items())]

    def _judge(self, state: list, value: float) -> tuple[float, float, float] | None:
        """Take one value of a layer; ``(jump, previous, median)`` when it is a spike, else None."""
        if not math.isfinite(value):
            return None
        cfg = self.config
        seen, largest, recent = state
        found = None
        # Only a value past ``jump`` times the previous one can be a spike: the median is taken for those alone.
        if seen >= cfg.warmup and recent and value >= cfg.jump * recent[-1]:
            previous, median = recent[-1], float(np.median(recent))
            ref = max(previous, median, cfg.floor * largest)
            if ref > 0 and value >= cfg.jump * ref:
                found = (value / ref, previous, median)
        recent.append(value)
        if len(recent) > cfg.window:
            del recent[0]
        state[0], state[1] = seen + 1, max(largest, value)
        return found

    def _finding(self, step: int, jumped: list[tuple[float, str, float, float, float, float]]) -> Finding:
        ratio, metric, previous, median, value, wall = jumped[0]
        layer = metric[len(self.config.prefix) :]
        others = [m for _, m, *_ in jumped[1:]]
        also = f"; {len(others)} more layer(s) jumped at this step" if others else ""
        return Finding(
            AnomalyKind.ACTIVATION_SPIKE,
            Severity.ERROR if ratio >= 10 * self.config.jump else Severity.WARNING,
            score=ratio,
            step=step,
            metric=metric,
            related=tuple(others),
            explanation=(
                f"{layer}'s activation std jumped {ratio:.0f}x at step {step} ({previous:.3g} -> {value:.3g}; median "
                f"of its last values {median:.3g}){also}: a batch far off the data's usual scale (unnormalised, "
                f"corrupted records, a unit changed upstream); check that step's batch and the input pipeline's normalisation"
            ),
            layer=layer,
            key=metric,
            wall_time=wall,
        )
