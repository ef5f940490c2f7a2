"""runwatch's Python client SDK.

:class:`RunwatchClient` opens runs and streams their metrics and log lines to a
runwatch server in the background; :class:`Run` is the W&B/MLflow-shaped
handle a training loop logs to. :mod:`runwatch.client.torch_watch` (needs
torch) describes a model's architecture and collects per-layer statistics.

Examples
--------
>>> from runwatch.client import RunwatchClient, ModelWatcher   # doctest: +SKIP
>>> client = RunwatchClient("127.0.0.1:50051")                   # doctest: +SKIP
>>> run = client.start_run(project="mnist", model=model)         # doctest: +SKIP
>>> watcher = ModelWatcher(model)                                # doctest: +SKIP
>>> for x, y in loader:                                          # doctest: +SKIP
...     loss = loss_fn(model(x), y); loss.backward()
...     run.log({"loss": loss.item(), **watcher.stats()})
...     opt.step(); opt.zero_grad()
>>> run.finish()                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from runwatch.client.sender import BatchSender, SenderStats
from runwatch.client.session import AnomalyStream, AnomalyWatch, Run, RunwatchClient

__all__ = [
    "AnomalyStream",
    "AnomalyWatch",
    "BatchSender",
    "ModelWatcher",
    "Run",
    "RunwatchClient",
    "SenderStats",
    "describe_architecture",
]

_TORCH_EXPORTS = {"ModelWatcher", "describe_architecture"}


def __getattr__(name: str) -> Any:
    # torch is optional: import it only when its helpers are asked for.
    if name in _TORCH_EXPORTS:
        from runwatch.client import torch_watch

        return getattr(torch_watch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
