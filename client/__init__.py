"""runwatch's Python client SDK.

:func:`init` opens a run the way W&B and MLflow users know (``run.log``,
``run.log_text``, ``run.finish``), records where it runs (git commit,
versions, device) and spools to disk while the server is away.
:class:`RunwatchClient` is the lower-level handle: one connection, many runs.
:mod:`runwatch.client.torch_watch` (needs torch) describes a model's
architecture and collects per-layer statistics; ``run.watch(model)`` wires it
in without hooks to write. Ready-made reactions to a run's anomalies are in
:mod:`runwatch.client.actions`; Lightning and Hugging Face integrations in
:mod:`runwatch.client.integrations`; readers of logs already on disk in
:mod:`runwatch.client.importers` (``runwatch replay``). :class:`Api` reads
runs, metric histories and anomalies back as pandas DataFrames
(:mod:`runwatch.client.query`; ``runwatch export`` writes them to files).

Examples
--------
>>> import runwatch.client as rw                                   # doctest: +SKIP
>>> run = rw.init(project="mnist", config={"lr": 1e-3}, model=model)  # doctest: +SKIP
>>> run.watch(model, every=10)                                    # doctest: +SKIP
>>> for i, (x, y) in enumerate(run.track_data(loader)):           # doctest: +SKIP
...     loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
...     run.log({"loss": loss.item(), "lr": opt.param_groups[0]["lr"]}, step=i)
>>> run.finish()                                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runwatch.client.actions import ReduceLROnAnomaly, SkipBatches, StopOnDivergence, StopTraining
from runwatch.client.query import Api, RunRef
from runwatch.client.sender import BatchSender, SenderStats
from runwatch.client.session import AnomalyStream, AnomalyWatch, Run, RunwatchClient, current_run, init

__all__ = [
    "AnomalyStream",
    "AnomalyWatch",
    "Api",
    "BatchSender",
    "ModelWatcher",
    "ReduceLROnAnomaly",
    "Run",
    "RunRef",
    "RunwatchClient",
    "SenderStats",
    "SkipBatches",
    "StopOnDivergence",
    "StopTraining",
    "current_run",
    "describe_architecture",
    "finish",
    "init",
    "log",
]

_TORCH_EXPORTS = {"ModelWatcher", "describe_architecture"}


def _run() -> Run:
    run = current_run()
    if run is None:
        raise RuntimeError("no active run: call runwatch.client.init(...) first")
    return run


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """``Run.log`` on the run :func:`init` opened last."""
    _run().log(metrics, step=step)


def finish(status: str | int | None = None, reason: str = "", timeout: float | None = 10.0) -> bool:
    """``Run.finish`` on the run :func:`init` opened last."""
    return _run().finish(status, reason, timeout)


def __getattr__(name: str) -> Any:
    # torch is optional: import it only when its helpers are asked for.
    if name in _TORCH_EXPORTS:
        from runwatch.client import torch_watch

        return getattr(torch_watch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
