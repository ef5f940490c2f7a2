"""Importers on real log files (tests/fixtures/training_logs, see its README) and on broken copies of them."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from runwatch.client.importers import ImportFormatError, detect, load
from runwatch.client.importers.tensorboard import crc32c, iter_records
from runwatch.client.names import canonical_name, rename_map

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training_logs"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "training-logs"


def one(path: Path, **kw):
    runs = load(path, **kw)
    assert len(runs) == 1
    return runs[0]


def assert_well_formed(run) -> None:
    """What the replay relies on: strictly increasing steps, parallel lists, no empty events."""
    assert run.steps == sorted(set(run.steps))
    assert len(run.steps) == len(run.wall_times) == len(run.metrics)
    assert all(run.metrics) and all(s >= 0 for s in run.steps)


# -- TensorBoard -------------------------------------------------------------------------------


def test_tensorboard_lightning_event_file_with_hparams():
    run = one(FIXTURES / "tensorboard" / "camels_ch_version_121")
    assert_well_formed(run)
    assert run.format == "tensorboard" and len(run.steps) == 73
    assert run.renamed == {"lr-Adam": "lr", "train_loss": "loss", "val_loss": "val/loss", "val_mse": "val/mse"}
    assert run.steps[:4] == [0, 49, 99, 149]
    assert run.metrics[1]["loss"] == pytest.approx(0.15428540110588074)
    assert run.metrics[0]["lr"] == pytest.approx(0.0007)
    # the hparams plugin's session-start record gives the hyperparameters, its end record the status
    assert run.hyperparameters["hidden_size"] == 80 and run.hyperparameters["learning_rate"] == pytest.approx(0.0007)
    assert run.status == "finished"
    assert run.start_time and all(t > 1.7e9 for t in run.wall_times)


def test_tensorboard_tf2_tensor_scalars_and_nan():
    run = one(FIXTURES / "tensorboard" / "generated_tensor_scalars")
    assert_well_formed(run)
    assert run.metric_names == ["loss", "lr", "val/acc"]  # histograms are not scalars
    assert run.metrics[0] == {"loss": pytest.approx(2.0), "lr": pytest.approx(0.1), "val/acc": pytest.approx(0.5)}
    assert run.steps[-1] == 30 and math.isnan(run.metrics[-1]["loss"])


def test_tensorboard_keep_names():
    run = one(FIXTURES / "tensorboard" / "vae_mirt_version_4", canonical=False)
    assert run.metric_names == ["epoch", "train_loss"] and run.renamed == {}


def _write_events(path: Path, scalars: list[tuple[int, str, float]]) -> None:
    """An event file of ``(step, tag, value)`` scalars, framed as TensorFlow writes TFRecords."""
    from runwatch.client.importers.tensorboard import Event, _masked

    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    for i, (step, tag, value) in enumerate([(0, "", 0.0), *scalars]):
        event = Event(wall_time=1.7e9 + i, step=step)
        if tag:
            event.summary.value.add(tag=tag, simple_value=value)
        else:
            event.file_version = "brain.Event:2"
        data = event.SerializeToString()
        head = struct.pack("<Q", len(data))
        out += head + struct.pack("<I", _masked(crc32c(head))) + data + struct.pack("<I", _masked(crc32c(data)))
    path.write_bytes(bytes(out))


def test_tensorboard_keras_train_and_validation_folders_are_one_run(tmp_path):
    """Keras's TensorBoard callback: logs/fit/<run>/train and .../validation, both with epoch_loss."""
    run_dir = tmp_path / "logs" / "fit" / "20240101-120000"
    _write_events(run_dir / "train" / "events.out.tfevents.1.host.1.v2",
                  [(e, tag, v) for e in range(5) for tag, v in (("epoch_loss", 2.0 - 0.3 * e),
                                                                 ("epoch_accuracy", 0.5 + 0.1 * e),
                                                                 ("epoch_learning_rate", 1e-3))])
    _write_events(run_dir / "validation" / "events.out.tfevents.1.host.2.v2",
                  [(e, "epoch_loss", 2.1 - 0.25 * e) for e in range(5)])
    run = one(tmp_path / "logs")
    assert_well_formed(run)
    assert run.steps == [0, 1, 2, 3, 4] and run.name == "fit/20240101-120000"
    assert set(run.metric_names) == {"loss", "val/loss", "lr", "epoch_accuracy"}
    assert run.metrics[1]["loss"] == pytest.approx(1.7) and run.metrics[1]["val/loss"] == pytest.approx(1.85)
    assert any("Keras" in n for n in run.notes)
    # a lone train/ folder (no validation/ beside it) stays a run of its own
    _write_events(tmp_path / "other" / "train" / "events.out.tfevents.2.host", [(0, "epoch_loss", 1.0)])
    assert one(tmp_path / "other").name == f"{tmp_path.name}/other"  # "train" tells nothing: passed over


def test_crc32c_and_record_framing():
    assert crc32c(b"") == 0 and crc32c(b"123456789") == 0xE3069283
    event_file = next((FIXTURES / "tensorboard" / "vae_mirt_version_4").iterdir())
    records = list(iter_records(event_file))
    assert records[0][:2] == (0, 0) and len(records) > 10


def _event_copy(tmp_path: Path) -> Path:
    src = next((FIXTURES / "tensorboard" / "vae_mirt_version_4").iterdir())
    dst = tmp_path / "run" / src.name
    dst.parent.mkdir()
    shutil.copy(src, dst)
    return dst


def test_tensorboard_corrupt_record_names_file_and_record(tmp_path):
    path = _event_copy(tmp_path)
    data = bytearray(path.read_bytes())
    records = list(iter_records(path))
    _, offset, payload = records[3]
    data[offset + 12 + len(payload) // 2] ^= 0xFF  # flip a byte inside record 3's data
    path.write_bytes(bytes(data))
    with pytest.raises(ImportFormatError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}:record 3 (byte {offset}): data checksum mismatch")
    assert err.value.path == str(path) and err.value.position == f"record 3 (byte {offset})"


def test_tensorboard_truncated_file(tmp_path):
    path = _event_copy(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(ImportFormatError, match=r"record \d+ \(byte \d+\): truncated record"):
        load(path)


def test_tensorboard_not_an_event_file(tmp_path):
    path = tmp_path / "events.out.tfevents.123.host"
    path.write_bytes(struct.pack("<Q", 5) + b"garbage-garbage")
    with pytest.raises(ImportFormatError, match="record 0 \\(byte 0\\): length checksum mismatch"):
        load(path)


# -- Lightning CSV --------------------------------------------------------------------------------


def test_lightning_csv_with_hparams_yaml():
    run = one(FIXTURES / "lightning" / "camels_ch_version_0")
    assert_well_formed(run)
    assert run.format == "lightning"
    assert run.hyperparameters["hidden_size"] == 32 and run.hyperparameters["learning_rate"] == 0.003
    assert run.renamed == {"lr-Adam": "lr", "train_loss": "loss"}
    assert run.steps[:3] == [0, 49, 99]
    assert run.metrics[0] == {"lr": 0.003}  # blank cells are not values
    assert run.metrics[1] == {"epoch": 0.0, "loss": pytest.approx(0.4330207407474518), "train_mse": pytest.approx(0.4330207407474518)}


def test_lightning_csv_step_and_epoch_columns():
    run = one(FIXTURES / "lightning" / "pendulum_pinn_version_10")
    assert_well_formed(run)
    assert run.renamed == {"train_loss_step": "loss"}  # *_epoch aggregates keep their names
    assert "train_loss_epoch" in run.metric_names and "dynamics_loss_step" in run.metric_names
    assert run.steps[0] == 31 and run.metrics[0]["train_loss_epoch"] == pytest.approx(2.281492887467794)


def test_lightning_validation_batches_beside_their_epoch_value_are_left_out(tmp_path):
    # on_step=True and on_epoch=True in validation_step; Lightning before 1.6 wrote the batches at a counter of
    # validation batches (0, 1, 2...), not at the training step (a real CIFAR-10 run's metrics.csv has this shape)
    (tmp_path / "metrics.csv").write_text(
        "lr-SGD,step,train_loss_step,epoch,val_loss_step,val_acc_step,val_loss_epoch,val_acc_epoch,train_loss_epoch\n"
        ",0,,,1.59,0.46,,,\n"
        ",1,,,1.62,0.43,,,\n"
        "0.0136,49,,,,,,,\n"
        ",49,1.83,0,,,,,\n"
        ",195,,0,,,1.576,0.461,\n"
        ",195,,0,,,,,1.62\n"
        ",200,,,2.68,0.48,,,\n"
    )
    run = one(tmp_path / "metrics.csv")
    assert run.steps == [49, 195] and "val_loss_step" not in run.metric_names
    assert run.metrics[1]["val/loss"] == pytest.approx(1.576) and run.metrics[1]["val/acc"] == pytest.approx(0.461)
    assert any("left out val_acc_step, val_loss_step" in n for n in run.notes)
    # a training metric's batches stay beside its epoch means, and validation batches stay when they are all there is
    assert one(FIXTURES / "lightning" / "pendulum_pinn_version_10").renamed == {"train_loss_step": "loss"}
    (tmp_path / "metrics.csv").write_text("step,train_loss,val_loss_step\n10,1.0,\n10,,1.2\n20,0.9,\n")
    assert one(tmp_path / "metrics.csv").metrics[0] == {"loss": 1.0, "val/loss": 1.2}


def test_lightning_before_1_0_without_a_step_column_is_read_by_epoch_with_its_time_stamps(tmp_path):
    # TestTubeLogger (Lightning < 1.0): no step column; epoch and created_at on every row
    folder = tmp_path / "lightning_logs" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(
        "train_loss,epoch,created_at\n"
        "2.31,0,2020-02-03 14:08:30.5\n"
        "1.87,1,2020-02-03 14:09:08.0\n"
        "1.52,2,2020-02-03 14:09:44.25\n"
    )
    run = one(folder / "metrics.csv")
    assert run.format == "lightning" and run.steps == [0, 1, 2]
    assert [m["loss"] for m in run.metrics] == [2.31, 1.87, 1.52]
    assert run.wall_times[1] - run.wall_times[0] == pytest.approx(37.5)
    assert "created_at" not in run.metric_names


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines.__setitem__(3, lines[3] + ",1.0"), r"metrics\.csv:line 4: 6 fields, the header has 5"),
        (lambda lines: lines.__setitem__(2, lines[2].replace("0.43302", "zero.43302")), r"metrics\.csv:line 3: column 'train_loss' is not a number: 'zero\.43302"),
        (lambda lines: lines.__setitem__(5, lines[5].replace(",199,", ",-4,")), r"metrics\.csv:line 6: step must be a non-negative integer, got '-4'"),
        (lambda lines: lines.__setitem__(0, lines[0].replace("step", "stp")), r"metrics\.csv:line 1: no 'step' column"),
    ],
)
def test_lightning_csv_malformed(tmp_path, edit, message):
    src = FIXTURES / "lightning" / "camels_ch_version_0" / "metrics.csv"
    lines = src.read_text().splitlines()
    edit(lines)
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError, match=message):
        load(path)


# -- Hugging Face trainer_state.json ---------------------------------------------------------------


def test_hf_trainer_state():
    run = one(FIXTURES / "hf" / "lora_imdb_distilbert")
    assert_well_formed(run)
    assert run.format == "hf" and run.wall_times == [0.0] * len(run.steps)  # the file has no clock
    assert run.hyperparameters["train_batch_size"] == 16 and run.hyperparameters["max_steps"] == 375
    assert run.renamed["eval_loss"] == "val/loss" and run.renamed["learning_rate"] == "lr"
    assert run.metrics[0] == {"epoch": 0.16, "grad_norm": pytest.approx(0.7468545436859131), "lr": pytest.approx(0.00018986666666666668), "loss": 0.6899}
    assert run.steps[-1] == 375 and run.metrics[-1]["val/loss"] == pytest.approx(0.3891691565513611)


def test_hf_checkpoint_folder_name_and_same_step_merge():
    run = one(FIXTURES / "hf" / "bert_project2_checkpoint-2400" / "trainer_state.json")
    assert run.name == "bert_project2_checkpoint-2400/checkpoint-2400" or run.name.endswith("checkpoint-2400")
    # training and evaluation logs at step 100 are one event
    first = run.metrics[0]
    assert run.steps[0] == 100 and {"loss", "val/loss", "val/acc"} <= set(first)


def test_hf_malformed(tmp_path):
    state = json.loads((FIXTURES / "hf" / "lora_imdb_distilbert" / "trainer_state.json").read_text())
    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [\n  {"step": 1, "loss": 0.5},\n  {"step": 2 "loss": 0.4}\n]}')
    with pytest.raises(ImportFormatError, match=r"trainer_state\.json:line 3 column 14: invalid JSON"):
        load(path)
    state["log_history"][3]["step"] = "three"
    path.write_text(json.dumps(state))
    with pytest.raises(ImportFormatError, match=r"trainer_state\.json:log_history\[3\]: step is not an integer: 'three'"):
        load(path)
    path.write_text(json.dumps({"global_step": 3}))
    with pytest.raises(ImportFormatError, match="log_history: missing"):
        load(path)


# -- MLflow file store ----------------------------------------------------------------------------


def test_mlflow_file_store():
    runs = {r.name: r for r in load(FIXTURES / "mlflow_mlruns")}
    assert set(runs) == {"healthy-adam", "diverging-sgd"}  # the deleted run is skipped
    healthy, diverging = runs["healthy-adam"], runs["diverging-sgd"]
    for run in runs.values():
        assert_well_formed(run)
        assert run.format == "mlflow" and run.project == "digits-mlp"
    assert healthy.status == "finished" and diverging.status == "failed"
    assert healthy.hyperparameters == {"hidden": "128,64", "lr": 0.001, "optimizer": "adam"}
    assert healthy.environment["git.commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert healthy.metric_names == ["loss", "lr", "val/loss"]  # val/loss is a nested metrics/val/loss file
    assert len(healthy.steps) == 20 and healthy.metrics[4]["val/loss"] == pytest.approx(2.4 * 0.9**4)
    assert math.isnan(diverging.metrics[-1]["loss"]) and diverging.steps[-1] == 9
    assert healthy.end_time > healthy.start_time > 1.7e9
    # one run's folder works too
    run_dir = healthy.source
    assert [r.name for r in load(run_dir)] == ["healthy-adam"]


def test_mlflow_malformed_metric_line(tmp_path):
    store = tmp_path / "mlruns"
    shutil.copytree(FIXTURES / "mlflow_mlruns", store)
    metric = next(p for p in store.rglob("metrics/train_loss") if "lr" in [q.name for q in p.parent.parent.joinpath("params").iterdir()])
    lines = metric.read_text().splitlines()
    lines[1] = "1795267293419 not-a-number 1"
    metric.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError, match=r"metrics/train_loss:line 2: value is not a number: 'not-a-number'"):
        load(store)


def test_mlflow_points_logged_without_a_step(tmp_path):
    """Seen in real stores: summaries logged after training with no step (MLflow puts them at step 0), and a
    metric logged every epoch with no step at all; the experiment's own meta.yaml not in the repository."""
    run_dir = tmp_path / "mlruns" / "7" / "3f1c"
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "meta.yaml").write_text("run_name: har-mlp\nstatus: 3\nlifecycle_stage: active\n")
    t0 = 1_700_000_000_000
    train = [(t0 + k, 1.0 / (k + 1), k) for k in range(5)]
    summary = [(t0 + 10, 0.2, 0), (t0 + 11, 1.0, 0)]  # final, then first: the summaries MLflow gives step 0
    (run_dir / "metrics" / "train_loss").write_text("".join(f"{t} {v} {s}\n" for t, v, s in train + summary))
    (run_dir / "metrics" / "validation_loss").write_text("".join(f"{t0 + k} {0.9 - 0.1 * k} 0\n" for k in range(5)))
    (run,) = load(tmp_path / "mlruns")
    assert run.steps == [0, 1, 2, 3, 4]
    assert [m["loss"] for m in run.metrics] == [1.0, 0.5, 1 / 3, 0.25, 0.2]  # step 0 keeps the first epoch's value
    assert [m["val/loss"] for m in run.metrics] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])  # one per step
    assert any("'train_loss': 2 point(s) at step 0 after step 4" in n for n in run.notes)
    assert any("'validation_loss': 5 points all at step 0" in n for n in run.notes)
    assert not any("backwards" in n for n in run.notes)  # one metric file after another is not a restart


# -- long format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["modded_nanogpt_slice.csv", "modded_nanogpt_slice.jsonl"])
def test_long_format(name):
    runs = {r.name: r for r in load(FIXTURES / "long" / name)}
    assert len(runs) == 2
    short = runs["records/track_1_short/2024-12-04_ValueEmbed/00008ea0-21dd-442a-82ee-d12799249d0f.txt"]
    assert_well_formed(short)
    assert short.format == name.rsplit(".", 1)[1]
    assert short.metric_names == ["loss", "val/loss"] and len(short.steps) == 301
    assert short.metrics[0] == {"val/loss": 10.8258}  # no train_loss logged at step 0
    assert short.metrics[1] == {"loss": pytest.approx(short.metrics[1]["loss"])} and short.steps[1] == 1
    assert short.metrics[-1] == {"loss": 3.9658}
    assert short.environment == {"source": "modded_nanogpt"}  # a column constant over the run
    assert short.original_id.startswith("records/") and short.run_id().startswith("replay-")
    assert len(short.run_id()) <= 128


def test_long_format_malformed(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"run_id": "a", "step": 0, "metric": "loss", "value": 1.0}\n{"run_id": "a", "step": 1, "metric": "loss"}\n')
    with pytest.raises(ImportFormatError, match=r"log\.jsonl:line 2: missing value"):
        load(path)
    path.write_text('{"run_id": "a", "step": 0, "metric": "loss", "value": 1.0}\n{"run_id": "a", "step": 1,\n')
    with pytest.raises(ImportFormatError, match=r"log\.jsonl:line 2 column \d+: invalid JSON"):
        load(path)
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("run_id,step,metric,value\na,0,loss,1.0\na,x,loss,0.9\n")
    with pytest.raises(ImportFormatError, match=r"log\.csv:line 3: step is not an integer: 'x'"):
        load(csv_path)


def test_long_format_steps_are_read_exactly_and_checked_against_the_wire_limit(tmp_path):
    """Steps past 2**53 were read through a float (9007199254740993 became ...992), and one past 2**63 - 1 was only
    refused while sending, after the rows before it had gone: a half-sent run left RUNNING, even with --strict."""
    csv_path = tmp_path / "big.csv"
    csv_path.write_text("step,metric,value\n0,loss,1\n9007199254740993,loss,0.5\n9223372036854775807,loss,0.4\n")
    (run,) = load(csv_path)
    assert [int(s) for s in run.steps] == [0, 9007199254740993, 2**63 - 1]
    csv_path.write_text("step,metric,value\n0,loss,1\n9223372036854775808,loss,0.4\n")
    with pytest.raises(ImportFormatError, match=r"big\.csv:line 3: step must be at most 9223372036854775807"):
        load(csv_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ImportFormatError, match=r"empty\.csv:file: the file is empty"):
        load(tmp_path / "empty.csv")
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text('{"step": 9007199254740993, "metric": "loss", "value": 1.0}\n{"step": 1e300, "metric": "loss", "value": 1.0}\n')
    with pytest.raises(ImportFormatError, match=r"big\.jsonl:line 2: step 1e\+300 is a float too large"):
        load(jsonl)


# -- detection and names --------------------------------------------------------------------------


def test_detect_a_folder_of_mixed_logs():
    found = detect(FIXTURES)
    formats = sorted(f for f, _ in found)
    assert formats == ["csv", "hf", "hf", "jsonl", "lightning", "lightning", "mlflow", "tensorboard", "tensorboard",
                       "tensorboard"]  # fmt: skip
    runs = load(FIXTURES)
    assert len(runs) == 2 + 2 + 2 + 3 + 4  # the long-format slices hold two runs each
    labels = {r.display for r in runs}
    assert "training_logs/lightning/camels_ch_version_0" in labels  # shown by their folder below the root
    again = {r.run_id() for r in load(FIXTURES / "lightning")}
    assert again <= {r.run_id() for r in runs}  # run ids do not depend on where the search started


def test_unknown_file_is_named(tmp_path):
    path = tmp_path / "notes.bin"
    path.write_bytes(b"\x00\x01hello\xff")  # not text: a text log would be replayed as lines
    with pytest.raises(ImportFormatError, match=r"notes\.bin:file: unknown format"):
        load(path)
    config = tmp_path / "config.json"
    config.write_text('{"lr": 0.1}')  # structured text is never taken for a log
    with pytest.raises(ImportFormatError, match=r"config\.json:file: unknown format"):
        load(config)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


def test_canonical_names():
    assert canonical_name("train_loss") == "loss"
    assert canonical_name("eval_accuracy") == "val/acc"
    assert canonical_name("valid/loss") == "val/loss"
    assert canonical_name("loss/val") == "val/loss"
    assert canonical_name("lr-AdamW") == "lr" and canonical_name("lr-AdamW/pg1") == "lr-AdamW/pg1"
    assert canonical_name("train_loss_epoch") == "train_loss_epoch"
    assert canonical_name("my metric") == "my_metric"  # whitespace is refused by the server
    assert rename_map(["loss", "train_loss"]) == {"loss": "loss", "train_loss": "train_loss"}
    assert rename_map(["Loss/train", "train_loss"]) == {"Loss/train": "loss", "train_loss": "train_loss"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data/training-logs is not present")
def test_every_shared_log_file_reads():
    runs = load(SHARED / "github_run_logs") + load(SHARED / "hf_trainer_state")
    assert len(runs) == 131 + 78 + 86 + 4  # metrics.csv, event folders, *.log, trainer_state.json
    for run in runs:
        assert_well_formed(run) if run.steps else None
    text = [r for r in runs if r.format == "text"]
    assert sum(bool(r.lines) for r in text) == 85  # slm_training's logs
    table = next(r for r in text if r.steps)  # a train.log that is a step/loss table
    assert table.metric_names == ["loss"] and table.steps[:2] == [10, 20] and not table.lines
