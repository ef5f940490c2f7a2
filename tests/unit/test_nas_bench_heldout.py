"""The retraining harness writes a held-out run into its own subsection, and the strong-finding rule reaches it."""

from __future__ import annotations

import json

from bench import nas_retrain
from bench.nas_common import write_subsection


def test_a_labelled_section_keeps_the_development_one_and_fixes_the_whole_stack(tmp_path):
    import torch

    torch.set_num_threads(1)
    out, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    write_subsection(out, "retrain", "### Real retraining (`bench/nas_retrain.py`)\n\ndevelopment numbers")
    rc = nas_retrain.main([
        "--corpus", str(nas_retrain.FIXTURE), "--problems", "vanishing_gradient", "--folds", "2", "--no-control",
        "--out", str(out), "--json", str(js), "--section", "retrain-heldout", "--label", "held-out corpus seed 7",
        "--note", "Generated after the rules were revised; evaluated once.",
        "--advisor-config", '{"use_nni": false}',
    ])  # fmt: skip
    assert rc == 0
    text = out.read_text()
    dev = text.index("<!-- nas:retrain:begin -->")
    held = text.index("<!-- nas:retrain-heldout:begin -->")
    assert dev < held and "development numbers" in text  # the development subsection is kept as it was
    assert "### Real retraining (`bench/nas_retrain.py`) — held-out corpus seed 7" in text[held:]
    assert "Generated after the rules were revised; evaluated once." in text[held:]
    results = {r["run_id"]: r for r in json.loads(js.read_text())}
    # the fixture's two vanishing-gradient runs are deep nets that did not train; retrained with the top suggestion
    # (the same seed, data and steps) both train
    assert {"run-0059", "run-0163"} <= set(results)
    for r in results.values():
        assert r["after"]["val/loss"] < 0.8 * r["before"]["val/loss"], r
    # run-0059 (diabetes, 8 tanh blocks initialised tiny): the rule's first whole-stack fix, ranked by the prior
    assert results["run-0059"]["changes"] == ["add residual connections around fc2-fc8"]
