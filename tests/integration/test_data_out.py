"""Data out: the DataFrame API and `runwatch export`, against a real server over loopback."""

from __future__ import annotations

import doctest
import importlib
import math
import subprocess
import sys

import grpc
import pandas as pd
import pytest

from runwatch.client import Api
from runwatch.client.frames import write_frame
from runwatch.service.tokens import create_token
from runwatch.v1 import runs_pb2, service_pb2

RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]


def seed(stubs) -> None:
    """Two runs of "vision" (one diverges) and one of "nlp"; events of a step split over two events."""
    b = runs_pb2.EventBatch()
    for run_id, project, lr in (("v-ok", "vision", 0.01), ("v-nan", "vision", 0.5), ("n-1", "nlp", 0.001)):
        start = b.starts.add(run_id=run_id, project=project, start_time=1_700_000_000.0, tags=["seed", project])
        start.hyperparameters.update({"lr": lr, "batch_size": 32, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}})
    for step in range(20):
        b.events.add(run_id="v-ok", step=step, wall_time=1_700_000_000.0 + step, metrics={"loss": 1.0 / (step + 1)})
        b.events.add(run_id="v-ok", step=step, wall_time=1_700_000_000.5 + step, metrics={"lr": 0.01})
        nan = math.nan if step >= 12 else 1.0
        b.events.add(run_id="v-nan", step=step, wall_time=1_700_000_000.0 + step, metrics={"loss": nan, "lr": 0.5})
    b.events.add(run_id="n-1", step=0, metrics={"loss": 3.0})
    b.ends.add(run_id="v-ok", status=runs_pb2.RUN_STATUS_FINISHED, reason="completed", end_time=1_700_000_100.0)
    ack = stubs.ingest.Ingest(b, timeout=30)
    assert ack.rejected == 0, ack


@pytest.fixture
def seeded(server):
    srv, stubs = server
    seed(stubs)
    with Api(srv.target) as api:
        yield srv, stubs, api


def test_runs_frame_has_params_status_and_incident_counts(seeded):
    _, _, api = seeded
    runs = api.runs("vision", incidents_by_severity=True)
    assert sorted(runs.run_id) == ["v-nan", "v-ok"]
    row = runs.set_index("run_id").loc["v-ok"]
    assert row.status == "FINISHED" and row.end_reason == "completed" and row.incidents == 0
    assert row["params.lr"] == 0.01 and row["params.optimizer.name"] == "adam"
    assert row["params.optimizer.betas"] == "[0.9, 0.999]"
    assert str(row.start_time) == "2023-11-14 22:13:20+00:00" and row.tags == "seed,vision"
    bad = runs.set_index("run_id").loc["v-nan"]
    assert bad.status == "RUNNING" and bad.incidents >= 1 and bad["incidents.CRITICAL"] >= 1
    assert pd.isna(bad.end_time)
    assert len(api.runs()) == 3 and list(api.runs("nope").columns)[:3] == ["run_id", "project", "status"]


def test_history_is_one_row_per_step_and_one_column_per_metric(seeded):
    _, _, api = seeded
    h = api.history("v-ok")
    assert list(h.columns) == ["_step", "_timestamp", "loss", "lr"]
    assert len(h) == 20 and h._step.tolist() == list(range(20))
    assert h.loss.iloc[3] == pytest.approx(0.25) and (h.lr == 0.01).all()
    assert h._timestamp.iloc[0] == 1_700_000_000.5  # the newest wall time of the step
    part = api.history("v-ok", ["loss", "missing"], min_step=5, max_step=7)
    assert list(part.columns) == ["_step", "_timestamp", "loss", "missing"]
    assert part._step.tolist() == [5, 6, 7] and part.missing.isna().all()
    nan = api.run("v-nan").history(["loss"])
    assert nan.loss.isna().sum() == 8


def test_run_handle_like_wandb(seeded):
    _, _, api = seeded
    run = api.run("v-nan")
    assert run.id == "v-nan" and run.project == "vision" and run.status == "RUNNING"
    assert run.config["lr"] == 0.5 and run.config["optimizer"]["name"] == "adam"
    assert type(run.config["batch_size"]) is int  # a Struct holds 32.0; range(batch_size) needs 32
    assert run.summary["lr"] == 0.5 and math.isnan(run.summary["loss"])
    anomalies = run.anomalies()
    assert (anomalies.kind == "NONFINITE").any() and set(anomalies.run_id) == {"v-nan"}


def test_anomalies_frame_and_filters(seeded):
    _, _, api = seeded
    everything = api.anomalies()
    assert set(everything.run_id) == {"v-nan"}
    row = everything.iloc[0]
    assert row.kind == "NONFINITE" and row.severity == "CRITICAL" and row.metric == "loss" and row.step == 12
    assert row.explanation and row.detected_time.tzinfo is not None
    assert api.anomalies("nlp").empty and list(api.anomalies("nlp").columns)[:2] == ["id", "run_id"]
    assert len(api.anomalies(run_id="v-nan", min_severity="CRITICAL")) == len(
        everything[everything.severity == "CRITICAL"]
    )
    with pytest.raises(ValueError, match="min_severity"):
        api.anomalies(min_severity="LOUD")


def test_get_metrics_streams_long_histories_in_chunks(server):
    srv, stubs = server
    b = runs_pb2.EventBatch()
    b.starts.add(run_id="long", project="big")
    for step in range(10_000):
        b.events.add(run_id="long", step=step, metrics={"loss": 1.0, "lr": 0.1, "acc": step / 10_000})
    assert stubs.ingest.Ingest(b, timeout=60).rejected == 0
    chunks = list(stubs.runs.GetMetrics(service_pb2.GetMetricsRequest(run_id="long"), timeout=60))
    assert len(chunks) == 3 and sum(len(c.events) for c in chunks) == 10_000
    with Api(srv.target) as api:
        h = api.history("long", ["acc"])
    assert h.shape == (10_000, 3) and h.acc.iloc[-1] == pytest.approx(0.9999)
    with pytest.raises(grpc.RpcError) as err:
        list(stubs.runs.GetMetrics(service_pb2.GetMetricsRequest(run_id="nope"), timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "run_id" in err.value.details()


def test_queries_respect_token_projects(start_server, tmp_path):
    path = tmp_path / "tokens.json"
    writer = create_token(path, projects=["*"], scopes=["ingest", "read"])[0]
    vision = create_token(path, projects=["vision"], scopes=["read"])[0]
    srv, _ = start_server(auth_tokens=path)
    from runwatch.client.connection import make_channel
    from runwatch.v1 import service_pb2_grpc

    with make_channel(srv.target, token=writer) as channel:
        seed(type("S", (), {"ingest": service_pb2_grpc.IngestServiceStub(channel)})())
    with Api(srv.target, token=vision) as api:
        assert set(api.anomalies().project) == {"vision"}
        assert len(api.history("v-ok")) == 20
        with pytest.raises(grpc.RpcError) as err:
            api.history("n-1")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError):
            api.anomalies("nlp")


def test_export_cli_writes_csv_and_parquet(seeded, tmp_path):
    srv, _, _ = seeded
    target = ["--target", srv.target]

    def export(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*RUNWATCH, "export", *target, *args], capture_output=True, text=True, timeout=120, check=False
        )

    done = export("--project", "vision", "--what", "runs", "--out", str(tmp_path / "runs.csv"))
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs.run_id) == ["v-nan", "v-ok"] and "params.lr" in runs.columns

    done = export("--run", "v-ok", "--what", "history", "--metrics", "loss", "--out", str(tmp_path / "h.parquet"))
    assert done.returncode == 0, done.stderr
    h = pd.read_parquet(tmp_path / "h.parquet")
    assert list(h.columns) == ["_step", "_timestamp", "loss"] and len(h) == 20

    done = export("--project", "vision", "--what", "history", "--format", "parquet", "--out", str(tmp_path / "all.pq"))
    assert done.returncode == 0, done.stderr
    both = pd.read_parquet(tmp_path / "all.pq")
    assert both.groupby("run_id").size().to_dict() == {"v-nan": 20, "v-ok": 20}

    done = export("--what", "anomalies", "--min-severity", "CRITICAL", "--out", "-")
    assert done.returncode == 0 and done.stdout.startswith("id,run_id,project,kind,severity")
    assert "v-nan" in done.stdout and "NONFINITE" in done.stdout

    # A NaN the run logged is written as nan; a metric it never logged stays empty (CSV) or null (Parquet).
    done = export("--run", "v-nan", "--what", "history", "--metrics", "loss", "--metrics", "acc", "--out", "-")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "_step,_timestamp,acc,loss"
    assert lines[1].endswith(",,1.0") and lines[13].endswith(",,nan") and lines[20].endswith(",,nan")
    done = export("--project", "vision", "--what", "history", "--out", str(tmp_path / "all.csv"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert sum(r.startswith("v-nan,") and r.endswith(",nan,0.5") for r in rows) == 8
    assert sum(r.startswith("v-ok,") and ",nan" in r for r in rows) == 0
    done = export(
        "--project",
        "vision",
        "--what",
        "history",
        "--metrics",
        "loss",
        "--metrics",
        "acc",
        "--out",
        str(tmp_path / "nan.parquet"),
    )
    assert done.returncode == 0, done.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "nan.parquet")
    loss, acc = table.column("loss").to_pylist(), table.column("acc").to_pylist()
    assert sum(v is not None and math.isnan(v) for v in loss) == 8 and loss.count(None) == 0
    assert acc.count(None) == 40

    assert "--run (one run) or --project" in export("--what", "history", "--out", "x.csv").stderr
    assert "--what: expected" in export("--what", "logs", "--out", "x.csv").stderr
    assert "--format: expected csv or parquet" in export("--format", "xlsx", "--out", "x").stderr
    failed = export("--run", "nope", "--out", str(tmp_path / "x.csv"))
    assert failed.returncode == 2 and "NOT_FOUND" in failed.stderr


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'runwatch\[data\]'"):
        write_frame(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")


def test_parquet_of_mixed_type_params(tmp_path):
    df = pd.DataFrame({"params.x": [0.1, "auto", None]})
    write_frame(df, tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")["params.x"]
    assert back.tolist()[:2] == ["0.1", "auto"] and pd.isna(back.iloc[2])


@pytest.mark.parametrize("module", ["runwatch.client.frames", "runwatch.service.history"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
