"""A folder of long-format files replays without --format; a folder of nothing says what was looked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runwatch.client.importers import ImportFormatError, load


@pytest.fixture
def long_csv(tmp_path):
    folder = tmp_path / "csvdir"
    folder.mkdir()
    rows = "".join(f"{s},loss,{2 - s / 10}\n" for s in range(5))
    (folder / "metrics_long.csv").write_text("step,metric,value\n" + rows)
    return folder


@pytest.fixture
def long_jsonl(tmp_path):
    folder = tmp_path / "jl"
    folder.mkdir()
    rows = [{"step": s, "metric": "loss", "value": 2 - s / 10} for s in range(5)]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("folder, fmt", [("long_csv", "csv"), ("long_jsonl", "jsonl")])
def test_a_folder_of_long_format_files_is_read_without_format(folder, fmt, request):
    (run,) = load(request.getfixturevalue(folder))
    assert run.format == fmt and run.steps == [0, 1, 2, 3, 4] and run.metric_names == ["loss"]


def test_other_tables_in_a_folder_are_still_left_to_format(tmp_path):
    (tmp_path / "data.csv").write_text("id,label\n1,cat\n")
    (tmp_path / "rows.jsonl").write_text('{"id": 1, "label": "cat"}\n')
    with pytest.raises(ImportFormatError) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: no logs found below it (looked for ")  # no ":folder:" in it
    assert "long-format .csv/.jsonl" in message and "--format" in message


def test_replay_dry_run_of_a_long_format_folder(long_csv):
    done = subprocess.run([sys.executable, "-m", "runwatch.service.cli", "replay", str(long_csv), "--dry-run"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("csv ") and "5 steps, 5 values, 1 metrics" in done.stdout
