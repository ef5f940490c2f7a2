"""`runwatch replay` against a real server: logs on disk become runs, anomalies and a clear error when malformed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc

from runwatch.client.replay import replay
from runwatch.v1 import runs_pb2, service_pb2, service_pb2_grpc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training_logs"
RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=120, check=False)


def list_runs(target: str, project: str = "") -> list:
    with grpc.insecure_channel(target) as channel:
        reply = service_pb2_grpc.RunServiceStub(channel).ListRuns(service_pb2.ListRunsRequest(project=project, limit=1000), timeout=30)
    return list(reply.runs)


def test_replay_every_fixture_format(server):
    srv, stubs = server
    lines: list[str] = []
    report = replay(FIXTURES, target=srv.target, out=lines.append)
    assert report.ok and len(report.runs) == 13 and not any(r.skipped for r in report.runs)
    runs = {r.run_id: r for r in list_runs(srv.target)}
    assert len(runs) == 13
    by_format = {}
    for r in runs.values():
        by_format.setdefault(r.start.environment["replay.format"], []).append(r)
    assert sorted((f, len(rs)) for f, rs in by_format.items()) == [
        ("csv", 2), ("hf", 2), ("jsonl", 2), ("lightning", 2), ("mlflow", 2), ("tensorboard", 3)
    ]  # fmt: skip
    # MLflow keeps its experiment as project and its statuses; its clock is kept too
    mlf = {r.start.environment["mlflow.run_id"]: r for r in by_format["mlflow"]}
    statuses = sorted(runs_pb2.RunStatus.Name(r.status) for r in mlf.values())
    assert statuses == ["RUN_STATUS_FAILED", "RUN_STATUS_FINISHED"] and all(r.project == "digits-mlp" for r in mlf.values())
    tb = next(r for r in by_format["tensorboard"] if "camels" in r.start.environment["replay.source"])
    assert tb.event_count == 73 and tb.start.hyperparameters["hidden_size"] == 80
    assert 1.7e9 < tb.last_event_time < 1.8e9  # original wall times
    assert "train_loss->loss" in tb.start.environment["replay.renamed"]
    # the diverging MLflow run's NaN loss is flagged
    failed = next(r for r in mlf.values() if r.status == runs_pb2.RUN_STATUS_FAILED)
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=failed.run_id), timeout=30)
    assert any(a.kind == 1 for a in summary.anomalies)  # NONFINITE

    # Replaying again recognises the runs instead of sending them twice.
    again = replay(FIXTURES / "hf", target=srv.target, out=lines.append)
    assert all(r.skipped.startswith("already on the server") for r in again.runs)
    assert len(list_runs(srv.target)) == 13


def test_replay_cli_long_format_original_pacing_and_errors(server, tmp_path):
    srv, _ = server
    out = cli("replay", str(FIXTURES / "long" / "modded_nanogpt_slice.jsonl"), "--target", srv.target, "--project", "nanogpt")
    assert out.returncode == 0, out.stderr
    assert "2 run(s) replayed, 0 skipped" in out.stdout and "0 rejected, 0 dropped" in out.stdout
    runs = list_runs(srv.target, "nanogpt")
    assert sorted(r.event_count for r in runs) == [46, 301]

    # --pace original sleeps as the run did: MLflow's clock (a few ms between points), sped up
    out = cli("replay", str(FIXTURES / "mlflow_mlruns"), "--target", srv.target, "--pace", "original", "--speed", "2", "--new-ids")
    assert out.returncode == 0, out.stderr
    assert "2 run(s) replayed" in out.stdout

    broken = tmp_path / "logs" / "version_0"
    broken.mkdir(parents=True)
    src = (FIXTURES / "lightning" / "camels_ch_version_0" / "metrics.csv").read_text().splitlines()
    src[6] = src[6].replace(",", ",,", 1)
    (broken / "metrics.csv").write_text("\n".join(src) + "\n")
    out = cli("replay", str(tmp_path / "logs"), "--target", srv.target, "--dry-run")
    assert out.returncode == 1 and "1 malformed entry skipped (dry run: nothing sent)" in out.stdout, out.stdout
    out = cli("replay", str(tmp_path / "logs"), "--target", srv.target, "--strict")
    assert out.returncode == 2
    assert f"error: {broken / 'metrics.csv'}:line 7: 6 fields, the header has 5" in out.stderr
    assert len(list_runs(srv.target)) == 4  # --strict: nothing of the broken folder was sent
    # By default the bad row is skipped, named in one warning, and the rest of the file is sent.
    out = cli("replay", str(tmp_path / "logs"), "--target", srv.target)
    assert out.returncode == 1, out.stderr
    warning = f"warning: {broken / 'metrics.csv'}:line 7: 6 fields, the header has 5; the row was skipped"
    assert out.stderr.count("warning:") == 1 and warning in out.stderr
    assert "1 run(s) replayed" in out.stdout and "1 malformed entry skipped" in out.stdout
    assert len(list_runs(srv.target)) == 5

    out = cli("replay", str(tmp_path / "nope"), "--target", srv.target)
    assert out.returncode == 2 and "no such file or folder" in out.stderr


def test_replay_a_spool_folder(start_server, tmp_path):
    import runwatch.client as rw

    spool = tmp_path / "spool"
    run = rw.init(project="spooled", run_id="from-spool", target="127.0.0.1:1", spool_dir=spool, flush_on_exit=False, capture_env=False)
    for i in range(20):
        run.log({"loss": 1.0}, step=i)
    run.finish(timeout=0.2)  # nobody listens: everything stays in the spool
    srv, _ = start_server()
    out = cli("replay", str(spool), "--target", srv.target)
    assert out.returncode == 0, out.stderr
    assert "22 item(s) found for 1 run(s), 22 acknowledged" in out.stdout
    # The summary counts the run (it said "0 run(s) replayed" and no anomalies, whatever the spool held).
    assert "1 run(s) replayed, 0 skipped, 22 item(s) accepted" in out.stdout
    info = next(r for r in list_runs(srv.target) if r.run_id == "from-spool")
    assert info.event_count == 20 and info.status == runs_pb2.RUN_STATUS_FINISHED
    shutil.rmtree(spool, ignore_errors=True)


def _keras_overfit_log() -> str:
    """A Keras CSVLogger log of a run that overfits: training loss keeps falling, val loss turns up at epoch 12."""
    rows = ["epoch,accuracy,loss,val_accuracy,val_loss"]
    for e in range(40):
        loss = 1.2 * 0.9**e
        val = 0.9 * 0.95**e if e <= 12 else 0.9 * 0.95**12 * 1.04 ** (e - 12)
        rows.append(f"{e},{min(0.99, 0.5 + 0.012 * e):.4f},{loss:.5f},{0.6 + 0.004 * min(e, 12):.4f},{val:.5f}")
    return "\n".join(rows) + "\n"


def test_replay_wide_tables_keras_and_wandb_exports(server, tmp_path):
    srv, stubs = server
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "training.log").write_text(_keras_overfit_log())
    wandb = ["_step,_runtime,_timestamp,train/loss,train/learning_rate,train/grad_norm"]
    wandb += [f"{s},{s / 10:.1f},{1717000000 + s / 10:.1f},{2.3 - 0.001 * s:.4f},0.0001,1.5" for s in range(0, 300, 5)]
    wandb += ["300,30.0,1717000030.0,nan,0.0001,nan"]
    (tmp_path / "wandb_export.csv").write_text("\n".join(wandb) + "\n")

    out = cli("replay", str(tmp_path / "keras" / "training.log"), "--target", srv.target, "--project", "wide")
    assert out.returncode == 0, out.stderr
    out = cli("replay", str(tmp_path / "wandb_export.csv"), "--target", srv.target, "--project", "wide")
    assert out.returncode == 0, out.stderr
    runs = {r.start.environment["replay.format"]: r for r in list_runs(srv.target, "wide")}
    assert sorted(runs) == ["text", "wide"] and runs["text"].event_count == 40 and runs["wide"].event_count == 61
    kinds = {}
    for fmt, run in runs.items():
        summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run.run_id), timeout=30)
        kinds[fmt] = {a.kind for a in summary.anomalies}
    assert 9 in kinds["text"]  # OVERFITTING, on the Keras log's val_loss read as val/loss
    assert 1 in kinds["wide"]  # NONFINITE, on W&B's train/loss read as loss
    assert 1.7e9 < runs["wide"].last_event_time < 1.8e9  # W&B's _timestamp kept as the wall clock
