"""`runwatch nas run`: real training trials through NNI's in-process engine, from the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def runwatch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("runwatch")
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_nas_run_trains_each_trial_and_reports_the_best_as_a_diff(tmp_path):
    out = tmp_path / "trials.json"
    r = runwatch(
        "nas", "run", "--trainer", "nas_trainer:train", "--model", "nas_trainer:make_model",
        "--budget", "3", "--seed", "1", "--out", str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if re.match(r"\s*\d+\s+\d+\.\d+", line)]
    assert len(rows) == 3, r.stdout
    assert "(starting architecture)" in rows[0]  # the base is trained first, as the reference
    saved = json.loads(out.read_text())
    values = [t["value"] for t in saved["trials"]]
    assert len(values) == 3 and all(0.0 < v < 2.31 for v in values)  # trained: below ln(10), chance level
    best = min(values)
    assert f"value {best:.6g}" in r.stdout
    assert [t["params"] for t in saved["trials"]][0] == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--trainer", "no_such_module:train", "--model", "nas_trainer:make_model"), "--trainer:"),
        (("--trainer", "nas_trainer:train", "--model", "nas_trainer:missing"), "--model:"),
        (("--trainer", "nas_trainer:not_callable", "--model", "nas_trainer:make_model"), "--trainer:"),
        (("--trainer", "nas_trainer:train", "--model", "nas_trainer:make_model", "--strategy", "bohb"), "--strategy"),
    ],
)
def test_nas_run_names_the_bad_option(args, message):
    r = runwatch("nas", "run", *args, "--budget", "1", timeout=120)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr


def test_nas_run_rebuilds_and_trains_a_gru_tagger(tmp_path):
    """A non-MLP model: the trials rebuild the user's GRU tagger (embedding, 2 layers, head) and train each."""
    out = tmp_path / "trials.json"
    r = runwatch(
        "nas", "run", "--trainer", "nas_trainer:train_copy", "--model", "nas_trainer:make_gru",
        "--budget", "3", "--seed", "0", "--out", str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads(out.read_text())
    trials = saved["trials"]
    assert len(trials) == 3 and all(t["value"] is not None and 0.0 < t["value"] < 1.8 for t in trials)  # < ln 6
    gru = 3 * (8 * 24 + 24 * 24 + 2 * 24) + 3 * (24 * 24 + 24 * 24 + 2 * 24)
    assert trials[0]["params"] == 6 * 8 + gru + 24 * 6 + 6  # the base, rebuilt with the recorded shapes
    assert saved["base"]["family"] == "rnn"
    assert len({t["key"] for t in trials}) >= 2  # edited GRU taggers, rebuilt and trained
    assert "encoder (GRU 8→24)" in r.stdout, r.stdout  # edits named by the user's module, as for MLPs
