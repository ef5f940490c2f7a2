"""`runwatch pipe` with a real child process and a real server over loopback.

The child prints iteration lines, a progress bar and (on stderr) a CUDA OOM
traceback as PyTorch words it; the test checks that the lines arrive in
order with their levels, that the exit code becomes the run's status, and
that what the terminal gets is byte for byte what the child wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

pytestmark = pytest.mark.slow

RUNWATCH = [sys.executable, "-m", "runwatch.service.cli"]
INFO, WARNING, ERROR = runs_pb2.LOG_LEVEL_INFO, runs_pb2.LOG_LEVEL_WARNING, runs_pb2.LOG_LEVEL_ERROR

TRAIN = textwrap.dedent(
    """
    import sys, time

    class OutOfMemoryError(RuntimeError):
        pass

    OutOfMemoryError.__module__ = "torch"  # printed as PyTorch prints it: torch.OutOfMemoryError
    print("using world size: 1")
    for i in range(1, 21):
        print(f" iteration {i:5d}/   20 | lm loss: {3.0 - i * 0.05:.6E} | loss scale: 4096.0 | grad norm: 1.2 |")
        if i % 5 == 0:
            sys.stderr.write(f"{i * 5:3d}%|{'#' * (i // 2)}\\r")
    sys.stderr.write("\\n")
    print("unicode ok: \\u00e9\\u2713")
    sys.stdout.flush()
    raise OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
        "1.06 GiB is free. Including non-PyTorch memory, this process has 78.03 GiB memory in use."
    )
    """
)


def stored(srv, run_id: str, n: int, timeout: float = 20.0) -> list[runs_pb2.LogLine]:
    deadline = time.monotonic() + timeout
    while True:
        got = srv.server.store.log_lines(run_id)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def pipe_cmd(target: str, run_id: str, *child: str, spool: bool = False) -> list[str]:
    return [*RUNWATCH, "pipe", "--project", "piped", "--run-id", run_id, "--target", target, "-q",
            *([] if spool else ["--no-spool"]), "--", *child]  # fmt: skip


def test_child_lines_status_and_byte_identical_output(server, tmp_path):
    srv, stubs = server
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    alone = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, cwd=tmp_path, check=False,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    piped = subprocess.run(
        pipe_cmd(srv.target, "pipe-oom", sys.executable, str(script)),
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert piped.returncode == alone.returncode == 1
    assert piped.stdout == alone.stdout and piped.stderr == alone.stderr  # the terminal sees the child, unchanged
    assert b"torch.OutOfMemoryError: CUDA out of memory" in piped.stderr

    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="pipe-oom"), timeout=30).run
    assert info.status == runs_pb2.RUN_STATUS_FAILED and info.project == "piped"
    assert "pipe" in info.start.tags and "train.py" in info.start.environment["pipe.command"]
    lines = stored(srv, "pipe-oom", 26)
    texts = [x.text for x in lines]
    stdout_lines = alone.stdout.decode().splitlines()
    # Each stream's lines in order (the two pipes are read side by side: their interleaving is as read).
    assert [t for t in texts if t in stdout_lines] == stdout_lines
    stderr_lines = [t for t in texts if t not in stdout_lines]
    assert stderr_lines[0] == "100%|##########"  # a progress bar redrawn with \r: once, in its last state
    assert stderr_lines[1] == "Traceback (most recent call last):" and len(stderr_lines) >= 4
    assert stderr_lines[-1].startswith("torch.OutOfMemoryError: CUDA out of memory.")
    by_text = {x.text: x.level for x in lines}
    assert by_text["using world size: 1"] == INFO and by_text["100%|##########"] == WARNING
    assert by_text["Traceback (most recent call last):"] == ERROR and by_text[stderr_lines[-1]] == ERROR
    assert [x.time for x in lines] == sorted(x.time for x in lines)
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="pipe-oom"), timeout=30)
    assert any(a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN for a in summary.anomalies)  # the lines were analysed


def test_exit_codes_and_signals_become_statuses(server, tmp_path):
    srv, stubs = server
    ok = subprocess.run(
        pipe_cmd(srv.target, "pipe-ok", sys.executable, "-c", "print('done')"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0 and ok.stdout == b"done\n" and ok.stderr == b""
    killed = subprocess.run(
        pipe_cmd(srv.target, "pipe-killed", sys.executable, "-c", "import os, signal; print('bye', flush=True); os.kill(os.getpid(), signal.SIGTERM)"),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert killed.returncode == 128 + signal.SIGTERM  # as a shell reports a signal
    statuses = {}
    for run_id in ("pipe-ok", "pipe-killed"):
        info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).run
        statuses[run_id] = runs_pb2.RunStatus.Name(info.status)
    assert statuses == {"pipe-ok": "RUN_STATUS_FINISHED", "pipe-killed": "RUN_STATUS_KILLED"}
    assert [x.text for x in stored(srv, "pipe-killed", 1)] == ["bye"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_passed_on_to_the_child(server, tmp_path, sig):
    srv, stubs = server
    script = tmp_path / "serve.py"
    script.write_text(
        "import signal, sys, time\n"
        "def stop(n, f):\n    print(f'caught {signal.Signals(n).name}, saving checkpoint', flush=True)\n    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\nsignal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run_id = f"pipe-{sig.name.lower()}"
    proc = subprocess.Popen(
        pipe_cmd(srv.target, run_id, sys.executable, str(script)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(sig)  # to runwatch pipe only (no terminal here): it passes it on
    out, err = proc.communicate(timeout=60)
    said = f"caught {sig.name}, saving checkpoint"
    assert proc.returncode == 3 and out == f"{said}\n".encode(), err
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=30).run
    assert info.status == runs_pb2.RUN_STATUS_FAILED and info.end_reason == "exit code 3"
    assert [x.text for x in stored(srv, run_id, 2)] == ["ready", said]


def test_stdin_mode(server):
    srv, stubs = server
    data = b"epoch 1 loss=0.9\nWARNING: lr warmup skipped\r\nepoch 2 loss=0.7\nno newline at the end"
    done = subprocess.run([*RUNWATCH, "pipe", "--project", "piped", "--run-id", "pipe-stdin", "--target", srv.target, "-q", "--no-spool"],
                          input=data, capture_output=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout == data and done.stderr == b""
    info = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="pipe-stdin"), timeout=30).run
    assert info.status == runs_pb2.RUN_STATUS_FINISHED
    got = [(x.text, x.level) for x in stored(srv, "pipe-stdin", 4)]
    assert got == [("epoch 1 loss=0.9", INFO), ("WARNING: lr warmup skipped", WARNING), ("epoch 2 loss=0.7", INFO),
                   ("no newline at the end", INFO)]  # fmt: skip


def test_an_unreachable_server_never_slows_or_breaks_the_child(tmp_path):
    script = tmp_path / "chatty.py"
    script.write_text(
        "import sys\nfor i in range(200_000):\n    print(f'step {i} loss={1 / (i + 1):.6f}')\nsys.exit(7)\n"
    )
    t0 = time.perf_counter()
    alone = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120, check=False)
    alone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    piped = subprocess.run(
        [*RUNWATCH, "pipe", "--run-id", "nobody-listens", "--target", "127.0.0.1:1", "--no-spool", "--finish-timeout", "1", "--", sys.executable, str(script)],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    piped_s = time.perf_counter() - t0
    assert piped.returncode == 7 and piped.stdout == alone.stdout  # every byte, the child's exit code
    assert b"runwatch: run nobody-listens" in piped.stderr and b"dropped" in piped.stderr  # said, once, at the end
    assert piped_s < alone_s * 10 + 20, (alone_s, piped_s)  # bounded by reading, not by a server


def test_a_pipe_stuck_after_its_child_ended_dumps_its_stacks_and_exits(tmp_path):
    # The run's end never returns (a stand-in for a hang in the client): the watchdog armed when the child ended
    # writes every thread's stack and ends the process, 2 x finish_timeout + watchdog_s later, instead of never.
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from runwatch.client import pipe as p
        from runwatch.client.session import Run
        Run.finish = lambda self, *a, **k: time.sleep(600)
        p.pipe([sys.executable, "-c", "print('step 1 | loss: 2.0')"], run_id="stuck", target="127.0.0.1:1",
               spool_dir=False, finish_timeout=0.5, watchdog_s=1.0)
        print("returned", flush=True)
    """))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "returned" not in done.stdout and "step 1 | loss: 2.0" in done.stdout
    assert "Timeout (0:00:02)!" in done.stderr and "in <lambda>" in done.stderr  # where it was stuck
    assert time.perf_counter() - t0 < 60


def test_a_missing_program_is_named(server):
    srv, _ = server
    done = subprocess.run(
        pipe_cmd(srv.target, "pipe-missing", "no-such-program-xyz"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "no-such-program-xyz: no such program" in done.stderr
