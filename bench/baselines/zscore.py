"""ZClip-style z-score on the gradient norm's EMA (Kumar et al., "ZClip: Adaptive Spike Mitigation
for LLM Pre-Training", 2025; reference implementation ``bluorion-com/ZClip``).

ZClip keeps an exponential moving average of the gradient norm's mean and
variance (``alpha`` 0.97) after a warm-up of ``warmup_steps`` (25) norms, and
treats a norm whose z-score exceeds ``z_thresh`` (2.5) as a spike; the EMA is
then updated with the clipped value so a spike does not inflate the
baseline. Here a spike is an alert instead of a clip (a non-finite norm is
one too).
"""

from __future__ import annotations

import math

from bench.baselines.base import BaselineRule
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding


class GradNormZScore(BaselineRule):
    name = "zscore.grad_norm"
    reference = "ZClip (Kumar et al. 2025): alpha 0.97, z_thresh 2.5, warmup_steps 25"

    def __init__(self, metric: str = "grad_norm", alpha: float = 0.97, z_thresh: float = 2.5, warmup_steps: int = 25) -> None:
        self.metric, self.alpha, self.z, self.warmup = metric, alpha, z_thresh, warmup_steps
        self.buf: list[float] = []
        self.mean = self.var = math.nan

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        col = block.columns.get(self.metric)
        if col is None:
            return []
        out = []
        a = self.alpha
        for s, g in zip(col.steps.tolist(), col.values.tolist()):
            if not math.isfinite(g):
                out.append(self.finding(s, self.metric, f"{self.metric} = {g}", 1e9, AnomalyKind.EXPLODING_GRADIENT, key="z"))
                continue
            if len(self.buf) < self.warmup:
                self.buf.append(g)
                if len(self.buf) == self.warmup:
                    self.mean = sum(self.buf) / len(self.buf)
                    self.var = sum((x - self.mean) ** 2 for x in self.buf) / len(self.buf)
                continue
            std = math.sqrt(max(self.var, 0.0))
            z = (g - self.mean) / std if std > 0 else (math.inf if g > self.mean else 0.0)
            if z > self.z:
                out.append(self.finding(s, self.metric, f"z = {z:.3g} > {self.z}", z if math.isfinite(z) else 1e9,
                                        AnomalyKind.EXPLODING_GRADIENT, key="z"))
                g = self.mean + self.z * std  # ZClip updates its statistics with the clipped norm
            self.mean = a * self.mean + (1 - a) * g
            self.var = a * self.var + (1 - a) * (g - self.mean) ** 2
        return out
