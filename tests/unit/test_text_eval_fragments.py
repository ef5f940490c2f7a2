"""The fragments section of bench/text_eval.py scores any set in the dev set's format (``--fragments PATH``)."""

import json

from bench.text_eval import format_fragments, run_fragments


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_scores_another_set_and_names_it(tmp_path):
    nan = "\n".join([f"Epoch 1/5 - step {i} - loss: {0.9 - 0.01 * i:.4f} - accuracy: 0.61" for i in range(1, 6)]
                    + ["Epoch 1/5 - step 6 - loss: nan - accuracy: 0.10"])
    healthy = "\n".join(f"Epoch 1/5 - step {i} - loss: {0.9 - 0.01 * i:.4f} - accuracy: 0.61" for i in range(1, 8))
    path = tmp_path / "fresh.jsonl"
    _write(path, [
        {"url": "https://github.com/a/b/issues/1", "kind": "training", "label": "nan_loss_onset",
         "onset_hint": nan.split("\n")[-1], "fragment": nan},
        {"url": "https://github.com/a/b/issues/2", "kind": "training", "label": "healthy_excerpt",
         "onset_hint": None, "fragment": healthy},
    ])
    result = run_fragments(path)
    sick, well = result["records"]
    assert sick["kind_ok"] and sick["first_any"] == sick["onset"] == 5
    assert not well["any"]
    text = format_fragments(result)
    assert "fresh.jsonl (2 excerpts)" in text and "--fragments" in text
    assert "| training | 1 | 1 | 1 | 1 | 1/1 | 1 | 0 | 0 |" in text
