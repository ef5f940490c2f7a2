"""The architecture advisor on real retraining: apply its top suggestion to corpus runs with capacity problems.

    python -m bench.nas_retrain                         # corpus in bench/corpus/data -> bench/RESULTS.md
    python -m bench.nas_retrain --corpus tests/fixtures/corpus --underfit-candidates 4 --out /tmp/R.md
    python -m bench.nas_retrain --families cnn rnn transformer --underfit-candidates 6 --overfit-candidates 6

Protocol (also written into the RESULTS.md subsection):

- Families (``--families``): mlp, cnn, rnn (GRU and LSTM), transformer; each
  reported apart. Problem runs: the corpus' accepted ``vanishing_gradient``
  runs (deep sigmoid MLPs, tiny initialisations) and ``overfitting`` runs
  (``tiny_data``, with or without noisy labels; GRU/LSTM/transformer taggers
  on a few ``copy`` sequences). No CNN run of the corpus has a capacity fault
  and sequence ones are few, so per non-MLP family ``--overfit-candidates``
  healthy runs are re-specified with the corpus' own tiny-data recipe and kept
  when the corpus' overfitting check accepts them. Underfitting is not a
  corpus fault, so it is made reproducibly: per family, healthy accepted runs,
  drawn with ``--seed``, narrowed to ``--underfit-width`` (MLP: every hidden
  layer through the corpus builder; CNN channels, GRU/LSTM hidden size,
  transformer feed-forward width and heads through :func:`narrowed` and
  ``Genome.build``) and trained; such a run is labelled ``underfitting`` when
  its final training loss is at least ``--underfit-ratio`` times the original
  run's (the rest are dropped and counted).
- What the advisor sees of a run: its genome (``Genome.from_architecture`` of
  ``describe_architecture`` of the spec's model), the hyperparameters a user
  logs (lr, batch size, optimizer, schedule, weight decay, steps, clipping,
  dataset), every SDK metric series (``dbg/`` removed) and runwatch's own
  diagnoses: the run streamed through the default diagnostic suite in batches
  of 50 events, one :class:`Diagnosis` per incident. Outcome = final val loss
  (and val acc). Fault labels are never shown to the advisor.
- History: by-run split in ``--folds`` folds over the problem runs: the
  advisor for a fold is fitted on every accepted corpus run except that
  fold's problem runs (and, for an underfitting run, the healthy run it was
  derived from).
- The advisor's top suggestion is applied to the run's spec (uniform MLP:
  depth / width / activation / dropout; anything else: the genome's own
  ``Genome.build`` through ``train_run(build_model=...)``) and retrained with
  the same seed, data, optimizer, schedule, initialisation and steps. Improved
  = final val loss at least 1% lower than the original run's. A control
  retrains a random edit of the same size (``mutate`` applied as many times as
  the suggestion has changes, seeded) the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python bench/nas_retrain.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus.specs import RunSpec
from bench.corpus.store import RunRecord, load
from bench.nas_common import fmt, markdown_table, pct, write_subsection
from runwatch.nas.architecture import Genome
from runwatch.nas.history import Diagnosis, RunObservation

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS = ROOT / "corpus" / "data"
FIXTURE = ROOT.parent / "tests" / "fixtures" / "corpus"
DEBUGGER_PREFIX = "dbg/"
PROBLEMS = ("vanishing_gradient", "overfitting", "underfitting")
FAMILIES = ("mlp", "cnn", "rnn", "transformer")
FAMILY_OF_ARCH = {"mlp": "mlp", "cnn": "cnn", "gru": "rnn", "lstm": "rnn", "transformer": "transformer"}
RETRAINABLE = tuple(FAMILY_OF_ARCH)  # every family the corpus has is rebuilt by runwatch.nas.family_builders
MIN_IMPROVEMENT = 0.01  # relative: a retrain must lower the final val loss by >= 1% to count as improved
LOGGED_HYPERPARAMETERS = ("lr", "batch_size", "optimizer", "schedule", "weight_decay", "steps", "clip", "dataset")


# -- runs as the advisor sees them --------------------------------------------------------------


def spec_model(spec: RunSpec):
    """The spec's model, freshly built (the corpus' own builder)."""
    import torch

    from bench.corpus.tasks import TASKS, build

    torch.manual_seed(spec.seed)
    return build(spec.arch, TASKS[spec.dataset], spec.depth, spec.width, spec.activation, spec.dropout)


def genome_of(spec: RunSpec) -> Genome | None:
    """``Genome.from_architecture(describe_architecture(model))``; ``None`` when nothing is editable."""
    from runwatch.client.torch_watch import describe_architecture

    try:
        return Genome.from_architecture(describe_architecture(spec_model(spec)))
    except ValueError:
        return None


def runwatch_diagnoses(rec: RunRecord, suite) -> list[Diagnosis]:
    """runwatch's findings on a run: streamed through ``suite``'s monitor in SDK-sized batches, one per incident.

    The stall ticker of ``bench.evaluate.stream`` is left out: a stall says
    nothing about the architecture.
    """
    monitor = suite.monitor(rec.run_id)
    out: dict[str, Diagnosis] = {}
    for block, _, _ in rec.without([DEBUGGER_PREFIX]).blocks(50):
        for alert in monitor.observe_block(block):
            f = alert.finding
            if alert.incident_id not in out:
                out[alert.incident_id] = Diagnosis(f.kind.name.lower(), f.layer, f.metric, int(f.step), float(f.score))
    return list(out.values())


def final_metrics(rec: RunRecord) -> dict[str, float]:
    """Last logged val loss / val acc and the mean training loss over the last ~10% of steps (at most 20)."""
    out = {}
    for name in ("val/loss", "val/acc"):
        _, v = rec.series(name)
        if len(v):
            out[name] = float(v[-1])
    _, loss = rec.series("loss")
    fin = loss[np.isfinite(loss)]
    if len(fin):
        k = max(1, min(20, len(fin) // 10))
        out["train/loss_final"] = float(fin[-k:].mean())
    return out


def observation_of(rec: RunRecord, suite, genome: Genome | None = None) -> RunObservation:
    """A corpus run as a :class:`RunObservation` (diagnoses from runwatch's own detection)."""
    spec = RunSpec.from_dict(rec.meta["spec"])
    plain = rec.without([DEBUGGER_PREFIX])
    hp = {k: getattr(spec, k) for k in LOGGED_HYPERPARAMETERS}
    hp["batch_size"] = float(hp["batch_size"])
    hp["steps"] = float(hp["steps"])
    outcome = {k: v for k, v in final_metrics(rec).items() if k.startswith("val/")}
    return RunObservation(
        run_id=rec.run_id,
        genome=genome if genome is not None else genome_of(spec),
        project=f"corpus-{spec.dataset}",
        hyperparameters=hp,
        series={name: plain.series(name) for name in plain.columns},
        diagnoses=runwatch_diagnoses(rec, suite),
        outcome=outcome,
    )


# -- training specs with a genome ---------------------------------------------------------------


def train(spec: RunSpec, build_model: Callable | None = None) -> RunRecord:
    from bench.corpus.train import train_run

    events, facts = train_run(spec, build_model=build_model)
    return RunRecord.from_events(events, {"run_id": spec.run_id, "spec": spec.to_dict(), **facts})


def uniform_mlp(genome: Genome) -> tuple[int, int, str, float] | None:
    """``(depth, width, activation, dropout)`` when ``genome`` is what the corpus' ``mlp`` builder makes, else None.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> block = Block("fc1", "linear", 32, "relu", "", 0.1)
    >>> uniform_mlp(Genome(8, 2, (block, dataclasses.replace(block, name="fc2"))))
    (2, 32, 'relu', 0.1)
    >>> uniform_mlp(Genome(8, 2, (Block("fc1", "linear", 32, "relu"), Block("fc2", "linear", 16, "relu")))) is None
    True
    """
    b = genome.blocks
    if genome.family != "mlp" or not b or any(x.kind != "linear" or x.normalization or x.residual for x in b):
        return None
    first = b[0]
    if first.activation not in ("relu", "tanh", "sigmoid", "gelu"):
        return None
    if any((x.width, x.activation, x.dropout) != (first.width, first.activation, first.dropout) for x in b):
        return None
    return len(b), int(first.width), first.activation, float(first.dropout)


def apply_genome(spec: RunSpec, genome: Genome, suffix: str) -> tuple[RunSpec, Callable | None]:
    """``spec`` retrained with ``genome``: the spec's own fields when the corpus builder can make it, else a builder.

    Examples
    --------
    >>> from bench.corpus.specs import draw_spec
    >>> spec = draw_spec(0, 0, "healthy")  # wine, 3 x 32 relu, dropout 0.1
    >>> g = genome_of(spec)
    >>> new, builder = apply_genome(spec, g.with_blocks(g.blocks[:2]), "-shallow")
    >>> new.run_id, new.depth, new.width, builder is None
    ('run-0000-shallow', 2, 32, True)
    >>> new, builder = apply_genome(spec, g.replace_block(1, width=64), "-wide2")
    >>> builder.__self__.blocks[1].width  # non-uniform widths: Genome.build makes the model
    64
    """
    new = dataclasses.replace(spec, run_id=f"{spec.run_id}{suffix}", params=dict(spec.params))
    if spec.arch == "mlp":
        u = uniform_mlp(genome)
        if u is not None:
            new.depth, new.width, new.activation, new.dropout = u
            return new, None
        return new, genome.build
    return new, functools.partial(genome.build, spec_stem(spec))


def spec_stem(spec: RunSpec):
    """The :class:`~runwatch.nas.families.Stem` of the spec's model (token embedding, positions, image shape)."""
    from runwatch.nas.family_builders import stem_of_model

    return stem_of_model(spec_model(spec))


def family_of_spec(spec: RunSpec) -> str:
    """The report's family of a spec: mlp, cnn, rnn (GRU and LSTM) or transformer."""
    return FAMILY_OF_ARCH.get(spec.arch, spec.arch)


def underfitting_spec(spec: RunSpec, width: int) -> RunSpec:
    """A healthy MLP spec with every hidden layer ``width`` units wide: the reproducible underfitting run.

    Examples
    --------
    >>> from bench.corpus.specs import draw_spec
    >>> uf = underfitting_spec(draw_spec(0, 0, "healthy"), 2)
    >>> uf.run_id, uf.width, uf.fault, uf.params["source_run"]
    ('uf-run-0000', 2, 'underfitting', 'run-0000')
    """
    return dataclasses.replace(
        spec,
        run_id=f"uf-{spec.run_id}",
        width=width,
        fault="underfitting",
        cause=f"narrow_width_{width}",
        params=dict(spec.params, source_run=spec.run_id),
    )


def narrowed(genome: Genome, width: int, model_width: int = 0) -> Genome:
    """``genome`` with its capacity cut to ``width``: every conv / recurrent / linear hidden block that wide.

    A transformer's attention is cut to one head and, by default, its feed-forward layers narrowed, its model
    width kept; with ``model_width`` its model width (``d_model``: embedding, attention and outputs) is cut to
    that instead and the feed-forward kept.

    Examples
    --------
    >>> from runwatch.nas.architecture import Block
    >>> g = Genome(16, 9, (Block("rnn", "rnn", 64, layer_type="GRU"),), output_name="head", family="rnn")
    >>> narrowed(g, 2).blocks[0].width
    2
    """
    from runwatch.nas.families import model_width as resized, transformer_layers

    layers = transformer_layers(genome) if genome.family == "transformer" else None
    blocks = list(genome.blocks)
    if layers is not None:
        for attention, ff_in, _ in layers:
            attributes = dict(blocks[attention].attributes, num_heads="1")
            blocks[attention] = dataclasses.replace(blocks[attention], attributes=tuple(sorted(attributes.items())))
            if not model_width:
                blocks[ff_in] = dataclasses.replace(blocks[ff_in], width=width)
        if model_width:
            narrow = resized(genome.with_blocks(blocks), model_width)
            if narrow is None:
                raise ValueError(f"model_width: cannot give this transformer model width {model_width}")
            return narrow
    else:
        blocks = [dataclasses.replace(b, width=width) for b in blocks]
    return genome.with_blocks(blocks)


def tiny_data_spec(spec: RunSpec, seed: int) -> RunSpec:
    """A healthy run re-specified as the corpus makes overfitting runs: a tiny training set, Adam, long, no regulariser.

    The corpus' own recipe (``bench.corpus.specs``): 30-100 digits images, or 8-32 copy sequences at
    width 64 (48 for a transformer).
    """
    from bench.corpus.specs import _tiny_data_training

    rng = np.random.default_rng([seed, 9, spec.index])
    new = dataclasses.replace(
        spec,
        run_id=f"of-{spec.run_id}",
        fault="overfitting",
        cause="tiny_data",
        params=dict(spec.params, source_run=spec.run_id),
    )
    from bench.corpus.tasks import TASKS

    if TASKS[new.dataset].sequence:
        new.dataset = "copy"
        new.train_subset = int(rng.integers(8, 33))
        new.width = 64 if new.arch != "transformer" else 48
    else:
        new.train_subset = int(rng.integers(30, 101))
    _tiny_data_training(rng, new)
    return new


# -- the evaluation -----------------------------------------------------------------------------


@dataclass
class Target:
    """A problem run to improve."""

    problem: str
    cause: str
    spec: RunSpec
    record: RunRecord
    source: str = ""  # the healthy run an underfitting run was derived from
    fold: int = 0
    genome: Genome | None = None  # the run's genome when the spec's own builder does not make it (narrowed runs)

    @property
    def family(self) -> str:
        return family_of_spec(self.spec)


@dataclass
class RetrainResult:
    run_id: str
    problem: str
    cause: str
    dataset: str
    before: dict[str, float]
    after: dict[str, float] = field(default_factory=dict)
    control: dict[str, float] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    predicted_delta: float = math.nan
    builder: str = ""
    note: str = ""
    diagnoses: list[str] = field(default_factory=list)
    family: str = "mlp"

    @property
    def improved(self) -> bool:
        """Final val loss at least :data:`MIN_IMPROVEMENT` (relative) below the original's."""
        return improved_by(self.before, self.after)

    @property
    def control_improved(self) -> bool:
        return improved_by(self.before, self.control)


def improved_by(before: dict[str, float], after: dict[str, float], min_improvement: float = MIN_IMPROVEMENT) -> bool:
    """Whether ``after``'s final val loss is at least ``min_improvement`` (relative) below ``before``'s.

    A deterministic retrain that changes the loss by a rounding error is not an
    improvement; a retrain that diverged (no finite val loss) never is.

    Examples
    --------
    >>> improved_by({"val/loss": 1.0}, {"val/loss": 0.98}), improved_by({"val/loss": 1.0}, {"val/loss": 0.995})
    (True, False)
    >>> improved_by({"val/loss": 1.0}, {"val/loss": float("nan")}), improved_by({"val/loss": 1.0}, {})
    (False, False)
    """
    b, a = before.get("val/loss", math.nan), after.get("val/loss", math.nan)
    return bool(math.isfinite(a) and math.isfinite(b) and a < b - min_improvement * abs(b))


def load_runs(corpus: Path) -> list[RunRecord]:
    runs = [load(p) for p in sorted((corpus / "runs").glob("*.npz"))]
    return [r for r in runs if r.meta["labels"]["accepted"]]


def select_targets(
    runs: Sequence[RunRecord],
    *,
    underfit_candidates: int,
    underfit_width: int,
    underfit_ratio: float,
    seed: int,
    underfit_model_width: int = 0,
    folds: int,
    max_per_problem: int = 0,
    problems: Sequence[str] = PROBLEMS,
    families: Sequence[str] = ("mlp",),
    overfit_candidates: int = 0,
    progress: bool = False,
) -> tuple[list[Target], dict[str, Counter]]:
    """Problem runs of the corpus plus the runs made from healthy ones; and what was skipped, why.

    Per family in ``families``: the corpus' own problem runs; ``underfit_candidates`` healthy runs narrowed
    (MLPs through the corpus builder, every hidden layer ``underfit_width`` wide; other families through
    :func:`narrowed` and ``Genome.build``), kept when their final training loss is ``underfit_ratio`` x the
    original's; and, for the non-MLP families, ``overfit_candidates`` healthy runs re-specified with the
    corpus' tiny-data recipe (:func:`tiny_data_spec`), kept when the corpus' own overfitting check accepts them.
    """
    from bench.corpus.labels import label_run

    skipped: dict[str, Counter] = defaultdict(Counter)
    targets: list[Target] = []
    for rec in runs:
        spec = RunSpec.from_dict(rec.meta["spec"])
        if spec.fault not in problems or family_of_spec(spec) not in families:
            continue
        if spec.arch not in RETRAINABLE:
            skipped[spec.fault][f"{spec.arch} (no builder the retraining can rebuild it with)"] += 1
            continue
        targets.append(Target(spec.fault, spec.cause, spec, rec))

    def note(what: str, t0: float) -> None:
        if progress:
            print(f"  {what} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    healthy = [r for r in runs if r.meta["spec"]["fault"] == "healthy"]
    for fam in families:
        pool = [r for r in healthy if family_of_spec(RunSpec.from_dict(r.meta["spec"])) == fam]
        # the MLP draw predates the other families: keep its generator so its runs stay the same
        rng = np.random.default_rng([seed, 7] if fam == "mlp" else [seed, 7, FAMILIES.index(fam)])
        order = rng.permutation(len(pool))[: underfit_candidates if "underfitting" in problems else 0]
        for i in sorted(order.tolist()):
            src = pool[i]
            source = RunSpec.from_dict(src.meta["spec"])
            genome, builder = None, None
            if fam == "mlp":
                spec = underfitting_spec(source, underfit_width)
            else:
                base = genome_of(source)
                if base is None:
                    continue
                model = underfit_model_width if fam == "transformer" else 0
                genome = narrowed(base, underfit_width, model_width=model)
                cause = f"narrow_model_{model}" if model else f"narrow_{underfit_width}"
                spec = dataclasses.replace(underfitting_spec(source, underfit_width), width=source.width, cause=cause)
                builder = functools.partial(genome.build, spec_stem(source))
            t0 = time.perf_counter()
            rec = train(spec, builder)
            ratio = final_metrics(rec).get("train/loss_final", math.inf) / final_metrics(src).get(
                "train/loss_final", math.nan
            )
            note(f"underfit candidate {spec.run_id} ({fam}): train-loss ratio {ratio:.2f}", t0)
            if ratio >= underfit_ratio:
                targets.append(Target("underfitting", spec.cause, spec, rec, source=src.run_id, genome=genome))
            else:
                skipped["underfitting"][
                    f"{fam} candidate(s) whose train loss stayed < {underfit_ratio:g}x the original's"
                ] += 1
        if fam == "mlp" or "overfitting" not in problems or not overfit_candidates:
            continue
        orng = np.random.default_rng([seed, 10, FAMILIES.index(fam)])
        for i in sorted(orng.permutation(len(pool))[:overfit_candidates].tolist()):
            src = pool[i]
            spec = tiny_data_spec(RunSpec.from_dict(src.meta["spec"]), seed)
            t0 = time.perf_counter()
            rec = train(spec)
            accepted = bool(label_run(rec)["accepted"])
            note(f"overfit candidate {spec.run_id} ({fam}): {'accepted' if accepted else 'val loss did not rise'}", t0)
            if accepted:
                targets.append(Target("overfitting", spec.cause, spec, rec, source=src.run_id))
            else:
                skipped["overfitting"][f"{fam} tiny-data candidate(s) whose val loss did not rise 20%"] += 1
    if max_per_problem:
        kept = []
        for fam in FAMILIES:
            for p in PROBLEMS:
                of_p = [t for t in targets if t.problem == p and t.family == fam]
                if len(of_p) > max_per_problem:
                    pick = set(
                        np.random.default_rng(
                            [seed, 8, PROBLEMS.index(p)] + ([] if fam == "mlp" else [FAMILIES.index(fam)])
                        )
                        .choice(len(of_p), max_per_problem, replace=False)
                        .tolist()
                    )
                    skipped[p][f"{fam} not sampled (--max-per-problem {max_per_problem})"] += len(of_p) - len(pick)
                    of_p = [t for j, t in enumerate(of_p) if j in pick]
                kept += of_p
        targets = kept
    targets.sort(key=lambda t: t.record.run_id)
    for i, t in enumerate(targets):
        t.fold = i % folds
    return targets, skipped


def random_edit(genome: Genome, n_edits: int, space, seed: int) -> Genome:
    """``n_edits`` successive random edits of ``genome`` in ``space``.

    Each is ``mutate(..., grouped=True)``: a single-block edit or a group edit (one attribute change on a run of
    adjacent blocks), the same vocabulary in which the advisor's suggestion counts its edits.
    """
    from runwatch.nas.space import mutate

    rng = np.random.default_rng(seed)
    g = genome
    for _ in range(max(1, n_edits)):
        g = mutate(g, space, rng, grouped=True)
    return g


def evaluate(
    runs: Sequence[RunRecord],
    targets: Sequence[Target],
    *,
    folds: int,
    seed: int,
    control: bool = True,
    advisor_config: dict | None = None,
    space: dict | None = None,
    progress: bool = False,
) -> tuple[list[RetrainResult], dict[str, float]]:
    """Fit one advisor per fold, apply each target's top suggestion, retrain, compare.

    ``space`` holds :class:`~runwatch.nas.space.SearchSpace` overrides (default: the advisor's default space),
    used for the suggestions and for the random-edit control alike.
    """
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig
    from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints, NoSuggestionError
    from runwatch.nas.space import SearchSpace, edit_distance

    search_space = SearchSpace.from_dict(space or {})

    suite = DiagnosticSuite(SuiteConfig())
    seconds: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    corpus_obs = {r.run_id: observation_of(r, suite) for r in runs}
    target_obs = {
        t.record.run_id: corpus_obs.get(t.record.run_id) or observation_of(t.record, suite, t.genome) for t in targets
    }
    seconds["observations"] = time.perf_counter() - t0
    results: list[RetrainResult] = []
    for fold in range(folds):
        in_fold = [t for t in targets if t.fold == fold]
        if not in_fold:
            continue
        excluded = {t.record.run_id for t in in_fold} | {t.source for t in in_fold if t.source}
        history = [o for rid, o in corpus_obs.items() if rid not in excluded]
        t0 = time.perf_counter()
        advisor = Advisor(AdvisorConfig(**{"seed": seed, **(advisor_config or {})})).fit(history)
        seconds["fit"] += time.perf_counter() - t0
        for t in in_fold:
            obs = target_obs[t.record.run_id]
            res = RetrainResult(
                t.record.run_id,
                t.problem,
                t.cause,
                t.spec.dataset,
                final_metrics(t.record),
                diagnoses=sorted({d.kind for d in obs.diagnoses}),
                family=t.family,
            )
            results.append(res)
            if obs.genome is None:
                res.note = "no genome"
                continue
            t0 = time.perf_counter()
            try:
                suggestions = advisor.suggest(obs, Constraints(num_suggestions=3), search_space)
            except NoSuggestionError as exc:  # no edit fits: the advisor names the constraint
                suggestions, res.note = [], str(exc)
            seconds["suggest"] += time.perf_counter() - t0
            # A stability fix (a diverged run: learning rate, warm-up, clipping) changes the training, not the
            # genome; this harness retrains genomes, so it takes the advisor's best architecture edit.
            edits = [s for s in suggestions if not s.hyperparameters]
            if not edits:
                res.note = res.note or ("no suggestion" if not suggestions else "only training-setting fixes")
                continue
            top = edits[0]
            res.changes = [c.description for c in top.changes]
            res.predicted_delta = float(top.effect.delta)
            spec, builder = apply_genome(t.spec, top.genome, "-advised")
            res.builder = "corpus mlp" if builder is None else "Genome.build"
            t0 = time.perf_counter()
            res.after = final_metrics(train(spec, builder))
            seconds["retrain"] += time.perf_counter() - t0
            if control:
                n_edits = edit_distance(obs.genome, top.genome)
                rand = random_edit(
                    obs.genome, n_edits, search_space, seed=zlib.crc32(f"{seed}/{t.record.run_id}".encode())
                )
                spec_c, builder_c = apply_genome(t.spec, rand, "-random")
                t0 = time.perf_counter()
                res.control = final_metrics(train(spec_c, builder_c))
                seconds["control retrain"] += time.perf_counter() - t0
            if progress:
                print(
                    f"  [{fold}] {res.run_id} {t.problem}: val {fmt(res.before.get('val/loss'))} -> "
                    f"{fmt(res.after.get('val/loss'))} (random edit {fmt(res.control.get('val/loss'))}) "
                    f"{'; '.join(res.changes)}",
                    file=sys.stderr,
                    flush=True,
                )
    return results, dict(seconds)


# -- report -------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def _rel_change(r: RetrainResult, which: str = "after") -> float:
    b, a = r.before.get("val/loss", math.nan), getattr(r, which).get("val/loss", math.nan)
    return (a - b) / b if b > 0 and math.isfinite(a) else math.nan


def problem_rows(results: Sequence[RetrainResult]) -> list[list[str]]:
    rows = []
    groups = [(p, [r for r in results if r.problem == p]) for p in PROBLEMS] + [("all", list(results))]
    for name, rs in groups:
        if not rs:
            continue
        n = len(rs)
        imp = sum(r.improved for r in rs)
        ctl = [r for r in rs if r.control]
        acc = [r for r in rs if "val/acc" in r.before]
        changes = Counter(c.split(":")[-1].strip() if ":" in c else c for r in rs for c in r.changes)
        n_ctl = sum(r.control_improved for r in ctl)
        changes_rel = [_rel_change(r) for r in rs]
        acc_before, acc_after = (
            _mean([r.before["val/acc"] for r in acc]),
            _mean([r.after.get("val/acc", math.nan) for r in acc]),
        )
        rows.append(
            [
                name,
                n,
                f"{imp}/{n} ({pct(imp / n)})",
                f"{n_ctl}/{len(ctl)} ({pct(n_ctl / len(ctl))})" if ctl else "–",
                f"{100 * float(np.nanmedian(changes_rel)):+.1f}%" if any(map(math.isfinite, changes_rel)) else "–",
                f"{fmt(acc_before, 3)} -> {fmt(acc_after, 3)}" if acc else "–",
                "yes" if imp / n >= 0.8 else "no",
                ", ".join(f"{c} ({k})" for c, k in changes.most_common(3)),
            ]
        )
    return rows


def family_rows(results: Sequence[RetrainResult]) -> list[list[str]]:
    """:func:`problem_rows` per family (mlp, cnn, rnn = GRU/LSTM, transformer), then over every family."""
    rows = []
    present = [f for f in FAMILIES if any(r.family == f for r in results)]
    for fam in present:
        rows += [[fam, *row] for row in problem_rows([r for r in results if r.family == fam])]
    if len(present) > 1:
        rows += [["all", *row] for row in problem_rows(results)]
    return rows


def report(
    results: Sequence[RetrainResult],
    skipped: dict[str, Counter],
    seconds: dict[str, float],
    args: argparse.Namespace,
    command: str,
    corpus: Path,
    n_history: int,
    wall_s: float,
) -> str:
    label, note = getattr(args, "label", ""), getattr(args, "note", "")
    title = "### Real retraining (`bench/nas_retrain.py`)" + (f" — {label}" if label else "")
    lines = [
        title,
        "",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {wall_s:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"; 1 torch thread). Corpus: `{corpus}`, "
        f"{n_history} accepted runs.",
        "",
        *([note, ""] if note else []),
        (
            f"Protocol. Families: {', '.join(args.families)} (rnn = GRU and LSTM). Problem runs: the corpus' accepted "
            "vanishing_gradient (deep sigmoid MLPs, tiny initialisations) and overfitting (tiny training sets, some "
            "with noisy labels; GRU/LSTM/transformer runs on 8-32 copy sequences) runs of those families. Underfitting "
            f"is not a corpus fault: per family, {args.underfit_candidates} healthy runs (drawn with seed {args.seed}) "
            f"were narrowed (MLP: every hidden layer {args.underfit_width} units wide, corpus builder; CNN: every "
            f"convolution {args.underfit_width} channels; GRU/LSTM: hidden size {args.underfit_width}; transformer: "
            + (f"model width (d_model: embedding, attention, outputs) {args.underfit_model_width} and one head, "
               "feed-forward kept; " if args.underfit_model_width else
               f"feed-forward width {args.underfit_width} and one head, model width kept; ")
            + "these rebuilt with `Genome.build`) and trained; one is labelled "
            f"underfitting when its final training loss is >= {args.underfit_ratio:g}x the original run's. The corpus "
            "has no CNN with a capacity fault and few sequence ones: per non-MLP family, "
            f"{args.overfit_candidates} healthy runs were re-specified with the corpus' tiny-data recipe (30-100 "
            "digits images or 8-32 copy sequences, Adam, no regulariser, 600-1000 steps) and kept as overfitting "
            "runs when the corpus' own check accepts them (val loss 20% above its best). The "
            "advisor sees the run's genome (`Genome.from_architecture(describe_architecture(model))`), the "
            "hyperparameters a user logs (lr, batch size, optimizer, schedule, weight decay, steps, clipping, "
            "dataset), every SDK metric series (`dbg/` removed) and runwatch's own diagnoses (the run streamed "
            "through the default diagnostic suite, one diagnosis per incident); never the fault label. History: "
            f"by-run split in {args.folds} folds: each fold's advisor (`AdvisorConfig` defaults"
            + (f" with `{args.advisor_config}`" if json.loads(args.advisor_config) else "")
            + ") is fitted on all accepted corpus runs except the fold's problem runs (and the healthy source of an "
            "underfitting run). Search space: `SearchSpace` defaults"
            + (f" with `{args.space}`" if json.loads(args.space) else "")
            + " (widths x0.5 / x2 and, for a layer narrower than sqrt(inputs x outputs), that width; relu/gelu/tanh/"
            "silu, dropout 0-0.5, LayerNorm, depth +-1, residuals; per family also stacked GRU/LSTM layers +-1, attention "
            "heads x2 / /2 (dividing the width), a token transformer's model width x0.5 / x2 and whole transformer encoder layers removed or repeated; at most 3 edits, one edit = one attribute change "
            "on one block or on a run of adjacent blocks, or one run of blocks added or removed). The top suggestion "
            "is applied to the spec "
            "(uniform MLP: depth/width/activation/dropout through the corpus builder; otherwise `Genome.build` via "
            "`train_run(build_model=...)`: CNN, GRU/LSTM and transformer genomes are rebuilt by "
            "`runwatch.nas.family_builders` with the stem of the run's model) and retrained with the same seed, data, optimizer, schedule, "
            "initialisation and steps. Improved = final val loss at least "
            f"{MIN_IMPROVEMENT:.0%} below the original run's (the retrains are deterministic; smaller changes are "
            "rounding, e.g. an edit of a layer whose gradients vanish anyway). Control: a random edit of the same "
            "size (`mutate(..., grouped=True)` applied as many times as the suggestion has edits, in the same space: "
            "attribute, then one block or a run of blocks, then the value, each drawn evenly), retrained the same way."
        ),
        "",
    ]
    lines += markdown_table(
        [
            "family",
            "problem",
            "runs",
            "improved (advisor)",
            "improved (random edit)",
            "median val-loss change",
            "val acc before -> after",
            ">= 80%",
            "most frequent suggested changes",
        ],
        family_rows(results),
        "llrrrrrll",
    )
    lines.append("")
    strict = sum(r.after.get("val/loss", math.inf) < r.before.get("val/loss", math.nan) for r in results)
    strict_c = sum(r.control.get("val/loss", math.inf) < r.before.get("val/loss", math.nan) for r in results)
    lines += [
        (
            f"Any decrease of the final val loss, however small: advisor {strict}/{len(results)}, random edit "
            f"{strict_c}/{sum(bool(r.control) for r in results)}."
        ),
        "",
    ]
    predicted = [r for r in results if r.changes and r.predicted_delta < 0]
    n_suggested = sum(bool(r.changes) for r in results)
    lines += [
        (
            f"The advisor predicted a lower val loss (Δ < 0) for {len(predicted)} of {n_suggested} top suggestions; "
            f"{sum(r.improved for r in predicted)} of those improved by >= {MIN_IMPROVEMENT:.0%}."
        ),
        "",
    ]
    skip = [f"{p}: " + ", ".join(f"{n} {why}" for why, n in c.items()) for p, c in skipped.items() if c]
    if skip:
        lines += ["Skipped: " + "; ".join(skip) + ".", ""]
    notes = Counter(r.note for r in results if r.note)
    if notes:
        lines += ["Runs without a retrain: " + ", ".join(f"{n} {k}" for k, n in notes.items()) + ".", ""]
    lines += ["<details><summary>Per run</summary>", ""]
    lines += markdown_table(
        [
            "run",
            "problem (cause)",
            "dataset",
            "runwatch diagnoses",
            "top suggestion",
            "predicted Δ",
            "val loss before",
            "after",
            "random edit",
            "val acc before -> after",
        ],
        [
            [
                r.run_id,
                f"{r.family}: {r.problem} ({r.cause})",
                r.dataset,
                ", ".join(r.diagnoses) or "–",
                "; ".join(r.changes) or r.note,
                fmt(r.predicted_delta),
                fmt(r.before.get("val/loss", math.nan)),
                fmt(r.after.get("val/loss", math.nan)),
                fmt(r.control.get("val/loss", math.nan)),
                f"{fmt(r.before['val/acc'])} -> {fmt(r.after.get('val/acc', math.nan))}"
                if "val/acc" in r.before
                else "–",
            ]
            for r in results
        ],
        "llllllrrrr",
    )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--corpus", type=Path, default=None, help=f"default {DEFAULT_CORPUS} if present, else the test fixture"
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "RESULTS.md", help="markdown file whose 'retrain' subsection is replaced"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every result as JSON")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--underfit-candidates", type=int, default=20)
    ap.add_argument("--underfit-width", type=int, default=2)
    ap.add_argument("--underfit-ratio", type=float, default=2.0)
    ap.add_argument(
        "--underfit-model-width",
        type=int,
        default=0,
        help="narrow transformers' model width (d_model) to this, feed-forward kept (0: narrow the feed-forward)",
    )
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument(
        "--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES), help="rnn = GRU and LSTM runs"
    )
    ap.add_argument(
        "--overfit-candidates",
        type=int,
        default=6,
        help="healthy runs per non-MLP family re-specified with the corpus' tiny-data recipe",
    )
    ap.add_argument("--max-per-problem", type=int, default=0, help="sample at most this many runs per problem (0: all)")
    ap.add_argument("--no-control", action="store_true", help="skip the random-edit control retrains")
    ap.add_argument("--advisor-config", type=str, default="{}", help="JSON of AdvisorConfig overrides")
    ap.add_argument("--space", type=str, default="{}", help="JSON of SearchSpace overrides (default: its defaults)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--section",
        default="retrain",
        help="name of the RESULTS.md advisor subsection to write (e.g. retrain-heldout; default retrain)",
    )
    ap.add_argument("--label", default="", help="appended to the subsection's title (e.g. 'held-out corpus seed 7')")
    ap.add_argument(
        "--note", default="", help="a paragraph placed right after the title (e.g. how the corpus was made)"
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    corpus = args.corpus or (DEFAULT_CORPUS if (DEFAULT_CORPUS / "labels.csv").exists() else FIXTURE)
    runs = load_runs(corpus)
    print(f"corpus {corpus}: {len(runs)} accepted runs", file=sys.stderr)
    targets, skipped = select_targets(
        runs,
        underfit_candidates=args.underfit_candidates,
        underfit_width=args.underfit_width,
        underfit_ratio=args.underfit_ratio,
        underfit_model_width=args.underfit_model_width,
        seed=args.seed,
        folds=args.folds,
        max_per_problem=args.max_per_problem,
        problems=args.problems,
        families=args.families,
        overfit_candidates=args.overfit_candidates,
        progress=True,
    )
    print(f"{len(targets)} problem runs: {dict(Counter(t.problem for t in targets))}", file=sys.stderr)
    results, seconds = evaluate(
        runs,
        targets,
        folds=args.folds,
        seed=args.seed,
        control=not args.no_control,
        advisor_config=json.loads(args.advisor_config),
        space=json.loads(args.space),
        progress=True,
    )
    command = "python -m bench.nas_retrain" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    shown = corpus.relative_to(ROOT.parent) if corpus.is_relative_to(ROOT.parent) else corpus
    text = report(results, skipped, seconds, args, command, shown, len(runs), time.perf_counter() - started)
    write_subsection(args.out, args.section, text)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1, default=float))
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
