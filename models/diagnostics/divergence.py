"""Predict divergence: the loss climbing exponentially before it becomes non-finite."""

# ruff: noqa: PLR1730, FURB136  (hot path: a comparison costs ~1/8 of a min()/max() call)

from __future__ import annotations

import math

from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig, MetricHandler
from runwatch.models.findings import AnomalyKind, Finding, Severity


def log_trend(steps: list[float], vals: list[float], end: int, size: int, m: int, floor: float) -> tuple[float, float]:
    """Least-squares slope of ``log(max(v, floor))`` over step, and its R².

    Fits the ``m`` newest points of the ring buffer ``(steps, vals)`` of
    capacity ``size`` whose next write index is ``end``; x is the step
    relative to the newest point, so large step numbers lose no precision.
    O(m); callers evaluate it only when a cheap gate is open.

    Examples
    --------
    >>> xs, ys = [0.0, 1.0, 2.0, 3.0], [1.0, math.e, math.e ** 2, math.e ** 3]
    >>> slope, r2 = log_trend(xs, ys, 0, 4, 4, 1e-12)
    >>> round(slope, 6), round(r2, 6)
    (1.0, 1.0)
    """
    log = math.log
    x0 = steps[(end - 1) % size]
    sx = sy = sxx = sxy = syy = 0.0
    for k in range(end - m, end):
        j = k % size
        x = steps[j] - x0
        v = vals[j]
        y = log(v if v > floor else floor)
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
        syy += y * y
    den_x = m * sxx - sx * sx
    if m < 2 or den_x <= 0.0:
        return 0.0, 0.0
    num = m * sxy - sx * sy
    den_y = m * syy - sy * sy
    r2 = num * num / (den_x * den_y) if den_y > 0.0 else 0.0
    return num / den_x, r2


class DivergenceConfig(DiagnosticConfig):
    """Settings of :class:`DivergenceDiagnostic`.

    Parameters
    ----------
    loss_metric, grad_metric
        The training loss and the global gradient norm. Defaults ``"loss"``,
        ``"grad_norm"``.
    alpha
        EWMA weight of the fast-smoothed loss, the "current" level. Default
        0.3: it smooths mini-batch noise but lags an exponential climb by only
        ~2 steps.
    baseline_alpha
        EWMA weight of the slow-smoothed loss whose running minimum is the
        reference. Default 0.05: the minimum of a ~20-step average, not of a
        lucky mini-batch (the running minimum of a fast EWMA of batch-16
        losses sits well below the typical level and makes noise look like a
        climb).
    ratio
        The fast-smoothed loss must be at least this multiple of the
        reference. Default 2.0.
    window
        At most this many recent points are fitted. Default 30.
    min_points
        At least this many points are fitted. Default 6.
    min_log_slope
        Minimum slope of ``log(loss)`` per step, i.e. the loss grows by at
        least ``exp(min_log_slope)`` per step. Default 0.05 (x1.6 every 10
        steps).
    min_r2
        Minimum R² of the log-linear fit: the climb must be steady, not one
        jump. Default 0.6.
    patience
        Consecutive loss values the condition must hold. Default 3.
    warmup
        Loss values seen before the first finding. Default 5: a learning rate
        that is far too high makes the loss explode from the first steps, and
        the reference and fit need only a handful of points.
    level_floor
        The reference is at least this fraction of the initial level (the
        highest fast-smoothed loss during warm-up) and losses below that floor
        are fitted as the floor: a converged loss wiggling near zero has large
        log-ratios that mean nothing. Default 0.05 (0.115 for a 10-class
        cross-entropy starting at 2.3): with it the gate opened on 3 of
        ~25,000 steps of healthy digits runs with batch size 16.
    grad_min_log_slope
        A global gradient norm whose log grows at least this fast (with R² >=
        ``min_r2``) while the loss is ``ratio`` x above its reference also
        predicts divergence, and together with the loss climb raises the
        severity to CRITICAL. Default 0.1 (x2.7 every 10 steps).
    """

    loss_metric: str = "loss"
    grad_metric: str = "grad_norm"
    alpha: float = Field(default=0.3, gt=0.0, le=1.0)
    baseline_alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    ratio: float = Field(default=2.0, gt=1.0)
    window: int = Field(default=30, ge=3)
    min_points: int = Field(default=6, ge=3)
    min_log_slope: float = Field(default=0.05, gt=0.0)
    min_r2: float = Field(default=0.6, ge=0.0, le=1.0)
    patience: int = Field(default=3, ge=1)
    warmup: int = Field(default=5, ge=0)
    level_floor: float = Field(default=0.05, ge=0.0)
    grad_min_log_slope: float = Field(default=0.1, gt=0.0)


class DivergenceDiagnostic(Diagnostic):
    """Predicts divergence while the loss is still finite.

    Divergence is predicted when the (fast-)smoothed loss has risen
    ``ratio`` x above its reference -- the running minimum of a slowly
    smoothed loss, floored at ``level_floor`` x the initial level -- **and**
    is climbing exponentially: ``log(loss)``
    rises linearly (slope >= ``min_log_slope`` per step, R² >= ``min_r2``)
    over the points since that minimum (between ``min_points`` and
    ``window`` of them), or over the current uninterrupted rise of the
    smoothed loss, for ``patience`` consecutive steps. A global gradient
    norm growing exponentially at the same time is corroborating evidence
    (and enough on its own while the loss is ``ratio`` x up). These are the
    textbook signatures of a learning rate above the stability limit: the
    error along the sharpest direction is multiplied by ``|1 - lr * lambda|
    > 1`` every step (Goodfellow et al., *Deep Learning*, sec. 8.2; Cohen et
    al. 2021, "Gradient descent on neural networks typically occurs at the
    edge of stability").

    The quiet path is two EWMAs, a running minimum and a ring-buffer write;
    the O(window) fit runs only while the loss is ``ratio`` x above its
    reference (on 3 of ~25,000 steps of healthy batch-16 digits runs).

    Examples
    --------
    >>> d = DivergenceDiagnostic()
    >>> loss, grad = d.handler("loss"), d.handler("grad_norm")
    >>> for step in range(40):  # healthy: loss decreasing
    ...     assert grad(step, 0.0, 1.0) is None and loss(step, 0.0, 2.0 / (1 + 0.1 * step)) is None
    >>> for step in range(40, 60):  # lr too high: loss and gradients grow 25 % per step
    ...     g = grad(step, 0.0, 1.25 ** (step - 40))
    ...     f = loss(step, 0.0, 0.4 * 1.25 ** (step - 40))
    ...     if f is not None:
    ...         break
    >>> step, f.kind.name, f.severity.name
    (50, 'DIVERGENCE_PREDICTED', 'CRITICAL')
    >>> f.explanation
    'loss rose 3.31x above its minimum over the last 8 steps (log-slope 0.22/step, R² 1.00); grad_norm grows too (log-slope 0.22/step); divergence likely'
    """

    name = "divergence"
    version = "1"
    config_class = DivergenceConfig
    reference = (
        "Exponential loss/gradient growth under a learning rate above the stability limit "
        "(Goodfellow et al. 2016, sec. 8.2; Cohen et al. 2021, edge of stability)"
    )

    config: DivergenceConfig

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        super().__init__(config)
        w = self.config.window
        self._g_steps = [0.0] * w
        self._g_vals = [0.0] * w
        self._g_end = 0  # next write index; also the number of writes

    def handler(self, metric: str) -> MetricHandler | None:
        cfg = self.config
        if metric == cfg.grad_metric:
            return self._grad_handler()
        if metric == cfg.loss_metric:
            return self._loss_handler(metric)
        return None

    def _grad_handler(self) -> MetricHandler:
        w = self.config.window
        steps, vals = self._g_steps, self._g_vals
        me = self

        def grad(step: int, wall_time: float, value: float) -> None:
            if value - value != 0.0:
                return
            j = me._g_end
            steps[j % w] = step
            vals[j % w] = value
            me._g_end = j + 1

        return grad

    def _loss_handler(self, metric: str) -> MetricHandler:
        cfg = self.config
        w, alpha, ratio, warmup, patience = cfg.window, cfg.alpha, cfg.ratio, cfg.warmup, cfg.patience
        alpha2 = cfg.baseline_alpha
        min_points, min_slope, min_r2 = cfg.min_points, cfg.min_log_slope, cfg.min_r2
        level_floor, g_min_slope = cfg.level_floor, cfg.grad_min_log_slope
        g_steps, g_vals = self._g_steps, self._g_vals
        grad_metric = cfg.grad_metric
        steps = [0.0] * w
        vals = [0.0] * w
        me = self
        end = 0  # ring write index == number of finite values seen
        s = 0.0  # smoothed loss
        s2 = 0.0  # slowly smoothed loss, whose running minimum is the reference
        s_min = 0.0
        peak = 0.0
        since_min = 0
        rising = 0  # consecutive increases of the smoothed loss
        hits = 0

        def loss(step: int, wall_time: float, value: float) -> Finding | None:
            nonlocal end, s, s2, s_min, peak, since_min, rising, hits
            if value - value != 0.0:
                return None
            j = end % w
            steps[j] = step
            vals[j] = value
            end += 1
            if end == 1:
                s = s2 = s_min = peak = value
                return None
            prev = s
            s += alpha * (value - s)
            s2 += alpha2 * (value - s2)
            rising = rising + 1 if s > prev else 0
            if s2 < s_min:
                s_min = s2
                since_min = 0
            else:
                since_min += 1
            if end <= warmup and s > peak:
                peak = s  # the initial level; frozen after warm-up so a divergence cannot raise it
            ref = level_floor * peak
            if ref < s_min:
                ref = s_min
            if end <= warmup or s < ratio * ref or ref <= 0.0:
                hits = 0
                return None
            # Gate open: the smoothed loss is `ratio` x above its minimum. Fit the climb, over
            # the points since the minimum and over the current uninterrupted rise.
            floor = level_floor * peak if level_floor * peak > 1e-30 else 1e-30
            m = min(max(since_min + 1, min_points), w, end)
            slope, r2 = log_trend(steps, vals, end, w, m, floor)
            if (slope < min_slope or r2 < min_r2) and rising >= min_points and rising + 1 < m:
                m = rising + 1
                slope, r2 = log_trend(steps, vals, end, w, m, floor)
            g_slope = g_r2 = 0.0
            g_end = me._g_end
            if g_end >= min_points:
                gm = min(m, g_end)
                g_slope, g_r2 = log_trend(g_steps, g_vals, g_end, w, gm, 1e-30)
            loss_climbs = slope >= min_slope and r2 >= min_r2
            grad_climbs = g_slope >= g_min_slope and g_r2 >= min_r2
            if not (loss_climbs or grad_climbs):
                hits = 0
                return None
            hits += 1
            if hits < patience:
                return None
            span = step - steps[(end - m) % w]
            x = s / ref
            parts = [f"{metric} rose {x:.3g}x above its minimum over the last {span:.0f} steps"]
            if loss_climbs:
                parts[0] += f" (log-slope {slope:.2f}/step, R² {r2:.2f})"
            if grad_climbs:
                parts.append(
                    f"{grad_metric} grows {'too' if loss_climbs else 'exponentially'} (log-slope {g_slope:.2f}/step)"
                )
            parts.append("divergence likely")
            both = loss_climbs and grad_climbs
            return Finding(
                AnomalyKind.DIVERGENCE_PREDICTED,
                Severity.CRITICAL if both else Severity.ERROR,
                score=x * (2.0 if both else 1.0),
                step=step,
                metric=metric,
                explanation="; ".join(parts),
                related=(grad_metric,) if grad_climbs else (),
                key=metric,
            )

        return loss
