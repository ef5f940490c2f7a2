"""Wide tables (one row per step, one column per metric): Keras CSVLogger, W&B history exports, scripts' own tables."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runwatch.client.importers import ImportFormatError, Problems, detect, load, wide_table

# Keras' CSVLogger writes the epoch, then the logs dict's keys sorted (append=False), one row per epoch.
KERAS = """epoch,accuracy,learning_rate,loss,val_accuracy,val_loss
0,0.6125,0.001,1.1021,0.7010,0.8843
1,0.7843,0.001,0.6512,0.7655,0.6901
2,0.8390,0.001,0.4870,0.7790,0.6512
3,0.8801,0.0005,0.3642,0.7802,0.6733
"""

# A W&B run history as the UI's "Export as CSV" / run.history().to_csv() writes it: bookkeeping columns first,
# a media column whose cells are JSON strings, blanks where a key was not logged at that step.
WANDB_CSV = """_step,_runtime,_timestamp,train/loss,train/learning_rate,train/grad_norm,eval/loss,gradients/fc1
0,3.1,1717000000.25,2.3126,5e-05,1.92,,"{""_type"": ""histogram""}"
10,9.8,1717000006.9,2.1088,5e-05,1.71,,
20,16.4,1717000013.5,1.9902,5e-05,1.66,2.0415,"{""_type"": ""histogram""}"
30,23.0,1717000020.1,nan,5e-05,inf,,
"""


def one(path, **kw):
    runs = load(path, **kw)
    assert len(runs) == 1
    return runs[0]


def test_a_keras_csvlogger_log_is_read_by_epoch_with_runwatch_names(tmp_path):
    log = tmp_path / "cifar_resnet" / "training.log"  # CSVLogger's usual file name: detected by content
    log.parent.mkdir()
    log.write_text(KERAS)
    run = one(log)
    assert run.format == "text" and not run.lines and run.steps == [0, 1, 2, 3]
    assert run.metrics[3] == {"accuracy": 0.8801, "lr": 0.0005, "loss": 0.3642, "val/acc": 0.7802, "val/loss": 0.6733}
    assert "indexed by epoch (no step column): each epoch is one step" in run.notes
    csv_file = tmp_path / "history.csv"
    csv_file.write_text(KERAS)
    assert detect(csv_file) == [("wide", csv_file)] and one(csv_file).metrics == run.metrics


def test_a_keras_csvlogger_log_written_on_windows_reads_the_same(tmp_path):
    # csv's "\r\n" written through a text-mode file on Windows: every line ends "\r\r\n" (a blank line between rows)
    log = tmp_path / "training_log.csv"
    log.write_bytes(KERAS.replace("\n", "\r\r\n").encode())
    plain = tmp_path / "plain" / "training_log.csv"
    plain.parent.mkdir()
    plain.write_text(KERAS)
    assert detect(log) == [("wide", log)]
    assert one(log).steps == one(plain).steps and one(log).metrics == one(plain).metrics


def test_keras_csvlogger_files_are_found_in_a_folder_by_their_usual_names_and_other_tables_are_not(tmp_path):
    for name in ("a/training_log.csv", "b/history.csv"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text(KERAS)
    (tmp_path / "data.csv").write_text(KERAS)  # any other table: only with --format wide
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "history.csv").write_text("name,age\nann,31\n")  # a usual name, not a training log
    found = detect(tmp_path)
    assert found == [("wide", tmp_path / "a" / "training_log.csv"), ("wide", tmp_path / "b" / "history.csv")]
    assert len(load(tmp_path)) == 2


def test_a_wandb_csv_export_keeps_its_clock_and_numbers_and_names_the_media_column(tmp_path):
    path = tmp_path / "wandb_export_2024-05-29.csv"
    path.write_text(WANDB_CSV)
    lenient = Problems(strict=False)
    run = one(path, problems=lenient)
    assert run.format == "wide" and run.steps == [0, 10, 20, 30]
    assert run.wall_times == [1717000000.25, 1717000006.9, 1717000013.5, 1717000020.1]
    assert run.metrics[2] == {"loss": 1.9902, "lr": 5e-05, "grad_norm": 1.66, "val/loss": 2.0415}
    assert math.isnan(run.metrics[3]["loss"]) and run.metrics[3]["grad_norm"] == math.inf  # signal, kept
    assert not any(k.startswith("_") for m in run.metrics for k in m)  # W&B's bookkeeping is not a metric
    (problem,) = lenient.skipped  # the media column is reported once, its numbers' neighbours kept
    assert "line 2: column 'gradients/fc1' is not a number" in str(problem) and "the cell was left out" in str(problem)
    assert "column 'gradients/fc1': 2 non-numeric cell(s) left out" in run.notes
    with pytest.raises(ImportFormatError, match=r"line 2: column 'gradients/fc1' is not a number"):
        load(path)  # strict: all or nothing


def test_wandb_history_jsonl_in_a_folder_is_found_and_bad_lines_cost_only_themselves(tmp_path):
    files = tmp_path / "wandb" / "run-20240529_101500-3x7k2p" / "files"
    files.mkdir(parents=True)
    rows = [
        {"_step": 0, "_runtime": 2.0, "_timestamp": 1717000000123, "loss": 0.91, "epoch": 0, "media": {"_type": "image"}},
        {"_step": 1, "_runtime": 4.0, "_timestamp": 1717000002123, "loss": 0.85, "val_loss": None},
        "not json",
        {"_step": 2, "_runtime": 6.0, "_timestamp": 1717000004123, "loss": 0.80, "val_loss": 0.93},
    ]
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    (files / "wandb-history.jsonl").write_text(text)
    (files / "config.yaml").write_text(
        "wandb_version: 1\n_wandb:\n  desc: null\n  value:\n    cli_version: 0.17.0\nlearning_rate:\n  desc: null\n"
        "  value: 0.001\nbatch_size:\n  desc: null\n  value: 64\noptimizer:\n  desc: null\n  value:\n    name: adamw\n"
    )
    assert [fmt for fmt, _ in detect(tmp_path)] == ["wide"]
    lenient = Problems(strict=False)
    run = one(tmp_path, problems=lenient)
    assert run.steps == [0, 1, 2] and run.wall_times == [1717000000.123, 1717000002.123, 1717000004.123]  # ms -> s
    assert run.metrics[2] == {"loss": 0.80, "val/loss": 0.93} and run.metrics[0] == {"loss": 0.91, "epoch": 0.0}
    assert sorted(str(p).split(": ", 1)[1] for p in lenient.skipped) == [
        (
            "column 'media' is not a number: {'_type': 'image'}; the cell was left out (and any later non-numeric "
            "cell of this column)"
        ),
        "invalid JSON: Expecting value; the line was skipped",
    ]
    assert run.name == "run-20240529_101500-3x7k2p" and run.original_id == "3x7k2p" and run.tags == ["wandb"]
    assert run.hyperparameters == {"learning_rate": 0.001, "batch_size": 64, "optimizer.name": "adamw"}


def test_a_scripts_own_table_with_another_step_name_and_a_table_without_one(tmp_path):
    tsv = tmp_path / "losses.tsv"
    tsv.write_text("global_step\tloss\tlr\n100\t2.5\t0.01\n200\t2.1\t0.01\n200\t2.0\t0.01\n")
    run = one(tsv)
    assert run.steps == [100, 200] and run.metrics[1] == {"loss": 2.0, "lr": 0.01}  # the later value of a step wins
    bare = tmp_path / "scores.csv"
    bare.write_text("loss,acc\n0.5,0.9\n")
    with pytest.raises(ImportFormatError, match="a wide table"):
        detect(bare)
    with pytest.raises(ImportFormatError, match=r"no 'step' column in the header \['loss', 'acc'\]; also accepted: "):
        load(bare, fmt="wide")


def test_docstring_examples():
    import doctest

    from runwatch.models import metric_names

    for module in (wide_table, metric_names):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_index_and_separator_sniffing():
    assert wide_table.index_column(["epoch", "iteration", "loss"]) == "iteration"
    assert wide_table.index_column(["epoch", "loss"], indexes=("step",)) is None  # Lightning: step only
    assert wide_table.sniff_text("Iteration 10 | loss 2.3\nIteration 20 | loss 2.2\n") is None


_NAMES = st.sampled_from(["loss", "val_loss", "acc", "grad_norm", "lr", "w/b", "x1"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.sampled_from([*wide_table.INDEX_COLUMNS, "epoch"]),
    names=st.lists(_NAMES, min_size=1, max_size=5, unique=True),
    steps=st.lists(st.integers(0, 10**9), min_size=1, max_size=20, unique=True),
    data=st.data(),
)
def test_any_numeric_table_reads_back_exactly(tmp_path, index, names, steps, data):
    value = st.one_of(st.none(), st.floats(allow_nan=False, width=64), st.just(math.inf))
    table = [[data.draw(value) for _ in names] for _ in steps]
    lines = [",".join([index, *names])]
    lines += [",".join([str(s), *("" if v is None else repr(v) for v in row)]) for s, row in zip(steps, table)]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    (run,) = wide_table.read(path, canonical=False)
    want = {s: {n: v for n, v in zip(names, row) if v is not None} for s, row in zip(steps, table)}
    want = {s: m for s, m in want.items() if m}
    assert run.steps == sorted(want) and run.metrics == [want[s] for s in sorted(want)]


def test_a_tensorboard_csv_download_names_its_metric_after_the_tag(tmp_path):
    path = tmp_path / "run-version_0-tag-val_loss.csv"
    path.write_text("Wall time,Step,Value\n1717000000.5,99,0.91\n1717000060.25,199,0.84\n")
    run = one(path)
    assert run.format == "wide" and run.steps == [99, 199] and run.wall_times == [1717000000.5, 1717000060.25]
    assert run.metrics == [{"val/loss": 0.91}, {"val/loss": 0.84}]


# detectron2's output/metrics.json: JSON Lines despite the name, a training line every 20 iterations and the
# evaluation's results on a line of their own at the same iteration.
DETECTRON2 = [
    {"data_time": 0.004, "iteration": 19, "loss_box_reg": 0.61, "loss_cls": 0.93, "lr": 4.9e-05, "time": 0.31,
     "total_loss": 1.98},
    {"data_time": 0.003, "iteration": 39, "loss_box_reg": 0.58, "loss_cls": 0.71, "lr": 9.9e-05, "time": 0.30,
     "total_loss": 1.62},
    {"bbox/AP": 0.0, "bbox/AP50": 0.0, "iteration": 39},
]


def test_detectron2_metrics_json_is_read_as_json_lines_and_found_in_a_folder(tmp_path):
    out = tmp_path / "faster_rcnn" / "output"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("\n".join(json.dumps(r) for r in DETECTRON2) + "\n")
    (out / "config.json").write_text('{\n  "MODEL": {"WEIGHTS": "x.pkl"},\n  "SOLVER": {"BASE_LR": 0.00025}\n}\n')
    assert detect(out / "metrics.json") == [("wide", out / "metrics.json")]
    assert detect(tmp_path) == [("wide", out / "metrics.json")]  # the config document is not a table
    run = one(tmp_path)
    assert run.steps == [19, 39]
    assert [m["loss"] for m in run.metrics] == [1.98, 1.62]  # total_loss is the loss
    assert run.metrics[1]["bbox/AP"] == 0.0 and run.metrics[1]["loss_cls"] == 0.71
    with pytest.raises(ImportFormatError, match="unknown format"):
        detect(out / "config.json")


# Ultralytics YOLOv5 pads its results.csv header (and YOLOv8's first releases did too); later versions do not.
YOLOV5 = """               epoch,      train/box_loss,      train/obj_loss,      train/cls_loss,     metrics/mAP_0.5,        val/box_loss,        val/obj_loss,        val/cls_loss,               x/lr0
                   0,             0.10417,            0.032345,            0.031032,           0.0010087,            0.091853,            0.024051,            0.026976,              0.0703
                   1,            0.085057,            0.034788,            0.025684,            0.014426,            0.080028,            0.027041,            0.021774,            0.040177
"""
YOLOV8 = """epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/mAP50(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0
1,9.9,1.1267,1.17186,1.15737,0.77837,1.31339,1.33454,1.25503,3.334e-05
2,17.6,1.06919,1.03603,1.14055,0.81605,1.22828,1.20288,1.22698,8.28e-05
"""


def test_ultralytics_results_csv_files_are_found_in_a_runs_folder(tmp_path):
    for task, text in (("detect/train", YOLOV8), ("detect/train2", YOLOV5)):
        (tmp_path / "runs" / task).mkdir(parents=True)
        (tmp_path / "runs" / task / "results.csv").write_text(text)
    (tmp_path / "results.csv").write_text("model,score\nresnet,0.9\n")  # a results table without a step: not a run
    runs = sorted(load(tmp_path), key=lambda r: len(r.metric_names))
    assert [len(r.steps) for r in runs] == [2, 2]
    v5, v8 = runs
    assert v5.steps == [0, 1] and v5.metrics[1]["train/obj_loss"] == 0.034788  # padded names read stripped
    assert v8.steps == [1, 2] and v8.metrics[0]["metrics/mAP50(B)"] == 0.77837


# OpenMMLab, MMCV 1.x (mmdet 2.x): <timestamp>.log.json beside the text log. The first line is the environment
# and config; ``iter`` restarts each epoch (epoch-based runner); the val row's iter is the epoch's length.
MMCV_LOG_JSON = [
    {"env_info": "sys.platform: linux\nPython: 3.8", "config": "model = dict(type='FasterRCNN')", "seed": 42},
    {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.0198, "memory": 3861, "data_time": 0.05, "loss_rpn_cls": 0.3,
     "loss_cls": 0.9, "loss": 1.6, "time": 0.4},
    {"mode": "train", "epoch": 1, "iter": 100, "lr": 0.02, "memory": 3861, "data_time": 0.04, "loss_rpn_cls": 0.2,
     "loss_cls": 0.7, "loss": 1.2, "time": 0.4},
    {"mode": "val", "epoch": 1, "iter": 118, "lr": 0.02, "bbox_mAP": 0.12, "bbox_mAP_50": 0.25},
    {"mode": "train", "epoch": 2, "iter": 50, "lr": 0.02, "memory": 3861, "data_time": 0.04, "loss_rpn_cls": 0.1,
     "loss_cls": 0.6, "loss": 1.0, "time": 0.4},
    {"mode": "val", "epoch": 2, "iter": 118, "lr": 0.02, "bbox_mAP": 0.18, "bbox_mAP_50": 0.33},
]
# MMEngine (mmdet 3.x, mmseg 1.x, mmpretrain): vis_data/scalars.json. Training rows step by iteration; the
# epoch-based loop's validation rows step by *epoch*.
MMENGINE_SCALARS = [
    {"lr": 0.01, "data_time": 0.2, "loss": 1.9, "loss_cls": 1.1, "time": 0.5, "epoch": 1, "iter": 10, "memory": 9,
     "step": 10},
    {"lr": 0.01, "data_time": 0.2, "loss": 1.5, "loss_cls": 0.9, "time": 0.5, "epoch": 1, "iter": 20, "memory": 9,
     "step": 20},
    {"coco/bbox_mAP": 0.05, "coco/bbox_mAP_s": -1.0, "data_time": 0.9, "time": 1.1, "step": 1},
    {"lr": 0.01, "data_time": 0.2, "loss": 1.2, "loss_cls": 0.7, "time": 0.5, "epoch": 2, "iter": 30, "memory": 9,
     "step": 30},
    {"coco/bbox_mAP": 0.09, "coco/bbox_mAP_s": -1.0, "data_time": 0.8, "time": 1.0, "step": 2},
]


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_mmcv_log_json_epochs_follow_one_another_instead_of_overwriting(tmp_path):
    log = tmp_path / "work_dirs" / "faster_rcnn_r50_fpn_1x" / "20220311_101010.log.json"
    write_jsonl(log, MMCV_LOG_JSON)
    (log.parent / "20220311_101010.log").write_text("2022-03-11 10:10:10,000 - mmdet - INFO - Epoch [1][50/118]\n")
    assert detect(log) == [("wide", log)]
    assert ("wide", log) in detect(tmp_path)  # found in a folder walk by its name
    run = one(log)
    assert run.name.endswith("faster_rcnn_r50_fpn_1x/20220311_101010")
    # Epoch 2 starts where epoch 1 ended (118 iterations), not back at 50.
    assert run.steps == [50, 100, 118, 168, 236]
    assert [m.get("loss") for m in run.metrics] == [1.6, 1.2, None, 1.0, None]
    assert run.metrics[2] == {"bbox_mAP": 0.12, "bbox_mAP_50": 0.25}  # no lr, timing or counters on the val row
    assert "epoch" not in run.metric_names and "mode" not in run.metric_names
    assert run.hyperparameters["seed"] == 42
    assert any("restarted at 1 epoch" in n for n in run.notes)


def test_mmcv_validation_loss_of_a_val_workflow_is_named_as_validation(tmp_path):
    rows = [MMCV_LOG_JSON[0], MMCV_LOG_JSON[1], MMCV_LOG_JSON[2],
            {"mode": "val", "epoch": 1, "iter": 20, "lr": 0.02, "loss_cls": 1.1, "loss": 1.7}]  # fmt: skip
    log = tmp_path / "20220311_101010.log.json"
    write_jsonl(log, rows)
    run = one(log)
    # The val loader's 20 iterations are not the epoch's length: the row goes to the last training step.
    assert run.steps == [50, 100]
    assert run.metrics[1]["loss"] == 1.2 and run.metrics[1]["val/loss"] == 1.7 and run.metrics[1]["val/loss_cls"] == 1.1


def test_mmengine_scalars_validation_by_epoch_lands_after_its_epoch(tmp_path):
    scalars = tmp_path / "work_dirs" / "rtmdet_tiny_cat" / "20230908_131313" / "vis_data" / "scalars.json"
    write_jsonl(scalars, MMENGINE_SCALARS)
    assert detect(tmp_path) == [("wide", scalars)]
    run = one(tmp_path)
    assert run.name == "rtmdet_tiny_cat/20230908_131313"
    assert run.steps == [10, 20, 30]  # not 1 and 2: epochs 1 and 2 end at iterations 20 and 30
    assert run.metrics[1]["coco/bbox_mAP"] == 0.05 and run.metrics[2]["coco/bbox_mAP"] == 0.09
    assert run.metrics[1]["time"] == 0.5  # the training step's time, not the evaluation's
    assert "iter" not in run.metric_names and "epoch" not in run.metric_names


def test_mmengine_iteration_based_validation_keeps_its_step(tmp_path):
    rows = [{"lr": 0.01, "data_time": 0.1, "loss": 2.0, "time": 0.3, "iter": 50, "memory": 9, "step": 50},
            {"lr": 0.01, "data_time": 0.1, "loss": 1.8, "time": 0.3, "iter": 100, "memory": 9, "step": 100},
            {"aAcc": 90.1, "mIoU": 61.0, "data_time": 0.2, "time": 0.4, "step": 100}]  # fmt: skip
    scalars = tmp_path / "scalars.json"
    write_jsonl(scalars, rows)
    run = one(scalars)
    assert run.steps == [50, 100] and run.metrics[1]["mIoU"] == 61.0 and run.metrics[1]["loss"] == 1.8
    assert not any("placed at the last training" in n for n in run.notes)


def test_a_plain_json_lines_table_with_an_epoch_column_is_not_taken_for_openmmlab(tmp_path):
    rows = [{"step": 10, "epoch": 1, "loss": 1.0}, {"step": 20, "epoch": 1, "loss": 0.9}, {"step": 5, "val_acc": 0.5}]
    table = tmp_path / "history.jsonl"
    write_jsonl(table, rows)
    run = one(table)
    assert run.steps == [5, 10, 20] and "epoch" in run.metric_names


def test_mmcv_validation_iter_beyond_one_logging_interval_is_not_taken_for_the_epoch_length(tmp_path):
    # Logged every 10 iterations up to 20; a val row at iter 64 counts validation batches, not the epoch.
    train = [{"mode": "train", "epoch": e, "iter": i, "lr": 0.01, "loss": 2.0 - 0.1 * e - 0.001 * i}
             for e in (1, 2) for i in (10, 20)]  # fmt: skip
    rows = [{}, *train[:2], {"mode": "val", "epoch": 1, "iter": 64, "lr": 0.01, "mIoU": 0.5}, *train[2:]]
    log = tmp_path / "20220101_000000.log.json"
    write_jsonl(log, rows)
    run = one(log)
    assert run.steps == [10, 20, 30, 40] and run.metrics[1]["mIoU"] == 0.5


# pandas: pd.DataFrame(history.history).to_csv(path) writes the index under an empty name; index=False writes none.
PANDAS_HISTORY = """,loss,accuracy,val_loss,val_accuracy
0,0.6921,0.5210,0.6712,0.5830
1,0.5873,0.6904,0.6015,0.6750
2,0.4802,0.7755,0.5891,0.7011
"""


def test_a_pandas_history_dump_is_read_by_its_index_or_by_position(tmp_path):
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "training_history.csv").write_text(PANDAS_HISTORY)
    no_index = "\n".join(line.split(",", 1)[1] for line in PANDAS_HISTORY.splitlines()) + "\n"
    (tmp_path / "lstm").mkdir()
    (tmp_path / "lstm" / "model_history.csv").write_text(no_index)
    (tmp_path / "lstm" / "predictions.csv").write_text("label,score\n1,0.9\n0,0.2\n")  # not a history: left alone
    runs = {r.name: r for r in load(tmp_path)}
    assert set(runs) == {"cnn/training_history", "lstm/model_history"}
    for run in runs.values():
        assert run.steps == [0, 1, 2]
        assert run.metrics[1] == {"loss": 0.5873, "accuracy": 0.6904, "val/loss": 0.6015, "val/acc": 0.675}
    assert any("pandas' index" in n for n in runs["cnn/training_history"].notes)
    assert any("rows in order, from 0" in n for n in runs["lstm/model_history"].notes)
    with pytest.raises(ImportFormatError, match="unknown format"):
        detect(tmp_path / "lstm" / "predictions.csv")


def test_a_ray_tune_trial_folder_is_one_run_without_rays_bookkeeping(tmp_path):
    from runwatch.client.importers import detect, load

    trial = tmp_path / "ray_results" / "train_fn_2024" / "train_fn_a1b2c_00000_0_lr=0.0100"
    trial.mkdir(parents=True)
    header = ("loss,val_loss,timestamp,checkpoint_dir_name,done,training_iteration,trial_id,date,time_this_iter_s,"
              "time_total_s,pid,hostname,node_ip,time_since_restore,iterations_since_restore,config/lr,config/layers")
    rows = [f"{2.3 * 0.9**i:.4f},{2.4 * 0.9**i:.4f},{1700000000 + i},,False,{i + 1},a1b2c_00000,2024-01-01_00-00-0{i},"
            f"1.5,{1.5 * (i + 1)},4242,node,10.0.0.1,{1.5 * (i + 1)},{i + 1},0.01,3" for i in range(5)]
    (trial / "progress.csv").write_text("\n".join([header, *rows]) + "\n")
    (trial / "result.json").write_text('{"loss": 2.3, "training_iteration": 1}\n')  # the same results, as JSON
    assert [(fmt, p.name) for fmt, p in detect(tmp_path)] == [("wide", "progress.csv")]
    (run,) = load(tmp_path)
    assert run.steps == [1, 2, 3, 4, 5] and run.wall_times[0] == 1700000000.0
    assert run.metric_names == ["loss", "time_this_iter_s", "val/loss"]
    assert run.hyperparameters == {"lr": 0.01, "layers": 3}


def test_keras_na_cells_are_not_logged_and_appended_trainings_are_laid_end_to_end(tmp_path):
    from runwatch.client.importers import load

    # CSVLogger(append=True) over two fit() calls: epochs 0-2, then 0-1 again; NA where validation did not run
    path = tmp_path / "training_history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.90,NA\n1,0.70,0.75\n2,0.60,NA\n0,0.58,0.62\n1,0.55,NA\n")
    (run,) = load(path)  # strict: an NA is no malformed cell
    assert run.steps == [0, 1, 2, 3, 4]
    assert [m.get("loss") for m in run.metrics] == [0.90, 0.70, 0.60, 0.58, 0.55]
    assert [m.get("val/loss") for m in run.metrics] == [None, 0.75, None, 0.62, None]
    assert any("started again 1 time(s)" in n for n in run.notes)
