"""``runwatch nas run``: real training trials around a model's architecture.

Loads the user's model factory and trainer (``module:function``), describes the
model as the trainer runs it, and hands both to
:func:`runwatch.nas.trials.run_trials`; prints one line per trial and the best
architecture as a diff against the starting one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["run_search"]


class _StartingModelDescribed(Exception):
    """Stops the trainer after the starting model's first forward pass: its architecture is all that is needed."""


def _describe_as_trained(model, train_fn):
    """``model``'s architecture from the first forward pass ``train_fn`` runs on it, and a note ("" when traced).

    The trainer is stopped by an exception right after that pass, before any
    optimizer step; the trials train rebuilt models. Registration order is the
    fallback (with a note saying why) when the trainer never runs the model.
    """
    from runwatch.client.torch_watch import describe_architecture, describe_first_forward

    described = []
    recording = describe_first_forward(model, described.append)

    def stop(*_) -> None:
        if described:
            raise _StartingModelDescribed("runwatch nas: the starting model's architecture is recorded")

    # Registered after the recording's hooks, so they run after them; the pre-hook also stops a trainer
    # that caught the first stop and calls the model again.
    handles = [model.register_forward_hook(stop), model.register_forward_pre_hook(stop)]
    why_not = "it never called the model"
    try:
        train_fn(model)
    except _StartingModelDescribed:
        pass
    except Exception as exc:  # noqa: BLE001 - any trainer failure only means no traced description
        why_not = f"{type(exc).__name__}: {exc}"
    finally:
        recording.remove()
        for handle in handles:
            handle.remove()
    if described:
        return described[0], ""
    note = (
        f"note: the trainer did not run the starting model ({why_not}); it is described from registration order, "
        "which does not see functional activations (F.relu) or a shared activation module"
    )
    return describe_architecture(model), note


def _format(result, seconds: float) -> str:
    base = result.base
    lines = [f"{len(result.trials)} trial(s), strategy {result.strategy}, seed {result.seed}, {seconds:.1f} s"]
    lines.append(f"{'#':>3}  {'value':>12}  {'params':>10}  {'s':>6}  changes")
    for t in result.trials:
        diff = "; ".join(c.description for c in base.diff(t.genome)) or "(starting architecture)"
        value = f"{t.value:.6g}" if math.isfinite(t.value) else "failed"
        lines.append(f"{t.index:>3}  {value:>12}  {t.params:>10}  {t.seconds:>6.1f}  {diff}")
    try:
        best = result.best
    except ValueError as exc:
        lines.append(f"no result: {exc}")
        return "\n".join(lines)
    reference = next((t for t in result.trials if t.genome.key() == base.key() and math.isfinite(t.value)), None)
    versus = f" (starting architecture: {reference.value:.6g})" if reference is not None else ""
    lines.append(f"best: trial {best.index}, value {best.value:.6g}{versus}")
    lines.extend(f"  {c.description}" for c in base.diff(best.genome))
    return "\n".join(lines)


def run_search(
    trainer: str,
    model: str,
    budget: int,
    strategy: str,
    seed: int,
    space_file: Path | None = None,
    out: Path | None = None,
) -> str:
    """Run ``budget`` trials and return the printable report.

    Raises ``ValueError`` (naming the option) for a bad ``module:function``, a
    model that is not a torch module or has nothing editable, a bad space file.
    """
    import time

    from runwatch.nas.architecture import Genome
    from runwatch.nas.family_builders import stem_of_model
    from runwatch.nas.nni_adapter import MissingExtraError
    from runwatch.nas.space import SearchSpace
    from runwatch.nas.trials import load_callable, run_trials

    try:
        train_fn = load_callable(trainer)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--trainer: {exc}") from None
    try:
        make_model = load_callable(model)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--model: {exc}") from None
    import torch

    start_model = make_model()
    if not isinstance(start_model, torch.nn.Module):
        raise ValueError(f"--model: {model} returned {type(start_model).__name__}, not a torch.nn.Module")  # noqa: TRY004 - a CLI usage error
    architecture, note = _describe_as_trained(start_model, train_fn)
    try:
        genome = Genome.from_architecture(architecture)
    except ValueError as exc:
        raise ValueError(f"--model: {exc}") from None
    from runwatch.nas.families import structure_problems

    problems = structure_problems(genome)
    if problems:
        raise ValueError(f"--model: cannot rebuild this {genome.family} model for the trials: " + "; ".join(problems))
    space = SearchSpace()
    if space_file is not None:
        try:
            space = SearchSpace.from_dict(json.loads(space_file.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"--space: {space_file}: {exc}") from None
    t0 = time.perf_counter()
    try:
        result = run_trials(
            genome, space, train_fn, budget, strategy=strategy, seed=seed, stem=stem_of_model(start_model)
        )
    except MissingExtraError as exc:
        raise ImportError(str(exc)) from None
    if out is not None:
        out.write_text(result.to_json())
    report = _format(result, time.perf_counter() - t0)
    return f"{note}\n{report}" if note else report
