"""The one module of :mod:`runwatch.nas` that talks to NNI (``nni==3.0``, imported inside functions).

Two NNI paths search the edits :mod:`runwatch.nas.space` allows around a base
genome, both over the encoding of :mod:`runwatch.nas.choices`:

* HPO tuners driven in-process (:func:`tpe_search`, :func:`random_search`):
  ``update_search_space`` / ``generate_parameters`` / ``receive_trial_result``
  on NNI's ``TpeTuner`` and ``RandomTuner`` with :func:`hpo_search_space`.
* Multi-trial NAS (:func:`regularized_evolution`): NNI's
  ``RegularizedEvolution`` strategy on its ``SequentialExecutionEngine`` (in
  this process; no experiment manager, web UI or node) over
  :func:`model_space`, an ``nni.nas`` ``ModelSpace`` made of ``MutableLinear``,
  ``LayerChoice`` and ``MutableDropout`` modules, with a
  ``FunctionalEvaluator`` that reports each frozen model's score.

Values are minimized throughout (NNI's evolution maximizes, so it is fed the
negated value).

Examples
--------
>>> from runwatch.nas.architecture import Block, Genome
>>> from runwatch.nas.space import SearchSpace
>>> g = Genome(16, 2, (Block("fc1", "linear", 32, "relu"), Block("fc2", "linear", 32, "relu")))
>>> space = SearchSpace(width_values=(8, 16, 32, 64), activations=("relu",), dropouts=(0.0,),
...                     normalizations=("",), depth_changes=(), allow_residual=False)
>>> trials = tpe_search(g, space, lambda x: abs(x.blocks[0].width - 16), trials=12, seed=0)
>>> len(trials), min(v for _, v in trials)
(12, 0.0)
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from runwatch.nas.architecture import Genome
from runwatch.nas.choices import NONE, base_parameters, choice_label, limit_changes, search_choices
from runwatch.nas.choices import (
    genome_from_parameters as _decode_parameters,
)
from runwatch.nas.space import SearchSpace

__all__ = [
    "MissingExtraError",
    "genome_from_parameters",
    "genome_from_sample",
    "hpo_search_space",
    "model_space",
    "multi_trial",
    "nni_available",
    "random_search",
    "regularized_evolution",
    "tpe_search",
]

Objective = Callable[[Genome], float]
_logger = logging.getLogger(__name__)


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message says which extra to install."""


def nni_available() -> bool:
    """Whether NNI can be imported (``pip install runwatch[nas]``)."""
    try:
        import nni  # noqa: F401
    except ImportError:
        return False
    return True


def _require_nni(what: str) -> None:
    if not nni_available():
        raise MissingExtraError(f"{what} needs NNI: install runwatch[nas]")


@contextlib.contextmanager
def _quiet_nni() -> Iterator[None]:
    """Silence NNI's per-sample INFO logs and warnings, and its import-time warnings about newer torch classes."""
    nni_logger = logging.getLogger("nni")
    level = nni_logger.level
    nni_logger.setLevel(max(level, logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
            yield
    finally:
        nni_logger.setLevel(level)


# ---------------------------------------------------------------------------- HPO tuners


def hpo_search_space(genome: Genome, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """NNI's HPO search-space format: one ``choice`` per editable attribute of ``genome``.

    Keys are ``"<block>:width"``, ``"<block>:activation"``,
    ``"<block>:normalization"``, ``"<block>:dropout"``, ``"<block>:residual"``
    and ``"depth"``; see :mod:`runwatch.nas.choices` for the encoding. Each
    value list starts with the genome's current value. Needs no NNI.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"),))
    >>> hpo_search_space(g, SearchSpace(normalizations=("",), dropouts=(0.0,), depth_changes=()))["fc1:width"]
    {'_type': 'choice', '_value': [128, 64, 256]}
    """
    return {label: {"_type": "choice", "_value": values} for label, values in search_choices(genome, space).items()}


def genome_from_parameters(genome: Genome, space: SearchSpace, params: dict[str, Any]) -> Genome:
    """The genome a tuner's parameter dict (keys of :func:`hpo_search_space`) describes.

    Always valid and :func:`~runwatch.nas.space.within` ``space`` of
    ``genome``: residual connections the chosen widths break are dropped and,
    when the parameters change more than ``space.max_changes`` things, a
    deterministic pseudo-random subset of the changes is kept. Needs no NNI.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(64, 10, (Block("fc1", "linear", 128, "relu"),))
    >>> genome_from_parameters(g, SearchSpace(), {"fc1:activation": "gelu", "fc1:dropout": 0.2}).key()
    '64>linear128.gelu.d0.2>10'
    """
    return _decode_parameters(genome, space, params)


def _tuner_search(
    tuner: Any,
    genome: Genome,
    space: SearchSpace,
    objective: Objective,
    trials: int,
) -> list[tuple[Genome, float]]:
    """Drive an NNI HPO tuner in-process; the objective runs once per distinct genome."""
    from nni import NoMoreTrialError

    tuner.update_search_space(hpo_search_space(genome, space))
    cache: dict[str, float] = {}
    results: list[tuple[Genome, float]] = []
    for parameter_id in range(trials):
        try:
            params = tuner.generate_parameters(parameter_id)
        except NoMoreTrialError:  # the tuner has proposed every point of a small space
            break
        candidate = genome_from_parameters(genome, space, params)
        key = candidate.key()
        if key not in cache:
            cache[key] = float(objective(candidate))
        value = cache[key]
        # A non-finite loss would poison TPE's densities; report it as worse than anything seen.
        reported = value if math.isfinite(value) else _worst(cache.values())
        tuner.receive_trial_result(parameter_id, params, reported)
        results.append((candidate, value))
    return results


def _worst(values: Any) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return (max(finite) + abs(max(finite)) + 1.0) if finite else 1e12


def tpe_search(
    genome: Genome,
    space: SearchSpace,
    objective: Objective,
    trials: int,
    seed: int = 0,
    *,
    startup_trials: int | None = None,
) -> list[tuple[Genome, float]]:
    """Minimize ``objective`` over the edits ``space`` allows around ``genome`` with NNI's TPE tuner.

    Drives ``nni.algorithms.hpo.tpe_tuner.TpeTuner`` directly (no experiment).
    Each proposal is decoded with :func:`genome_from_parameters`; the
    objective is called once per distinct genome (a repeated proposal reuses
    its value, and still counts as a trial).

    Parameters
    ----------
    genome, space
        The base genome and the allowed edits.
    objective
        ``objective(genome) -> float``, lower is better. Non-finite values are
        returned as they are but reported to the tuner as worse than the worst
        finite value.
    trials
        Number of proposals.
    seed
        Tuner seed.
    startup_trials
        Random proposals before TPE starts modelling (NNI's ``n_startup_jobs``);
        default ``max(5, trials // 5)``, NNI's own default of 20 being too many
        for short searches.

    Returns
    -------
    list of (Genome, float)
        Every trial in evaluation order; fewer than ``trials`` when the tuner
        has proposed every point of a small space.

    Raises
    ------
    MissingExtraError
        Without NNI.
    """
    _require_nni("tpe_search")
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    startup = startup_trials if startup_trials is not None else max(5, trials // 5)
    with _quiet_nni():
        tuner = TpeTuner(optimize_mode="minimize", seed=seed, tpe_args={"n_startup_jobs": startup})
        return _tuner_search(tuner, genome, space, objective, trials)


def random_search(
    genome: Genome, space: SearchSpace, objective: Objective, trials: int, seed: int = 0
) -> list[tuple[Genome, float]]:
    """Same as :func:`tpe_search` with NNI's ``RandomTuner`` (uniform over each choice).

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(8, 2, (Block("fc1", "linear", 8, "relu"),))
    >>> history = random_search(g, SearchSpace(max_changes=1), lambda x: x.params(), trials=3, seed=1)
    >>> [len(g.diff(x)) <= 1 for x, _ in history]
    [True, True, True]
    """
    _require_nni("random_search")
    from nni.algorithms.hpo.random_tuner import RandomTuner

    with _quiet_nni():
        return _tuner_search(RandomTuner(seed=seed), genome, space, objective, trials)


def warm_tpe_proposals(
    space: dict[str, dict[str, Any]],
    history: Sequence[tuple[dict[str, Any], float]],
    objective: Callable[[dict[str, Any]], float],
    trials: int,
    seed: int = 0,
    *,
    optimize_mode: str = "minimize",
) -> list[dict[str, Any]]:
    """NNI's TPE warm-started with ``history`` (parameters, value), then driven for ``trials`` proposals.

    ``TpeTuner.import_data`` replays the history into TPE's densities but also
    marks every imported configuration as already tried (its deduplicator), so
    a warm-started TPE could never propose one of them again -- not even the
    history's best in a new setting. The deduplicator is reset after the
    import: only this search's own proposals count as tried. With a history,
    TPE models from the first proposal (its start-up phase counts the imported
    records). Non-finite history values are reported as worse than the worst
    finite one; history entries with a value outside ``space`` are skipped.

    Parameters
    ----------
    space
        NNI's HPO search-space format (``{"x": {"_type": "choice", "_value": [...]}}``).
    history
        Observed (parameters, value) pairs; the value in ``optimize_mode``'s sense.
    objective
        Called on each proposal; its value is reported back before the next one.
    trials, seed, optimize_mode
        Number of proposals, tuner seed, ``"minimize"`` or ``"maximize"``.

    Returns
    -------
    list[dict]
        The proposals, in order.

    Examples
    --------
    >>> space = {"w": {"_type": "choice", "_value": [1, 2, 3, 4]}}
    >>> hist = [({"w": w}, float(w)) for w in (1, 2, 3, 4)] * 5
    >>> [p["w"] for p in warm_tpe_proposals(space, hist, lambda p: float(p["w"]), 2, seed=0)][0]
    1
    """
    _require_nni("warm_tpe_proposals")
    from nni import NoMoreTrialError
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    from nni.common.hpo_utils import Deduplicator

    allowed = {k: v["_value"] for k, v in space.items() if v.get("_type") == "choice"}
    finite = [v for _, v in history if math.isfinite(v)]
    if not finite:
        worse = 0.0
    elif optimize_mode == "minimize":
        worse = max(finite) + abs(max(finite)) + 1.0
    else:
        worse = min(finite) - abs(min(finite)) - 1.0
    data = [
        {"parameter": dict(params), "value": float(v) if math.isfinite(v) else worse}
        for params, v in history
        if all(params.get(k) in vals for k, vals in allowed.items())
    ]
    out: list[dict[str, Any]] = []
    with _quiet_nni():
        tuner = TpeTuner(optimize_mode=optimize_mode, seed=seed)
        tuner.update_search_space(space)
        if data:
            tuner.import_data(data)
            tuner.dedup = Deduplicator(tuner.space)  # imported configurations may be proposed again
        for parameter_id in range(trials):
            try:
                params = tuner.generate_parameters(parameter_id)
            except NoMoreTrialError:
                break
            value = float(objective(params))
            tuner.receive_trial_result(parameter_id, params, value if math.isfinite(value) else worse)
            out.append(params)
    return out


def warm_tpe_search(
    genome: Genome,
    space: SearchSpace,
    history: Sequence[tuple[Genome, float]],
    objective: Objective,
    trials: int,
    seed: int = 0,
) -> list[tuple[Genome, float]]:
    """:func:`tpe_search` warm-started with genomes of other runs and their values (:func:`warm_tpe_proposals`).

    A history genome is imported when it has ``genome``'s block names and
    every attribute value is a choice of the space (others cannot be written
    as its parameters).
    """
    from runwatch.nas.choices import search_choices

    choices = search_choices(genome, space)
    names = [b.name for b in genome.blocks]
    past = []
    for g, v in history:
        if [b.name for b in g.blocks] != names:
            continue
        params: dict[str, Any] = {}
        for label in choices:
            if label == "depth":
                params[label] = 0
                continue
            block, attribute = label.split(":", 1)
            b = g.blocks[names.index(block)]
            value = getattr(b, attribute)
            params[label] = (value or "none") if attribute in ("activation", "normalization") else value
        past.append((params, float(v)))
    cache: dict[str, float] = {}
    results: list[tuple[Genome, float]] = []

    def run(params: dict[str, Any]) -> float:
        candidate = genome_from_parameters(genome, space, params)
        if candidate.key() not in cache:
            cache[candidate.key()] = float(objective(candidate))
        results.append((candidate, cache[candidate.key()]))
        return cache[candidate.key()]

    warm_tpe_proposals(hpo_search_space(genome, space), past, run, trials, seed)
    return results


# ---------------------------------------------------------------------------- NAS model space

_MODEL_SPACE_CLASS: Any = None


def _model_space_class() -> Any:
    """The ``ModelSpace`` subclass, created on first use so that importing this module needs no NNI."""
    global _MODEL_SPACE_CLASS
    if _MODEL_SPACE_CLASS is not None:
        return _MODEL_SPACE_CLASS
    import nni
    from nni.mutable import ensure_frozen
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableDropout, MutableLayerNorm, MutableLinear
    from nni.nas.space import model_context
    from torch import nn

    from runwatch.nas.mlp_builder import Residual, activation_module, module_name

    class GenomeModelSpace(ModelSpace):
        """The edits of one genome as an ``nni.nas`` model space (see :func:`model_space`)."""

        def __init__(self, genome: Genome, space: SearchSpace) -> None:
            super().__init__()
            self.base_genome, self.search_space = genome, space
            choices = search_choices(genome, space)
            self._choices = {label: self.add_mutable(nni.choice(label, values)) for label, values in choices.items()}
            # The structure-level decisions (depth, which residuals survive) need concrete values: NNI's
            # ensure_frozen gives the sampled value when freezing and the first (= base) value in the dry run.
            sample = {label: ensure_frozen(mutable) for label, mutable in self._choices.items()}
            self.genome = genome_from_parameters(genome, space, sample)
            # Choices that decoding overrode (beyond max_changes) become constants, so the network is the genome.
            limited = limit_changes(genome, space, sample)
            self._live = {label for label in self._choices if limited[label] == sample[label]}
            self.net = self._build_net() if _buildable(self.genome) else None

        def _value(self, label: str, value: Any) -> Any:
            """The mutable behind ``label`` while it decides ``value``, else the constant."""
            return self._choices[label] if label in self._live else value

        def _chosen(self, label: str) -> bool:
            return label in self._live

        def _build_net(self) -> nn.Module:
            """Torch modules whose widths, activations, norms and dropouts are NNI mutables."""
            g = self.genome
            modules: list[tuple[str, nn.Module]] = []
            previous: Any = g.input_size
            for block in g.blocks:
                source = _source_block(self.base_genome, g, block.name)
                width = self._value(choice_label(source.name, "width"), block.width)
                bias = block.attribute_map().get("bias", "true") != "false"
                name = module_name(block.name)
                layers: list[tuple[str, nn.Module]] = [(name, MutableLinear(previous, width, bias=bias))]
                norm_label = choice_label(source.name, "normalization")
                if self._chosen(norm_label):
                    # candidates: the space's normalizations plus the base's own (e.g. batchnorm outside the space)
                    candidates = self._choices[norm_label].values
                    ordered = OrderedDict((n, nn.Identity() if n == NONE else _norm(n, width)) for n in candidates)
                    layers.append((f"{name}_norm", LayerChoice(ordered, label=norm_label)))
                elif block.normalization:
                    layers.append((f"{name}_norm", _norm(block.normalization, width)))
                act_label = choice_label(source.name, "activation")
                if self._chosen(act_label):
                    names = self._choices[act_label].values
                    acts = OrderedDict((a, nn.Identity() if a == NONE else activation_module(a)) for a in names)
                    layers.append((f"{name}_act", LayerChoice(acts, label=act_label)))
                elif block.activation:
                    layers.append((f"{name}_act", activation_module(block.activation)))
                drop_label = choice_label(source.name, "dropout")
                if self._chosen(drop_label) or block.dropout:
                    layers.append((f"{name}_drop", MutableDropout(self._value(drop_label, block.dropout))))
                if block.residual:
                    modules.append((name, Residual(nn.Sequential(OrderedDict(layers)))))
                else:
                    modules.extend(layers)
                previous = width
            head = g.head
            bias = head.attribute_map().get("bias", "true") != "false"
            modules.append((module_name(head.name), MutableLinear(previous, head.width, bias=bias)))
            if head.activation:
                modules.append((f"{module_name(head.name)}_act", activation_module(head.activation)))
            return nn.Sequential(OrderedDict(modules))

        def forward(self, x: Any) -> Any:
            if self.net is None:
                raise RuntimeError(f"a {self.genome.family!r} genome has no torch model here; only MLPs are built")
            return self.net(x)

        def freeze(self, sample: dict[str, Any]) -> Any:
            # Mutables registered with add_mutable need an explicit freeze: rebuild under the sample.
            with model_context(sample):
                return self.__class__(*self.trace_args, **self.trace_kwargs)

    def _norm(normalization: str, width: Any) -> nn.Module:
        if normalization == "layernorm":
            return MutableLayerNorm(width)
        from runwatch.nas.mlp_builder import normalization_module

        return normalization_module(normalization, ensure_frozen(width))

    _MODEL_SPACE_CLASS = GenomeModelSpace
    return GenomeModelSpace


def _buildable(genome: Genome) -> bool:
    return (
        genome.family == "mlp"
        and genome.head.kind == "linear"
        and not genome.fixed_params
        and genome.output_in_scale == 1.0
        and all(b.in_scale == 1.0 for b in genome.blocks)
    )


def _source_block(base: Genome, genome: Genome, name: str) -> Any:
    """The base block whose choices a block follows: itself, or for an appended copy the last base block."""
    by_name = {b.name: b for b in base.blocks}
    return by_name.get(name, base.blocks[-1])


def model_space(genome: Genome, space: SearchSpace) -> Any:
    """An ``nni.nas`` ``ModelSpace`` instance over the edits ``space`` allows around ``genome``.

    Mutables carry the labels of :func:`hpo_search_space`. For MLP genomes the
    space holds a torch network built from ``MutableLinear`` (widths),
    ``LayerChoice`` (activation, normalization) and ``MutableDropout``
    modules; depth and residual connections, which depend on several choices
    at once, are resolved with NNI's ``ensure_frozen`` while the space is
    built. ``model_space(g, s).freeze(sample)`` is a plain torch module whose
    ``genome`` attribute is :func:`genome_from_sample` and whose parameter
    count is that genome's :meth:`~Genome.params`. Other families get the same
    mutables without a network (``net`` is ``None``), which is enough for
    strategies that only need the sample.

    Raises
    ------
    MissingExtraError
        Without NNI.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(8, 2, (Block("fc1", "linear", 16, "relu"),))
    >>> ms = model_space(g, SearchSpace(normalizations=("",), dropouts=(0.0,), depth_changes=(), allow_residual=False))
    >>> sorted(ms.simplify())
    ['fc1:activation', 'fc1:width']
    >>> frozen = ms.freeze({"fc1:width": 32, "fc1:activation": "tanh"})
    >>> sum(p.numel() for p in frozen.parameters()), frozen.genome.params()
    (354, 354)
    """
    _require_nni("model_space")
    with _quiet_nni():
        return _model_space_class()(genome, space)


def genome_from_sample(genome: Genome, space: SearchSpace, sample: dict[str, Any]) -> Genome:
    """The genome a :func:`model_space` sample (label -> value) describes.

    Samples and HPO parameters share labels, so this is
    :func:`genome_from_parameters`. Needs no NNI.
    """
    return genome_from_parameters(genome, space, sample)


def multi_trial(
    genome: Genome,
    space: SearchSpace,
    score: Callable[[Any], float],
    budget: int,
    *,
    strategy: str = "evolution",
    population: int = 10,
    seed: int = 0,
    include_base: bool = False,
) -> list[tuple[Genome, float]]:
    """Run NNI's multi-trial NAS in this process over :func:`model_space`; lower ``score`` is better.

    The strategy (``"evolution"``: ``RegularizedEvolution``; ``"random"``:
    NNI's ``Random``) submits frozen models to a ``SequentialExecutionEngine``
    limited to ``budget`` models; a ``FunctionalEvaluator`` calls
    ``score(frozen_model)`` (a frozen :func:`model_space`: ``.genome`` is its
    genome, ``.net`` its torch network for MLPs) and reports ``-score`` (NNI
    strategies maximize). With ``include_base`` the base genome is trained
    first, through the same engine, as a reference (it counts towards
    ``budget`` and does not join the evolving population). A ``score`` that
    raises or returns a non-finite value is recorded as ``nan`` and reported as
    worse than any finite score, so one diverging trial does not stop a search.

    Returns
    -------
    list of (Genome, float)
        Every evaluated genome with its score (``nan`` for failures), in order.
    """
    _require_nni("multi_trial")
    with _quiet_nni():
        import nni
        from nni.nas.evaluator import FunctionalEvaluator  # imports pytorch_lightning: seconds, once per process
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import RawFormatModelSpace
        from nni.nas.strategy import Random, RegularizedEvolution

    results: list[tuple[Genome, float]] = []

    def evaluate(model: Any) -> None:
        try:
            value = float(score(model))
        except Exception:  # a failing trial is a result, not the end of the search
            _logger.exception("trial %d (%s) failed", len(results), model.genome.key())
            value = math.nan
        results.append((model.genome, value))
        finite = [v for _, v in results if math.isfinite(v)]
        nni.report_final_result(-value if math.isfinite(value) else -_worst(finite))

    space_instance = model_space(genome, space)
    n_choices = max(len(space_instance.simplify()), 1)
    if strategy == "evolution":
        population = max(1, min(population, budget))
        search = RegularizedEvolution(
            population_size=population,
            sample_size=max(1, population // 3),
            mutation_prob=1.0 / n_choices,
            seed=seed,
        )
    elif strategy == "random":
        search = Random(seed=seed)
    else:
        raise ValueError(f"strategy must be 'evolution' or 'random', got {strategy!r}")
    executable = RawFormatModelSpace.from_model(space_instance, FunctionalEvaluator(evaluate))
    engine = SequentialExecutionEngine(max_model_count=budget)
    with _quiet_nni():
        if include_base and budget > 0:
            engine.submit_models(executable.freeze(base_parameters(genome, space)))
        search.initialize(executable, engine)
        try:
            search.run()
        finally:
            engine.shutdown()
    return results


def regularized_evolution(
    genome: Genome,
    space: SearchSpace,
    objective: Objective,
    population: int,
    cycles: int,
    seed: int = 0,
) -> list[tuple[Genome, float]]:
    """Minimize ``objective`` with NNI's ``RegularizedEvolution`` (aging evolution) over :func:`model_space`.

    Runs the strategy on NNI's ``SequentialExecutionEngine`` in this process
    (:func:`multi_trial`) with a ``FunctionalEvaluator`` that maps each frozen
    model back to its genome and reports ``-objective(genome)`` (the strategy
    maximizes). As in Real et al. (2019), ``cycles`` is the total number of
    models evaluated, the first ``population`` of them sampled at random (each
    decoded within ``space.max_changes`` of ``genome``), the rest mutated from
    tournament winners (tournament size ``population // 3``, each choice
    resampled with probability ``1 / number of choices``). NNI never proposes
    one sample twice, so a small space may end the search early; the
    objective runs once per distinct genome.

    Returns
    -------
    list of (Genome, float)
        Every evaluated genome with its (un-negated) value, in evaluation order.

    Raises
    ------
    MissingExtraError
        Without NNI.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(16, 2, (Block("fc1", "linear", 32, "relu"), Block("fc2", "linear", 32, "relu")))
    >>> from runwatch.nas.space import within
    >>> history = regularized_evolution(g, SearchSpace(), lambda x: abs(x.params() - 900), 8, 40, seed=0)
    >>> len(history), all(within(x, g, SearchSpace()) for x, _ in history)
    (40, True)
    """
    cache: dict[str, float] = {}

    def score(model: Any) -> float:
        key = model.genome.key()
        if key not in cache:
            cache[key] = float(objective(model.genome))
        return cache[key]

    return multi_trial(genome, space, score, cycles, strategy="evolution", population=population, seed=seed)
