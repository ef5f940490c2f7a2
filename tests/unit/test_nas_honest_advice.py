"""Honest advice (issue 14): metric-range-respecting intervals, divergence first, evidence integrity, named
empty answers and the user's module names -- each on a small history built here."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest

from runwatch.nas.advisor import Advisor, AdvisorConfig, Constraints, NoSuggestionError
from runwatch.nas.architecture import Block, Genome
from runwatch.nas.evidence import PeerSummary
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.risk import DivergenceRisk
from runwatch.nas.space import SearchSpace, insert_copies
from runwatch.nas.surrogate import Z80, Surrogate, SurrogateConfig, TargetTransform

FAST = {"use_nni": False, "tpe_trials": 0, "evolution_cycles": 0}
STEPS = np.arange(0, 200)
VAL_STEPS = STEPS[::10]


def _mlp(width: int, depth: int = 2, act: str = "relu", dropout: float = 0.0, n_in: int = 64) -> Genome:
    return Genome(n_in, 10, tuple(Block(f"fc{i}", "linear", width, act, "", dropout) for i in range(1, depth + 1)))


def _curves(train_end: float, val_end: float, *, diverge_at: int | None = None, dead: float = 0.0):
    train = train_end + (2.3 - train_end) * np.exp(-STEPS / 30.0)
    val = val_end + (2.3 - val_end) * np.exp(-VAL_STEPS / 30.0)
    if diverge_at is not None:
        train = train.copy()
        train[diverge_at:] = np.inf
        val = val.copy()
        val[VAL_STEPS >= diverge_at] = np.inf
    series = {"loss": (STEPS, train), "val/loss": (VAL_STEPS, val)}
    series["act/zero_frac/fc1"] = (STEPS, np.full(STEPS.size, dead))
    return series


def _history(n: int = 40, seed: int = 0) -> list[RunObservation]:
    """Runs of one task: the val loss falls with width (up to 128), rises with depth 3; lr 3.0 diverges."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        width = int(rng.choice([8, 16, 32, 64, 128, 256]))
        depth = int(rng.choice([1, 2, 3]))
        lr = float(rng.choice([1e-3, 3e-3, 1e-2, 3.0]))
        val = 0.2 + 0.6 / math.log2(width) + 0.05 * (depth == 3) + rng.normal(0, 0.02)
        train = val * 0.8
        hp = {"lr": lr, "batch_size": 32, "dataset": "digits"}
        if lr >= 3.0:
            runs.append(RunObservation(f"h{i}", _mlp(width, depth), hyperparameters=hp,
                                       series=_curves(train, val, diverge_at=40),
                                       diagnoses=[Diagnosis("nonfinite", metric="loss", step=40)],
                                       outcome={"val/loss": math.inf, "val/acc": math.nan, "loss": math.inf}))
            continue
        acc = min(0.99, 1.05 - val)
        runs.append(RunObservation(f"h{i}", _mlp(width, depth), hyperparameters=hp, series=_curves(train, val),
                                   outcome={"val/loss": val, "val/acc": acc, "loss": train}))
    return runs


@pytest.fixture(scope="module")
def history() -> list[RunObservation]:
    return _history()


# -- 1. honest numbers ---------------------------------------------------------------------------


def test_transforms_follow_the_metrics_range():
    assert TargetTransform.choose("val/loss", [0.2, 3.0]).kind == "log"
    assert TargetTransform.choose("val/acc", [0.5, 1.0]).kind == "logit"
    assert TargetTransform.choose("val/acc", [55.0, 91.0]).hi == 100.0
    assert TargetTransform.choose("val/r2", [-0.4, 0.9]).kind == "identity"
    t = TargetTransform.choose("val/acc", [0.5, 0.99])
    assert np.all(t.inverse([-50.0, 0.0, 50.0]) <= 1.0) and np.all(t.inverse([-50.0, 50.0]) >= 0.0)


def test_accuracy_predictions_and_intervals_never_leave_zero_to_one(history):
    advisor = Advisor(AdvisorConfig(target_metric="val/acc", **FAST)).fit(history)
    assert advisor.surrogate.transform.kind == "logit"
    best = max((r for r in history if math.isfinite(r.outcome["val/acc"])), key=lambda r: r.outcome["val/acc"])
    for s in advisor.suggest(best, Constraints(num_suggestions=5)):
        e = s.effect
        assert 0.0 <= e.lower <= e.predicted <= e.upper <= 1.0, e
        assert e.predicted + Z80 * e.stddev <= e.upper + 1e-9 and e.predicted - Z80 * e.stddev >= e.lower - 1e-9
        assert any(x.startswith("predicted val/acc") and "80% interval" in x and "logit scale" in x for x in s.evidence)


def test_loss_intervals_stay_positive_and_the_symmetric_summary_stays_inside(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = next(r for r in history if r.genome.blocks[0].width == 8 and math.isfinite(r.outcome["val/loss"]))
    for s in advisor.suggest(run, Constraints(num_suggestions=5)):
        e = s.effect
        assert 0.0 < e.lower <= e.predicted <= e.upper, e
        assert e.predicted - Z80 * e.stddev >= e.lower - 1e-9 > 0.0
        assert e.delta == pytest.approx(e.predicted - run.outcome["val/loss"])


def test_intervals_hold_about_80_percent_of_held_out_outcomes():
    """Synthetic loss with known noise: the calibrated 80 % interval covers 70-90 % of fresh draws."""
    rng = np.random.default_rng(3)

    def draw(n):
        x = rng.uniform(0, 1, size=(n, 3))
        y = np.exp(np.log(0.3) + 1.2 * x[:, 0] - 0.8 * x[:, 1] ** 2 + rng.normal(0, 0.25, n))
        return [{"arch/a": a, "arch/b": b, "hp/c": c} for a, b, c in x], y

    rows, y = draw(300)
    s = Surrogate(SurrogateConfig(seed=0)).fit_rows(rows, y, "val/loss")
    q_rows, q_y = draw(2000)
    _, lo, hi = s.interval_rows(q_rows)
    coverage = float(np.mean((q_y >= lo) & (q_y <= hi)))
    assert 0.70 <= coverage <= 0.90, coverage
    assert np.all(lo > 0)


def test_too_small_a_history_predicts_nothing_and_says_so():
    runs = _history(6, seed=1)
    finite = [r for r in runs if math.isfinite(r.outcome["val/loss"])]
    advisor = Advisor(AdvisorConfig(**FAST)).fit(runs)
    assert not advisor.surrogate.can_predict
    out = advisor.suggest(finite[0], Constraints(num_suggestions=2))
    assert out
    for s in out:
        assert math.isnan(s.effect.predicted) and math.isnan(s.effect.delta) and math.isnan(s.effect.stddev)
        assert any(x.startswith(f"not enough history to predict val/loss (n={len(finite)} ") for x in s.evidence)


# -- 2. divergence first -------------------------------------------------------------------------


def _exploded(history) -> RunObservation:
    return RunObservation(
        "boom", _mlp(64, 2), hyperparameters={"lr": 3.0, "batch_size": 32, "dataset": "digits"},
        series=_curves(0.1, 0.3, diverge_at=25), diagnoses=[Diagnosis("nonfinite", metric="loss", step=25)],
        outcome={"val/loss": math.inf, "loss": math.inf},
    )


def test_a_diverged_run_gets_stability_fixes_first_ranked_by_the_risk_model(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = _exploded(history)
    out = advisor.suggest(run, Constraints(num_suggestions=4))
    top = out[0]
    # the history's diverged runs all used lr 3.0: the risk model says a lower learning rate helps most
    assert top.hyperparameters == {"lr": 0.3} and top.genome == run.genome
    assert [c.description for c in top.changes] == ["learning rate lr 3 -> 0.3 (10x lower)"]
    stability = {"lr", "warmup_steps", "init", "grad_clip", "normalization", "residual"}
    assert all(set(s.hyperparameters) <= stability and (s.hyperparameters or s.changes[0].attribute in stability)
               for s in out)
    # no delta against an invented value, and the evidence says why
    assert all(math.isnan(s.effect.delta) for s in out)
    assert all(any("this run's val/loss is inf, so there is no baseline value" in e for e in s.evidence) for s in out)
    assert top.evidence[0] == "stability first: the run diverged: loss became inf at step 25 (last finite value 1.09 at step 24)"
    assert math.isfinite(top.effect.predicted) and 0 < top.effect.lower < top.effect.upper
    # ranked by the risk model: P(diverge) with each fix, lowest first (fixes it cannot judge keep the run's own)
    p = [float(next(e for e in s.evidence if e.startswith("divergence risk")).rsplit("-> ", 1)[1].rstrip("%"))
         for s in out]
    assert p == sorted(p), p


def test_the_base_rate_counts_the_run_itself_when_it_diverged(history):
    n_div = sum(1 for r in history if not math.isfinite(r.outcome["val/loss"]))
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    out = advisor.suggest(_exploded(history), Constraints(num_suggestions=1))
    line = next(e for e in out[0].evidence if e.startswith("divergence risk"))
    assert f"{n_div + 1} of {len(history) + 1} runs diverged, this run among them" in line
    risk = DivergenceRisk().fit(history[:5] + [_exploded(history)]).with_run(_exploded(history))
    assert risk.includes == "" and risk.n_diverged >= 1  # already in the history: not counted twice


def test_a_finished_run_that_did_not_diverge_is_not_treated_as_diverged(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = next(r for r in history if math.isfinite(r.outcome["val/loss"]))
    run = RunObservation(run.run_id + "-x", run.genome, hyperparameters=run.hyperparameters, series=run.series,
                         diagnoses=[Diagnosis("divergence_predicted", metric="loss", step=10)], outcome=run.outcome)
    out = advisor.suggest(run, Constraints(num_suggestions=3))
    assert not any(e.startswith("stability first") for s in out for e in s.evidence)


def test_a_run_whose_loss_blew_up_without_overflowing_gets_stability_fixes_first(history):
    # A loop that stopped at a loss of 1e20, or whose units died in the blow-up and left it at a finite 6.7:
    # no NaN/Inf anywhere, so no nonfinite finding, and its val loss is finite.
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    train = np.concatenate([np.linspace(2.3, 1.6, 20), np.geomspace(10.0, 1e23, 10), np.full(170, 6.7)])
    series = {"loss": (STEPS, train), "val/loss": (VAL_STEPS, np.full(VAL_STEPS.size, 9.5))}
    run = RunObservation("dead", _mlp(64, 2), hyperparameters={"lr": 3.0, "batch_size": 32, "dataset": "digits"},
                         series=series, outcome={"val/loss": 9.5, "loss": 6.7})
    out = advisor.suggest(run, Constraints(num_suggestions=2))
    assert out[0].evidence[0].startswith("stability first: the run diverged: loss ended at 6.7 (step 199)")
    assert out[0].hyperparameters == {"lr": 0.3}


def test_a_budget_below_the_run_leaves_out_its_training_setting_fixes(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = _exploded(history)
    assert advisor.suggest(run, Constraints(num_suggestions=1))[0].hyperparameters == {"lr": 0.3}
    small = run.genome.params() - 1  # the learning-rate fix keeps every parameter: over this budget
    out = advisor.suggest(run, Constraints(num_suggestions=3, max_params=small))
    assert out and all(s.genome.params() <= small for s in out)


def test_no_change_is_given_against_a_metric_the_run_never_logged(history):
    advisor = Advisor(AdvisorConfig(target_metric="val/acc", **FAST)).fit(history)
    run = next(r for r in history if math.isfinite(r.outcome["val/loss"]))
    only_loss = RunObservation("no-acc", run.genome, hyperparameters=run.hyperparameters, series=run.series,
                               outcome={"val/loss": run.outcome["val/loss"], "loss": run.outcome["loss"]})
    out = advisor.suggest(only_loss, Constraints(num_suggestions=2))
    assert all(math.isnan(s.effect.delta) and math.isfinite(s.effect.predicted) for s in out)
    assert all(any("this run has no val/acc of its own" in e for e in s.evidence) for s in out)


def test_a_run_still_running_is_not_described_by_final_numbers(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    done = next(r for r in history if math.isfinite(r.outcome["val/loss"]) and r.genome.blocks[0].width >= 128)
    running = RunObservation("running", done.genome, hyperparameters=done.hyperparameters,
                             series=_curves(0.05, 1.5), outcome={})  # no outcome yet: the store gives none while RUNNING
    lines = [e for s in advisor.suggest(running, Constraints(num_suggestions=3)) for e in s.evidence if "peers'" in e]
    assert lines and all(e.endswith("(so far: the run has not finished)") for e in lines)
    assert not any(e.startswith("final ") for e in lines)


# -- 3. evidence integrity -----------------------------------------------------------------------


def test_only_better_runs_are_cited_as_peer_architectures(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    finite = sorted((r for r in history if math.isfinite(r.outcome["val/loss"])), key=lambda r: r.outcome["val/loss"])
    run = finite[len(finite) // 3]
    for s in advisor.suggest(run, Constraints(num_suggestions=5)):
        for e in s.evidence:
            if e.startswith("the architecture of run "):
                cited = float(e.split("which reached val/loss ")[1].split(" ")[0])
                assert cited < run.outcome["val/loss"], e


def test_medians_ignore_diverged_runs_and_non_finite_values():
    peers = PeerSummary(
        {"a": {"gap": 0.1}, "b": {"gap": 0.2}, "c": {"gap": 0.3}, "x": {"gap": 1.2e28}, "y": {"gap": math.inf}},
        diverged=frozenset({"x"}),
    )
    assert peers.median("gap") == pytest.approx(0.2) and peers.n("gap") == 3


def test_a_statistic_is_a_reason_only_when_it_separates_the_run_on_the_supporting_side():
    peers = PeerSummary({f"p{i}": {"max_dead_frac": v, "params": 1000.0 + 50 * i}
                         for i, v in enumerate([0.45, 0.5, 0.49, 0.52, 0.47, 0.55])})
    assert peers.compare_all(["max_dead_frac"], {"max_dead_frac": 0.487}) == []  # at the median: no reason
    assert peers.compare_all(["max_dead_frac"], {"max_dead_frac": 0.95})  # far above: a reason
    # a large net backs "smaller", never "wider"
    assert peers.compare_all(["params"], {"params": 9e5}, {"params": "above"})
    assert peers.compare_all(["params"], {"params": 9e5}, {"params": "below"}) == []


def test_every_because_of_a_statistic_is_reproducible_from_the_store(history):
    """The peer lines quote the median, the IQR and n: recomputed here from the same runs, they agree."""
    from runwatch.nas.evidence import run_summary

    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = RunObservation("wide", _mlp(256, 3), hyperparameters={"lr": 1e-3, "batch_size": 32, "dataset": "digits"},
                         series=_curves(0.01, 0.9), outcome={"val/loss": 0.9, "loss": 0.01})
    healthy = [r for r in history if math.isfinite(r.outcome["val/loss"])]
    gaps = np.array([run_summary(r)["gap"] for r in healthy])
    found = False
    for s in advisor.suggest(run, Constraints(num_suggestions=3)):
        for e in s.evidence:
            if e.startswith("val/train gap 0."):
                found = True
                q1, med, q3 = np.quantile(gaps, [0.25, 0.5, 0.75])
                assert f"median {med:.3g} (IQR {q1:.3g}–{q3:.3g}, n={gaps.size})" in e, e
    assert found


def test_an_overfitting_runs_top_advice_cuts_capacity_or_regularises(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = RunObservation("big", _mlp(512, 2), hyperparameters={"lr": 1e-3, "batch_size": 32, "dataset": "digits"},
                         series=_curves(0.01, 1.2), diagnoses=[Diagnosis("overfitting", metric="val/loss", step=150)],
                         outcome={"val/loss": 1.2, "loss": 0.01})
    out = advisor.suggest(run, Constraints(num_suggestions=3), SearchSpace(activations=("relu", "gelu", "tanh")))
    top = out[0]
    cuts = [c for c in top.changes if (c.attribute in ("width", "depth") and int(c.after) < int(c.before))
            or (c.attribute == "dropout" and float(c.after) > float(c.before))]
    assert cuts, [c.description for c in top.changes]


# -- 4. clear empty results ----------------------------------------------------------------------


def test_an_empty_answer_names_the_constraint_and_the_smallest_candidate(history):
    advisor = Advisor(AdvisorConfig(**FAST)).fit(history)
    run = next(r for r in history if math.isfinite(r.outcome["val/loss"]))
    with pytest.raises(NoSuggestionError) as err:
        advisor.suggest(run, Constraints(max_params=1000))
    text = str(err.value)
    assert err.value.field == "constraints.max_params" and isinstance(err.value, ValueError)
    assert text.startswith("constraints.max_params: no edit fits the 1,000-parameter budget: the smallest candidate")
    smallest = int(text.split("has ")[1].split(" parameters")[0].replace(",", ""))
    assert smallest > 1000


# -- 5. the user's module names ------------------------------------------------------------------


def test_changes_name_the_users_modules_with_type_and_shape():
    g = Genome(64, 10, (Block("encoder.fc1", "linear", 128, "relu"), Block("encoder.fc2", "linear", 64, "relu")),
               output_name="head")
    assert [c.description for c in g.diff(g.replace_block(0, width=256))] == [
        "encoder.fc1 (Linear 64→128): 128 -> 256 units"
    ]
    seq = Genome(64, 10, (Block("0", "linear", 4, "tanh"), Block("2", "linear", 4, "tanh")), output_name="4")
    wide = seq.with_blocks([Block("0", "linear", 32, "tanh"), Block("2", "linear", 32, "tanh")])
    assert [c.description for c in seq.diff(wide)] == ["layers 0-2 (2 Linear layers): 4 -> 32 units"]
    deeper = [c.description for c in g.diff(insert_copies(g, 1))]
    assert deeper == ["depth 2 -> 3 (add a new Linear block (64→64, ReLU) after encoder.fc2 (Linear 128→64))"]
    assert "new." not in deeper[0]


# -- docstring examples ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["advisor", "evidence", "risk", "stability", "learning", "progress", "surrogate", "transfer", "prior", "genome_diff"]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"runwatch.nas.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
