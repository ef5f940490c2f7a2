"""A learning rate whose step dwarfs the weights: at the run's start, or while a warm-up ramps towards it."""

from __future__ import annotations

import math

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics import warmup
from runwatch.models.findings import AnomalyKind, Finding, Severity


class StepSizeConfig(DiagnosticConfig):
    """Settings of :class:`StepSizeDiagnostic`.

    Parameters
    ----------
    lr_metric
        The logged learning rate. Default ``"lr"``.
    grad_prefix, weight_prefix
        Per-layer gradient and weight norms are ``<prefix><layer>``. Defaults
        ``"grad_norm/"`` and ``"weight_norm/"``.
    grad_metric
        The whole model's gradient norm. Default ``"grad_norm"``.
    ratio_threshold
        A first step ``lr * grad_norm / weight_norm`` at least this many times
        a layer's weights is WARNING. Default 2, a step twice the weights (a
        well-tuned step is ~1e-3 of them): the largest first step of 684
        healthy runs was 0.53x in the sets it was chosen on (corpus training
        split, three unseen-domain corpora; 5 of 54 divergent runs started
        above 2x) and 1.1x on 1,440 healthy runs it was checked on (test
        split, ten more corpora; 17 of 93 divergent runs above 2x).
    error_ratio
        From this many times the weights, ERROR. Default 10.
    warmup_ratio
        While the logged ``lr`` is still warming up (rising at every value,
        :mod:`~runwatch.models.diagnostics.warmup`), a step
        ``lr * grad_norm`` at least this fraction of the whole model's weight
        norm (the root sum of squares of a step's ``weight_norm/*``) is
        WARNING: the step keeps growing with the learning rate until the peak.
        Default 0.1 (100x a tuned step): in the warm-ups of 276 healthy runs of
        the tuning sets the largest was 0.064, while 8 of 29 divergent runs
        crossed 0.1 before their loss blew up. The whole model, not a layer:
        a healthy warm-up's small head can take steps of 1-3x its weights.
    within_steps
        Only a layer's first observation counts, and only within this many
        steps of the first logged value, in a run logged from its first
        ``within_steps`` steps: the test is about the start. Later,
        a healthy run's small layer (a head whose weights are still small)
        may take steps larger than itself without harm (up to 3x on healthy
        runs of the corpora, also during warm-ups). Default 10.
    min_weight_norm
        Layers with a smaller weight norm are skipped: zero-initialised
        layers (LoRA's B, a zero-init residual branch) have no scale to
        compare with. Default 1e-6.
    """

    lr_metric: str = "lr"
    grad_prefix: str = "grad_norm/"
    weight_prefix: str = "weight_norm/"
    grad_metric: str = "grad_norm"
    ratio_threshold: float = Field(default=2.0, gt=0.0)
    warmup_ratio: float = Field(default=0.1, gt=0.0)
    error_ratio: float = Field(default=10.0, gt=0.0)
    within_steps: int = Field(default=10, ge=0)
    min_weight_norm: float = Field(default=1e-6, ge=0.0)


class StepSizeDiagnostic(Diagnostic):
    """Predicts divergence before the loss moves, when the learning rate's step dwarfs the weights.

    A plain gradient step changes the weights by ``lr * ||g||``; with
    momentum or Adam's early steps it is of that order or larger. When that
    is a sizeable part of the weights' own norm, the updates replace the
    weights instead of adjusting them and the loss blows up within a few
    steps (the relative update a healthy optimiser takes is ~1e-3,
    Karpathy's "ratio of updates to weights"). Two moments are judged, and
    the diagnostic is idle once both are over:

    - the start (key ``initial_step``): each layer's first observation within
      ``within_steps`` of the first logged value, from ``ratio_threshold``
      times that layer's weights. A learning rate too high from step 0 blows
      the loss up at its second or third value, before the loss-based rules
      or the learned forecaster can see a trend;
    - a warm-up (key ``warmup_step``): while the logged ``lr`` rises, every
      step with the whole model's gradient and weight norms, from
      ``warmup_ratio`` times the weights, since the step keeps growing until
      the peak. This warns while the warm-up still ramps towards a peak that
      is too high.

    Each step's norms are read from one block (one event per step, as the SDK
    logs them). It raises ``DIVERGENCE_PREDICTED`` once per run.

    Score: the largest ratio.

    Examples
    --------
    >>> d = StepSizeDiagnostic()
    >>> row = {"lr": 3.0, "grad_norm/fc1": 0.5, "weight_norm/fc1": 4.0, "grad_norm/head": 0.7, "weight_norm/head": 0.8}
    >>> (f,) = d.observe_block(MetricBlock.from_rows([0], [0.0], [row]))
    >>> f.step, f.kind.name, f.severity.name, f.layer, round(f.score, 3)
    (0, 'DIVERGENCE_PREDICTED', 'WARNING', 'head', 2.625)
    >>> f.explanation
    'a first step of lr x grad_norm/head = 3 x 0.7 is 2.6x weight_norm/head (0.8): the loss is likely to blow up within a few steps; lower the learning rate (or warm it up)'
    >>> d.observe_block(MetricBlock.from_rows([1], [0.0], [row]))   # judged once, at the start
    []
    >>> StepSizeDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [{**row, "lr": 0.01}]))
    []
    >>> ramp = [{**row, "grad_norm": 0.9, "lr": 0.01 * (s + 1)} for s in range(60)]   # warming up towards lr 0.6
    >>> (f,) = StepSizeDiagnostic().observe_block(MetricBlock.from_rows(list(range(60)), [0.0] * 60, ramp))
    >>> f.step, f.key, round(f.score, 3)
    (45, 'warmup_step', 0.101)
    >>> f.explanation
    'lr is still warming up and its step lr x grad_norm = 0.46 x 0.9 is already 0.1x the weights (norm 4.08): it grows with the learning rate, so the loss is likely to blow up before the warm-up ends; lower the peak learning rate or lengthen the warm-up'
    """

    name = "step_size"
    version = "1"
    config_class = StepSizeConfig
    reference = "Relative update size ~1e-3 (Karpathy, CS231n 'ratio of updates to weights'); SageMaker WeightUpdateRatio"
    state_attributes = ("start", "done", "lr", "pending", "judged", "warmup")

    config: StepSizeConfig

    def __init__(self, config: StepSizeConfig | None = None) -> None:
        super().__init__(config)
        self.start = -1  # the first step of any watched metric (-1: none yet)
        self.done = False  # past the start window, or reported: idle from now on
        self.lr = math.nan  # the latest finite learning rate
        self.pending: dict[str, list[float]] = {}  # layer -> [step, grad norm, weight norm] until both are known
        self.judged: list[str] = []  # layers whose first observation was judged
        self.warmup = warmup.new_state()  # the logged lr's warm-up

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric in (cfg.lr_metric, cfg.grad_metric) or metric.startswith((cfg.grad_prefix, cfg.weight_prefix))

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if self.done:
            return []
        cfg = self.config
        cols = self.select(block)
        if not cols:
            return []
        if self.start < 0:
            self.start = min((int(col.steps[0]) for _, col in cols if len(col)), default=-1)
            if self.start < 0:
                return []
        warmup.observe(self.warmup, block, cfg.lr_metric)
        # The start is judged only for a run logged from its beginning: a run resumed (or restored from a
        # checkpoint without this rule's state) mid-training is past it.
        last = self.start + cfg.within_steps if self.start <= cfg.within_steps else -1
        ramping = self.warmup["start"] >= 0  # then any step of the block may be in the warm-up
        # The block's values in step order; the lr of a step counts for the norms of that step. After the start
        # only the warm-up's test reads on, and it needs no per-layer gradient norm.
        feed = sorted(
            (s, 0 if name == cfg.lr_metric else 1, name, v)
            for name, col in cols
            for s, v in zip(col.steps.tolist(), col.values.tolist())
            if s <= last or (ramping and not name.startswith(cfg.grad_prefix))
        )
        found: Finding | None = None
        step_now, grad_now, w2_now = -1, math.nan, 0.0  # the whole model's norms at the step being read
        first: tuple[float, int, str, float, float, float] | None = None  # the largest first step over the bar
        for step, _, name, value in feed:
            if step != step_now:
                found = found or self._judged_step(first, step_now, grad_now, w2_now)
                step_now, grad_now, w2_now, first = step, math.nan, 0.0, None
            if name == cfg.lr_metric:
                if math.isfinite(value):
                    self.lr = value
                continue
            if name == cfg.grad_metric:
                grad_now = value
                continue
            grad = name.startswith(cfg.grad_prefix)
            if not grad:
                w2_now += value * value
            if found is not None or step > last:
                continue
            layer = name[len(cfg.grad_prefix if grad else cfg.weight_prefix) :]
            if not layer or layer in self.judged:
                continue
            over = self._first_step(layer, step, value, grad)
            if over is not None and (first is None or over[0] > first[0]):
                first = over
        found = found or self._judged_step(first, step_now, grad_now, w2_now)
        if found is not None or (int(block.steps[-1]) > last and not (ramping and self.warmup["end"] < 0)):
            self.done = True  # reported, or past the start with no warm-up under way
            self.pending = {}
        return [] if found is None else [found]

    def _judged_step(
        self, first: tuple[float, int, str, float, float, float] | None, step: int, grad: float, w2: float
    ) -> Finding | None:
        """The finding of one step read whole: a first step over the bar, else the warm-up's test."""
        if first is not None:
            return self._finding(*first)
        return self._judge_warmup(step, grad, w2)

    def _first_step(
        self, layer: str, step: int, value: float, grad: bool
    ) -> tuple[float, int, str, float, float, float] | None:
        """A layer's first gradient and weight norms, once both are known: the step if ``ratio_threshold`` x its weights."""
        cfg = self.config
        slot = self.pending.get(layer)
        if slot is None or slot[0] != step:
            slot = self.pending[layer] = [float(step), math.nan, math.nan]
        slot[1 if grad else 2] = value
        g, w = slot[1], slot[2]
        if math.isnan(g) or math.isnan(w):
            return None
        del self.pending[layer]
        self.judged.append(layer)
        lr = self.lr
        if not (math.isfinite(g) and math.isfinite(w) and math.isfinite(lr)) or w < cfg.min_weight_norm:
            return None
        ratio = lr * g / w
        return (ratio, step, layer, lr, g, w) if ratio >= cfg.ratio_threshold else None

    def _judge_warmup(self, step: int, grad: float, w2: float) -> Finding | None:
        """One step of a warm-up: the whole model's step ``warmup_ratio`` x its weights."""
        cfg = self.config
        lr = self.lr
        if step < 0 or not warmup.in_warmup(self.warmup, step):
            return None
        if not (math.isfinite(grad) and math.isfinite(w2) and math.isfinite(lr)) or w2 <= 0.0:
            return None
        weights = math.sqrt(w2)
        ratio = lr * grad / weights
        if ratio < cfg.warmup_ratio:
            return None
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.WARNING,
            score=ratio,
            step=int(step),
            metric=cfg.grad_metric,
            explanation=(
                f"{cfg.lr_metric} is still warming up and its step {cfg.lr_metric} x {cfg.grad_metric} = {lr:.3g} x "
                f"{grad:.3g} is already {ratio:.2g}x the weights (norm {weights:.3g}): it grows with the learning rate, "
                "so the loss is likely to blow up before the warm-up ends; lower the peak learning rate or lengthen "
                "the warm-up"
            ),
            related=(cfg.lr_metric, "loss"),
            key="warmup_step",
        )

    def _finding(self, ratio: float, step: int, layer: str, lr: float, grad: float, weight: float) -> Finding:
        cfg = self.config
        return Finding(
            AnomalyKind.DIVERGENCE_PREDICTED,
            Severity.ERROR if ratio >= cfg.error_ratio else Severity.WARNING,
            score=ratio,
            step=int(step),
            metric=cfg.grad_prefix + layer,
            explanation=(
                f"a first step of {cfg.lr_metric} x {cfg.grad_prefix}{layer} = {lr:.3g} x {grad:.3g} is "
                f"{ratio:.2g}x {cfg.weight_prefix}{layer} ({weight:.3g}): the loss is likely to blow up within a few "
                "steps; lower the learning rate (or warm it up)"
            ),
            layer=layer,
            related=(cfg.lr_metric, "loss"),
            key="initial_step",
        )
