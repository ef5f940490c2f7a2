"""`runwatch replay` of text logs and of folders with malformed parts, against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc

from runwatch.client.replay import replay
from runwatch.v1 import service_pb2, service_pb2_grpc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=120, check=False)


def list_runs(target: str, project: str = "") -> list:
    with grpc.insecure_channel(target) as channel:
        reply = service_pb2_grpc.RunServiceStub(channel).ListRuns(
            service_pb2.ListRunsRequest(project=project, limit=1000), timeout=30
        )
    return list(reply.runs)


def test_text_logs_are_replayed_as_their_lines_in_order(server):
    srv, stubs = server
    out: list[str] = []
    report = replay(FIXTURES / "text_logs", target=srv.target, out=out.append)
    assert report.complete and len(report.runs) == 3 and not any(r.skipped for r in report.runs)
    store = srv.server.store
    megatron = next(r for r in report.runs if r.name.endswith("megatron_gpt/output/train"))
    assert megatron.run_id.startswith("replay-text-megatron_gpt_train-") and megatron.lines == 17
    written = (FIXTURES / "text_logs" / "megatron_gpt" / "output" / "train.log").read_text().splitlines()
    stored = store.log_lines(megatron.run_id)
    assert [x.text for x in stored] == written  # every line, in file order
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=megatron.run_id), timeout=30).run
    assert info.start.environment["replay.format"] == "text" and list(info.start.tags)[:2] == ["replay", "text"]
    slm = next(r for r in report.runs if r.name.endswith("11:22:38.045400"))
    assert len(store.log_lines(slm.run_id)) == slm.lines == 53
    assert any("17 lines" in line and "sent as" in line for line in out)


def test_a_jsonl_of_log_records_is_accepted(server, tmp_path):
    srv, _ = server
    path = tmp_path / "shipped.jsonl"
    records = [
        {"time": 1740823200 + i, "level": "info", "text": f"iteration {i}/5 | lm loss: {3 - i * 0.1:.2f}"}
        for i in range(5)
    ]
    records.append({"time": 1740823206, "level": "error", "message": "RuntimeError: NCCL communicator was aborted"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = cli("replay", str(path), "--target", srv.target, "--project", "shipped")
    assert out.returncode == 0, out.stderr
    assert "missing step, metric, value" not in out.stderr and "1 run(s) replayed" in out.stdout
    (run,) = list_runs(srv.target, "shipped")
    lines = srv.server.store.log_lines(run.run_id)
    assert [x.text for x in lines][-1] == "RuntimeError: NCCL communicator was aborted" and lines[-1].level == 4
    assert [x.time for x in lines] == [1740823200.0 + i for i in range(5)] + [1740823206.0]


def _messy_folder(root: Path) -> dict[str, Path]:
    """A folder a user might point replay at: good runs, one file that is not JSON, one odd row, predict entries."""
    hf = root / "owner+repo" / "output"
    hf.mkdir(parents=True)
    history = [{"step": s, "loss": 1.0 / s} for s in (10, 20, 30)] + [{"predict_loss": 0.5, "predict_runtime": 2.0}]
    (hf / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 30}))
    broken = root / "other+repo" / "results"
    broken.mkdir(parents=True)
    (broken / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss": 1.0}')  # cut short
    lightning = root / "lit" / "lightning_logs" / "version_0"
    shutil.copytree(FIXTURES / "training_logs" / "lightning" / "camels_ch_version_0", lightning)
    lines = (lightning / "metrics.csv").read_text().splitlines()
    lines[6] = lines[6].replace(",", ",,", 1)
    (lightning / "metrics.csv").write_text("\n".join(lines) + "\n")
    shutil.copy(FIXTURES / "text_logs" / "megatron_gpt" / "output" / "train.log", root / "pretrain.log")
    return {"hf": hf, "broken": broken / "trainer_state.json", "csv": lightning / "metrics.csv"}


def test_a_folder_with_malformed_parts_sends_everything_else(server, tmp_path):
    srv, _ = server
    root = tmp_path / "sweep"
    paths = _messy_folder(root)

    strict = cli("replay", str(root), "--target", srv.target, "--strict")
    assert (
        strict.returncode == 2 and f"error: {paths['csv']}:line 7: 6 fields" in strict.stderr
    )  # the first, in path order
    assert list_runs(srv.target) == []  # --strict: all or nothing

    out = cli("replay", str(root), "--target", srv.target)
    assert out.returncode == 1, out.stderr  # something was left out: said, and the rest is sent
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, out.stderr
    assert warnings[0] == f"warning: {paths['csv']}:line 7: 6 fields, the header has 5; the row was skipped"
    assert f"warning: {paths['broken']}:line 1 column 42: " in warnings[1] and warnings[1].endswith(
        "the file was skipped"
    )
    assert "3 run(s) replayed, 0 skipped" in out.stdout and "2 malformed entries skipped" in out.stdout
    runs = {r.start.environment["replay.format"]: r for r in list_runs(srv.target)}
    assert sorted(runs) == ["hf", "lightning", "text"]
    hf = runs["hf"]
    assert hf.run_id.startswith("replay-hf-sweep_owner_repo-") and "output" not in hf.run_id
    assert hf.event_count == 3  # the predict entry joined step 30
    assert "1 log_history entry without 'step' placed at a neighbour's step" in out.stdout
    assert runs["lightning"].event_count > 0 and runs["text"].run_id.startswith("replay-text-sweep_pretrain-")
