"""The architecture-advisor benchmarks (bench/nas_*.py): metrics on hand-checkable cases, the RESULTS.md
section, the FCNet table and harness on a small synthetic table, and the retraining hook on fixture runs."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math

import numpy as np
import pytest

from bench import nas_common as C
from bench import nas_fcnet, nas_retrain
from bench.nas_fcnet_table import arch_key_of, load_table, write_synthetic_table

# -- metrics ------------------------------------------------------------------------------------


def test_best_of_first_counts_only_the_first_k_finite_look_ups():
    vals = [0.9, math.inf, 0.4, float("nan"), 0.1]
    assert C.best_of_first(vals, 1) == 0.9
    assert C.best_of_first(vals, 2) == 0.9  # the unevaluable look-up is wasted
    assert C.best_of_first(vals, 4) == 0.4
    assert C.best_of_first(vals, 10) == 0.1
    assert C.best_of_first([math.inf], 3) == math.inf


def test_regret_and_normalised_regret_on_hand_checked_numbers():
    # start 1.0, best of the space 0.2: the possible improvement is 0.8
    assert C.regret(0.6, 0.2) == pytest.approx(0.4)
    assert C.normalized_regret(0.6, 1.0, 0.2) == pytest.approx(0.5)
    assert C.normalized_regret(0.2, 1.0, 0.2) == 0.0
    assert C.normalized_regret(1.2, 1.0, 0.2) == pytest.approx(1.25)  # worse than the start
    assert C.normalized_regret(math.inf, 1.0, 0.2) == 1.0  # nothing evaluable = no better than the start
    assert math.isnan(C.normalized_regret(0.5, 0.2, 0.2))  # nothing to improve
    assert C.improved(0.99, 1.0) and not C.improved(1.0, 1.0)


def test_summarize_pools_starts_and_seeds_and_counts_improvable_starts():
    O = C.Outcome
    outs = [
        # start a (improvable: space best 0.2 < 1.0), two seeds: improved once
        O("a", "tpe", 3, 1.0, 0.6, 0.2, True, seed=0),
        O("a", "tpe", 3, 1.0, 1.4, 0.2, True, seed=1),
        # start b (not improvable: it is the best of its space), two seeds: never improved
        O("b", "tpe", 3, 0.5, 0.7, 0.5, False, seed=0),
        O("b", "tpe", 3, 0.5, math.inf, 0.5, False, seed=1),
    ]
    s = C.summarize(outs)
    assert (s.n, s.starts, s.improvable, s.unevaluable) == (4, 2, 2, 1)
    assert s.improvement_rate == 0.25
    assert s.improved_of_improvable == 0.5
    assert s.mean_regret == pytest.approx((0.4 + 1.2 + 0.2) / 3)  # the inf outcome has no regret
    assert s.median_regret == pytest.approx(0.4)
    assert s.mean_normalized_regret == pytest.approx((0.5 + 1.5) / 2)
    with pytest.raises(ValueError, match="one method at one k"):
        C.summarize(outs + [O("a", "tpe", 1, 1.0, 0.6, 0.2, True)])


def test_paired_comparison_averages_a_randomised_method_over_its_seeds_first():
    O = C.Outcome
    outs = [
        O("s1", "advisor", 1, 1.0, 0.3, 0.1, True),
        O("s1", "tpe", 1, 1.0, 0.2, 0.1, True, seed=0),
        O("s1", "tpe", 1, 1.0, 0.6, 0.1, True, seed=1),  # tpe mean 0.4: the advisor wins
        O("s2", "advisor", 1, 1.0, 0.5, 0.1, True),
        O("s2", "tpe", 1, 1.0, 0.5, 0.1, True, seed=0),  # tie
        O("s3", "advisor", 1, 1.0, math.inf, 0.1, True),
        O("s3", "tpe", 1, 1.0, 0.9, 0.1, True, seed=0),  # an unevaluable advisor look-up loses
        O("s4", "advisor", 1, 1.0, 0.1, 0.1, True),  # tpe did not run on s4: not counted
        O("s1", "advisor", 3, 1.0, 0.1, 0.1, True),  # another k: not counted
    ]
    assert C.paired_comparison(outs, "advisor", "tpe", 1) == (1, 1, 1)


# -- the RESULTS.md section ---------------------------------------------------------------------


def test_subsections_replace_only_themselves_and_evaluate_keeps_the_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Detection quality\n\ntable\n")
    C.write_subsection(path, "fcnet", "fcnet v1")
    C.write_subsection(path, "retrain", "retrain v1")
    C.write_subsection(path, "fcnet", "fcnet v2")
    text = path.read_text()
    assert text.startswith("# Detection quality\n\ntable\n")
    assert "fcnet v2" in text and "fcnet v1" not in text and "retrain v1" in text
    assert text.index("fcnet v2") < text.index("retrain v1")
    assert text.count(C.NAS_BEGIN) == 1 and text.count(C.NAS_END) == 1
    # bench/evaluate.py rewrites the file from scratch and keeps the advisor section (with_nas_section)
    regenerated = C.with_nas_section("# Detection quality\n\nnew table\n", text)
    assert regenerated.startswith("# Detection quality\n\nnew table\n")
    assert C.nas_section(regenerated) == C.nas_section(text)


def test_bench_evaluate_regenerates_results_but_keeps_the_advisor_section(tmp_path):
    from bench import evaluate

    path = tmp_path / "RESULTS.md"
    path.write_text("# stale detection results\n")
    C.write_subsection(path, "fcnet", "FCNET BODY")
    rc = evaluate.main(
        ["--corpus", str(evaluate.FIXTURE), "--systems", "runwatch", "--no-real-logs", "--out", str(path)]
    )
    text = path.read_text()
    assert rc == 0 and text.startswith("# Detection quality: results") and "stale" not in text
    assert (
        C.nas_section(text)
        == f"{C.NAS_BEGIN}\n{C.NAS_TITLE}\n\n<!-- nas:fcnet:begin -->\nFCNET BODY\n<!-- nas:fcnet:end -->\n{C.NAS_END}"
    )


# -- FCNet table and harness ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hpo")
    # named like the real table, so the harness's --datasets name finds it
    write_synthetic_table(d / "hpolib_naval_propulsion.csv.gz", widths=(16, 64), lrs=(0.001, 0.01))
    return d


def test_table_rows_are_configurations_with_mean_truth_and_genomes_that_look_up_back(toy_dir):
    t = load_table(toy_dir / "hpolib_naval_propulsion.csv.gz")
    # 2*2 widths x 3*3 dropouts x 2*2 activations = 144 architectures, 2 lrs x 2 schedules = 4 slices
    assert (len(t), len(t.slices), t.input_size, t.val_loss.shape) == (576, 4, 6, (576, 4))
    np.testing.assert_allclose(t.truth, t.val_loss.mean(axis=1))
    for row in t.rows_of_slice(2):
        g = t.genome(int(row))
        assert (
            g.params()
            == 6 * g.blocks[0].width
            + g.blocks[0].width
            + g.blocks[0].width * g.blocks[1].width
            + 2 * g.blocks[1].width
            + 1
        )
        assert t.lookup(2, g) == row
    g = t.genome(0)
    assert t.lookup(0, g.replace_block(0, normalization="layernorm")) is None  # FCNet has no such architecture
    assert t.lookup(0, g.replace_block(0, width=24)) is None
    assert arch_key_of(g) == t.arch_key(0)


def test_table_loader_rejects_a_configuration_without_all_seeds(tmp_path):
    src = write_synthetic_table(tmp_path / "full.csv.gz", widths=(16,), lrs=(0.01,))
    with gzip.open(src, "rt") as fh:
        lines = fh.read().splitlines()
    (tmp_path / "broken.csv").write_text("\n".join(lines[:-1]) + "\n")  # the last seed of the last config
    with pytest.raises(ValueError, match="lack some of seeds"):
        load_table(tmp_path / "broken.csv")


def test_starts_are_poor_in_their_slice_and_histories_never_see_the_starts_slice(toy_dir):
    t = load_table(toy_dir / "hpolib_naval_propulsion.csv.gz")
    starts = nas_fcnet.select_starts(t, 12, 0.75, np.random.default_rng(3))
    assert len({s.row for s in starts}) == 12
    for s in starts:
        slice_truth = t.truth[t.rows_of_slice(s.slice)]
        assert s.truth >= np.quantile(slice_truth, 0.75)
        assert 0 <= s.seed_idx < 4
    hist = nas_fcnet.history_for(t, 1, 50, np.random.default_rng(0))
    assert len(hist) == 50
    for obs in hist:
        _, cid, seed = obs.run_id.split("/")
        row = t.config_ids.index(cid)
        assert t.slice_of[row] != 1
        assert obs.outcome["val/loss"] == t.val_loss[row, int(seed[1:])]  # one seed, not the mean
        assert obs.series == {} and obs.diagnoses == []


def test_fcnet_harness_smoke_on_a_synthetic_table(toy_dir, tmp_path):
    out, js = tmp_path / "RESULTS.md", tmp_path / "outcomes.json"
    out.write_text("# Detection quality\n")
    rc = nas_fcnet.main(
        [
            "--data-dir",
            str(toy_dir),
            "--datasets",
            "naval_propulsion",
            "--starts",
            "3",
            "--history",
            "60",
            "--ks",
            "1",
            "3",
            "--baseline-seeds",
            "2",
            "--out",
            str(out),
            "--json",
            str(js),
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# Detection quality\n") and "<!-- nas:fcnet:begin -->" in text
    assert "| NNI TPE (true objective) | 3 |" in text and "| runwatch advisor | 1 |" in text
    data = json.loads(js.read_text())
    assert data["errors"] == {}
    outs = data["outcomes"]
    per_method = {m: sum(o["method"] == m for o in outs) for m in nas_fcnet.METHODS}
    # 3 starts x 2 ks; TPE and random once per seed
    assert per_method == {
        "advisor": 6, "advisor_no_seeding": 6, "forest": 6, "tpe_warm": 12, "peer_best": 6, "tpe": 12, "random": 12
    }
    # the fair anchors' table: mean and median normalised regret against the forest and warm-started TPE
    assert "Against the fair anchors" in text and "| median normalised regret | capped mean (≤ 1) |" in text
    t = load_table(toy_dir / "hpolib_naval_propulsion.csv.gz")
    truths = set(t.truth.tolist())
    for o in outs:
        assert o["best_found"] == math.inf or o["best_found"] in truths  # every look-up is a real table value
        if o["k"] == 3:
            same = [
                p
                for p in outs
                if p["k"] == 1 and (p["start_id"], p["method"], p["seed"]) == (o["start_id"], o["method"], o["seed"])
            ]
            assert o["best_found"] <= same[0]["best_found"]  # more look-ups never do worse


def test_fcnet_harness_says_when_the_data_is_absent(tmp_path, capsys):
    assert nas_fcnet.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2
    assert "FCNet data absent" in capsys.readouterr().err
    assert not (tmp_path / "R.md").exists()


# -- retraining -----------------------------------------------------------------------------------


def _fixture_run(run_id):
    from bench.corpus.specs import RunSpec
    from bench.corpus.store import load

    rec = load(nas_retrain.FIXTURE / "runs" / f"{run_id}.npz")
    return rec, RunSpec.from_dict(rec.meta["spec"])


def test_genomes_map_onto_corpus_specs_or_fall_back_to_genome_build():
    from runwatch.nas.space import insert_copies

    _, spec = _fixture_run("run-0286")  # breast_cancer, 2 x 16 relu
    g = nas_retrain.genome_of(spec)
    assert [(b.width, b.activation) for b in g.blocks] == [(16, "relu"), (16, "relu")]
    wider = g.with_blocks(dataclasses.replace(b, width=64) for b in g.blocks)
    new, builder = nas_retrain.apply_genome(spec, insert_copies(wider, 1), "-x")
    assert builder is None and (new.depth, new.width, new.run_id) == (3, 64, "run-0286-x")
    assert (spec.depth, spec.width) == (2, 16)  # the original spec is untouched
    _, builder = nas_retrain.apply_genome(spec, g.replace_block(0, normalization="layernorm"), "-y")
    assert builder.__self__ == g.replace_block(0, normalization="layernorm")  # Genome.build of the suggestion
    uf = nas_retrain.underfitting_spec(spec, 2)
    assert (uf.width, uf.fault, uf.run_id, uf.params["source_run"]) == (2, "underfitting", "uf-run-0286", "run-0286")


def test_retraining_through_genome_build_reproduces_the_corpus_run_exactly():
    import torch

    torch.set_num_threads(1)
    rec, spec = _fixture_run("run-0286")
    again = nas_retrain.train(spec, nas_retrain.genome_of(spec).build)
    assert nas_retrain.final_metrics(again) == nas_retrain.final_metrics(rec)


def test_diagnoses_come_from_runwatch_detection_not_from_labels(default_suite):
    rec, _ = _fixture_run("run-0163")  # vanishing_gradient, small_init, 10 x 128
    kinds = {d.kind for d in nas_retrain.runwatch_diagnoses(rec, default_suite)}
    assert "vanishing_gradient" in kinds
    healthy, _ = _fixture_run("run-0286")
    obs = nas_retrain.observation_of(healthy, default_suite)
    assert obs.genome is not None and "loss" in obs.series and not any(k.startswith("dbg/") for k in obs.series)
    assert set(obs.hyperparameters) == set(nas_retrain.LOGGED_HYPERPARAMETERS)
    assert obs.outcome["val/loss"] == float(healthy.series("val/loss")[1][-1])


def test_retrain_harness_smoke_on_the_fixture_corpus(tmp_path):
    import torch

    torch.set_num_threads(1)
    out, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    rc = nas_retrain.main([
        "--corpus", str(nas_retrain.FIXTURE), "--underfit-candidates", "1", "--overfit-candidates", "0",
        "--folds", "2", "--no-control",
        "--out", str(out), "--json", str(js),
        "--advisor-config", '{"tpe_trials": 6, "evolution_population": 4, "evolution_cycles": 4}',  # a small search
    ])  # fmt: skip
    assert rc == 0
    text = out.read_text()
    assert "<!-- nas:retrain:begin -->" in text and "| mlp | vanishing_gradient | 2 |" in text
    assert "| rnn | overfitting | 2 |" in text  # the fixture's overfitting runs are GRUs: rebuilt and retrained
    results = {r["run_id"]: r for r in json.loads(js.read_text())}
    for rid in ("run-0012", "run-0314"):
        assert results[rid]["family"] == "rnn" and results[rid]["builder"] == "Genome.build"
        assert results[rid]["changes"] and math.isfinite(results[rid]["after"]["val/loss"])
    assert {"run-0059", "run-0163"} <= set(results)
    for rid in ("run-0059", "run-0163"):
        r = results[rid]
        assert r["changes"] and math.isfinite(r["after"]["val/loss"])
        assert r["before"]["val/loss"] == pytest.approx(float(_fixture_run(rid)[0].series("val/loss")[1][-1]))
        assert "vanishing_gradient" in r["diagnoses"]
