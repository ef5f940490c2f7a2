"""PyTorch Lightning: a ``Logger`` that streams to runwatch and a ``Callback`` that acts on its anomalies.

Works with ``lightning`` (``lightning.pytorch``) and ``pytorch_lightning``:
the classes subclass the one the program imported (``lightning`` when both or
neither are; ``RUNWATCH_LIGHTNING=pytorch_lightning`` forces the other);
:func:`classes_for` builds them for a given package.

Examples
--------
>>> from runwatch.client.integrations.lightning import RunwatchLogger, RunwatchCallback   # doctest: +SKIP
>>> trainer = pl.Trainer(logger=RunwatchLogger(project="p"),                          # doctest: +SKIP
...                      callbacks=[RunwatchCallback(watch_every=10)])
>>> trainer.fit(model, datamodule)                                                    # doctest: +SKIP

``RunwatchLogger`` opens the run at the first ``log_hyperparams`` /
``log_metrics`` (rank zero only) with :func:`runwatch.client.init`, records
the model's architecture from ``log_graph``, sends every ``log_metrics`` at
Lightning's step (see :class:`~runwatch.client.integrations.StepLogger`:
``train_loss`` -> ``loss``, ``val_loss`` -> ``val/loss``, ...) and finishes
the run in ``finalize`` (``killed`` with the reason when runwatch stopped it).
Pass ``finish_on_finalize=False`` to keep it open for a ``trainer.test()``
after ``fit`` and call ``logger.finish()`` yourself.

``RunwatchCallback`` (needs a ``RunwatchLogger`` among the trainer's loggers):
stops training (``trainer.should_stop``) once divergence is predicted
(``stop_on_divergence=True``), optionally lowers the learning rate on a loss
spike or plateau (``reduce_lr_on_anomaly=True``), logs the training ``loss``
that ``training_step`` returned at every optimizer step (``log_loss=True``:
the early warnings then do not wait for Lightning's ``log_every_n_steps``),
the global ``grad_norm`` every optimizer step and per-layer statistics every
``watch_every`` optimizer steps (``on_before_optimizer_step``: gradients
present, after AMP unscaling, before Lightning clips them), and ``step_time``,
``data_time`` (the gap between one batch's end and the next one's start:
fetching and transferring it) and ``cpu_mem``/``gpu_mem`` per batch.

The callback's metrics go out with
:meth:`~runwatch.client.integrations.StepLogger.log_auto`: a name the step
already has (a ``step_time`` the run added to a metric another callback
logged first, such as ``LearningRateMonitor``'s ``lr`` at the batch's start)
is left out instead of making the server refuse the event. When Lightning
logs the training loss too (``self.log("train_loss", loss)`` -> ``loss``) at
a step where the callback sent it, the same value is not sent twice; a
different value (another quantity logged under a loss name) is kept under
its own name.
"""

from __future__ import annotations

import importlib
import os
import sys
from argparse import Namespace
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from runwatch.client.integrations import StepLogger, logger

__all__ = ["RunwatchCallback", "RunwatchLogger", "classes_for", "lightning_package"]


def lightning_package() -> Any:
    """The Lightning package to build on: ``lightning.pytorch`` or ``pytorch_lightning``."""
    choice = os.environ.get("RUNWATCH_LIGHTNING", "")
    if choice in ("pytorch_lightning", "lightning"):
        return importlib.import_module("pytorch_lightning" if choice == "pytorch_lightning" else "lightning.pytorch")
    if "pytorch_lightning" in sys.modules and "lightning" not in sys.modules:
        return sys.modules["pytorch_lightning"]
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        pass
    try:
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        raise ImportError(
            "runwatch's Lightning integration needs PyTorch Lightning: pip install 'runwatch[lightning]' "
            "(or pip install lightning)"
        ) from None


def _params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Namespace):
        params = vars(params)
    if isinstance(params, Mapping):
        return {str(k): v for k, v in params.items()}
    return {"hparams": str(params)}


def _step_loss(outputs: Any, trainer: Any, pl_module: Any) -> float | None:
    """The training loss of the batch that just stepped the optimizer, as Lightning would log it; None if none.

    In automatic optimization ``outputs["loss"]`` is the returned loss divided by
    ``accumulate_grad_batches`` (what is back-propagated); it is scaled back, so with
    gradient accumulation the value is the last micro-batch's loss, the one
    ``self.log(..., on_step=True)`` logs at that step. None while accumulating.
    """
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if loss is None or not hasattr(loss, "numel") or loss.numel() != 1:
        return None
    scale = 1
    if getattr(pl_module, "automatic_optimization", True):
        should_accumulate = getattr(getattr(trainer, "fit_loop", None), "_should_accumulate", None)
        if should_accumulate is not None and should_accumulate():
            return None  # the optimizer steps at a later micro-batch
        scale = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    value = float(loss.detach())  # one float per optimizer step (a device sync on GPU)
    return value * scale if scale != 1 else value


def _lightning_step(trainer: Any) -> int:
    """The step Lightning itself logs this batch's metrics at (batches that stepped an optimizer so far)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(trainer.global_step)


_STATUS = {"success": None, "finished": None, "failed": "failed", "killed": "killed", "interrupted": "killed"}


def classes_for(pl: Any) -> SimpleNamespace:
    """``RunwatchLogger`` and ``RunwatchCallback`` subclassing ``pl``'s ``Logger`` and ``Callback``."""
    from importlib import import_module

    base = import_module(pl.__name__ + ".loggers.logger")
    rank_zero = import_module(pl.__name__ + ".utilities.rank_zero")
    Logger, rank_zero_experiment = base.Logger, base.rank_zero_experiment
    rank_zero_only = rank_zero.rank_zero_only
    Callback = import_module(pl.__name__ + ".callbacks").Callback

    class RunwatchLogger(Logger):
        """Lightning logger streaming metrics, hyperparameters and the architecture to runwatch.

        Parameters
        ----------
        project, run_id, target, config, tags
            As for :func:`runwatch.client.init` (``config`` is merged with
            what Lightning passes to ``log_hyperparams``). A fit resumed with
            ``ckpt_path`` continues its run with ``resume=True`` and the same
            ``run_id`` (Lightning opens the logger's run before it reads the
            checkpoint, so the logger cannot tell by itself).
        canonical_names
            Map Lightning names onto runwatch's (``train_loss`` -> ``loss``, ...).
        finish_on_finalize
            Finish the run when Lightning finalizes the logger (end of ``fit``).
        run
            Log to this already open run instead of opening one.
        **init_kwargs
            More :func:`runwatch.client.init` arguments (``spool_dir``, ...).
        """

        def __init__(
            self,
            project: str = "default",
            run_id: str | None = None,
            target: str | None = None,
            config: Mapping[str, Any] | None = None,
            tags: Iterable[str] = (),
            canonical_names: bool = True,
            finish_on_finalize: bool = True,
            run: Any = None,
            **init_kwargs: Any,
        ) -> None:
            super().__init__()
            from runwatch.client import convert

            self._project = project
            self._run_id = run.run_id if run is not None else (run_id or convert.new_run_id())
            self._target = target
            self._config = dict(config or {})
            self._tags = ["lightning", *tags]
            self._init_kwargs = init_kwargs
            self._run = run
            self._canonical = canonical_names
            self._steps: StepLogger | None = StepLogger(run, canonical_names) if run is not None else None
            self.finish_on_finalize = finish_on_finalize

        @property
        def name(self) -> str:
            return self._project

        @property
        def version(self) -> str:
            return self._run_id

        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            """The :class:`~runwatch.client.session.Run` (opened on first use, rank zero only)."""
            if self._run is None:
                from runwatch.client import init

                self._run = init(
                    project=self._project,
                    config=self._config,
                    run_id=self._run_id,
                    target=self._target,
                    tags=self._tags,
                    **self._init_kwargs,
                )
                self._steps = StepLogger(self._run, self._canonical)
            return self._run

        @property
        def run(self) -> Any:
            """The run, or None before it is opened (and on other ranks)."""
            return self._run

        @property
        def step_logger(self) -> StepLogger | None:
            return self._steps

        @rank_zero_only
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            params = _params(params)
            if self._run is None:
                self._config.update(params)
                self.experiment  # noqa: B018 - opens the run with them
            elif params and not self._run.finished:
                self._run.update_start(hyperparameters=params)

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            self.experiment  # noqa: B018
            self._steps.log(metrics, step)

        @rank_zero_only
        def log_graph(self, model: Any, input_array: Any = None) -> None:
            run = self.experiment
            if not run.finished and not run.start_message.architecture.layers:
                run.set_model(model)

        @rank_zero_only
        def save(self) -> None:
            pass

        @rank_zero_only
        def finalize(self, status: str) -> None:
            if self.finish_on_finalize:
                self.finish(status)

        def finish(self, status: str = "success") -> None:
            """Finish the run (``status`` as Lightning names it: success, failed, ...)."""
            if self._run is not None and not self._run.finished:
                code = _STATUS.get(status, None)
                reason = "" if code is None else f"lightning: {status}"
                self._run.finish(code, reason)

    class RunwatchCallback(Callback):
        """Acts on the run's anomalies and adds per-batch timing, memory and layer statistics.

        Parameters
        ----------
        stop_on_divergence
            Set ``trainer.should_stop`` once runwatch predicts divergence
            (kinds ``stop_kinds``, severity >= ``min_severity``).
        reduce_lr_on_anomaly
            Multiply the first optimizer's learning rates by ``lr_factor`` on
            a loss spike or plateau (see :class:`~runwatch.client.actions.ReduceLROnAnomaly`).
        watch_every
            Collect per-layer statistics every this many optimizer steps (0 = off).
        grad_norm
            Log the global gradient norm at every optimizer step (runwatch's
            divergence and exploding-gradient detectors read it).
        timing
            Log ``step_time``, ``data_time``, ``cpu_mem``, ``gpu_mem`` per batch
            (the run's own ``step_time`` between log calls is then off: one definition).
        log_loss
            Log the loss ``training_step`` returned as ``loss`` at every optimizer
            step, whatever Lightning's ``log_every_n_steps`` (see the module docstring).
        """

        def __init__(
            self,
            stop_on_divergence: bool = True,
            stop_kinds: Iterable[str] = ("divergence_predicted",),
            min_severity: str = "warning",
            reduce_lr_on_anomaly: bool = False,
            lr_factor: float = 0.5,
            watch_every: int = 0,
            grad_norm: bool = True,
            timing: bool = True,
            log_loss: bool = True,
        ) -> None:
            super().__init__()
            self.grad_norm = grad_norm
            self.log_loss = log_loss
            self.stop_on_divergence = stop_on_divergence
            self.stop_kinds = tuple(stop_kinds)
            self.min_severity = min_severity
            self.reduce_lr_on_anomaly = reduce_lr_on_anomaly
            self.lr_factor = lr_factor
            self.watch_every = int(watch_every)
            self.timing = timing
            self.run: Any = None
            self.steps: StepLogger | None = None
            self.watcher: Any = None
            self.stopped_at: int | None = None
            self._stash: dict[str, float] = {}
            self._clock: Any = None  # a StepClock once fitting starts, with timing on

        def _logger(self, trainer: Any) -> Any:
            for lg in getattr(trainer, "loggers", []) or []:
                if isinstance(lg, RunwatchLogger):
                    return lg
            return None

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            lg = self._logger(trainer)
            if lg is None:
                logger.warning("runwatch: RunwatchCallback needs a RunwatchLogger among the trainer's loggers; it does nothing")
                return
            if not trainer.is_global_zero:
                return
            self.run = lg.experiment
            self.steps = lg.step_logger
            if self.run.finished:
                self.run = None
                return
            if not self.run.start_message.architecture.layers:
                self.run.set_model(pl_module)
            if self.stop_on_divergence:
                self.run.stop_on_divergence(self.stop_kinds, self.min_severity)
            if self.reduce_lr_on_anomaly and trainer.optimizers:
                sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
                self.run.reduce_lr_on_anomaly(trainer.optimizers[0], self.lr_factor, scheduler=sched)
            if self.watch_every > 0:
                from runwatch.client.torch_watch import ModelWatcher

                self.watcher = ModelWatcher(pl_module, every=self.watch_every, always_grad_norm=self.grad_norm)
            if self.timing:
                from runwatch.client.environment import StepClock, SystemSampler

                self._clock = StepClock(SystemSampler(interval=1.0))
                # step_time is the clock's (validation left out); the run's own, between whatever
                # logs first at each step (another callback at batch start), would be a second one.
                self.run._timing = self.run._data_tracked

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self.run is not None and self._clock is not None:
                self._clock.step_begin()

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            if self.run is None:
                return
            try:
                if self.watcher is not None:
                    self._stash.update(self.watcher.stats())
                elif self.grad_norm:
                    from runwatch.client.torch_watch import grad_norm

                    value = grad_norm(pl_module)
                    if value is not None:
                        self._stash["grad_norm"] = value
            except Exception:  # noqa: BLE001 - telemetry must not break training
                logger.exception("runwatch: collecting model statistics failed")

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            run = self.run
            if run is None:
                return
            metrics = self._stash
            self._stash = {}
            if self.log_loss:
                try:
                    loss = _step_loss(outputs, trainer, pl_module)
                except Exception:  # noqa: BLE001 - telemetry must not break training
                    loss = None
                    logger.debug("runwatch: reading the training loss failed", exc_info=True)
                if loss is not None:
                    metrics["loss"] = loss
            if self._clock is not None:
                self._clock.step_end(metrics)
            if metrics and self.steps is not None and not run.finished:
                self.steps.log_auto(metrics, _lightning_step(trainer))
            run.apply_actions()
            if run.should_stop and not trainer.should_stop:
                trainer.should_stop = True
                self.stopped_at = _lightning_step(trainer)
                logger.warning("runwatch: stopping training at step %d: %s", self.stopped_at, run.stop_reason)

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            if self._clock is not None:
                self._clock.pause()  # validation is not part of a training step

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            if self.watcher is not None:
                self.watcher.close()
                self.watcher = None

    return SimpleNamespace(RunwatchLogger=RunwatchLogger, RunwatchCallback=RunwatchCallback)


_classes = classes_for(lightning_package())
RunwatchLogger = _classes.RunwatchLogger
RunwatchCallback = _classes.RunwatchCallback
