"""No learning: the training loss has not moved from where the run started."""

from __future__ import annotations

import functools
import math
import statistics

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.diagnostics import warmup
from runwatch.models.diagnostics.loss_spike import by_step, select_columns
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.snapshot import with_default
from runwatch.models.streaks import streak_counts

#: Metric names (last path part) that mark a policy-gradient run (GRPO, PPO, RLOO): its logged loss is a
#: surrogate that is not expected to fall, often exactly 0. A preference run logs ``rewards/chosen``, not these.
POLICY_GRADIENT_METRICS = frozenset({"reward", "kl"})
#: Values of one metric in one block from which they are judged together (numpy) rather than one by one.
AT_ONCE_FROM = 16


class NoLearningConfig(DiagnosticConfig):
    """Settings of :class:`NoLearningDiagnostic`.

    Parameters
    ----------
    metrics
        Training-loss names to watch. Default ``("loss",)``.
    min_drop
        The loss has learned once the mean of its latest values is this
        fraction below the mean of its first values. Default 0.05.
    window_fraction, max_window
        Both means are over ``k = min(max_window, max(3, round(window_fraction * n)), n // 2)``
        values, ``n`` the values so far: a tenth of the run, at most 20 values, and never
        more than half of them, so the two windows share no value.
    min_points
        No finding before this many values. Default 10: twice the five
        values the real-log labels need to call a run ``no_learning``. Sparse
        logs are the common case (Lightning's ``log_every_n_steps=50``, a
        TensorBoard scalar every 50 steps): at 20 values a 500-step run
        logged every 50 steps could never be judged.
    min_steps
        No finding before the run is this many steps past its first logged
        loss. Default 500: healthy runs that start on a flat stretch
        (learning-rate warm-up, a recurrent net before it "clicks", a sparse
        first logging interval) were falling well before that in the
        training half of the corpus and of the real logs. (250 flagged no
        more healthy runs there nor on two corpora of unseen datasets and
        architectures, but an LSTM of the test split sat at ln 2 for 300
        steps before it learned: the click this wait is for.)
    hold_fraction
        The condition must have held for the latest ``hold_fraction * n``
        values without a break (at least the second half of the run so far).
        Default 0.5.
    max_rise
        A latest mean more than this fraction *above* the first is a
        diverging loss (the divergence diagnostic's case), not a stuck one.
        Default 0.5.
    lr_warmup
        No finding while the run's logged learning rate is still in its
        warm-up (see :mod:`runwatch.models.diagnostics.warmup`). Default True:
        a loss that has not moved while the rate ramps up from almost zero is
        expected; once the warm-up ends the run is judged as usual.
    min_points_at_end
        When the run ends as finished and the rule never reported on a
        metric (too few values or steps, or no-progress stretches shorter
        than ``hold_fraction`` of the run), its whole log is judged once,
        from this many values: the last mean against the first, as above,
        with no waiting time and no hold, unless the whole log (at most
        ``max_window`` values) fell steadily by ``min_drop`` (see
        :func:`fell_steadily`). Default 5, the real-log labels' own
        minimum. 0 turns the end-of-run judgement off.
    evidence_metrics
        Held-out losses that show learning the training loss may hide: while
        the median of the latest ``k`` values of one of them is ``min_drop``
        below both the median of its first ``k`` (``k`` as above, and at
        least 4 values so the two windows differ) and the median of the
        training loss's first 3 values, the run is learning and the rule
        reports nothing. A fine-tuning run's noisy minibatch loss can sit
        within 5 % of its start while its evaluation loss falls steadily. A
        held-out loss that only came back from a poor first evaluation to
        where training started (a net still at chance) shows nothing, and
        one that fell and came back to its start (a model reset by corrupted
        data) no longer does. Default ``("val/loss",)``; ``()`` judges the
        training loss alone.
    still_falling_p, still_falling_drop
        A loss that is still falling is learning, however slowly: a hit is
        not reported while the latest ``max_window`` values fall by a clear
        trend (Kendall's tau against their order negative at one-sided
        ``p < still_falling_p`` and the Theil-Sen line through them down by
        ``still_falling_drop`` of its start or more, :func:`fell_steadily`);
        the rule judges again at the next value. Fine-tuning from a
        pretrained model at a small learning rate falls slowly from the first
        step (a T5 fine-tune at 1e-5: 10.37, 10.37, 10.36, ... 10.18 over 1,000
        steps, every value below the one before, -1.8 %), and ``min_drop``
        over the first values alone calls that "not learning". A loss that
        hovers (a classifier at chance) shows no such trend, and one that
        creeps down by less than ``still_falling_drop`` over the window
        (0.2522 -> 0.2500 over 6,000 steps) is still judged stuck. Defaults
        0.01 and 0.01; ``still_falling_drop`` 0 turns the check off.
    epoch_loss_metrics
        The training loss's own epoch means (Lightning's ``self.log(...,
        on_epoch=True)`` beside the per-step values, which ``log_every_n_steps``
        may leave few and noisy): evidence like the held-out losses, judged
        against their own first values only (they are the training loss).
        Default ``("train_loss_epoch", "loss_epoch", "train/loss_epoch")``.
    """

    metrics: tuple[str, ...] = ("loss",)
    min_drop: float = Field(default=0.05, gt=0.0, lt=1.0)
    window_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    max_window: int = Field(default=20, ge=3)
    min_points: int = Field(default=10, ge=4)
    min_steps: int = Field(default=500, ge=0)
    hold_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    max_rise: float = Field(default=0.5, ge=0.0)
    lr_warmup: bool = True
    min_points_at_end: int = Field(default=5, ge=0)
    still_falling_p: float = Field(default=0.01, gt=0.0, lt=1.0)
    still_falling_drop: float = Field(default=0.01, ge=0.0, lt=1.0)
    evidence_metrics: tuple[str, ...] = ("val/loss",)
    epoch_loss_metrics: tuple[str, ...] = ("train_loss_epoch", "loss_epoch", "train/loss_epoch")


def fell_steadily(values: list[float], min_drop: float, p: float = 0.05) -> bool:
    """Whether a short log's values fell by a clear trend: Kendall's tau against their order is
    negative at one-sided ``p`` (default 0.05), and the Theil-Sen line through them fell by ``min_drop`` of its
    start.

    The end-of-run judgement compares means of at least two values, which a slow, steady fall can
    keep within ``min_drop`` (five losses 3.30 ... 3.05 of a real fine-tune: 3.225 -> 3.075, -4.7 %),
    while the log as a whole plainly learned (-7.6 %, every value below the one before).

    >>> fell_steadily([3.30, 3.15, 3.11, 3.10, 3.05], 0.05)
    True
    >>> fell_steadily([0.693, 0.70, 0.68, 0.69, 0.701], 0.05), fell_steadily([1.0, 0.999, 0.998, 0.997, 0.996], 0.05)
    (False, False)
    >>> fell_steadily([10.37, 10.366, 10.357, 10.341, 10.319, 10.293, 10.266, 10.239, 10.211, 10.182], 0.01, p=0.01)
    True
    """
    from scipy.stats import kendalltau, theilslopes

    x = np.arange(len(values), dtype=np.float64)
    if len(values) < 4 or not kendalltau(x, values, alternative="less").pvalue < p:
        return False
    slope, intercept, *_ = theilslopes(values, x)
    return bool(slope * (len(values) - 1) <= -min_drop * intercept)


def is_policy_gradient_metric(name: str) -> bool:
    """Whether ``name`` (its last path part) is a policy-gradient metric: ``reward``, ``train/kl``."""
    return name.rsplit("/", 1)[-1] in POLICY_GRADIENT_METRICS


@functools.lru_cache(maxsize=512)  # a run logs the same names block after block
def logs_policy_gradient(names: tuple[str, ...]) -> bool:
    """Whether any of the names is a policy-gradient metric (its last path part).

    >>> logs_policy_gradient(("loss", "train/kl")), logs_policy_gradient(("loss", "lr"))
    (True, False)
    """
    return any(is_policy_gradient_metric(name) for name in names)


def idle_in_policy_gradient(diagnostic: Diagnostic, columns) -> bool:
    """Whether a once-per-run ``diagnostic`` (one with a ``done`` flag) has nothing to judge in a block with these
    ``columns``: it reported already, or the run is a policy-gradient one, where it stays idle from then on."""
    if not diagnostic.done and logs_policy_gradient(tuple(columns)):
        diagnostic.done = True
    return diagnostic.done


class NoLearningDiagnostic(Diagnostic):
    """Flags a training loss that has not improved on its first values: a run that is not learning.

    A learning rate of zero or far too small, parameters the optimizer does
    not step (frozen layers, a detached loss, a second model's parameters
    passed to the optimizer), labels shuffled apart from their inputs, a
    classifier stuck at chance (``ln 2 = 0.693`` for two classes): the loss
    stays where it started. The plateau diagnostic asks whether the loss
    *stopped* improving and needs a clean flat trend to say so; this check
    asks whether it ever improved, which a noisy loss answers too. SageMaker
    Debugger's ``LossNotDecreasing`` compares consecutive windows instead, and
    fires on most healthy fine-tuning runs (bench/RESULTS.md, Q6).

    The rule (the ``no_learning`` criterion of the real-log labels,
    ``bench/real_labels/README.md``, made causal): with ``n`` finite values
    so far and ``k`` = a tenth of them (3 to 20), the mean of the latest
    ``k`` values is at least ``(1 - min_drop)`` times the mean of the first
    ``k``, and has been so at every value of the latest half of the run.
    Losses that are ever zero or negative are not ratios of anything and are
    not judged; neither is a log that starts mid-run (its first step more
    than twice the next interval: the initial loss is unknown), nor a
    policy-gradient run (it logs ``reward`` or ``kl``).

    A run too short for those waiting times (a 10-value log of 450 steps) is
    judged once more when it ends as finished (:meth:`on_end`), on its whole
    log: nothing early about that finding, but a finished run that never
    learned is worth knowing about, and a slow starter that learned later is
    not flagged by it.

    Severity: WARNING. Score: latest mean / first mean / ``(1 - min_drop)``
    (1 at the bar, higher = more stuck).

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = NoLearningDiagnostic()
    >>> chance = [0.693 + 0.02 * ((7 * s) % 5 - 2) / 2 for s in range(40)]   # noisy, stuck at ln 2
    >>> fs = d.observe_block(MetricBlock.from_rows([25 * s for s in range(40)], [0.0] * 40,
    ...                                            [{"loss": v} for v in chance]))
    >>> fs[0].step, fs[0].kind.name
    (500, 'PLATEAU')
    >>> fs[0].explanation[:100]
    'loss has not improved on its start: mean of the latest 3 values 0.6863 vs 0.6930 over the first 3 (-'
    >>> short = NoLearningDiagnostic()               # 8 values, 350 steps: too short to judge while it runs ...
    >>> short.observe_block(MetricBlock.from_rows([50 * s for s in range(8)], [0.0] * 8,
    ...                                           [{"loss": v} for v in chance[:8]]))
    []
    >>> [(f.step, f.explanation[:40]) for f in short.on_end()]   # ... and judged whole when it finishes
    [(350, 'loss ended the run where it started: mea')]
    >>> falling = [2.3 * 0.99 ** s for s in range(200)]
    >>> NoLearningDiagnostic().observe_block(MetricBlock.from_rows(list(range(0, 2000, 10)), [0.0] * 200,
    ...                                                            [{"loss": v} for v in falling]))
    []
    """

    name = "no_learning"
    version = "1"
    config_class = NoLearningConfig
    reference = "bench/real_labels/README.md no_learning criterion, causal; cf. SageMaker Debugger LossNotDecreasing"
    state_attributes = ("_states", "_policy_gradient", "_warmup", "_evidence")

    config: NoLearningConfig

    def __init__(self, config: NoLearningConfig | None = None) -> None:
        super().__init__(config)
        # per metric: values seen, first step, the current streak of "no progress" values and its first step,
        # why the metric is not judged ("" while it is), its first and its latest max_window values
        self._states: dict[str, dict] = {}
        self._policy_gradient = False
        self._warmup = warmup.new_state()
        # "learned": whether a held-out loss shows learning now; per evidence metric: values seen, first and
        # latest max_window values, and its own verdict
        self._evidence: dict = {"learned": False, "metrics": {}}

    def load_state_dict(self, snapshot: dict) -> bool:
        """Restore :meth:`state_dict` output; a snapshot from before the warm-up (or the held-out evidence)
        was tracked restores a run without one."""
        return super().load_state_dict(with_default(warmup.with_state(snapshot), "_evidence", {"learned": False, "metrics": {}}))

    def watches(self, metric: str) -> bool:
        return metric in self.config.metrics

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if not self._policy_gradient:
            self._policy_gradient = logs_policy_gradient(tuple(block.columns))
        if self._policy_gradient:
            return []
        warmup.observe(self._warmup, block)
        findings: list[Finding] = []
        for metric, col in select_columns(self, block):
            state = self._states.get(metric)
            if state is None:
                state = self._states[metric] = {
                    "n": 0, "first_step": 0, "streak": 0, "since": 0, "skip": "", "first": [], "latest": []}
            steps, walls, values = col.steps.tolist(), col.wall_times.tolist(), col.values.tolist()
            i = 0
            while i < len(values) and state["n"] < self.config.max_window and not state["skip"]:
                f = self._observe(metric, state, steps[i], walls[i], values[i])
                if f is not None:
                    findings.append(f)
                i += 1
            if len(values) - i >= AT_ONCE_FROM and not state["skip"]:
                findings += self._observe_many(metric, state, col.steps[i:], col.wall_times[i:], col.values[i:])
            else:
                for step, wall, value in zip(steps[i:], walls[i:], values[i:]):
                    f = self._observe(metric, state, step, wall, value)
                    if f is not None:
                        findings.append(f)
            if len(col.steps):
                state["last_step"], state["last_wall"] = int(col.steps[-1]), float(col.wall_times[-1])
        if self.config.lr_warmup:
            findings = warmup.outside(self._warmup, findings)
        was = self._evidence["learned"]
        findings = self._before_learning(findings, self._observe_evidence(block), was)
        for f in findings:
            self._states[f.metric]["reported"] = True
        return by_step(findings)

    def _observe_evidence(self, block: MetricBlock) -> list[tuple[int, bool]]:
        """Read the block's held-out losses; the verdict "learned" after each of them that changed it, in step order.

        The verdict is current, not for good: a held-out loss that fell and came back to where it started
        (a model reset to chance by corrupted data) no longer shows learning.
        """
        cfg = self.config
        cols = [(m, block.columns[m]) for m in cfg.evidence_metrics + cfg.epoch_loss_metrics if m in block.columns]
        if not cols:
            return []
        starts = [self._states[m] for m in cfg.metrics if len(self._states.get(m, {}).get("first", ())) >= 3]
        # Judged only from the step the training loss's start is known, so that how a run is cut into blocks
        # does not move the verdict; values before it are read all the same.
        loss_start = statistics.median(starts[0]["first"][:3]) if starts else math.nan
        known_from = starts[0].get("start_step", 0) if starts else math.inf
        values = sorted(
            ((step, i, metric, value) for i, (metric, col) in enumerate(cols)
             for step, value in zip(col.steps.tolist(), col.values.tolist())),
            key=lambda t: (t[0], t[1]),
        )
        evidence, changes = self._evidence, []
        for step, _, metric, value in values:
            if not math.isfinite(value) or value <= 0.0:
                continue
            state = evidence["metrics"].setdefault(metric, {"n": 0, "first": [], "latest": [], "learned": False})
            state["n"] += 1
            n = state["n"]
            if len(state["first"]) < cfg.max_window:
                state["first"].append(value)
            state["latest"] = (state["latest"] + [value])[-cfg.max_window:]
            if n < 4 or step < known_from:
                continue
            k = min(cfg.max_window, max(3, round(cfg.window_fraction * n)))
            # Medians: the first evaluation after initialisation can be far off (a net briefly worse than
            # chance, back at chance by the second), which is not learning.
            start, now = statistics.median(state["first"][:k]), statistics.median(state["latest"][-k:])
            own = metric in cfg.epoch_loss_metrics  # the training loss itself: its start is the reference
            state["learned"] = now <= (1.0 - cfg.min_drop) * (start if own else min(start, loss_start))
            learned = any(m["learned"] for m in evidence["metrics"].values())
            if learned != evidence["learned"]:
                evidence["learned"] = learned
                changes.append((step, learned))
        return changes

    def _before_learning(self, findings: list[Finding], changes: list[tuple[int, bool]], was: bool) -> list[Finding]:
        """The findings at steps where no held-out loss showed learning (the verdict of the values before each)."""
        if not changes and not was:
            return findings
        kept = []
        for f in findings:
            learned = was
            for step, verdict in changes:
                if step >= f.step:
                    break
                learned = verdict
            if not learned:
                kept.append(f)
        return kept

    def on_end(self) -> list[Finding]:
        """Judge a finished run's whole log, for metrics the rule never reported on."""
        cfg = self.config
        if self._policy_gradient or cfg.min_points_at_end == 0:
            return []
        findings = []
        for metric, state in self._states.items():
            n = state["n"]
            if state["skip"] or state.get("reported") or n < max(cfg.min_points_at_end, 3):
                continue
            k, start, now, stuck = self._means(state, n)
            if not stuck or (n <= len(state["first"]) and fell_steadily(state["first"], cfg.min_drop)):
                continue
            step = state.get("last_step", state["first_step"])
            findings.append(self._stuck(
                metric, k, start, now, step, state.get("last_wall", 0.0), state["first_step"],
                f"ended the run where it started: mean of the last {k} values",
                f"in all {n} values and {step - state['first_step']} steps",
            ))
        if cfg.lr_warmup:
            findings = warmup.outside(self._warmup, findings)
        return [] if self._evidence["learned"] else findings

    def _observe_many(self, metric: str, state: dict, steps: np.ndarray, walls: np.ndarray,
                      values: np.ndarray) -> list[Finding]:
        """:meth:`_observe` over many values at once, once the first window is full: the same findings, bit for bit.

        Means are summed left to right as ``sum()`` does, so scores and
        comparisons do not depend on how a run's values were batched.
        """
        cfg = self.config
        finite = np.isfinite(values)
        broken = finite & (values <= 0.0)
        if broken.any():
            cut = int(np.argmax(broken))
            found = self._observe_many(metric, state, steps[:cut], walls[:cut], values[:cut]) if cut else []
            state["skip"] = "non-positive"
            return found
        steps, walls, values = steps[finite], walls[finite], values[finite]
        m = len(values)
        if m == 0:
            return []
        n = state["n"] + 1 + np.arange(m)
        k = np.minimum(cfg.max_window, np.maximum(3, np.round(cfg.window_fraction * n))).astype(np.int64)
        first_sums = np.concatenate([[0.0], np.cumsum(np.asarray(state["first"], dtype=np.float64))])
        start = first_sums[k] / k
        window = np.concatenate([np.asarray(state["latest"], dtype=np.float64), values])
        at = len(state["latest"]) + np.arange(m)  # each value's place in `window`
        taps = np.arange(cfg.max_window)
        cells = at[:, None] - k[:, None] + 1 + taps  # row i: the k values ending at value i, then padding
        inside = taps < k[:, None]
        terms = np.where(inside, window[np.where(inside, cells, 0)], 0.0)
        now = np.cumsum(terms, axis=1)[:, -1] / k  # cumsum adds left to right, as sum() does; + 0.0 changes nothing
        with np.errstate(invalid="ignore", over="ignore"):
            good = np.isfinite(start + now) & ((1.0 - cfg.min_drop) * start <= now) & (now <= (1.0 + cfg.max_rise) * start)
        index = np.arange(m)
        streak = streak_counts(good, state["streak"])
        began = good & (streak == 1)  # a streak starts here
        carried = streak > index + 1  # a streak that began before this block
        since = np.where(carried, state["since"], steps[np.clip(index - streak + 1, 0, m - 1)])
        hits = np.flatnonzero(good & (n >= cfg.min_points) & (steps - state["first_step"] >= cfg.min_steps)
                              & (streak >= np.ceil(cfg.hold_fraction * n)))
        if hits.size and not state.get("settled"):
            # the first hit whose latest values are not still falling, and every hit after it (as value by value)
            first = next((j for j, h in enumerate(hits.tolist())
                          if not self._still_falling(window[max(0, at[h] - cfg.max_window + 1):at[h] + 1].tolist())),
                         hits.size)
            hits = hits[first:]
            state["settled"] = bool(hits.size)
        found = [
            self._stuck(metric, kk, st, nw, step, wall, sc,
                        f"has not improved on its start: mean of the latest {kk} values",
                        f"{step - state['first_step']} steps and {nn} values in")
            for kk, st, nw, step, wall, sc, nn in zip(
                k[hits].tolist(), start[hits].tolist(), now[hits].tolist(), steps[hits].tolist(),
                walls[hits].tolist(), since[hits].tolist(), n[hits].tolist())
        ]
        state["n"] += m
        state["streak"] = int(streak[-1])
        if began.any():
            state["since"] = int(steps[np.flatnonzero(began)[-1]])
        state["latest"] = window[-cfg.max_window:].tolist()
        return found

    def _observe(self, metric: str, state: dict, step: int, wall: float, value: float) -> Finding | None:
        if state["skip"] or not math.isfinite(value):
            return None
        cfg = self.config
        if value <= 0.0:
            state["skip"] = "non-positive"
            return None
        n = state["n"] = state["n"] + 1
        first, latest = state["first"], state["latest"]
        if n == 1:
            state["first_step"] = step
        elif n == 2 and step > state["first_step"] and state["first_step"] > 2 * (step - state["first_step"]):
            state["skip"] = "starts mid-run"
            return None
        if len(first) < cfg.max_window:
            first.append(value)
        latest.append(value)
        if len(latest) > cfg.max_window:
            del latest[0]
        if n < 3:  # k is at least 3 values
            return None
        if n == 3:
            state["start_step"] = step  # from here the start of the loss is known (the held-out evidence needs it)
        k, start, now, stuck = self._means(state, n)
        if not stuck:
            state["streak"] = 0
            return None
        if state["streak"] == 0:
            state["since"] = step
        state["streak"] += 1
        in_steps = step - state["first_step"]
        if n < cfg.min_points or in_steps < cfg.min_steps or state["streak"] < math.ceil(cfg.hold_fraction * n):
            return None
        if not state.get("settled"):
            if self._still_falling(latest):
                return None
            state["settled"] = True  # no longer falling: later hits are reported without asking again
        return self._stuck(metric, k, start, now, step, wall, state["since"],
                           f"has not improved on its start: mean of the latest {k} values",
                           f"{in_steps} steps and {n} values in")

    def _still_falling(self, latest: list[float]) -> bool:
        """Whether the latest values still fall by a clear trend (``still_falling_p``, ``still_falling_drop``)."""
        cfg = self.config
        return cfg.still_falling_drop > 0.0 and fell_steadily(latest, cfg.still_falling_drop, cfg.still_falling_p)

    def _means(self, state: dict, n: int) -> tuple[int, float, float, bool]:
        """``(k, first mean, latest mean, no progress?)`` after ``n`` values (sums of values near the float
        maximum are not finite: no verdict)."""
        cfg = self.config
        # At most half the values each: with fewer than six, windows of three would share values, and a value
        # counted on both sides pulls the two means together (three values would always read "no progress").
        k = min(cfg.max_window, max(3, round(cfg.window_fraction * n)), n // 2)
        start, now = sum(state["first"][:k]) / k, sum(state["latest"][-k:]) / k
        stuck = math.isfinite(start + now) and (1.0 - cfg.min_drop) * start <= now <= (1.0 + cfg.max_rise) * start
        return k, start, now, stuck

    def _stuck(self, metric: str, k: int, start: float, now: float, step: int, wall: float, since: int,
               what: str, extent: str) -> Finding:
        drop = self.config.min_drop
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.WARNING,
            score=now / start / (1.0 - drop),
            step=step,
            metric=metric,
            explanation=(
                f"{metric} {what} {now:.4f} vs {start:.4f} over the first {k} ({now / start - 1.0:+.1%}, "
                f"needs < {-drop:.0%}), {extent}; check the learning rate (zero or far too small), "
                f"that the optimizer steps the parameters being trained (frozen layers, a detached loss), "
                f"and that labels still match their inputs"
            ),
            key=f"{metric}:no_learning",
            since=since,
            wall_time=wall,
        )
