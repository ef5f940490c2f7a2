"""A run whose hyperparameters hold NaN and infinities, against a real server over loopback: every reader lists it.

protobuf's ``MessageToDict`` refuses non-finite numbers in a ``Struct``. The dashboard (listing, run page,
stream) writes them as "NaN", "Infinity", "-Infinity"; the Python ``Api`` and ``runwatch export`` as floats.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import urllib.request

import pandas as pd
import pytest
from test_dashboard_http import get_json, read_events

from runwatch.client import Api
from runwatch.v1 import runs_pb2


@pytest.fixture
def iso(start_server):
    """A server with a dashboard and project "iso": run "odd" (NaN and infinite hyperparameters) and run "plain"."""
    srv, stubs = start_server(http_port=0)
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="odd", project="iso").hyperparameters.update(
        {"dropout": math.inf, "noise": math.nan, "clip": -math.inf, "opt": {"lr": 0.1, "betas": [0.9, math.inf]}}
    )
    b.starts.add(run_id="plain", project="iso").hyperparameters.update({"dropout": 0.1})
    for run_id in ("odd", "plain"):
        for step in range(3):
            b.events.add(run_id=run_id, step=step, metrics={"loss": 1.0 / (step + 1)})
    ack = stubs.ingest.Ingest(b, timeout=30)
    assert ack.rejected == 0, ack
    return srv, f"http://127.0.0.1:{srv.server.http_port}"


def assert_json_hyperparameters(hp: dict) -> None:
    assert hp == {
        "dropout": "Infinity", "noise": "NaN", "clip": "-Infinity", "opt": {"lr": 0.1, "betas": [0.9, "Infinity"]}
    }  # fmt: skip


def test_dashboard_lists_shows_and_streams_the_run(iso):
    _, base = iso
    status, listing = get_json(base + "/api/runs?project=iso")
    assert status == 200, listing
    by_id = {r["run_id"]: r for r in listing["runs"]}
    assert sorted(by_id) == ["odd", "plain"] and by_id["plain"]["hyperparameters"] == {"dropout": 0.1}
    assert_json_hyperparameters(by_id["odd"]["hyperparameters"])

    status, page = get_json(base + "/api/run?run=odd")
    assert status == 200, page
    assert_json_hyperparameters(page["run"]["hyperparameters"])

    with urllib.request.urlopen(base + "/api/stream?run=odd&since=0", timeout=10) as response:
        events = read_events(response, lambda got: any(name == "run" for name, _ in got), timeout=5)
    run_events = [data for name, data in events if name == "run"]
    assert run_events, events
    assert_json_hyperparameters(run_events[0]["hyperparameters"])


def test_api_run_config_keeps_the_values(iso):
    srv, _ = iso
    with Api(srv.target) as api:
        config = api.run("odd").config
    assert config["dropout"] == math.inf and config["clip"] == -math.inf and math.isnan(config["noise"])
    assert config["opt"] == {"lr": 0.1, "betas": [0.9, math.inf]}


def test_api_runs_frame_lists_the_run(iso):
    srv, _ = iso
    with Api(srv.target) as api:
        runs = api.runs("iso").set_index("run_id")
    assert sorted(runs.index) == ["odd", "plain"]
    assert runs.loc["odd", "params.dropout"] == math.inf and math.isnan(runs.loc["odd", "params.noise"])
    assert runs.loc["plain", "params.dropout"] == 0.1


def test_export_lists_the_run(iso):
    srv, _ = iso
    command = [sys.executable, "-m", "runwatch.service.cli", "export", "--target", srv.target, "--project", "iso"]
    done = subprocess.run([*command, "--out", "-"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(io.StringIO(done.stdout)).set_index("run_id")
    assert sorted(runs.index) == ["odd", "plain"]
    assert runs.loc["odd", "params.dropout"] == math.inf and runs.loc["odd", "params.clip"] == -math.inf
