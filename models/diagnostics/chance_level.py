"""A classification loss that sits at ln(K), or an accuracy held at exactly 1/K, for K classes: the model is at chance."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock
from runwatch.models.diagnostics.no_learning import idle_in_policy_gradient, is_policy_gradient_metric
from runwatch.models.findings import AnomalyKind, Finding, Severity

_NONE = (0, 0, -1, 0)  # a metric's streak before its first value


def _partner(name: str) -> str:
    """The loss of an accuracy, or the accuracy of a loss, of the same phase.

    >>> _partner("val/acc"), _partner("loss"), _partner("test/loss")
    ('val/loss', 'acc', 'test/acc')
    """
    head, found, _ = name.rpartition("acc")
    return head + "loss" if found else name.rpartition("loss")[0] + "acc"


class ChanceLevelConfig(DiagnosticConfig):
    """Settings of :class:`ChanceLevelDiagnostic`.

    Parameters
    ----------
    metrics
        The losses watched, each judged on its own. Default ``("loss", "val/loss")``.
    accuracy_metrics
        Accuracies quoted beside a finding on their loss (``val/acc`` with
        ``val/loss``), and judged on their own: one held at exactly 1/K.
        Default ``("acc", "val/acc", "test/acc")``.
    max_classes
        The largest K tried. Default 20: ln(K) and ln(K + 1) are 1/K apart, so
        for many classes every flat loss would sit near some ln(K) (a language
        model's 2.94 is ln 19 to 0.001 by chance, not at chance).
    tolerance
        How close to ln(K) each value is, in nats. Default 0.001: Keras prints
        4 decimals (2.3026 for ln 10 = 2.302585), and mini-batch noise alone
        moves a loss that still learns by more.
    min_values
        Consecutive values at the same ln(K). Default 5.
    min_steps
        ... spanning at least this many steps. Default 200: a network starts at
        chance (its first steps at exactly ln(K) when the last layer starts at
        zero) and leaves it within tens of steps when it learns.
    accuracy_tolerance
        How close to 1/K an accuracy is, for ``min_values`` values in a row (no
        span asked). Default 5e-5: the value printed to 4 decimals (Keras's
        ``acc: 0.1000``). An accuracy that learns, or that only hovers near
        chance early on, moves with every evaluation; one that repeats 1/K
        exactly comes from a model giving one answer to everything (a
        saturated or dead last layer) on balanced data.
    frozen_loss
        Where the accuracy's loss is logged too (``val/loss`` for ``val/acc``),
        it must not move by more than this fraction meanwhile. Default 0.002:
        an accuracy on 100 samples repeats 0.5000 for epochs while its loss
        still falls 1 % (a real Lightning run), a frozen model's loss stays put.
    """

    metrics: tuple[str, ...] = ("loss", "val/loss")
    accuracy_metrics: tuple[str, ...] = ("acc", "val/acc", "test/acc")
    max_classes: int = Field(default=20, ge=2)
    tolerance: float = Field(default=1e-3, gt=0.0, lt=0.1)
    min_values: int = Field(default=5, ge=2)
    min_steps: int = Field(default=200, ge=0)
    accuracy_tolerance: float = Field(default=5e-5, ge=0.0, lt=0.01)
    frozen_loss: float = Field(default=0.002, ge=0.0)


class ChanceLevelDiagnostic(Diagnostic):
    """Flags a loss that stays at ln(K), the cross-entropy of a uniform guess over K classes.

    A classifier that outputs the same probability for each of its K classes
    has a cross-entropy of exactly ln(K), whatever the data (Karpathy's
    "verify loss @ init": ln 10 = 2.303 for CIFAR-10); one that learns leaves
    that value within its first steps. A loss held at ln(K) to within
    ``tolerance`` for ``min_values`` values over ``min_steps`` steps is a model
    at chance: labels that do not match the inputs, a learning rate of zero or
    one so high that the logits saturated, a dead or detached last layer. It
    needs no history before it, so it also judges a log that starts mid-run,
    which the no-learning rule leaves alone. An accuracy (``acc``, ``val/acc``,
    ``test/acc``) at exactly 1/K for ``min_values`` values in a row is the same
    model seen from its answers: it predicts one class (RMDL's "acc: 0.1000"
    for 7 epochs on 10 classes, its loss frozen at 14.5063). Policy-gradient runs (``reward`` /
    ``kl`` logged), whose surrogate loss is no cross-entropy, are not judged.

    On the corpus's 396 healthy runs and every real log on this machine
    (modded-nanogpt, Lightning, TensorBoard, text and Trainer logs: 5,512
    runs) it fires on none; on the corpus it finds 4 slow-convergence runs.

    Raises ``PLATEAU`` (WARNING) once per watched loss or accuracy. Score: the
    values at chance over ``min_values``.

    Examples
    --------
    >>> d = ChanceLevelDiagnostic()
    >>> rows = [{"loss": v, "acc": a} for v, a in zip((2.3030, 2.3030, 2.3029, 2.3029, 2.3028), (0.099, 0.097, 0.1, 0.099, 0.101))]
    >>> (f,) = d.observe_block(MetricBlock.from_rows([1700, 1750, 1800, 1850, 1900], [0.0] * 5, rows))
    >>> f.kind.name, f.severity.name, f.step
    ('PLATEAU', 'WARNING', 1900)
    >>> f.explanation[:94]
    'loss has stayed at ln(10) = 2.3026 (within 0.001) for 5 values over 200 steps (acc 0.101 = 1/1'
    >>> rows = [{"loss": v} for v in (2.3026, 2.3024, 2.2950, 2.2104, 2.0011, 1.6)]   # leaves chance: learning
    >>> ChanceLevelDiagnostic().observe_block(MetricBlock.from_rows(list(range(0, 600, 100)), [0.0] * 6, rows))
    []
    """

    name = "chance_level"
    version = "2"
    config_class = ChanceLevelConfig
    reference = "Cross-entropy of a uniform prediction over K classes is ln K (Karpathy 2019, A Recipe for Training Neural Networks)"
    state_attributes = ("done", "streaks", "accuracy", "losses")

    config: ChanceLevelConfig

    def __init__(self, config: ChanceLevelConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # a policy-gradient run: idle from now on
        # per watched loss: [K, values in a row at ln(K), first step of the run, reported (0/1)]
        self.streaks: dict[str, list[int]] = {}
        self.accuracy: dict[str, float] = {}  # the latest value of each accuracy metric
        # per accuracy metric: [step, value] of its loss's latest values (as many as a streak needs)
        self.losses: dict[str, list[list[float]]] = {}
        self._logs = np.log(np.arange(self.config.max_classes + 1, dtype=float).clip(1.0))
        # (metric, an accuracy?, steps its streak must span): losses at ln(K), then accuracies at 1/K
        self._watched = tuple((m, False, self.config.min_steps) for m in self.config.metrics) + tuple(
            (m, True, 0) for m in self.config.accuracy_metrics
        )

    def watches(self, metric: str) -> bool:
        cfg = self.config
        return metric in cfg.metrics or metric in cfg.accuracy_metrics or is_policy_gradient_metric(metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        cols = block.columns
        if idle_in_policy_gradient(self, cols):
            return []
        cfg = self.config
        keep = cfg.min_values * 4
        for name in cfg.accuracy_metrics:
            acc = cols.get(name)
            if acc is not None and len(acc):
                self.accuracy[name] = float(acc.values[-1])
            loss = cols.get(_partner(name))
            if loss is not None and len(loss):
                kept = self.losses.setdefault(name, [])
                kept.extend([s, v] for s, v in zip(loss.steps[-keep:].tolist(), loss.values[-keep:].tolist()))
                del kept[:-keep]
        found = []
        for name, accuracy, min_steps in self._watched:
            col = cols.get(name)
            # The same model at chance as its partner's finding says (a loss and its accuracy): one finding for both.
            if col is not None and len(col) and not self.streaks.get(_partner(name), _NONE)[3]:
                ks = self._at_inverse(col.values) if accuracy else self._near(col.values)
                finding = self._follow(name, col, ks, min_steps)
                if finding is not None:
                    found.append(finding)
        return found

    def _at_inverse(self, values: np.ndarray) -> np.ndarray:
        """K where a value is within ``accuracy_tolerance`` of 1/K (2 <= K <= max_classes), else 0."""
        cfg = self.config
        out = []
        for v in values.tolist():
            k = round(1.0 / v) if 1.0 / (cfg.max_classes + 1) < v < 0.75 else 0
            out.append(k if 2 <= k <= cfg.max_classes and abs(v - 1.0 / k) <= cfg.accuracy_tolerance else 0)
        return np.array(out, dtype=np.int64)

    def _near(self, values: np.ndarray) -> np.ndarray:
        """K where a value is within ``tolerance`` of ln(K) (2 <= K <= max_classes), else 0."""
        cfg = self.config
        if len(values) <= 8:  # a service's small blocks: scalar math costs less than numpy's calls
            out = []
            for v in values.tolist():
                k = round(math.exp(v)) if -1.0 < v < 20.0 else 0
                out.append(k if 2 <= k <= cfg.max_classes and abs(v - self._logs[k]) <= cfg.tolerance else 0)
            return np.array(out, dtype=np.int64)
        with np.errstate(over="ignore", invalid="ignore"):
            k = np.rint(np.exp(np.where(np.isfinite(values), values, -1.0)))
        k = np.where((k >= 2) & (k <= cfg.max_classes), k, 0).astype(np.int64)
        close = np.abs(values - self._logs[k]) <= cfg.tolerance
        return np.where(close & (k > 0), k, 0)

    def _follow(self, name: str, col: Column, ks: np.ndarray, min_steps: int) -> Finding | None:
        """The finding when ``name``'s values stay at one K (``ks``: each value's K, 0 for none) long enough."""
        cfg = self.config
        streak = self.streaks.setdefault(name, [0, 0, -1, 0])
        if streak[3]:
            return None
        if not ks.any():  # the common case: nowhere near chance
            streak[0] = streak[1] = 0
            return None
        for i, (k, step) in enumerate(zip(ks.tolist(), col.steps.tolist())):
            if not math.isfinite(float(col.values[i])):
                continue
            if k == 0:
                streak[0] = streak[1] = 0
                continue
            if k != streak[0]:
                streak[0], streak[1], streak[2] = k, 0, step
            streak[1] += 1
            if streak[1] >= cfg.min_values and step - streak[2] >= min_steps and self._loss_frozen(name, streak[2], step):
                streak[3] = 1
                return self._finding(name, col, i, k, streak)
        return None

    def _loss_frozen(self, name: str, since: int, step: int) -> bool:
        """Whether the loss of accuracy ``name`` (where logged) held still from ``since`` to ``step`` (True for a loss)."""
        values = [v for s, v in self.losses.get(name, ()) if since <= s <= step and math.isfinite(v)]
        if not values:
            return True
        lo, hi = min(values), max(values)
        return hi - lo <= self.config.frozen_loss * max(abs(lo), abs(hi))

    def _finding(self, name: str, col: Column, i: int, k: int, streak: list[int]) -> Finding:
        cfg = self.config
        step = int(col.steps[i])
        if name in cfg.accuracy_metrics:
            seen = (
                f"{name} has been exactly 1/{k} = {1.0 / k:.4f} for {streak[1]} values in a row (steps "
                f"{streak[2]}-{step}): the model gives one answer to everything, i.e. it is at chance on {k} "
                "balanced classes"
            )
        else:
            acc_name = _partner(name)
            acc = self.accuracy.get(acc_name) if acc_name in cfg.accuracy_metrics else None
            accuracy = ""
            if acc is not None and math.isfinite(acc) and abs(acc - 1.0 / k) <= 0.25 / k:
                accuracy = f" ({acc_name} {acc:.3g} = 1/{k}, as for a guess)"
            seen = (
                f"{name} has stayed at ln({k}) = {math.log(k):.4f} (within {cfg.tolerance:g}) for {streak[1]} values "
                f"over {step - streak[2]} steps{accuracy}: the cross-entropy of predicting each of {k} classes alike, "
                "i.e. the model is at chance"
            )
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.WARNING,
            score=streak[1] / cfg.min_values,
            step=step,
            metric=name,
            explanation=(
                f"{seen}; check that the labels match the inputs, that the learning rate is neither zero nor so high "
                "that the logits saturated, and that the last layer is trained (not dead, frozen or detached from the loss)"
            ),
            wall_time=float(col.wall_times[i]),
            since=streak[2],
        )
