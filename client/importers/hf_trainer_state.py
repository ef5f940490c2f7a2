"""Hugging Face ``Trainer`` checkpoints: ``trainer_state.json``.

``log_history`` is a list of dicts, each with the ``step`` (``global_step``)
it was logged at: training logs (``loss``, ``grad_norm``, ``learning_rate``,
``epoch``), evaluation logs (``eval_loss``, ``eval_accuracy``, ...) and a
final summary (``train_loss``, ``train_runtime``, ...). Numeric values become
metrics; top-level scalar settings (``train_batch_size``,
``num_train_epochs``, ``logging_steps``, ...) and ``trial_params`` become
hyperparameters. The file has no clock: events carry no wall time.
"""

from __future__ import annotations

import json
from pathlib import Path

from runwatch.client.importers.base import ImportedRun, ImportFormatError, RunBuilder, parse_step
from runwatch.client.importers.util import open_text

__all__ = ["read"]

FORMAT = "hf"
_SETTINGS = (
    "train_batch_size",
    "num_train_epochs",
    "max_steps",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "is_hyper_param_search",
)


def read(path: Path, canonical: bool = True) -> list[ImportedRun]:
    """Read one ``trainer_state.json`` as one run."""
    path = Path(path)
    try:
        with open_text(path) as f:
            state = json.load(f)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, f"byte {exc.start}", f"not UTF-8 text: {exc.reason}") from None
    if not isinstance(state, dict):
        raise ImportFormatError(path, "top level", f"expected a JSON object, got {type(state).__name__}")
    history = state.get("log_history")
    if not isinstance(history, list):
        raise ImportFormatError(path, "log_history", "missing or not a list: is this a trainer_state.json?")
    parent = path.parent
    name = f"{parent.parent.name}/{parent.name}" if parent.name.startswith("checkpoint-") else parent.name
    run = ImportedRun(FORMAT, path, key=str(path), name=name or "trainer_state", tags=["huggingface"])
    hp = {k: state[k] for k in _SETTINGS if isinstance(state.get(k), (int, float, str, bool))}
    if isinstance(state.get("trial_params"), dict):
        hp.update(state["trial_params"])
    run.hyperparameters = hp
    for key in ("best_metric", "best_model_checkpoint", "global_step"):
        if state.get(key) is not None:
            run.environment[f"hf.{key}"] = str(state[key])
    builder = RunBuilder(run)
    for i, entry in enumerate(history):
        where = f"log_history[{i}]"
        if not isinstance(entry, dict):
            raise ImportFormatError(path, where, f"expected an object, got {type(entry).__name__}")
        if "step" not in entry:
            raise ImportFormatError(path, where, "no 'step'")
        step = parse_step(entry["step"], path, where)
        for key, value in entry.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # strings and nested objects are not metrics
            builder.add(step, key, float(value))
    built = builder.build(canonical)
    if not built.steps and history:
        built.notes.append("log_history has no numeric values")
    return [built]
