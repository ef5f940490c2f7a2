"""Jupyter notebooks: the cells' printed training output replayed as a text log."""

from __future__ import annotations

import json

import pytest

from runwatch.client.importers import ImportFormatError, Problems, detect, load
from runwatch.models.text.extract import MetricExtractor


def _keras_epoch(epoch: int, loss: float, val: float) -> list[str]:
    # Keras 2 in Jupyter: the bar redrawn with \r, backspaces over the ETA, then the epoch's summary
    return [
        f"Epoch {epoch}/4\n",
        " 1/20 [>.............................] - ETA: 3s - loss: 0.9000\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\r",
        f"20/20 [==============================] - 1s 5ms/step - loss: {loss:.4f} - accuracy: 0.9000 - val_loss: {val:.4f} - val_accuracy: 0.8800\n",
    ]


def _notebook(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}


def test_a_keras_notebooks_epochs_are_its_lines_and_its_metrics(tmp_path):
    text = [line for e, (lo, va) in enumerate([(0.9, 0.8), (0.6, 0.62), (0.4, 0.7), (0.3, 0.9)], start=1)
            for line in _keras_epoch(e, lo, va)]
    nb = _notebook([
        {"cell_type": "markdown", "source": "# Train"},
        {"cell_type": "code", "source": "import tensorflow as tf", "outputs": []},
        {"cell_type": "code", "source": "model.fit(...)", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": text},
            {"output_type": "execute_result", "data": {"text/plain": ["<keras.callbacks.History at 0x7f>"]}},
        ]},
        {"cell_type": "code", "source": "model.fit(x, y, batch_size=4096)", "outputs": [{
            "output_type": "error", "ename": "ResourceExhaustedError", "evalue": "OOM when allocating tensor",
            "traceback": ["\x1b[0;31m---------------------------\x1b[0m", "\x1b[0;31mResourceExhaustedError\x1b[0m: OOM"]}]},
    ])
    path = tmp_path / "colab" / "train_cnn.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(nb))
    assert detect(path) == [("notebook", path)]
    assert detect(tmp_path, "notebook") == [("notebook", path)]
    (run,) = load(path)
    lines = [x.text for x in run.lines]
    assert run.format == "notebook" and run.name == "colab/train_cnn"
    summary = "20/20 [==============================] - 1s 5ms/step - loss: 0.9000 - accuracy: 0.9000 - val_loss: 0.8000"
    assert lines[:2] == ["Epoch 1/4", summary + " - val_accuracy: 0.8800"]
    assert lines[-2:] == ["ResourceExhaustedError: OOM", "ResourceExhaustedError: OOM when allocating tensor"]
    x = MetricExtractor()
    events = x.extract_many(lines) + x.flush()
    # at the bar's step in the run (epoch x 20 batches), as from a Keras log file
    assert [(step, m["loss"], m["val/loss"]) for step, m in events if "val/loss" in m] == [
        (20, 0.9, 0.8), (40, 0.6, 0.62), (60, 0.4, 0.7), (80, 0.3, 0.9)]


def test_what_is_not_a_notebook_says_so(tmp_path):
    path = tmp_path / "x.ipynb"
    path.write_text('{"metadata": {}}')
    with pytest.raises(ImportFormatError, match="no cells list"):
        load(path)
    path.write_text('{"cells": [')
    with pytest.raises(ImportFormatError, match="invalid JSON"):
        load(path)
    path.write_text(json.dumps(_notebook([{"cell_type": "code", "source": "", "outputs": 3},
                                          {"cell_type": "code", "source": "", "outputs": [
                                              {"output_type": "stream", "text": "epoch 1 loss 0.5\n"}]}])))
    lenient = Problems(strict=False)
    (run,) = load(path, problems=lenient)
    assert [x.text for x in run.lines] == ["epoch 1 loss 0.5"] and "cell 1" in str(lenient.skipped[0])


def test_malformed_outputs_cost_only_themselves(tmp_path):
    odd = [{"output_type": "execute_result", "data": "not a dict"}, {"output_type": "display_data", "data": [1, 2]},
           {"output_type": "error", "traceback": 3, "ename": None, "evalue": {}}, {"output_type": "stream", "text": 7},
           "not an output", {"output_type": "stream", "text": ["epoch 1 loss 0.5\n"]}]
    path = tmp_path / "odd.ipynb"
    path.write_text(json.dumps(_notebook([{"cell_type": "code", "source": "", "outputs": odd}])))
    (run,) = load(path)
    assert "epoch 1 loss 0.5" in [x.text for x in run.lines]
