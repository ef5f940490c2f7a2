"""How a `runwatch pipe` run ends, with a real child process and a real server over loopback.

A child that crashes (a crash signal) or fails raises RUN_FAILED at the step its output reached; a command
that cannot start ends its run failed; a run id that already ended is refused before the child starts.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

pytestmark = pytest.mark.slow

RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]
STEPS = "for i in range(1, 101):\n    print(f'step {i} | loss: {2.0 - i * 0.001:.4f}', flush=True)\n"


def pipe(target: str, run_id: str, *child: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RUNWATCH, "pipe", "--project", "ends", "--run-id", run_id, "--target", target, "-q", "--no-spool",
         "--", *child],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def ended(stubs, run_id: str) -> tuple[service_pb2.RunInfo, list[anomaly_pb2.Anomaly]]:
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30)
    failed = [a for a in summary.anomalies if a.kind == anomaly_pb2.ANOMALY_KIND_RUN_FAILED]
    return summary.run, failed


CRASHES = {
    "SIGSEGV": "import ctypes; ctypes.string_at(0)",  # a real null read
    "SIGABRT": "import os; os.abort()",
    "SIGBUS": "import os, signal; os.kill(os.getpid(), signal.SIGBUS)",
}


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_a_child_dying_of_a_crash_signal_fails_its_run_at_its_last_step(server, name):
    srv, stubs = server
    run_id = f"crash-{name.lower()}"
    done = pipe(srv.target, run_id, sys.executable, "-c", STEPS + CRASHES[name])
    assert done.returncode == 128 + signal.Signals[name].value, done.stderr
    info, failed = ended(stubs, run_id)
    assert info.status == runs_pb2.RUN_STATUS_FAILED and info.end_reason == name and info.last_step == 100
    (anomaly,) = failed
    assert anomaly.severity == anomaly_pb2.SEVERITY_ERROR and anomaly.first_step == 100
    assert anomaly.explanation == f"the run ended failed ({name}) at step 100"


@pytest.mark.parametrize("code, status, reason", [
    ("import sys; sys.exit(1)", runs_pb2.RUN_STATUS_FAILED, "exit code 1"),
    ("import sys; sys.exit(7)", runs_pb2.RUN_STATUS_FAILED, "exit code 7"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", runs_pb2.RUN_STATUS_KILLED, "SIGKILL"),
])  # fmt: skip
def test_run_failed_carries_the_step_the_output_reached(server, code, status, reason):
    srv, stubs = server
    run_id = "fail100-" + reason.replace(" ", "-")
    pipe(srv.target, run_id, sys.executable, "-c", STEPS + code)
    info, (anomaly,) = ended(stubs, run_id)
    assert info.status == status and info.end_reason == reason and info.last_step == 100
    assert anomaly.first_step == anomaly.last_step == 100 and f"({reason}) at step 100" in anomaly.explanation


def test_a_stop_on_purpose_raises_nothing(server):
    srv, stubs = server
    pipe(srv.target, "stopped", sys.executable, "-c", STEPS + "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    info, failed = ended(stubs, "stopped")
    assert info.status == runs_pb2.RUN_STATUS_KILLED and info.end_reason == "SIGTERM" and failed == []


def test_a_command_that_cannot_start_ends_its_run_failed(server, tmp_path):
    srv, stubs = server
    missing = pipe(srv.target, "no-program", "/nonexistent/cmd")
    assert missing.returncode == 2 and "/nonexistent/cmd: no such program" in missing.stderr
    info, (anomaly,) = ended(stubs, "no-program")
    assert info.status == runs_pb2.RUN_STATUS_FAILED
    assert info.end_reason == "cannot start /nonexistent/cmd: No such file or directory"
    assert "cannot start /nonexistent/cmd" in anomaly.explanation

    folder = tmp_path / "some_folder"
    folder.mkdir()
    not_a_program = pipe(srv.target, "a-folder", str(folder))
    assert not_a_program.returncode == 2 and "Permission denied" in not_a_program.stderr
    info, _ = ended(stubs, "a-folder")
    assert info.status == runs_pb2.RUN_STATUS_FAILED and info.end_reason.startswith(f"cannot start {folder}: ")


def test_the_id_of_a_run_that_ended_is_refused_before_the_child_starts(server, tmp_path):
    srv, stubs = server
    assert pipe(srv.target, "used-once", sys.executable, "-c", "print('first')").returncode == 0
    marker = tmp_path / "ran"
    again = pipe(srv.target, "used-once", sys.executable, "-c", f"open({str(marker)!r}, 'w'); print('second')")
    assert again.returncode == 2 and not marker.exists()
    assert "run 'used-once' already ended (FINISHED)" in again.stderr and "give a new run id" in again.stderr
    assert [x.text for x in srv.server.store.log_lines("used-once")] == ["first"]
    info, _ = ended(stubs, "used-once")
    assert info.status == runs_pb2.RUN_STATUS_FINISHED


def test_resume_continues_a_run_that_ended(server):
    srv, stubs = server
    assert pipe(srv.target, "restarted", sys.executable, "-c", "print('step 1 | loss: 2.0')").returncode == 0
    again = subprocess.run(
        [*RUNWATCH, "pipe", "--project", "ends", "--run-id", "restarted", "--resume", "--target", srv.target, "-q",
         "--no-spool", "--", sys.executable, "-c", "print('step 2 | loss: 1.9')"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [x.text for x in srv.server.store.log_lines("restarted")] == ["step 1 | loss: 2.0", "step 2 | loss: 1.9"]
    info, _ = ended(stubs, "restarted")
    assert info.status == runs_pb2.RUN_STATUS_FINISHED and info.last_step == 2
