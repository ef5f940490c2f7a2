"""Training histories saved as one JSON document (Keras History.history dumps, scripts' dicts of lists)."""

from __future__ import annotations

import json
import math

import pytest

from runwatch.client.importers import ImportFormatError, detect, load


def one(path, **kw):
    runs = load(path, **kw)
    assert len(runs) == 1
    return runs[0]


def test_a_keras_history_dump_is_one_run_by_epoch_with_runwatch_names(tmp_path):
    # json.dump(history.history, f): one line, NaN written bare as Python's json writes it
    history = {"loss": [0.91, 0.62, 0.48, 0.41], "accuracy": [0.61, 0.78, 0.84, 0.88],
               "val_loss": [0.88, 0.69, math.nan, 0.66], "val_accuracy": [0.70, 0.76, 0.78, 0.78],
               "learning_rate": [1e-3, 1e-3, 5e-4, 5e-4]}  # fmt: skip
    path = tmp_path / "cats_vs_dogs" / "training_history.json"
    path.parent.mkdir()
    path.write_text(json.dumps(history))
    assert detect(path) == [("history", path)] and detect(tmp_path) == [("history", path)]
    run = one(tmp_path)
    assert run.format == "history" and run.name == "cats_vs_dogs/training_history"
    assert run.steps == [0, 1, 2, 3]  # Keras counts epochs from 0, as its CSVLogger writes them
    assert run.metric_names == ["accuracy", "loss", "lr", "val/acc", "val/loss"]
    assert run.metrics[1] == {"loss": 0.62, "accuracy": 0.78, "val/loss": 0.69, "val/acc": 0.76, "lr": 1e-3}
    assert math.isnan(run.metrics[2]["val/loss"])


def test_a_scripts_dict_with_an_epoch_list_scalars_and_a_shorter_validation_series(tmp_path):
    history = {"epoch": [1, 2, 3, 4, 5, 6], "train_loss": [2.1, 1.6, 1.3, 1.1, "NaN", None],
               "val_loss": [1.7, 1.2, 1.05], "batch_losses": [[2.3, 2.2], [1.7, 1.6]], "best_val_loss": 1.05,
               "model": "resnet18"}  # fmt: skip
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history, indent=2))
    run = one(path)
    assert run.steps == [1, 2, 3, 4, 5, 6]
    assert [m.get("loss") for m in run.metrics][:4] == [2.1, 1.6, 1.3, 1.1] and math.isnan(run.metrics[4]["loss"])
    assert "loss" not in run.metrics[5]  # null: not logged
    # validation every other epoch: at the end of each share (epochs 2, 4, 6)
    assert [(s, m["val/loss"]) for s, m in zip(run.steps, run.metrics) if "val/loss" in m] == [(2, 1.7), (4, 1.2), (6, 1.05)]
    assert run.hyperparameters == {"best_val_loss": 1.05, "model": "resnet18"}
    assert any("batch_losses" in n for n in run.notes) and any("val_loss (3 of 6)" in n for n in run.notes)


def test_nested_and_list_of_objects_histories(tmp_path):
    nested = tmp_path / "model_history.json"
    nested.write_text(json.dumps({"history": {"train": {"loss": [1.0, 0.8, 0.7]}, "val": {"loss": [1.1, 0.9, 0.95]}}}))
    run = one(nested)
    assert run.metric_names == ["loss", "val/loss"] and run.metrics[2] == {"loss": 0.7, "val/loss": 0.95}
    rows = tmp_path / "train_history.json"
    rows.write_text(json.dumps([{"epoch": e, "train_loss": 1 / e, "val_acc": 0.5 + e / 10} for e in range(1, 5)]))
    run = one(rows)
    assert run.steps == [1, 2, 3, 4] and run.metrics[0] == {"loss": 1.0, "val/acc": 0.6}


def test_json_documents_that_are_not_histories_are_not_taken_for_one(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps({"visited": ["a.com", "b.org"], "count": 2}))
    (tmp_path / "config.json").write_text(json.dumps({"loss": [0.5, 0.4, 0.3]}))  # a history, but not by its name
    with pytest.raises(ImportFormatError, match="no logs found"):
        detect(tmp_path)
    assert detect(tmp_path / "config.json") == [("history", tmp_path / "config.json")]  # named directly: read
    with pytest.raises(ImportFormatError, match="unknown format"):
        detect(tmp_path / "history.json")


def test_pandas_columns_a_stringified_dict_and_one_element_lists(tmp_path):
    # pd.DataFrame(history.history).to_json(): {"loss": {"0": ..., "1": ...}}; a column with gaps keeps its rows
    pandas = tmp_path / "pandas_history.json"
    pandas.write_text(json.dumps({"loss": {str(i): 1.0 - 0.1 * i for i in range(5)}, "time": {"1": 3.0, "4": 2.5}}))
    run = one(pandas)
    assert run.steps == [0, 1, 2, 3, 4] and run.metrics[4] == {"loss": pytest.approx(0.6), "time": 2.5}
    assert "time" not in run.metrics[0] and run.metrics[1]["time"] == 3.0
    # json.dump(str(history.history), f): a JSON string holding a Python dict
    text = tmp_path / "str_history.json"
    text.write_text(json.dumps(str({"loss": [0.9, 0.7, 0.6], "val_loss": [1.0, 0.8, 0.75]})))
    assert one(text).metrics[2] == {"loss": 0.6, "val/loss": 0.75}
    # each epoch appended as a one-element list
    wrapped = tmp_path / "wrapped_history.json"
    wrapped.write_text(json.dumps([{"loss": [0.9], "val_loss": [1.0]}, {"loss": [0.7], "val_loss": [0.8]}]))
    assert one(wrapped).metrics == [{"loss": 0.9, "val/loss": 1.0}, {"loss": 0.7, "val/loss": 0.8}]
    # the history one level down, beside the run's config
    inner = tmp_path / "vit_training_log.json"
    rows = [{"epoch": e, "train_loss": 2.0 / e, "val_accuracy": 0.2 * e} for e in (1, 2, 3)]
    inner.write_text(json.dumps({"seed": 7, "config": {"lr": 0.001, "epochs": 3}, "history": rows}))
    run = one(inner)
    assert run.steps == [1, 2, 3] and run.metrics[2] == {"loss": pytest.approx(2 / 3), "val/acc": pytest.approx(0.6)}
    assert run.hyperparameters == {"seed": 7, "lr": 0.001, "epochs": 3}  # the one config dict adds no prefix


def test_sacred_metrics_are_read_at_their_own_steps_and_times(tmp_path):
    # Sacred's FileStorageObserver: runs/<id>/metrics.json, each metric {"steps", "values", "timestamps"} (UTC)
    metrics = {
        "train.loss": {"steps": [0, 10, 20, 30], "values": [2.3, 1.9, 1.6, 1.4],
                       "timestamps": ["2024-01-01T00:00:00.000000", "2024-01-01T00:00:10.000000",
                                      "2024-01-01T00:00:20.000000", "2024-01-01T00:00:30.000000"]},
        "val_loss": {"steps": [15, 30], "values": [1.8, "NaN"], "timestamps": ["2024-01-01T00:00:16", "2024-01-01T00:00:31"]},
    }  # fmt: skip
    path = tmp_path / "runs" / "3" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    run = one(tmp_path)
    assert run.format == "history" and run.steps == [0, 10, 15, 20, 30]
    assert run.metrics[2] == {"val/loss": 1.8} and run.metrics[1] == {"loss": 1.9}
    assert math.isnan(run.metrics[4]["val/loss"]) and run.metrics[4]["loss"] == 1.4
    assert run.wall_times[:2] == [1704067200.0, 1704067210.0]
    assert "Sacred metrics, each at its own steps" in run.notes
    # before, the lists were read as series of their own: "val_loss/steps" a metric, values spread by position
    assert not any("/steps" in name or "/values" in name for name in run.metric_names)
