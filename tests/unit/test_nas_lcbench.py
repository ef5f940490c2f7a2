"""The LCBench harness: table reading, dev/test task halves, every method on a toy table in LCBench's format."""

from __future__ import annotations

import doctest
import gzip
import json
import math

import numpy as np
import pytest

from bench import nas_lcbench

COLUMNS = (
    "task_id,config_idx,batch_size,learning_rate,momentum,weight_decay,num_layers,max_units,max_dropout,epoch,time,"
    "val_accuracy,val_cross_entropy,val_balanced_accuracy,test_cross_entropy,test_balanced_accuracy"
)


def _toy_lcbench(path, tasks=(11, 12, 13, 14), configs=60, seed=0):
    """A table in the shared file's format: the loss is lowest at lr 1e-2 and grows with dropout, per task offset."""
    rng = np.random.default_rng(seed)
    cfgs = [
        (
            int(rng.integers(16, 512)),
            float(10 ** rng.uniform(-4, -1)),
            float(rng.uniform(0.1, 0.99)),
            float(10 ** rng.uniform(-5, -1)),
            int(rng.integers(1, 6)),
            int(rng.integers(64, 1024)),
            float(rng.uniform(0, 1)),
        )
        for _ in range(configs)
    ]
    lines = [COLUMNS]
    for t, task in enumerate(tasks):
        for c, (bs, lr, mom, wd, nl, mu, do) in enumerate(cfgs):
            final = 0.2 + 0.1 * t + 0.3 * (math.log10(lr) + 2) ** 2 + 0.4 * do
            for epoch in (1, 2):
                loss = final * (1.5 if epoch == 1 else 1.0)
                lines.append(f"{task},{c},{bs},{lr},{mom},{wd},{nl},{mu},{do},{epoch},1.0,50,{loss},0.5,{loss},0.5")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_the_table_holds_the_last_epoch_of_every_configuration_on_every_task(tmp_path):
    table = nas_lcbench.load_lcbench(_toy_lcbench(tmp_path / "t.csv.gz"))
    assert table.task_ids == [11, 12, 13, 14] and table.loss.shape == (4, 60) and len(table.configs) == 60
    first = nas_lcbench.load_lcbench(tmp_path / "t.csv.gz", epoch=1)
    assert np.allclose(first.loss, 1.5 * table.loss)
    assert table.scaled.shape == (60, 7) and 0.0 <= table.scaled.min() and table.scaled.max() <= 1.0
    with pytest.raises(nas_lcbench.MissingDataError, match="LCBench table not found"):
        nas_lcbench.load_lcbench(tmp_path / "absent.csv.gz")


def test_dev_and_test_halves_split_the_tasks_and_a_bad_split_is_named():
    dev, test = nas_lcbench.task_indices(34, "dev"), nas_lcbench.task_indices(34, "test")
    assert len(dev) == len(test) == 17 and not set(dev) & set(test) and sorted(dev + test) == list(range(34))
    with pytest.raises(ValueError, match="split: 'train'"):
        nas_lcbench.task_indices(34, "train")


def test_every_method_names_real_unseen_configurations_and_the_advisor_improves_poor_starts(tmp_path):
    _toy_lcbench(tmp_path / nas_lcbench.FILE)
    out, js = tmp_path / "RESULTS.md", tmp_path / "lc.json"
    rc = nas_lcbench.main(
        ["--data-dir", str(tmp_path), "--split", "dev", "--starts", "3", "--history", "25", "--ks", "1", "3",
         "--baseline-seeds", "1", "--out", str(out), "--json", str(js)]
    )  # fmt: skip
    assert rc == 0
    text = out.read_text()
    assert "<!-- nas:lcbench-dev:begin -->" in text and "80 % interval coverage" in text and "(dev:" in text
    payload = json.loads(js.read_text())
    outcomes = payload["outcomes"]
    assert {o["method"] for o in outcomes} == {"advisor", "forest", "tpe_warm", "random"}
    assert {o["group"] for o in outcomes} == {"lcbench-11", "lcbench-12"}  # the dev half of 4 tasks
    table = nas_lcbench.load_lcbench(tmp_path / nas_lcbench.FILE)
    for o in outcomes:
        task = table.task_ids.index(int(o["group"].split("-")[1]))
        assert o["best_found"] in set(table.loss[task].tolist())  # every pick is a configuration of its task
    # a smooth structure in the logged hyperparameters: one look-up of the advisor beats its poor start
    assert all(o["best_found"] < o["start_truth"] for o in outcomes if o["method"] == "advisor")
    assert set(payload["coverage"]) == {"11", "12"} and all(0.0 <= c <= 1.0 for c in payload["coverage"].values())


def test_a_missing_table_is_a_clear_error(tmp_path, capsys):
    assert nas_lcbench.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2
    assert "LCBench table not found" in capsys.readouterr().err


def test_docstring_examples_run():
    assert doctest.testmod(nas_lcbench, optionflags=doctest.ELLIPSIS).failed == 0
