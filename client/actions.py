"""Ready-made reactions to a run's own anomalies, for :meth:`Run.on_anomaly`.

Each action is opt-in, reacts only to the anomaly kinds (and minimum
severity) it is given, acts at most once per incident (an incident's later
revisions are ignored), and records what it did as a ``WARNING`` log line of
the run (``runwatch action <name>: ...``), so the run's history shows it.

Anomalies arrive on a background thread, some time after the step that
caused them (the batch is sent within ``flush_interval``, then detected and
streamed back: tens of milliseconds on one machine). So:

- :class:`StopOnDivergence` only *requests* a stop: it sets
  ``run.should_stop`` (and ``run.stop_reason``); the training loop checks it
  (``if run.should_stop: break``, or ``run.check_stop()`` which raises
  :class:`StopTraining`), and the Lightning / Hugging Face integrations stop
  their trainer. :meth:`Run.finish` then records the run as ``killed`` with
  that reason.
- :class:`ReduceLROnAnomaly` does not touch the optimizer from the
  background thread: the change is applied on the training thread, at the
  next :meth:`Run.log` (or :meth:`Run.apply_actions`), between two optimizer
  steps.
- :class:`SkipBatches` cannot skip the batch that caused the anomaly: that
  batch's update was applied before the anomaly was known. What it can do is
  skip the optimizer step of the next ``count`` batches (ride out a burst of
  bad batches; ``run.should_skip_batch()`` answers it, once per batch) and
  record the offending step in ``run.offending_steps`` so the data can be
  inspected or excluded on a rerun. To skip *the* offending batch, check it
  synchronously before ``optimizer.step()`` (e.g. ``torch.isfinite(loss)``),
  which needs no server at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from runwatch.client import convert
from runwatch.v1 import anomaly_pb2

if TYPE_CHECKING:
    from runwatch.client.session import Run

__all__ = ["Action", "ReduceLROnAnomaly", "SkipBatches", "StopOnDivergence", "StopTraining", "kind_number"]

logger = logging.getLogger("runwatch.client")


class StopTraining(RuntimeError):
    """Raised by :meth:`Run.check_stop` after a stop was requested."""


def kind_number(kind: str | int) -> int:
    """``AnomalyKind`` number from ``"loss_spike"``, ``"LOSS_SPIKE"``, ``"ANOMALY_KIND_LOSS_SPIKE"`` or an int.

    Examples
    --------
    >>> kind_number("divergence_predicted") == anomaly_pb2.ANOMALY_KIND_DIVERGENCE_PREDICTED
    True
    """
    if isinstance(kind, int):
        if kind not in anomaly_pb2.AnomalyKind.values():
            raise ValueError(f"unknown anomaly kind {kind}")
        return kind
    name = str(kind).strip().upper()
    if not name.startswith("ANOMALY_KIND_"):
        name = "ANOMALY_KIND_" + name
    try:
        return anomaly_pb2.AnomalyKind.Value(name)
    except ValueError:
        known = anomaly_pb2.AnomalyKind.keys()
        names = sorted(k[len("ANOMALY_KIND_") :].lower() for k in known)
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {names}") from None


def _kind_name(kind: int) -> str:
    return anomaly_pb2.AnomalyKind.Name(kind).removeprefix("ANOMALY_KIND_")


class Action:
    """Base class: filters anomalies by kind and severity, once per incident.

    Parameters
    ----------
    run
        The run whose anomalies the action reacts to.
    kinds
        Anomaly kinds that trigger it (names or numbers).
    min_severity
        Lowest severity that triggers it.
    """

    name = "action"

    def __init__(self, run: Run, kinds: Iterable[str | int], min_severity: str | int = "info") -> None:
        self.run = run
        self.kinds = frozenset(kind_number(k) for k in kinds)
        self.min_severity = convert.severity(min_severity)
        self.triggered = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def matches(self, anomaly: anomaly_pb2.Anomaly) -> bool:
        return anomaly.kind in self.kinds and anomaly.severity >= self.min_severity

    def __call__(self, anomaly: anomaly_pb2.Anomaly) -> None:
        if not self.matches(anomaly):
            return
        with self._lock:
            if anomaly.id in self._seen:
                return
            self._seen.add(anomaly.id)
            self.triggered += 1
        self.trigger(anomaly)

    def trigger(self, anomaly: anomaly_pb2.Anomaly) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def record(self, text: str, step: int) -> None:
        """Log what the action did as a WARNING line of the run (never raises)."""
        message = f"runwatch action {self.name}: {text}"
        self.run.actions_taken.append(message)
        logger.warning("%s (run %s)", message, self.run.run_id)
        try:
            if not self.run.finished:
                self.run.log_text(message, level="warning", step=max(int(step), 0))
        except RuntimeError:  # finished meanwhile
            pass

    @staticmethod
    def describe(anomaly: anomaly_pb2.Anomaly) -> str:
        return f"{_kind_name(anomaly.kind)} at step {anomaly.step} ({anomaly.explanation})"


class StopOnDivergence(Action):
    """Request a stop when divergence is predicted: sets ``run.should_stop``.

    Parameters
    ----------
    run
        The run.
    kinds
        Default ``("divergence_predicted",)``; add ``"nonfinite"`` to also stop
        once the loss is NaN/Inf.
    min_severity
        Default ``"warning"``.

    Examples
    --------
    >>> run.stop_on_divergence()          # doctest: +SKIP
    >>> for step, batch in enumerate(loader):   # doctest: +SKIP
    ...     if run.should_stop:
    ...         break
    """

    name = "stop_on_divergence"

    def __init__(
        self,
        run: Run,
        kinds: Iterable[str | int] = ("divergence_predicted",),
        min_severity: str | int = "warning",
    ) -> None:
        super().__init__(run, kinds, min_severity)

    def trigger(self, anomaly: anomaly_pb2.Anomaly) -> None:
        if self.run.should_stop:
            return
        reason = f"stopped by runwatch: {_kind_name(anomaly.kind).lower().replace('_', ' ')} at step {anomaly.step}"
        self.run.request_stop(reason)
        self.record(f"requested a stop after {self.describe(anomaly)}", anomaly.step)


class ReduceLROnAnomaly(Action):
    """Multiply the optimizer's learning rates by ``factor`` on a loss spike or a plateau.

    Applied on the training thread at the next :meth:`Run.log` (or
    :meth:`Run.apply_actions`). With an LR ``scheduler`` whose schedule is
    computed from ``base_lrs`` (LambdaLR, cosine, OneCycle, ...), its
    ``base_lrs`` are scaled too, otherwise the next scheduler step would undo
    the change.

    Parameters
    ----------
    run, optimizer
        The run and the optimizer to adjust.
    factor
        Multiplier, in (0, 1).
    kinds
        Default ``("loss_spike", "plateau")``.
    min_lr
        Never go below this.
    cooldown_steps
        At most one reduction per this many steps.
    scheduler
        Optional LR scheduler to keep in line.
    min_severity
        Default ``"warning"``.
    """

    name = "reduce_lr"

    def __init__(
        self,
        run: Run,
        optimizer: Any,
        factor: float = 0.5,
        kinds: Iterable[str | int] = ("loss_spike", "plateau"),
        min_lr: float = 0.0,
        cooldown_steps: int = 50,
        scheduler: Any = None,
        min_severity: str | int = "warning",
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        super().__init__(run, kinds, min_severity)
        self.optimizer = optimizer
        self.factor = float(factor)
        self.min_lr = float(min_lr)
        self.cooldown_steps = int(cooldown_steps)
        self.scheduler = scheduler
        self.reductions = 0
        self._last_step: int | None = None

    def trigger(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.run.defer(lambda: self._apply(anomaly))

    def _apply(self, anomaly: anomaly_pb2.Anomaly) -> None:
        step = self.run.current_step
        if self._last_step is not None and step - self._last_step < self.cooldown_steps:
            logger.info("runwatch action %s: skipped (cooldown) for %s", self.name, self.describe(anomaly))
            return
        groups = getattr(self.optimizer, "param_groups", None)
        if not groups:
            return
        before = [float(g["lr"]) for g in groups]
        after = [max(lr * self.factor, self.min_lr) for lr in before]
        if after == before:
            return
        for g, lr in zip(groups, after):
            g["lr"] = lr
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [max(b * self.factor, self.min_lr) for b in self.scheduler.base_lrs]
        self._last_step = step
        self.reductions += 1
        fmt = lambda xs: ", ".join(f"{x:.4g}" for x in xs)
        self.record(f"lr {fmt(before)} -> {fmt(after)} after {self.describe(anomaly)}", step)


class SkipBatches(Action):
    """After a bad-batch anomaly, skip the optimizer step of the next ``count`` batches.

    See the module docstring for why the offending batch itself cannot be
    skipped. The loop asks ``run.should_skip_batch()`` before
    ``optimizer.step()``; each True answer uses up one skip and is logged.

    Parameters
    ----------
    run
        The run.
    kinds
        Default ``("loss_spike", "nonfinite", "exploding_gradient")``.
    count
        Batches to skip per incident.
    min_severity
        Default ``"warning"``.
    """

    name = "skip_batches"

    def __init__(
        self,
        run: Run,
        kinds: Iterable[str | int] = ("loss_spike", "nonfinite", "exploding_gradient"),
        count: int = 1,
        min_severity: str | int = "warning",
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        super().__init__(run, kinds, min_severity)
        self.count = int(count)

    def trigger(self, anomaly: anomaly_pb2.Anomaly) -> None:
        self.run.offending_steps.append(int(anomaly.step))
        self.run.add_skips(self.count)
        self.record(
            f"will skip the optimizer step of the next {self.count} batch(es) after {self.describe(anomaly)}; "
            f"offending step {anomaly.step} recorded",
            anomaly.step,
        )
