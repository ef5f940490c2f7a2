"""SageMaker Debugger's built-in rules with their documented default parameters.

Source of every rule and default: Amazon SageMaker Developer Guide, "List of
Debugger built-in rules" (docs.aws.amazon.com/sagemaker/latest/dg/debugger-built-in-rules.html;
awsdocs/amazon-sagemaker-developer-guide ``doc_source/debugger-built-in-rules.md``). The
rules run inside SageMaker's rule containers and their code is not public,
so each class implements the rule as documented; where the text leaves a
choice open, the docstring says which reading was taken.

Tensors: the rules read the reductions SageMaker's hook saves. The corpus
records them under ``dbg/`` on the SDK's collecting steps (mean |gradient|
per parameter tensor, per-unit ReLU activity, per-unit tanh/sigmoid input
range, variance of activation inputs); ``update_ratio/<layer>`` and the
losses come from the SDK's own metrics. Rules are evaluated at every step
where their tensors exist -- SageMaker's default collection ``save_interval``
of 500 steps would let them see at most two steps of most corpus runs.

Not included (not applicable to these runs): AllZero, ClassImbalance,
Confusion, CheckInputImages, NLPSequenceRatio, TreeDepth, FeatureImportance,
SimilarAcrossRuns, UnchangedTensor and TensorVariance (no default thresholds).
"""

from __future__ import annotations

import math

from bench.baselines.base import BaselineRule, by_step, with_prefix
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity

DOC = "SageMaker Debugger built-in rules (AWS SageMaker Developer Guide)"


class VanishingGradient(BaselineRule):
    """Fires when the mean |gradient| of any gradient tensor is below ``threshold`` (default 1e-7)."""

    name = "sm.VanishingGradient"
    reference = DOC + ": VanishingGradient, threshold 0.0000001"

    def __init__(self, threshold: float = 1e-7) -> None:
        self.threshold = threshold

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for name in with_prefix(block, "dbg/grad_abs_mean/"):
            col = block.columns[name]
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                if v < self.threshold:
                    out.append(self.finding(s, name, f"mean |g| {v:.3g} < {self.threshold:g}", 1.0,
                                            AnomalyKind.VANISHING_GRADIENT, key="vanishing"))
                    break
        return out


class ExplodingTensor(BaselineRule):
    """Fires on any NaN or infinite value in any saved tensor (``only_nan`` default False)."""

    name = "sm.ExplodingTensor"
    reference = DOC + ": ExplodingTensor, only_nan False"

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        first = None
        for name, col in block.columns.items():
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                if not math.isfinite(v):
                    if first is None or s < first[0]:
                        first = (s, name, v)
                    break
        if first is None:
            return []
        return [self.finding(first[0], first[1], f"{first[1]} = {first[2]}", 1.0, AnomalyKind.NONFINITE,
                             Severity.ERROR, key="nonfinite")]


class LossNotDecreasing(BaselineRule):
    """Fires when the loss did not decrease over ``num_steps`` (default 10; ``diff_percent`` default 0).

    ``mode`` default None checks EVAL, then TRAIN: with validation losses
    logged, the EVAL loss (``val/loss``) is used, otherwise ``loss``. The rule
    is evaluated every ``num_steps`` and compares the loss with the latest
    saved loss at least ``num_steps`` steps earlier.
    """

    name = "sm.LossNotDecreasing"
    reference = DOC + ": LossNotDecreasing, num_steps 10, diff_percent 0, mode EVAL then TRAIN"

    def __init__(self, num_steps: int = 10, diff_percent: float = 0.0) -> None:
        self.num_steps, self.diff = num_steps, diff_percent / 100.0
        self.history: dict[str, list[tuple[int, float]]] = {"val/loss": [], "loss": []}
        self.next_check: dict[str, int] = {"val/loss": -1, "loss": -1}

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for metric in ("val/loss", "loss"):
            col = block.columns.get(metric)
            if col is None:
                continue
            if metric == "loss" and self.history["val/loss"]:
                continue  # EVAL mode takes precedence
            hist = self.history[metric]
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                hist.append((s, v))
                if self.next_check[metric] < 0:
                    self.next_check[metric] = s + self.num_steps
                    continue
                if s < self.next_check[metric]:
                    continue
                self.next_check[metric] = s + self.num_steps
                prev = [pv for ps, pv in hist if ps <= s - self.num_steps]
                if not prev:
                    continue
                before = prev[-1]
                if not v < before * (1.0 - self.diff):
                    out.append(self.finding(s, metric, f"{metric} {v:.4g} not below {before:.4g} of {self.num_steps} steps earlier",
                                            1.0, AnomalyKind.PLATEAU, key="loss_not_decreasing"))
            if len(hist) > 4096:
                del hist[:2048]
        return out


class Overfit(BaselineRule):
    """Fires when (mean val loss - mean train loss) / mean train loss > ``ratio_threshold`` (0.1)
    for ``patience`` (1) evaluations, from ``start_step`` (0).

    The mean training loss is over the training steps since the previous
    validation point (SageMaker compares the TRAIN and EVAL losses it saved).
    """

    name = "sm.Overfit"
    reference = DOC + ": Overfit, start_step 0, patience 1, ratio_threshold 0.1"

    def __init__(self, start_step: int = 0, patience: int = 1, ratio_threshold: float = 0.1) -> None:
        self.start_step, self.patience, self.ratio = start_step, patience, ratio_threshold
        self.train: list[float] = []
        self.count = 0

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for s, row in by_step(block, ("loss", "val/loss")):
            if "loss" in row:
                self.train.append(row["loss"])
            if "val/loss" in row and self.train and s >= self.start_step:
                tr = sum(self.train) / len(self.train)
                self.train = []
                ratio = (row["val/loss"] - tr) / tr if tr > 0 else math.inf
                self.count = self.count + 1 if not ratio <= self.ratio else 0
                if self.count >= self.patience:
                    out.append(self.finding(s, "val/loss", f"(val - train) / train = {ratio:.3g} > {self.ratio}",
                                            ratio if math.isfinite(ratio) else 1e9, AnomalyKind.OVERFITTING, key="overfit"))
        return out


class Overtraining(BaselineRule):
    """Fires when the validation loss has not improved by ``delta`` (0.1) for ``patience_validation``
    (10) evaluations while the training loss improved by ``delta`` within the last
    ``patience_train`` (5) steps. ``delta`` is read as an absolute improvement.
    """

    name = "sm.Overtraining"
    reference = DOC + ": Overtraining, patience_train 5, patience_validation 10, delta 0.1"

    def __init__(self, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.1) -> None:
        self.pt, self.pv, self.delta = patience_train, patience_validation, delta
        self.best_train, self.since_train = math.inf, 0
        self.best_val, self.since_val = math.inf, 0

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for s, row in by_step(block, ("loss", "val/loss")):
            if "loss" in row:
                v = row["loss"]
                if v < self.best_train - self.delta:
                    self.best_train, self.since_train = v, 0
                else:
                    self.since_train += 1
            if "val/loss" in row:
                v = row["val/loss"]
                if v < self.best_val - self.delta:
                    self.best_val, self.since_val = v, 0
                else:
                    self.since_val += 1
                if self.since_val >= self.pv and self.since_train < self.pt:
                    out.append(self.finding(s, "val/loss", f"val/loss not improved by {self.delta} for {self.since_val} "
                                            "evaluations while the training loss still improves", 1.0,
                                            AnomalyKind.OVERFITTING, key="overtraining"))
        return out


class DeadRelu(BaselineRule):
    """Fires when more than ``threshold_layer`` (50 %) of a layer's ReLUs are active on less than
    ``threshold_inactivity`` (1 %) of their inputs (``dbg/relu_dead_pct/<layer>``)."""

    name = "sm.DeadRelu"
    reference = DOC + ": DeadRelu, threshold_inactivity 1.0 %, threshold_layer 50.0 %"

    def __init__(self, threshold_layer: float = 50.0) -> None:
        self.threshold = threshold_layer

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for name in with_prefix(block, "dbg/relu_dead_pct/"):
            col = block.columns[name]
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                if v > self.threshold:
                    out.append(self.finding(s, name, f"{v:.0f}% of ReLUs dead", v / 100.0, AnomalyKind.DEAD_UNITS, key="dead_relu"))
                    break
        return out


class SaturatedActivation(BaselineRule):
    """Fires when more than ``threshold_layer`` (50 %) of a tanh/sigmoid layer's units get inputs
    outside (-9.4999, 9.4999) / (-23, 16.99999) on more than 99 % of samples
    (``threshold_inactivity`` 1 %; ``dbg/sat_pct/<layer>``)."""

    name = "sm.SaturatedActivation"
    reference = DOC + ": SaturatedActivation, threshold_tanh (-9.4999, 9.4999), threshold_sigmoid (-23, 16.99999), threshold_inactivity 1.0, threshold_layer 50.0"

    def __init__(self, threshold_layer: float = 50.0) -> None:
        self.threshold = threshold_layer

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for name in with_prefix(block, "dbg/sat_pct/"):
            col = block.columns[name]
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                if v > self.threshold:
                    out.append(self.finding(s, name, f"{v:.0f}% of units saturated", v / 100.0, AnomalyKind.SATURATION, key="saturated"))
                    break
        return out


class WeightUpdateRatio(BaselineRule):
    """Fires when ||update|| / ||weight|| is above ``large_threshold`` (10) or below
    ``small_threshold`` (1e-8) (SDK metric ``update_ratio/<layer>``; ``epsilon`` 1e-9 is in the SDK's clamp)."""

    name = "sm.WeightUpdateRatio"
    reference = DOC + ": WeightUpdateRatio, large_threshold 10.0, small_threshold 0.00000001, epsilon 0.000000001"

    def __init__(self, large_threshold: float = 10.0, small_threshold: float = 1e-8) -> None:
        self.large, self.small = large_threshold, small_threshold

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        out = []
        for name in with_prefix(block, "update_ratio/"):
            col = block.columns[name]
            for s, v in zip(col.steps.tolist(), col.values.tolist()):
                if v > self.large or v < self.small:
                    out.append(self.finding(s, name, f"update ratio {v:.3g}", 1.0, AnomalyKind.UPDATE_RATIO, key="update_ratio"))
                    break
        return out


class PoorWeightInitialization(BaselineRule):
    """Over the first ``steps`` (10) steps, fires when the ratio between the largest and smallest
    variance of activation inputs across layers exceeds ``threshold`` (10), or when the
    loss did not decrease within ``patience`` (5) steps. (The gradient-percentile check
    with ``distribution_range`` 0.001 needs full gradient tensors and is not reproduced.)"""

    name = "sm.PoorWeightInitialization"
    reference = DOC + ": PoorWeightInitialization, threshold 10.0, patience 5, steps 10 (distribution_range check omitted)"

    def __init__(self, threshold: float = 10.0, patience: int = 5, steps: int = 10) -> None:
        self.threshold, self.patience, self.steps = threshold, patience, steps
        self.first_step: int | None = None
        self.losses: list[float] = []
        self.fired = False

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if self.fired:
            return []
        if self.first_step is None and len(block):
            self.first_step = int(block.steps[0])
        end = (self.first_step or 0) + self.steps
        names = with_prefix(block, "dbg/act_in_var/")
        for s, row in by_step(block, names + ["loss"]):
            if s >= end:
                break
            var = [v for k, v in row.items() if k != "loss" and v > 0]
            if len(var) >= 2 and max(var) / min(var) > self.threshold:
                self.fired = True
                return [self.finding(s, "dbg/act_in_var", f"activation-input variance ratio {max(var) / min(var):.3g}",
                                     max(var) / min(var), key="poor_init")]
            if "loss" in row:
                self.losses.append(row["loss"])
                if len(self.losses) > self.patience and not min(self.losses[-self.patience:]) < self.losses[-self.patience - 1]:
                    self.fired = True
                    return [self.finding(s, "loss", f"loss not decreasing within {self.patience} steps", 1.0, key="poor_init")]
        return []


class StalledTrainingRule(BaselineRule):
    """Fires when no new tensor was saved for ``threshold`` seconds (default 1800)."""

    name = "sm.StalledTrainingRule"
    reference = DOC + ": StalledTrainingRule, threshold 1800 s"

    def __init__(self, threshold: float = 1800.0) -> None:
        self.threshold = threshold

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        return []

    def on_idle(self, now: float, last_wall_time: float, last_step: int) -> Finding | None:
        idle = now - last_wall_time
        if last_wall_time > 0 and idle > self.threshold:
            return self.finding(max(last_step, 0), "wall_time", f"no tensors for {idle:.0f} s", idle / self.threshold,
                                AnomalyKind.STALLED, key="stalled")
        return None


RULES = (
    VanishingGradient,
    ExplodingTensor,
    LossNotDecreasing,
    Overfit,
    Overtraining,
    DeadRelu,
    SaturatedActivation,
    WeightUpdateRatio,
    PoorWeightInitialization,
    StalledTrainingRule,
)


def rules() -> list[BaselineRule]:
    """Fresh instances of every rule, with default parameters."""
    return [cls() for cls in RULES]
