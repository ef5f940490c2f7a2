"""Hugging Face ``Trainer``: a ``TrainerCallback`` that streams to runwatch and acts on its anomalies.

Examples
--------
>>> from runwatch.client.integrations.huggingface import RunwatchCallback   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[RunwatchCallback(project="p", watch_every=10)])  # doctest: +SKIP

Or, after :func:`register`, by name: ``TrainingArguments(report_to=["runwatch"])``.
``report_to`` only takes names from transformers' own table of integrations
(``transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK``);
there is no public way for a third party to add one, so :func:`register`
adds ``"runwatch"`` to that table (it may break with a future transformers).
The Trainer then builds the callback without arguments: it reads
``RUNWATCH_PROJECT``, ``RUNWATCH_TARGET``, ``RUNWATCH_RUN_ID`` and
``RUNWATCH_WATCH_EVERY`` from the environment. ``report_to="all"`` does not
include it.

On ``on_train_begin`` (main process only) the callback opens the run with
:func:`runwatch.client.init`: ``TrainingArguments`` and the model's config
as hyperparameters, the model's architecture, git/versions/device. It sends
each ``on_log`` at ``state.global_step`` (``learning_rate`` -> ``lr``,
``eval_loss`` -> ``val/loss``, ...; see
:class:`~runwatch.client.integrations.StepLogger`), per-step ``step_time``,
``data_time`` (between one step's end and the next one's start: fetching the
batch), ``cpu_mem``/``gpu_mem``, and with ``watch_every`` per-layer
statistics every ``watch_every`` optimizer steps, taken in
``on_pre_optimizer_step``. The Trainer clips the gradients before that hook,
so the gradient norms (``grad_norm/<layer>`` and the watcher's global
``grad_norm``) are taken during ``backward()`` instead, before clipping (see
:class:`~runwatch.client.torch_watch.ModelWatcher`, ``grads_at_backward``).
The global ``grad_norm`` is the Trainer's own (its pre-clip total norm, at
its logging steps): at a step where the Trainer logs, the callback's metrics
are sent after the Trainer's ``on_log``, so the Trainer's value is the one
kept. Once
runwatch predicts divergence it sets ``control.should_training_stop``;
``reduce_lr_on_anomaly=True`` lowers the learning rate on a loss spike or
plateau. ``on_train_end`` finishes the run (``killed`` with the reason when
runwatch stopped it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised where transformers is absent
    raise ImportError(
        "runwatch's Hugging Face integration needs transformers: pip install 'runwatch[huggingface]'"
    ) from None

from runwatch.client.integrations import StepLogger, logger

__all__ = ["RunwatchCallback", "register"]


def _config(args: Any, model: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        cfg.update(args.to_dict())  # tokens come back masked
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        with contextlib.suppress(Exception):
            cfg["model_config"] = model_config.to_dict()
    return cfg


class RunwatchCallback(TrainerCallback):
    """Streams a ``Trainer``'s logs to runwatch; stops it once divergence is predicted.

    Parameters
    ----------
    project, run_id, target, tags
        As for :func:`runwatch.client.init`; default from ``RUNWATCH_PROJECT``
        (else ``"huggingface"``), ``RUNWATCH_RUN_ID``, ``RUNWATCH_TARGET``.
        With a run id, a Trainer resumed from a checkpoint (``global_step`` > 0
        at ``on_train_begin``) continues that run (``init(..., resume=True)``).
    watch_every
        Per-layer statistics every this many optimizer steps (0 = off;
        default ``RUNWATCH_WATCH_EVERY`` or 0); their gradient norms are
        taken before the Trainer clips (see the module docstring).
    stop_on_divergence, stop_kinds, min_severity
        Stop training (``control.should_training_stop``) on these anomalies.
    reduce_lr_on_anomaly, lr_factor
        Multiply the learning rate by ``lr_factor`` on a loss spike or plateau.
    canonical_names
        Map names onto runwatch's conventions.
    run
        Log to this already open run.
    **init_kwargs
        More :func:`runwatch.client.init` arguments.
    """

    def __init__(
        self,
        project: str | None = None,
        run_id: str | None = None,
        target: str | None = None,
        tags: Iterable[str] = (),
        watch_every: int | None = None,
        stop_on_divergence: bool = True,
        stop_kinds: Iterable[str] = ("divergence_predicted",),
        min_severity: str = "warning",
        reduce_lr_on_anomaly: bool = False,
        lr_factor: float = 0.5,
        canonical_names: bool = True,
        run: Any = None,
        **init_kwargs: Any,
    ) -> None:
        self.project = project or os.environ.get("RUNWATCH_PROJECT") or "huggingface"
        self.run_id = run_id or os.environ.get("RUNWATCH_RUN_ID") or None
        self.target = target
        self.tags = ["huggingface", *tags]
        if watch_every is None:
            watch_every = int(os.environ.get("RUNWATCH_WATCH_EVERY", "0") or 0)
        self.watch_every = int(watch_every)
        self.stop_on_divergence = stop_on_divergence
        self.stop_kinds = tuple(stop_kinds)
        self.min_severity = min_severity
        self.reduce_lr_on_anomaly = reduce_lr_on_anomaly
        self.lr_factor = lr_factor
        self.canonical_names = canonical_names
        self.init_kwargs = init_kwargs
        self.run = run
        self._owns_run = run is None
        self.steps: StepLogger | None = StepLogger(run, canonical_names) if run is not None else None
        self.watcher: Any = None
        self.stopped_at: int | None = None
        self._stash: dict[str, float] = {}
        self._held: tuple[int, dict[str, float]] | None = None  # a step's metrics waiting for the Trainer's on_log
        self._clock: Any = None  # a StepClock once training begins

    # -- lifecycle -----------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.run is None or self.run.finished:
            from runwatch.client import init

            options = dict(self.init_kwargs)
            if self.run_id is not None and state.global_step > 0:
                options.setdefault("resume", True)  # resumed from a checkpoint: the same run continues
            self.run = init(
                project=self.project,
                config=_config(args, model),
                model=model,
                run_id=self.run_id,
                target=self.target,
                tags=self.tags,
                **options,
            )
            self._owns_run = True
            self.steps = StepLogger(self.run, self.canonical_names)
        elif model is not None and not self.run.start_message.architecture.layers:
            self.run.set_model(model)
        if self.stop_on_divergence:
            self.run.stop_on_divergence(self.stop_kinds, self.min_severity)
        optimizer = kwargs.get("optimizer")
        if self.reduce_lr_on_anomaly and optimizer is not None:
            self.run.reduce_lr_on_anomaly(optimizer, self.lr_factor, scheduler=kwargs.get("lr_scheduler"))
        if self.watch_every > 0 and model is not None:
            from runwatch.client.torch_watch import ModelWatcher

            # Gradient norms before the Trainer clips them; no global grad_norm on the other steps (the
            # Trainer logs its own, pre-clip, and one taken in on_pre_optimizer_step would be clipped).
            self.watcher = ModelWatcher(model, every=self.watch_every, always_grad_norm=False, grads_at_backward=True)
        from runwatch.client.environment import StepClock, SystemSampler

        self._clock = StepClock(SystemSampler(interval=1.0))
        self.run._timing = self.run._data_tracked  # step_time is the clock's (evaluation left out)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._send_held()
        if self.run is not None and self._clock is not None:
            self._clock.step_begin()

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is not None and self.run is not None and not self.run.finished:
            self.steps.log_auto(held[1], held[0])

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watcher is not None:
            try:
                self._stash.update(self.watcher.stats())
            except Exception:  # noqa: BLE001 - telemetry must not break training
                logger.exception("runwatch: collecting model statistics failed")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is None:
            return
        metrics = self._stash
        self._stash = {}
        if self._clock is not None:
            self._clock.step_end(metrics)
        if metrics and not run.finished:
            if control.should_log:
                # The Trainer logs this step right after on_step_end: its values (its pre-clip grad_norm)
                # go first, these follow in on_log (or at the next step's start if no log comes).
                self._send_held()
                self._held = (state.global_step, metrics)
            else:
                self.steps.log_auto(metrics, state.global_step)
        run.apply_actions()
        if run.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            self.stopped_at = state.global_step
            logger.warning("runwatch: stopping training at step %d: %s", state.global_step, run.stop_reason)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._clock is not None:
            self._clock.pause()  # evaluation is not part of a training step

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self.run is None:
            return
        if logs:
            self.steps.log(logs, state.global_step)
        self._send_held()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._send_held()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.run is not None and self._owns_run and not self.run.finished:
            self.run.finish()


def register(name: str = "runwatch") -> None:
    """Make ``TrainingArguments(report_to=[name])`` use :class:`RunwatchCallback` (see the module docstring)."""
    from transformers.integrations import integration_utils

    integration_utils.INTEGRATION_TO_CALLBACK[name] = RunwatchCallback
