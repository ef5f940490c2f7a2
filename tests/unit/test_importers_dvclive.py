"""DVCLive output folders (``dvclive/plots/metrics/<split>/<metric>.tsv``): one run per folder."""

from __future__ import annotations

import pytest

from runwatch.client.importers import ImportFormatError, Problems, detect, load


def _write(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_dvclive_folder_is_one_run_with_runwatch_names(tmp_path):
    live = tmp_path / "project" / "dvclive"
    _write(live, "plots/metrics/train/loss.tsv", "step\tloss\n49\t0.065\n99\t0.043\n149\t0.086\n")
    _write(live, "plots/metrics/val/loss.tsv", "step\tloss\n99\t0.051\n149\t0.049\n")
    _write(live, "plots/metrics/val/acc.tsv", "step\tacc\n99\t0.91\n149\t0.92\n")
    _write(live, "metrics.json", '{"train": {"loss": 0.086}}')  # last values only: not a history
    _write(live, "params.yaml", "lr: 0.001\n")
    assert detect(tmp_path) == [("dvclive", live)]
    (run,) = load(tmp_path)
    assert run.format == "dvclive" and run.name == "project/dvclive"
    assert run.steps == [49, 99, 149]
    assert run.metrics == [{"loss": 0.065}, {"loss": 0.043, "val/loss": 0.051, "val/acc": 0.91},
                           {"loss": 0.086, "val/loss": 0.049, "val/acc": 0.92}]


def test_dvclive_before_2_0_wrote_scalars_with_a_timestamp_in_milliseconds(tmp_path):
    live = tmp_path / "dvclive"
    _write(live, "scalars/train_loss.tsv", "timestamp\tstep\ttrain_loss\n1700000000000\t0\t2.3\n1700000001500\t1\t1.9\n")
    (run,) = load(live)
    assert run.steps == [0, 1] and run.wall_times == [1700000000.0, 1700000001.5]
    assert run.metrics == [{"loss": 2.3}, {"loss": 1.9}]


def test_a_bad_row_names_its_file_and_line_and_leniently_costs_that_row(tmp_path):
    live = tmp_path / "dvclive"
    _write(live, "plots/metrics/train/loss.tsv", "step\tloss\n0\t2.3\nten\t1.9\n2\t1.7\n")
    with pytest.raises(ImportFormatError, match=r"loss\.tsv:line 3: .*step"):
        load(live)
    lenient = Problems(strict=False)
    (run,) = load(live, problems=lenient)
    assert run.steps == [0, 2] and len(lenient.skipped) == 1


def test_values_all_logged_at_one_step_are_read_in_their_order(tmp_path):
    # live.log_metric() in a loop without live.next_step(): DVCLive writes every row at step 0
    live = tmp_path / "dvclive"
    _write(live, "plots/metrics/train/loss.tsv", "step\tloss\n0\t2.3\n0\t1.9\n0\t1.7\n")
    (run,) = load(live)
    assert run.steps == [0, 1, 2] and [m["loss"] for m in run.metrics] == [2.3, 1.9, 1.7]
    assert any("rows' order used as steps" in n for n in run.notes)
