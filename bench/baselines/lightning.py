"""PyTorch Lightning ``EarlyStopping``'s ``check_finite`` and ``divergence_threshold`` as a run alarm.

Uses Lightning's own class (``pytorch_lightning.callbacks.EarlyStopping``,
``_evaluate_stopping_criteria``) on the monitored metric ``val/loss`` at
every validation point, with its defaults (``mode="min"``, ``check_finite=True``,
``min_delta=0``). ``divergence_threshold`` has no default in
Lightning; it is set here to the run's first validation loss (stop once the
model is worse than untrained), a rule fixed before looking at any result.
A stop for a non-finite value or for divergence is an alert. Patience is
switched off for this alarm (a patience stop would end the run before the
other checks see it); the ordinary early stop with the default
``patience=3`` is reported as a separate rule, ``lightning.patience``.
"""

from __future__ import annotations

import math

import torch

from bench.baselines.base import BaselineRule
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class LightningEarlyStopping(BaselineRule):
    name = "lightning.EarlyStopping"
    reference = "pytorch_lightning EarlyStopping(monitor='val/loss', check_finite=True, divergence_threshold=first val/loss)"

    def __init__(self, monitor: str = "val/loss", mode: str = "min", with_patience: bool = False) -> None:
        from pytorch_lightning.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason

        self.cls, self.reasons = EarlyStopping, EarlyStoppingReason
        self.monitor, self.mode = monitor, mode
        self.es = None
        self.stopped = False
        self.with_patience = with_patience
        if with_patience:
            self.name = "lightning.patience"

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        col = block.columns.get(self.monitor)
        if col is None or self.stopped:
            return []
        out = []
        for s, v in zip(col.steps.tolist(), col.values.tolist()):
            if self.es is None:
                threshold = v if math.isfinite(v) else None
                patience = 3 if self.with_patience else 10**9
                self.es = self.cls(monitor=self.monitor, mode=self.mode, check_finite=True,
                                   divergence_threshold=threshold, patience=patience)
            stop, reason = self.es._evaluate_stopping_criteria(torch.tensor(v, dtype=torch.float64))
            if not stop:
                continue
            self.stopped = True  # the Trainer stops: nothing more is evaluated
            why = self.es.stopping_reason
            if why == self.reasons.PATIENCE_EXHAUSTED:
                if self.with_patience:
                    out.append(self.finding(s, self.monitor, reason, 1.0, AnomalyKind.PLATEAU, key="patience"))
            elif not self.with_patience:
                nonfinite = why == self.reasons.NON_FINITE_METRIC
                out.append(self.finding(s, self.monitor, reason, 1e9 if nonfinite else 1.0,
                                        AnomalyKind.NONFINITE if nonfinite else AnomalyKind.DIVERGENCE_PREDICTED,
                                        Severity.ERROR, key=why.name.lower()))
            break
        return out
