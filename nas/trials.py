"""Real training trials of architecture edits, run through NNI's in-process multi-trial NAS.

:func:`run_trials` lets an NNI strategy (regularized evolution or random)
propose edits of a base genome within a :class:`~runwatch.nas.space.SearchSpace`,
builds each proposal as a torch model (any family :mod:`runwatch.nas.family_builders`
rebuilds) and trains it with a user function
``trainer(model) -> validation loss``. This is the ground truth the
advisor's surrogate predictions can be checked against, at the price of one
training run per trial. ``runwatch nas run --trainer module:function --budget N``
calls it; :func:`load_callable` resolves the trainer.

Examples
--------
>>> load_callable("math:sqrt")(16.0)
4.0
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runwatch.nas.architecture import Genome
from runwatch.nas.families import Stem
from runwatch.nas.space import SearchSpace

__all__ = ["Trial", "TrialsResult", "load_callable", "run_trials"]

STRATEGIES = ("evolution", "random")


@dataclass(frozen=True)
class Trial:
    """One trained architecture.

    ``value`` is what the trainer returned (lower is better; ``nan`` when the
    trainer raised or returned a non-finite value); ``seconds`` the wall time
    of the trial; ``params``/``flops`` the genome's costs.
    """

    index: int
    genome: Genome
    value: float
    seconds: float
    params: int
    flops: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``nan`` becomes ``None``)."""
        return {
            "index": self.index,
            "genome": self.genome.to_dict(),
            "key": self.genome.key(),
            "value": self.value if math.isfinite(self.value) else None,
            "seconds": self.seconds,
            "params": self.params,
            "flops": self.flops,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`."""
        value = data["value"]
        return cls(
            index=int(data["index"]),
            genome=Genome.from_dict(data["genome"]),
            value=math.nan if value is None else float(value),
            seconds=float(data["seconds"]),
            params=int(data["params"]),
            flops=int(data["flops"]),
        )


@dataclass(frozen=True)
class TrialsResult:
    """All trials of one :func:`run_trials` call, in the order they ran.

    ``base`` is the genome searched around; ``trials[0]`` is the base itself
    when it was included as a reference.
    """

    base: Genome
    strategy: str
    seed: int
    trials: tuple[Trial, ...] = field(default_factory=tuple)

    @property
    def best(self) -> Trial:
        """The trial with the lowest finite value.

        Raises
        ------
        ValueError
            When no trial finished with a finite value.
        """
        finished = [t for t in self.trials if math.isfinite(t.value)]
        if not finished:
            raise ValueError(f"none of {len(self.trials)} trials finished with a finite value")
        return min(finished, key=lambda t: (t.value, t.index))

    @property
    def best_genome(self) -> Genome:
        """The genome of :attr:`best`."""
        return self.best.genome

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "base": self.base.to_dict(),
            "strategy": self.strategy,
            "seed": self.seed,
            "trials": [t.to_dict() for t in self.trials],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialsResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            base=Genome.from_dict(data["base"]),
            strategy=data["strategy"],
            seed=int(data["seed"]),
            trials=tuple(Trial.from_dict(t) for t in data["trials"]),
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)


def load_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``"package.module:function"`` (or ``"module:Class.method"``) to the callable.

    Raises
    ------
    ValueError
        With a message naming what is wrong: no colon, a module that does not
        import, or a missing attribute.
    TypeError
        When the target exists but is not callable.

    Examples
    --------
    >>> load_callable("os.path:join")("a", "b")
    'a/b'
    >>> load_callable("os.path")
    Traceback (most recent call last):
    ...
    ValueError: expected 'module:function', got 'os.path'
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} (from {spec!r}): {e}") from e
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{spec!r}: {getattr(target, '__name__', target)!r} has no attribute {part!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec!r} is a {type(target).__name__}, not a callable")
    return target


def _initialise(model: Any, seed: int) -> None:
    """Re-initialise ``model``'s weights from ``seed``, leaving torch's global random state as it was.

    NNI builds each trial's model with whatever the global generator holds at
    that moment; re-seeding makes a trial's result depend on its architecture,
    not on how many trials ran before it.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def run_trials(
    genome: Genome,
    space: SearchSpace,
    trainer: Callable[[Any], float],
    budget: int,
    strategy: str = "evolution",
    seed: int = 0,
    *,
    population: int | None = None,
    include_base: bool = True,
    stem: Stem | None = None,
) -> TrialsResult:
    """Train ``budget`` architectures around ``genome`` through NNI's in-process multi-trial NAS.

    Each trial freezes a sample of :func:`runwatch.nas.nni_adapter.model_space`
    into a fresh torch model (an MLP: ``nn.Sequential``; a CNN, GRU/LSTM
    tagger or transformer encoder: :meth:`Genome.build` with ``stem``;
    ``genome.params()`` parameters) and calls ``trainer(model)``, which trains it and returns the
    value to minimize (e.g. the validation loss). Trials run one after another
    in this process (NNI's ``SequentialExecutionEngine``).

    Parameters
    ----------
    genome
        The base architecture; its family needs a builder
        (:mod:`runwatch.nas.family_builders`: mlp, cnn, rnn, transformer).
    space
        Allowed edits; every trial is within ``space`` of ``genome``.
    trainer
        ``trainer(model: torch.nn.Module) -> float``, lower is better. Seed
        torch inside it for reproducible trials. A raising trainer or a
        non-finite result makes that trial ``nan``; the search goes on.
    budget
        Number of trainings, the base included.
    strategy
        ``"evolution"`` (NNI's RegularizedEvolution) or ``"random"`` (NNI's Random).
    seed
        Strategy seed, and the seed every trial's weights are initialised
        from (so two trials differ by architecture, not by initialisation luck).
    population
        Evolution population; default ``max(2, budget // 3)``.
    include_base
        Train the base genome first as a reference.
    stem
        How inputs reach the first block of a non-MLP genome (token
        embedding, positions, image shape; ``stem_of_model`` of the user's
        model).

    Returns
    -------
    TrialsResult

    Raises
    ------
    ValueError
        For a genome no builder can rebuild, an unknown strategy or a budget below 1.
    runwatch.nas.nni_adapter.MissingExtraError
        Without NNI.
    """
    from runwatch.nas.nni_adapter import multi_trial

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    from runwatch.nas.families import structure_problems

    problems = structure_problems(genome)
    if problems:
        raise ValueError(
            f"run_trials trains models it can rebuild; this genome (family {genome.family!r}) cannot be: "
            + "; ".join(problems)
        )
    timings: list[float] = []

    def timed(model: Any) -> float:
        start = time.perf_counter()
        try:
            # NNI's model space holds a network for MLPs only; the other families are rebuilt from the genome.
            net = model.net if model.net is not None else model.genome.build(stem)
            _initialise(net, seed)
            return float(trainer(net))
        finally:
            timings.append(time.perf_counter() - start)

    history = multi_trial(
        genome,
        space,
        timed,
        budget,
        strategy=strategy,
        population=population if population is not None else max(2, budget // 3),
        seed=seed,
        include_base=include_base,
    )
    trials = tuple(
        Trial(i, g, value if math.isfinite(value) else math.nan, seconds, g.params(), g.flops())
        for i, ((g, value), seconds) in enumerate(zip(history, timings, strict=True))
    )
    return TrialsResult(base=genome, strategy=strategy, seed=seed, trials=trials)
