"""Hugging Face ``Trainer`` checkpoints: ``trainer_state.json``.

``log_history`` is a list of dicts, each with the ``step`` (``global_step``)
it was logged at: training logs (``loss``, ``grad_norm``, ``learning_rate``,
``epoch``), evaluation logs (``eval_loss``, ``eval_accuracy``, ...) and a
final summary (``train_loss``, ``train_runtime``, ...). Numeric values become
metrics; top-level scalar settings (``train_batch_size``,
``num_train_epochs``, ``logging_steps``, ...) and ``trial_params`` become
hyperparameters. The file has no clock: events carry no wall time.

Entries without ``step`` (``trainer.predict`` and custom ``log`` calls write
``predict_*`` / ``test_*`` entries without one) take their neighbour's step:
the previous entry's, else the next one's; with no entry to borrow from they
are skipped and counted in the run's notes. The run is named by the folders
that tell it apart (``owner+repo/bert-lr3e-5``), not ``output`` or ``checkpoint-500``.
"""

from __future__ import annotations

import json
from pathlib import Path

from runwatch.client.importers.base import STRICT, ImportedRun, ImportFormatError, Problems, RunBuilder, parse_step
from runwatch.client.importers.util import meaningful_name, open_text

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


def read(path: Path, canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read one ``trainer_state.json`` as one run (malformed entries go to ``problems``)."""
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
    name = meaningful_name(path.parent)
    run = ImportedRun(FORMAT, path, key=str(path), name=name or "trainer_state", tags=["huggingface"])
    hp = {k: state[k] for k in _SETTINGS if isinstance(state.get(k), (int, float, str, bool))}
    if isinstance(state.get("trial_params"), dict):
        hp.update(state["trial_params"])
    run.hyperparameters = hp
    for key in ("best_metric", "best_model_checkpoint", "global_step"):
        if state.get(key) is not None:
            run.environment[f"hf.{key}"] = str(state[key])
    builder = RunBuilder(run)
    entries: list[tuple[int | None, dict]] = []  # (step or None, entry)
    for i, entry in enumerate(history):
        where = f"log_history[{i}]"
        if not isinstance(entry, dict):
            problems.skip(ImportFormatError(path, where, f"expected an object, got {type(entry).__name__}"))
            continue
        step = None
        if "step" in entry:
            try:
                step = parse_step(entry["step"], path, where)
            except ImportFormatError as exc:
                problems.skip(exc)
                continue
        entries.append((step, entry))
    placed = unplaced = 0
    known = [s for s, _ in entries if s is not None]
    previous = None
    later = iter(known)
    upcoming = next(later, None)
    for step, entry in entries:
        if step is None:
            step = previous if previous is not None else upcoming
            if step is None:
                unplaced += 1
                continue
            placed += 1
        else:
            previous = step
            upcoming = next(later, None)
        for key, value in entry.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # strings and nested objects are not metrics
            builder.add(step, key, float(value))
    built = builder.build(canonical)
    if placed:
        built.notes.append(f"{placed} log_history entr{'y' if placed == 1 else 'ies'} without 'step' placed at a neighbour's step")
    if unplaced:
        built.notes.append(f"{unplaced} log_history entr{'y' if unplaced == 1 else 'ies'} without 'step' skipped: no entry has a step")
    if not built.steps and history:
        built.notes.append("log_history has no numeric values")
    return [built]
