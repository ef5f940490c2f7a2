"""Text logs, JSON Lines of log records, lenient reading of every format, run names (runwatch replay)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runwatch.client.importers import ImportFormatError, Problems, detect, load, read_all
from runwatch.client.importers.util import is_generic, meaningful_name
from runwatch.client.log_lines import LineSplitter, from_record, guess_level, parse_time, stream_level
from runwatch.v1 import runs_pb2

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TEXT = FIXTURES / "text_logs"
LOGS = FIXTURES / "training_logs"
INFO, WARNING, ERROR = runs_pb2.LOG_LEVEL_INFO, runs_pb2.LOG_LEVEL_WARNING, runs_pb2.LOG_LEVEL_ERROR


def one(path: Path, **kw):
    runs = load(path, **kw)
    assert len(runs) == 1
    return runs[0]


# -- line fields ----------------------------------------------------------------------------------


def test_levels_times_and_records():
    assert guess_level("[2025-03-01 10:12:44,118] [WARNING] [stage_1_and_2.py:1812:step] Grad overflow") == WARNING
    assert guess_level("W0301 10:12:44.118000 140 torch/distributed/c10d.cpp:12] NCCL watchdog") == WARNING
    assert guess_level('{"level": "error", "msg": "boom"}') == ERROR
    assert guess_level("Traceback (most recent call last):") == ERROR
    assert guess_level("the error rate is low", INFO) == INFO  # lower-case prose is not a level
    assert stream_level("50%|#####     | 5/10", "stderr") == WARNING
    assert stream_level("INFO:root:epoch 1 done", "stderr") == INFO  # its own level word wins
    assert parse_time("1714564800") == 1714564800.0 and parse_time(1714564800123456) == pytest.approx(1714564800.123456)
    assert parse_time("yesterday") is None
    docker = from_record({"log": "CUDA out of memory\n", "stream": "stderr", "time": "2024-05-01T12:00:00.5Z"})
    assert (docker.text, docker.level, docker.time) == ("CUDA out of memory", WARNING, 1714564800.5)
    assert from_record({"message": "x", "severity": "3", "step": "12"}).level == ERROR
    assert from_record({"message": "x", "step": 12.0}).step == 12
    assert from_record({"value": 1}) is None
    with pytest.raises(ValueError, match="step: 'x' is not a non-negative integer"):
        from_record({"text": "x", "step": "x"})
    with pytest.raises(ValueError, match="level: unknown level 'loud'"):
        from_record({"text": "x", "level": "loud"})


def test_line_splitter_keeps_what_a_terminal_shows():
    s = LineSplitter(max_bytes=16)
    assert s.feed(b"a\r\nb") == [b"a"]  # CRLF
    assert s.feed(b"\n 10%\r 20%\r100%|done\n") == [b"b", b"100%|done"]
    assert s.feed(b"x" * 40) == [b"x" * 16, b"x" * 16]  # bounded: a line without end is cut
    assert s.close() == [b"x" * 8]


def test_a_bar_that_never_ends_its_line_is_sent_every_so_many_redraws():
    # Lightning reuses its bar across epochs without a newline: before, nothing was sent until the program ended
    redraws = [b"\rEpoch %d: %3d%%|#| %d/10 [00:01<00:01, loss=%.2f]" % (e, 10 * i, i, 1 - e / 10 - i / 100)
               for e in range(3) for i in range(1, 11)]
    s = LineSplitter(redraw_every=10)
    out = [line for chunk in redraws for line in s.feed(chunk)]
    # at every 10th carriage return, the newest whole redraw (the one before it)
    assert out == [b"Epoch %d:  90%%|#| 9/10 [00:01<00:01, loss=%.2f]" % (e, 0.91 - e / 10) for e in range(3)]
    assert s.close() == [b"Epoch 2: 100%|#| 10/10 [00:01<00:01, loss=0.70]"]
    off = LineSplitter(redraw_every=0)
    assert [line for chunk in redraws for line in off.feed(chunk)] == []  # off: the terminal's view only


# -- plain-text logs ---------------------------------------------------------------------------------


def test_megatron_style_log_is_one_run_of_lines_named_without_output():
    run = one(TEXT / "megatron_gpt" / "output" / "train.log")
    assert run.format == "text" and run.name == "megatron_gpt/train" and not run.steps
    texts = [x.text for x in run.lines]
    assert len(texts) == 17 and texts[2].startswith(" iteration       10/     500 | consumed samples:")
    levels = [x.level for x in run.lines]
    assert levels[12] == WARNING and levels[13] == ERROR and levels[-1] == ERROR and levels[0] == INFO
    times = [x.time for x in run.lines]
    assert times == sorted(times) and run.start_time == times[0] > 1.7e9  # untimed lines take the time before


def test_real_slm_training_logs():
    runs = {r.name: r for r in load(TEXT / "slm_training")}
    full = runs["slm_training/2025-02-16 11:22:38.045400"]
    assert full.lines[0].text == "use_experimental: True" and len(full.lines) == 53
    assert "Train Loss: 7.2979 - Train Perplexity: 1477.26" in [x.text for x in full.lines]
    from datetime import datetime

    assert full.start_time == pytest.approx(datetime(2025, 2, 16, 11, 22, 38, 45400).timestamp())
    header_only = runs["slm_training/2025-02-16 08:03:10.304529"]
    assert header_only.lines[-1].text == "Model Parameter Count: 66829394"  # no newline at the end of the file


def test_text_log_malformed_lines(tmp_path):
    path = tmp_path / "train.out"
    path.write_bytes(b"epoch 1 loss=0.5\nbad \xff byte\n\n" + b"y" * 70_000 + b"\nepoch 2 loss=0.4\r\n")
    with pytest.raises(ImportFormatError, match=r"train\.out:line 2: not UTF-8: byte 0xff at column 5"):
        load(path)
    lenient = Problems(strict=False)
    run = one(path, problems=lenient)
    assert [x.text[:10] for x in run.lines] == ["epoch 1 lo", "y" * 10, "epoch 2 lo"]
    assert len(run.lines[1].text) == 64 << 10 and "1 line(s) longer than 65536 bytes were cut" in run.notes[0]
    assert [str(e) for e in lenient.skipped] == [
        f"{path}:line 2: not UTF-8: byte 0xff at column 5; the line was skipped"
    ]


def test_any_text_file_named_directly_is_a_log_but_folders_take_only_dot_log(tmp_path):
    (tmp_path / "stdout").write_text("step 1 loss 0.3\n")
    assert one(tmp_path / "stdout").lines[0].text == "step 1 loss 0.3"
    (tmp_path / "notes.txt").write_text("not replayed from a folder\n")
    (tmp_path / "run.log").write_text("step 1 loss 0.3\n")
    assert [f for f, _ in detect(tmp_path)] == ["text"]
    assert sorted(p.name for _, p in detect(tmp_path, "text")) == ["notes.txt", "run.log"]


def test_a_log_that_is_a_table_gives_metrics(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("step\tloss\n10\t8.46\n20\tnan\n30\tx\n")
    lenient = Problems(strict=False)
    run = one(path, problems=lenient)
    assert run.steps == [10, 20] and run.metrics[0] == {"loss": 8.46} and not run.lines
    assert "line 4: column 'loss' is not a number: 'x'; the cell was left out" in str(lenient.skipped[0])
    assert "column 'loss': 1 non-numeric cell(s) left out" in run.notes


def test_several_trainings_in_one_log_are_one_run_each(tmp_path):
    """A script that trains models in turn prints each from epoch 1 again: each is a run, the first keeps the name."""
    path = tmp_path / "sweep.log"
    blocks = []
    for k, lr in enumerate((0.1, 0.01, 0.001), start=1):
        blocks.append(f"Training model {k} with lr={lr}")
        for e in range(1, 8):
            blocks.append(f"Epoch {e}/7")
            blocks.append(f"loss: {1 / (e * k):.4f} - val_loss: {1.1 / (e * k):.4f}")
        blocks.append(f"Test loss: {0.5 / k:.4f}")  # an evaluation after each fit: not a new training
    path.write_text("\n".join(blocks) + "\n")
    runs = load(path)
    assert [r.name for r in runs] == [runs[0].name, f"{runs[0].name}-2", f"{runs[0].name}-3"]
    assert [r.lines[0].text for r in runs] == ["Training model 1 with lr=0.1", "Training model 2 with lr=0.01",
                                               "Training model 3 with lr=0.001"]
    assert [len(r.lines) for r in runs] == [16, 16, 16]
    assert len({r.run_id() for r in runs}) == 3 and "training 2 of 3 in the file" in runs[1].notes[-1]


@pytest.mark.parametrize(
    ("case", "lines"),
    [
        ("a resume from a checkpoint goes back only to it",
         [f"step {s} loss=0.5" for s in (*range(10, 110, 10), *range(60, 200, 10))]),
        ("a summary line counted by epoch between iteration lines (Flair)",
         [line for e in range(1, 5) for line in
          [*(f"epoch {e} - iter {i}/40 - loss {9 - e - i / 100:.3f}" for i in range(0, 40, 10)),
           f"EPOCH {e} done: loss {9 - e:.4f} - lr 0.1000"]]),
        ("an evaluation bar and test lines after fit (Keras)",
         [line for e in range(1, 7) for line in [f"Epoch {e}/6", f"100/100 - 1s - loss: {1 / e:.4f}"]]
         + ["313/313 [==============================] - 2s 5ms/step - loss: 0.1452 - accuracy: 0.9642",
            "Test loss:  0.145", "Test accuracy:  0.964"]),
    ],
)
def test_a_log_whose_steps_go_back_without_a_new_training_stays_one_run(case, lines):
    from runwatch.models.text.trainings import training_starts

    assert training_starts(lines) == [0], case


# -- JSON Lines of log records ------------------------------------------------------------------------


def test_jsonl_of_log_records_is_text_not_long_format(tmp_path):
    path = tmp_path / "events.jsonl"
    rows = [
        {"time": "2025-03-01T10:00:00Z", "level": "info", "text": "iteration 1/10 | lm loss: 2.5"},
        {"line": "iteration 2/10 | lm loss: 2.4", "step": 2},
        {"time": 1740823203, "text": "no level"},
        {"time": "2025-03-01T10:00:05Z", "level": "error", "message": "CUDA out of memory"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"foo": 1}\n[1, 2]\n')
    assert [f for f, _ in detect(path)] == ["text"]
    with pytest.raises(ImportFormatError, match=r"events\.jsonl:line 5: no text: expected one of text, line"):
        load(path)
    lenient = Problems(strict=False)
    run = one(path, problems=lenient)
    assert [x.text for x in run.lines][1] == "iteration 2/10 | lm loss: 2.4" and run.lines[1].step == 2
    assert [x.level for x in run.lines] == [INFO, 0, 0, ERROR]  # 0: the record states no level
    assert run.lines[0].time == 1740823200.0 and run.lines[-1].time == 1740823205.0
    assert len(lenient.skipped) == 2 and "line 6: expected a JSON object, got list" in str(lenient.skipped[1])
    # --format jsonl names the long format, but a file of log records is still read as one
    assert load(path, fmt="jsonl", problems=Problems(strict=False))[0].format == "text"


# -- Hugging Face entries without a step -----------------------------------------------------------


def test_hf_entries_without_step_take_a_neighbours_step(tmp_path):
    folder = tmp_path / "owner+repo" / "results" / "checkpoint-30"
    folder.mkdir(parents=True)
    history = [
        {"test_accuracy": 0.5},  # before any step: the next entry's
        {"step": 10, "loss": 1.0},
        {"step": 20, "loss": 0.8},
        {"predict_loss": 0.9, "predict_runtime": 1.5},  # trainer.predict: the previous entry's
        {"step": 30, "loss": 0.7},
    ]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    run = one(folder / "trainer_state.json")
    assert run.steps == [10, 20, 30]
    assert run.metrics[0]["test_accuracy"] == 0.5 and run.metrics[1]["predict_loss"] == 0.9
    assert "2 log_history entries without 'step' placed at a neighbour's step" in run.notes
    assert run.name == "owner+repo/checkpoint-30" and "results" not in run.run_id()

    (folder / "trainer_state.json").write_text(json.dumps({"log_history": [{"predict_loss": 0.9}, {"eval_loss": 1}]}))
    run = one(folder / "trainer_state.json")
    assert not run.steps and "2 log_history entries without 'step' skipped: no entry has a step" in run.notes

    (folder / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1}, "oops"]}))
    with pytest.raises(ImportFormatError, match=r"log_history\[1\]: expected an object, got str"):
        load(folder)
    lenient = Problems(strict=False)
    assert one(folder, problems=lenient).steps == [1] and len(lenient.skipped) == 1


def test_run_names_skip_generic_folders(tmp_path):
    assert (
        is_generic("output")
        and is_generic("checkpoint-1200")
        and is_generic("global_step500")
        and is_generic(".hidden")
    )
    assert not is_generic("version_3") and not is_generic("bert-base-lr3e-5")
    assert meaningful_name(tmp_path / "repo" / "bert-lr3e-5" / "checkpoint-100") == "bert-lr3e-5/checkpoint-100"
    assert meaningful_name(tmp_path / "repo" / "checkpoint-100" / "bert-lr3e-5") == "repo/bert-lr3e-5"
    a, b = tmp_path / "a+repo" / "output", tmp_path / "b+repo" / "output"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": 1.0}]}')
    runs = load(tmp_path)
    assert sorted(r.name.split("/")[-1] for r in runs) == ["a+repo", "b+repo"]
    assert all("output" not in r.run_id() for r in runs)


# -- every format, read leniently -----------------------------------------------------------------------


def test_malformed_entries_of_each_format_are_skipped_one_warning_each(tmp_path):
    root = tmp_path / "logs"
    shutil.copytree(LOGS / "lightning" / "camels_ch_version_0", root / "lightning" / "version_0")
    shutil.copytree(LOGS / "mlflow_mlruns", root / "mlruns")
    tb = root / "tb"
    tb.mkdir()
    src = next((LOGS / "tensorboard" / "camels_ch_version_121").glob("events.out.tfevents.*"))
    data = src.read_bytes()
    (tb / src.name).write_bytes(data[: len(data) - 10])  # cut while being written
    bad_state = root / "hf" / "broken"
    bad_state.mkdir(parents=True)
    (bad_state / "trainer_state.json").write_text('{"log_history": [{"step": 1 "loss": 1}]}')
    csv_path = root / "lightning" / "version_0" / "metrics.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] += ",1.0"
    csv_path.write_text("\n".join(lines) + "\n")
    metric = next(p for p in (root / "mlruns").rglob("metrics/train_loss"))
    m_lines = metric.read_text().splitlines()
    m_lines[1] = "1795267293419 not-a-number 1"
    metric.write_text("\n".join(m_lines) + "\n")

    with pytest.raises(ImportFormatError):
        load(root)
    lenient = Problems(strict=False)
    runs = read_all(root, detect(root), problems=lenient)
    warnings = [str(e) for e in lenient.skipped]
    assert len(warnings) == 4, warnings
    assert any("metrics.csv:line 4: 6 fields, the header has 5; the row was skipped" in w for w in warnings)
    assert any("train_loss:line 2: value is not a number: 'not-a-number'; the line was skipped" in w for w in warnings)
    assert any("truncated record" in w and w.endswith("the rest of the file was skipped") for w in warnings)
    assert any(
        "broken/trainer_state.json:line 1 column 29: invalid JSON" in w and w.endswith("the file was skipped")
        for w in warnings
    )
    formats = sorted(r.format for r in runs)
    assert formats == ["lightning", "mlflow", "mlflow", "tensorboard"]  # all but the broken file
    tb_run = next(r for r in runs if r.format == "tensorboard")
    assert 0 < len(tb_run.steps) <= 73


def test_docstring_examples():
    import doctest

    from runwatch.client import log_lines
    from runwatch.client.importers import base, util
    from runwatch.models.text import trainings

    for module in (log_lines, util, base, trainings):
        assert doctest.testmod(module).failed == 0, module.__name__
