"""A learning rate too high from the first step: the first gradient step would dwarf a layer's weights."""

from __future__ import annotations

import math

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class InitialStepConfig(DiagnosticConfig):
    """Settings of :class:`InitialStepDiagnostic`.

    Parameters
    ----------
    lr_metric
        The logged learning rate. Default ``"lr"``.
    grad_prefix, weight_prefix
        Per-layer gradient and weight norms are ``<prefix><layer>``. Defaults
        ``"grad_norm/"`` and ``"weight_norm/"``.
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
    within_steps
        Only a layer's first observation counts, and only within this many
        steps of the first logged value: the test is about the start. Later,
        a healthy run's small layer (a head whose weights are still small)
        may take steps larger than itself without harm (up to 3x on healthy
        runs of the corpora, also during warm-ups: so a warm-up's rising
        step is not judged either). Default 10.
    min_weight_norm
        Layers with a smaller weight norm are skipped: zero-initialised
        layers (LoRA's B, a zero-init residual branch) have no scale to
        compare with. Default 1e-6.
    """

    lr_metric: str = "lr"
    grad_prefix: str = "grad_norm/"
    weight_prefix: str = "weight_norm/"
    ratio_threshold: float = Field(default=2.0, gt=0.0)
    error_ratio: float = Field(default=10.0, gt=0.0)
    within_steps: int = Field(default=10, ge=0)
    min_weight_norm: float = Field(default=1e-6, ge=0.0)


class InitialStepDiagnostic(Diagnostic):
    """Predicts divergence at the start, before the loss moves, when the learning rate dwarfs the weights.

    A plain gradient step changes a layer by ``lr * ||g||``; with momentum or
    Adam's early steps it is of that order or larger. When that is several
    times the layer's own weight norm, the first updates replace the weights
    instead of adjusting them and the loss blows up within a few steps (the
    relative update a healthy optimiser takes is ~1e-3, Karpathy's "ratio of
    updates to weights"). The loss has not moved yet when the first gradient
    and weight norms are logged, so this is the warning a learning rate that
    is too high *from step 0* can get: it blows the loss up at its second or
    third value, before the loss-based rules or the learned forecaster can
    see a trend. Only each layer's first observation near the run's start is
    judged (``within_steps``); the diagnostic is idle afterwards. It raises
    ``DIVERGENCE_PREDICTED`` with key ``initial_step`` once, naming the layer
    with the largest ratio.

    Score: the largest ratio.

    Examples
    --------
    >>> d = InitialStepDiagnostic()
    >>> row = {"lr": 3.0, "grad_norm/fc1": 0.5, "weight_norm/fc1": 4.0, "grad_norm/head": 0.7, "weight_norm/head": 0.8}
    >>> (f,) = d.observe_block(MetricBlock.from_rows([0], [0.0], [row]))
    >>> f.step, f.kind.name, f.severity.name, f.layer, round(f.score, 3)
    (0, 'DIVERGENCE_PREDICTED', 'WARNING', 'head', 2.625)
    >>> f.explanation
    'a first step of lr x grad_norm/head = 3 x 0.7 is 2.6x weight_norm/head (0.8): the loss is likely to blow up within a few steps; lower the learning rate (or warm it up)'
    >>> d.observe_block(MetricBlock.from_rows([1], [0.0], [row]))   # judged once, at the start
    []
    >>> InitialStepDiagnostic().observe_block(MetricBlock.from_rows([0], [0.0], [{**row, "lr": 0.01}]))
    []
    """

    name = "initial_step"
    version = "1"
    config_class = InitialStepConfig
    reference = "Relative update size ~1e-3 (Karpathy, CS231n 'ratio of updates to weights'); SageMaker WeightUpdateRatio"
    state_attributes = ("start", "done", "lr", "pending", "judged")

    config: InitialStepConfig

    def __init__(self, config: InitialStepConfig | None = None) -> None:
        super().__init__(config)
        self.start = -1  # the first step of any watched metric (-1: none yet)
        self.done = False  # past the start window, or reported: idle from now on
        self.lr = math.nan  # the latest finite learning rate
        self.pending: dict[str, list[float]] = {}  # layer -> [step, grad norm, weight norm] until both are known
        self.judged: list[str] = []  # layers whose first observation was judged

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric == cfg.lr_metric or metric.startswith((cfg.grad_prefix, cfg.weight_prefix))

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
        last = self.start + cfg.within_steps
        # The block's values in step order; the lr of a step counts for the norms of that step.
        feed = sorted(
            (s, 0 if name == cfg.lr_metric else 1, name, v)
            for name, col in cols
            for s, v in zip(col.steps.tolist(), col.values.tolist())
            if s <= last
        )
        worst: tuple[float, int, str, float, float, float] | None = None
        for step, _, name, value in feed:
            if name == cfg.lr_metric:
                if math.isfinite(value):
                    self.lr = value
                continue
            grad = name.startswith(cfg.grad_prefix)
            layer = name[len(cfg.grad_prefix if grad else cfg.weight_prefix) :]
            if not layer or layer in self.judged:
                continue
            slot = self.pending.get(layer)
            if slot is None or slot[0] != step:
                slot = self.pending[layer] = [float(step), math.nan, math.nan]
            slot[1 if grad else 2] = value
            g, w = slot[1], slot[2]
            if math.isnan(g) or math.isnan(w):
                continue
            del self.pending[layer]
            self.judged.append(layer)
            lr = self.lr
            if not (math.isfinite(g) and math.isfinite(w) and math.isfinite(lr)) or w < cfg.min_weight_norm:
                continue
            ratio = lr * g / w
            if ratio >= cfg.ratio_threshold and (worst is None or (step, -ratio) < (worst[1], -worst[0])):
                worst = (ratio, step, layer, lr, g, w)
        if worst is not None or int(block.steps[-1]) > last:
            self.done = True  # reported, or past the start
            self.pending = {}
        return [] if worst is None else [self._finding(*worst)]

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
