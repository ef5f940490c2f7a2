"""Loss plateau: no relative improvement over about ``patience`` steps."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import Column, MetricBlock
from runwatch.models.diagnostics import staircase, warmup
from runwatch.models.diagnostics.loss_spike import by_step, select_columns
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.kernels import plateau, plateau_state, scratch


class PlateauConfig(DiagnosticConfig):
    """Settings of :class:`PlateauDiagnostic`.

    Parameters
    ----------
    metrics
        Exact metric names to watch. Default ``("loss",)``; add
        ``"val/loss"`` to watch validation too (``val/`` metrics use
        ``val_patience``). Validation is not watched by default because a
        validation loss that has flattened at the end of a healthy run is
        the expected outcome, not a fault.
    min_delta
        Relative improvement over the window that counts as progress
        (ReduceLROnPlateau ``threshold`` in ``rel`` mode, SageMaker
        ``LossNotDecreasing`` ``diff_percent``). Default 0.005 (0.5 % per
        ``patience`` steps): small models improve by several percent per
        hundred steps until they converge; GPT-2 speedrun logs (a real model
        of healthy language-model training) improve by 0.5-2 % per 200 steps
        in their middle phase.
    patience
        Steps of training a training metric's fitted window covers. Default
        200. The window is a number of observations, sized once from the
        logging interval: ``round(patience / g)`` for the median step gap
        ``g`` of the first ``min_points`` values, but never fewer than
        ``min_points``. Logged every step that is 200 values; every 25 steps,
        10 values (250 steps); every 50 steps, 10 values (500 steps).
    min_points
        The fewest observations in a training metric's window, and how many
        values the logging interval is measured on. Default 10: fewer points
        cannot tell a flat loss from noise; sparse logging (HF Trainer
        ``logging_steps``, Lightning ``log_every_n_steps``) thus gets a window
        longer than ``patience`` steps rather than one that never fills.
    val_patience
        Observations of a ``val/`` metric in the fitted window. Default 10
        (ReduceLROnPlateau's default, counted in validation points).
    confidence_z
        The plateau must be statistically clear: the improvement's upper
        confidence bound (fitted improvement + ``confidence_z`` standard
        errors of the slope) must be below ``min_delta``. Default 2.0 (~97.7 %
        one-sided): with noisy small-batch losses the window is inconclusive
        and nothing fires; with a clean flat loss it fires.
    warmup_steps
        No finding in the first ``warmup_steps`` steps of the run (the first
        step seen by this diagnostic counts as 0). Default 100: learning-rate
        warm-ups start near zero and barely move the loss.
    check_every
        A training metric is tested about every this many steps: every
        ``max(1, min(check_every, round(check_every * window / patience)))``
        observations (``val/`` metrics on every one). Default 10: logged
        every step, every 10 values, as before; every 5 steps (a 40-value
        window), every 2 values; every 25 steps (a 10-value window), on every
        value.
    late_rate
        Late in a long run the required improvement per window is lowered to
        ``late_rate * span / elapsed steps`` where that is below ``min_delta``.
        Default 0.05: losses fall roughly as a power law of the step, ``L ~
        t^-a``, whose relative improvement over a window of ``span`` steps is
        about ``a * span / t`` -- a healthy run 60,000 steps in improves by far
        less than 0.5 % per 450 steps. With 0.05 the bar stays ``min_delta``
        for the first ~2,000 steps of a 200-step window (every corpus run), and
        a Lightning log 59,000 steps in (the training half of the real logs)
        that improved 0.4 % over its last 450 steps is not a plateau. 0 turns
        it off.
    lr_warmup
        No finding while the run's logged learning rate is still in its
        warm-up (rising at every value since its second; see
        :mod:`runwatch.models.diagnostics.warmup`). Default True: a loss that
        stays flat while the rate ramps up from almost zero is the schedule
        working (a Hugging Face run warming up over 1,000 steps sat at 9.7
        for its first 700). ``warmup_steps`` still covers runs that do not
        log ``lr``.
    progress_info_below
        A plateau at a level below this fraction of the run's first value is
        reported at INFO, not WARNING. Default 0.5: a loss that has already lost
        more than half of its starting value and then flattens is, in real
        logs, a run that learned what it could (Lightning runs flat at 21 % and
        39 % of their start for thousands of steps, labelled healthy by the
        written criteria of ``bench/real_labels``); in the corpus's training
        split every plateau of a faulty run sat at 65 % of its start or above
        (a vanishing gradient, a slow start, dead units: the loss never got
        going). The finding is kept, so the dashboard still shows it. 0 keeps
        every plateau a WARNING.
    stair_fall, stair_windows
        A plateau of a training metric whose level is at least ``stair_fall``
        below its level ``stair_windows`` windows earlier is reported at INFO,
        not WARNING: the loss is coming down in steps, not stuck (see
        :mod:`runwatch.models.diagnostics.staircase`). Defaults 0.05 and 3:
        multi-epoch fine-tunes drop their loss at each epoch boundary and hold it
        flat in between (a Hugging Face run of the real logs' training half fell
        from 9.8 to 7.4 that way, 200-step plateaus between its drops, and got
        two WARNINGs), while a stuck run's loss moves by less than 1 % over three
        windows. In the corpus's training split and the validation corpora no
        plateau WARNING of a faulty run came after such a fall (most come before
        three windows of history exist, where the guard cannot apply). The run
        keeps about 20 values per window for it, ``stair_windows + 2`` windows'
        worth. ``stair_fall`` 0 turns it off.
    abs_floor, rel_floor
        The loss counts as converged, and never as a plateau, once its level
        is at most ``max(abs_floor, rel_floor * first value)``. Defaults 0.01
        and 0.05: a cross-entropy that went from 2.3 to 0.1 has little left
        to gain, but a language model at 3.3 (30 % of its initial 10.8) that
        stops improving is the case to report. The absolute floor assumes
        losses of order one (cross-entropy, standardised MSE); set it to 0
        for losses in other units.
    """

    metrics: tuple[str, ...] = ("loss",)
    min_delta: float = Field(default=0.005, ge=0.0, lt=1.0)
    patience: int = Field(default=200, ge=3)
    min_points: int = Field(default=10, ge=3)
    val_patience: int = Field(default=10, ge=3)
    confidence_z: float = Field(default=2.0, ge=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    check_every: int = Field(default=10, ge=1)
    abs_floor: float = Field(default=0.01, ge=0.0)
    rel_floor: float = Field(default=0.05, ge=0.0)
    max_rise: float = Field(default=0.005, ge=0.0)
    late_rate: float = Field(default=0.05, ge=0.0)
    lr_warmup: bool = True
    progress_info_below: float = Field(default=0.5, ge=0.0, le=1.0)
    stair_fall: float = Field(default=0.05, ge=0.0, lt=1.0)
    stair_windows: int = Field(default=3, ge=1)


class PlateauDiagnostic(Diagnostic):
    """Flags a loss that stopped improving well before it converged.

    The rule of PyTorch's ``ReduceLROnPlateau`` (mode ``min``, relative
    threshold) and SageMaker Debugger's ``LossNotDecreasing``: a plateau is
    a window of about ``patience`` steps over which the loss did not improve by
    ``min_delta`` (relative). Runs log their loss every step or every few
    hundred, so the window is a number of observations sized from the
    logging interval once the first ``min_points`` values have arrived
    (``patience`` / median step gap, at least ``min_points``; see
    :class:`PlateauConfig`), and warm-up and spans stay in steps. Instead of comparing two noisy values, the
    improvement is the least-squares line over the window
    (running least-squares sums, O(1) per value; values
    more than 3 robust SDs above the EWMA level enter it winsorised) times
    the window's span, relative to the loss level, and the test uses its
    upper confidence bound: mini-batch noise cannot fake a plateau (a noisy
    window is inconclusive and stays silent), while a flat clean curve
    fires as soon as the window is full. A loss already near zero (see ``abs_floor`` /
    ``rel_floor``) is converged, not stuck, and a loss rising by more than
    ``max_rise`` over the window is diverging, not stuck. Meant for positive
    losses; a window whose mean is not positive never fires. Per-value work
    runs in the compiled :func:`~runwatch.models.kernels.plateau` kernel.

    Score: ``min_delta`` / upper bound of the improvement (capped at 100).

    Examples
    --------
    >>> from runwatch.models.block import MetricBlock
    >>> d = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10))
    >>> block = lambda values: MetricBlock.from_rows(list(range(len(values))), [0.0] * len(values),
    ...                                              [{"loss": v} for v in values])
    >>> fs = d.observe_block(block([2.30 + 0.01 * (step % 2) for step in range(40)]))
    >>> first = fs[0]
    >>> first.step, first.kind.name
    (19, 'PLATEAU')
    >>> first.explanation
    'loss improved by at most 0.1% over the last 19 steps (< 0.50%; level 2.302, fitted change +0.04%); raise the learning rate or check the data pipeline'
    >>> PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10)).observe_block(
    ...     block([2.3 * 0.97**s for s in range(300)]))   # improving, then converged
    []
    >>> falls_then_climbs = [2.3 * 0.99 ** min(s, 60) * 1.01 ** max(s - 60, 0) for s in range(200)]
    >>> PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10)).observe_block(
    ...     block(falls_then_climbs))   # +19 % per window: diverging, not stuck
    []
    >>> unguarded = PlateauDiagnostic(PlateauConfig(patience=20, warmup_steps=10, max_rise=1e9))
    >>> unguarded.observe_block(block(falls_then_climbs))[-1].explanation[:60]
    'loss improved by at most 0.0% over the last 19 steps (< 0.48'
    """

    name = "plateau"
    version = "1"
    config_class = PlateauConfig
    reference = "PyTorch ReduceLROnPlateau (rel threshold); SageMaker Debugger LossNotDecreasing"
    state_attributes = ("_states", "_warmup", "_stairs")
    state_neutral_settings = ("progress_info_below", "stair_fall")  # severity only

    config: PlateauConfig

    def __init__(self, config: PlateauConfig | None = None) -> None:
        super().__init__(config)
        self._states: dict[str, tuple[np.ndarray, tuple]] = {}
        self._warmup = warmup.new_state()
        self._stairs: dict[str, dict] = {}  # training metric -> its recent values (staircase)

    def watches(self, metric: str) -> bool:
        return metric in self.config.metrics

    def _start(self, metric: str) -> tuple[np.ndarray, tuple]:
        cfg = self.config
        if metric.startswith("val/"):  # counted in validation points: a window of exactly val_patience
            patience = min_points = capacity = int(cfg.val_patience)
            every = 1
        else:
            patience, min_points, every = int(cfg.patience), int(cfg.min_points), int(cfg.check_every)
            capacity = max(patience, min_points)
        params = (
            capacity,
            patience,
            min_points,
            every,
            float(cfg.min_delta),
            float(cfg.confidence_z),
            float(cfg.warmup_steps),
            float(cfg.abs_floor),
            float(cfg.rel_floor),
            float(cfg.max_rise),
            float(cfg.late_rate),
        )
        return plateau_state(capacity), params

    def load_state_dict(self, snapshot: dict) -> bool:
        """Restore :meth:`state_dict` output, including snapshots taken before ``min_points`` existed.

        Such a snapshot's runs keep the window they had: ``patience`` (or
        ``val_patience``) values, checked every ``check_every`` (or every) value.
        A snapshot from before the warm-up was tracked restores a run without one.
        """
        if not super().load_state_dict(staircase.with_state(warmup.with_state(snapshot))):
            return False
        self._states = {metric: _upgrade(entry) for metric, entry in self._states.items()}
        return True

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        warmup.observe(self._warmup, block)
        cols = select_columns(self, block)
        if not cols:
            return []
        findings: list[Finding] = []
        out = scratch(len(block))
        states = self._states
        cfg = self.config
        for metric, col in cols:
            entry = states.get(metric)
            if entry is None:
                entry = states[metric] = self._start(metric)
            state, params = entry
            nf = plateau(col.steps, col.values, state, *params, out)
            stairs = None
            if not metric.startswith("val/"):
                stairs = self._stairs.get(metric)
                if stairs is None:
                    stairs = self._stairs[metric] = staircase.new_state()
                # the window is sized at the min_points-th value, before any value sampled by it
                staircase.observe(stairs, col, staircase.sample_every(int(state[13])), int(params[2]))
            if nf:
                v0 = float(state[5])  # the first value's scale, fixed once set
                findings.extend(self._finding(metric, col, row, v0, stairs) for row in out[:nf].tolist())
            if stairs is not None:
                staircase.trim(stairs, int(params[2]) + (cfg.stair_windows + 2) * staircase.SAMPLES_PER_WINDOW)
        if self.config.lr_warmup:
            findings = warmup.outside(self._warmup, findings)
        return by_step(findings)

    def _finding(self, metric: str, col: Column, row: list[float], v0: float, stairs: dict | None) -> Finding:
        i = int(row[0])
        best_case, span, level, change, bar = row[1], row[2], row[3], row[4], row[5]
        pct = f"{bar:.0%}" if bar >= 0.01 else f"{bar:.2%}"
        unit = "validation points" if metric.startswith("val/") else "steps"
        cfg = self.config
        converged = level < cfg.progress_info_below  # most of the progress made: maybe converged
        step = int(col.steps[i])
        fell = math.nan
        if stairs is not None and cfg.stair_fall > 0:
            fell = staircase.fall(stairs, step, span, cfg.stair_windows)
        stepping = fell >= cfg.stair_fall  # False for NaN
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.INFO if converged or stepping else Severity.WARNING,
            score=bar / best_case if best_case > bar / 100.0 else 100.0,
            step=step,
            metric=metric,
            explanation=(
                f"{metric} improved by at most {max(best_case, 0.0):.1%} over the last {span:.0f} {unit} "
                f"(< {pct}; level {level * v0:.4g}, fitted change {change:+.2%}); raise the learning rate "
                f"or check the data pipeline"
                + (f"; it is at {level:.0%} of its start, so it may simply have converged" if converged else "")
                + (f"; it fell {fell:.0%} over the last {cfg.stair_windows * span:.0f} steps: coming down in steps "
                   "(as at epoch boundaries), not stuck" if stepping else "")
            ),
            wall_time=float(col.wall_times[i]),
        )


_OLD_PLATEAU_SCALARS = 13
"""Scalars of a state snapshotted before the window was sized in steps (no window length, no check interval)."""


def _upgrade(entry: tuple[np.ndarray, tuple]) -> tuple[np.ndarray, tuple]:
    """A per-metric state of the old layout (params ``(window, every, ...)``) in the current one, window kept."""
    state, params = entry
    if len(params) == 8:
        window, every, *rest = params
        state = np.concatenate((state[:_OLD_PLATEAU_SCALARS], [float(window), float(every)], state[_OLD_PLATEAU_SCALARS:]))
        params = (int(window), int(window), int(window), int(every), *rest)
    if len(params) == 10:
        params = (*params, 0.0)  # saved before late_rate: the bar it was checked against
    return state, params
