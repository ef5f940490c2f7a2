"""The fair anchors of issue 14 (a forest on the history, TPE warm-started with it), the regret summaries that
compare against them, the NAS-Bench-201 harness, and the surrogate's choice of model family within the history."""

from __future__ import annotations

import doctest
import gzip
import importlib
import itertools
import math

import numpy as np
import pytest

from bench import nas_common as C
from bench import nas_nb201
from runwatch.nas.surrogate import AVERAGE, FAMILIES, Surrogate, SurrogateConfig


def test_warm_tpe_may_propose_an_imported_configuration_once_its_dedup_is_reset():
    from nni import NoMoreTrialError
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    from runwatch.nas.nni_adapter import warm_tpe_proposals

    space = {"w": {"_type": "choice", "_value": [1, 2, 3]}}
    history = [({"w": w}, float(w)) for w in (1, 2, 3)] * 10  # past TPE's 20 start-up trials: it models at once
    # NNI as it is: import_data marks every imported configuration as tried, so nothing is left to propose
    tuner = TpeTuner(seed=0)
    tuner.update_search_space(space)
    tuner.import_data([{"parameter": p, "value": v} for p, v in history])
    with pytest.raises(NoMoreTrialError):
        tuner.generate_parameters(0)
    # with the reset, the history's best (w=1, lowest loss) can be proposed in the new setting
    proposals = warm_tpe_proposals(space, history, lambda p: float(p["w"]), 3, seed=0)
    assert proposals and {p["w"] for p in proposals} <= {1, 2, 3}
    assert proposals[0]["w"] == 1


def test_summaries_report_median_and_capped_mean_of_the_normalised_regret():
    # one pick far worse than its start (normalised regret 9) dominates the mean, not the median or capped mean
    outs = [C.Outcome("a", "m", 1, 1.0, 0.1, 0.0, True), C.Outcome("b", "m", 1, 1.0, 0.2, 0.0, True),
            C.Outcome("c", "m", 1, 1.0, 9.0, 0.0, True)]
    s = C.summarize(outs)
    assert s.mean_normalized_regret == pytest.approx(3.1)
    assert s.median_normalized_regret == pytest.approx(0.2)
    assert s.capped_mean_normalized_regret == pytest.approx((0.1 + 0.2 + 1.0) / 3)


def _toy_nb201(path, seed: int = 0):
    """Every 3rd cell of the 5^6 space with a known structure: 3x3 convolutions help, 'none' on edge 3 hurts."""
    rng = np.random.default_rng(seed)
    lines = ["config_id,Op0,Op1,Op2,Op3,Op4,Op5,seed_idx,train_time,val_acc,latency,model_size"]
    for n, ops in enumerate(itertools.product(nas_nb201.OPS, repeat=6)):
        if n % 3:
            continue
        acc = 60 + 4 * sum(o == "nor_conv_3x3" for o in ops) + 2 * sum(o == "nor_conv_1x1" for o in ops)
        acc -= 15 * (ops[3] == "none")
        for s in range(2):
            lines.append(f"{n},{','.join(ops)},{s},1.0,{acc + rng.normal(0, 0.5):.3f},0.01,0.1")
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_nb201_harness_runs_every_method_on_real_cells(tmp_path):
    _toy_nb201(tmp_path / nas_nb201.FILE)
    out = tmp_path / "RESULTS.md"
    js = tmp_path / "nb.json"
    rc = nas_nb201.main(["--data-dir", str(tmp_path), "--starts", "2", "--history", "60", "--ks", "1", "3",
                         "--baseline-seeds", "1", "--out", str(out), "--json", str(js)])
    assert rc == 0
    text = out.read_text()
    assert "<!-- nas:nb201:begin -->" in text and "runwatch advisor's surrogate" in text
    import json

    outcomes = json.loads(js.read_text())["outcomes"]
    assert {o["method"] for o in outcomes} == {"advisor", "forest", "tpe_warm", "random"}
    table = nas_nb201.load_nb201(tmp_path / nas_nb201.FILE)
    errors = set((100.0 - table.truth).tolist())
    # every pick is a real cell of the table (TPE may propose a cell this toy table lacks: a wasted look-up)
    assert all(o["best_found"] in errors or (o["method"] == "tpe_warm" and o["best_found"] == math.inf)
               for o in outcomes)
    # the structure is easy: the advisor's surrogate finds a cell better than its poor start with one look-up
    assert all(o["best_found"] < o["start_truth"] for o in outcomes if o["method"] == "advisor")


def _family_history():
    rng = np.random.default_rng(0)
    rows, y = [], []
    for i in range(120):
        a, b, g = rng.uniform(), rng.uniform(), i % 6
        rows.append({"arch/a": a, "arch/b": b, "hp/setting": float(g)})
        y.append(math.exp(-1.0 + a - 2 * (b - 0.5) ** 2 + 0.1 * g + rng.normal(0, 0.05)))
    return rows, y


def test_by_default_the_surrogate_averages_every_model_family():
    rows, y = _family_history()
    s = Surrogate(SurrogateConfig(seed=0, n_members=16)).fit_rows(rows, y, "val/loss")
    assert s.mode == "forest" and s.family == AVERAGE and s.kind == "tree ensembles"
    assert set(s.family_scores) == {AVERAGE}  # cross-validated once, for the intervals and the density term
    queries = [{"arch/a": 0.2, "arch/b": 0.5, "hp/setting": 3.0}, {"arch/a": 0.9, "arch/b": 0.1, "hp/setting": 0.0}]
    members = s.members(queries)
    assert members.shape == (16 * len(FAMILIES), 2)
    alone = [Surrogate(SurrogateConfig(seed=0, n_members=16, families=f, density_weights="0")).fit_rows(
        rows, y, "val/loss", calibrate=False).members(queries).mean(axis=0) for f in FAMILIES]
    if s.density_weight == 0:
        assert np.allclose(members.mean(axis=0), np.mean(alone, axis=0))  # the mean of the families' means
    assert members.mean(axis=0)[0] < members.mean(axis=0)[1]  # the structure: low a, b near 0.5 is best
    with pytest.raises(ValueError, match="family_selection"):
        Surrogate(SurrogateConfig(family_selection="vote")).fit_rows(rows, y, "val/loss")


def test_the_surrogate_can_choose_its_model_family_by_cross_validation_within_the_history():
    rows, y = _family_history()
    s = Surrogate(SurrogateConfig(seed=0, family_selection="cv")).fit_rows(rows, y, "val/loss")
    assert s.mode == "forest" and s.family in FAMILIES
    assert set(s.family_scores) == set(FAMILIES) and s.family == max(s.family_scores, key=s.family_scores.get)
    again = Surrogate(SurrogateConfig(seed=0, family_selection="cv")).fit_rows(rows, y, "val/loss")
    assert again.family == s.family  # deterministic
    fixed = Surrogate(SurrogateConfig(seed=0, families="extra_trees")).fit_rows(rows, y, "val/loss")
    assert fixed.family == "extra_trees" and fixed.kind == "extra trees"
    with pytest.raises(ValueError, match="families: unknown"):
        Surrogate(SurrogateConfig(families="boosting")).fit_rows(rows, y, "val/loss")


@pytest.mark.parametrize("module", ["bench.nas_nb201", "bench.nas_common", "runwatch.nas.search",
                                    "runwatch.nas.features", "runwatch.nas.choices", "runwatch.nas"])
def test_docstring_examples_run(module):
    assert doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS).failed == 0
