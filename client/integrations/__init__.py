"""Integrations with training frameworks; each imports its framework only when imported itself.

- :mod:`runwatch.client.integrations.lightning`: ``RunwatchLogger`` and
  ``RunwatchCallback`` for PyTorch Lightning (``lightning`` or ``pytorch_lightning``).
- :mod:`runwatch.client.integrations.huggingface`: ``RunwatchCallback`` for the
  Hugging Face ``Trainer`` (and ``report_to="runwatch"`` after ``register()``).

``runwatch.client`` itself never imports them, so the SDK works without either framework.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from runwatch.client import convert
from runwatch.client.names import canonical_name, safe_name

__all__ = ["StepLogger"]

logger = logging.getLogger("runwatch.client")


class StepLogger:
    """Sends framework metrics to a run at the framework's step, within the server's rules.

    Frameworks log several times per step (training, then validation, each
    with ``epoch``) and may report a step below the last one (e.g. two step
    counters). This keeps steps non-decreasing (a lower step is raised to the
    last one), drops a name already sent at the current step (once per step
    is the server's rule; the first value wins, a differing repeat is
    reported once), skips values that are not numbers, and maps names onto
    runwatch's conventions with :func:`~runwatch.client.names.canonical_name`
    (the first source name to claim a canonical name keeps it; later ones
    keep their own).

    :meth:`log_auto` sends the integration's own metrics (timing, gradient
    norms, the loss a Lightning ``training_step`` returned), already named
    the runwatch way: a name the step already has is left out silently, and
    they claim no name. A framework metric arriving later at the same step
    under a name the integration already sent is dropped if it holds the
    same value (one series, not two); with another value it is kept under
    its own source name (``train_loss``), so neither is lost or mixed into
    the other's series.
    """

    def __init__(self, run: Any, canonical: bool = True) -> None:
        self.run = run
        self.canonical = canonical
        self.last_step = -1
        self.raised_steps = 0
        self.dropped_repeats = 0
        self._sent: set[str] = set()
        self._auto: dict[str, float] = {}  # of the names sent at last_step, log_auto's, with their values
        self._names: dict[str, str] = {}
        self._claims: dict[str, str] = {}
        self._warned_repeat = False
        self._warned_finished = False

    def name(self, key: str) -> str:
        out = self._names.get(key)
        if out is None:
            target = canonical_name(key) if self.canonical else safe_name(key)
            owner = self._claims.setdefault(target, key)
            out = self._names[key] = target if owner == key else safe_name(key)
        return out

    def _step(self, step: Any) -> int | None:
        """The step to send at (None: the run is finished); resets the step's names when it advances."""
        run = self.run
        if run is None:
            return None
        if run.finished:
            if not self._warned_finished:
                self._warned_finished = True
                logger.warning("runwatch: run %s is finished; later metrics are not sent", run.run_id)
            return None
        step = run.step if step is None else convert.step_number(step)
        if step < self.last_step:
            step = self.last_step
            self.raised_steps += 1
        if step > self.last_step:
            self.last_step = step
            self._sent = set()
            self._auto = {}
        return step

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        step = self._step(step)
        if step is None:
            return
        values: dict[str, float] = {}
        for key, value in metrics.items():
            number = _number(value)
            if number is None:
                continue
            name = self.name(str(key))
            if name in self._auto and name not in values:
                if _same(number, self._auto[name]):
                    continue  # the integration sent this very value already
                name = safe_name(str(key))  # another quantity: under its own name, not mixed in
            if name in self._sent or name in values:
                self.dropped_repeats += 1
                if not self._warned_repeat:
                    self._warned_repeat = True
                    logger.info(
                        "runwatch: %r logged again at step %d; a step keeps each metric once (the first value)",
                        name,
                        step,
                    )
                continue
            values[name] = number
        if values:
            self._sent.update(values)
            self.run.log(values, step=step)

    def log_auto(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send the integration's own metrics (runwatch names) at ``step``, leaving out names it already has."""
        step = self._step(step)
        if step is None:
            return
        values: dict[str, float] = {}
        for name, value in metrics.items():
            number = _number(value)
            if number is not None and name not in self._sent:
                values[name] = number
        if values:
            self._sent.update(values)
            self._auto.update(values)
            self.run._log(values, step, None, automatic=True)


def _same(a: float, b: float) -> bool:
    """Whether two logged values are one quantity (float32 round-trips allowed; NaN is NaN)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        if hasattr(value, "numel") and value.numel() != 1:
            return None
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f  # NaN and Inf are signal
