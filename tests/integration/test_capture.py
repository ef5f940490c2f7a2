"""run.capture_output() and run.capture_logging() through a real server: the program's output as log lines."""

from __future__ import annotations

import logging
import sys
import time

from runwatch.client import RunwatchClient
from runwatch.v1 import runs_pb2

INFO, WARNING, ERROR = runs_pb2.LOG_LEVEL_INFO, runs_pb2.LOG_LEVEL_WARNING, runs_pb2.LOG_LEVEL_ERROR


def stored(srv, run_id: str, n: int, timeout: float = 15.0) -> list[runs_pb2.LogLine]:
    deadline = time.monotonic() + timeout
    while True:
        got = srv.server.store.log_lines(run_id)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_capture_output_tees_stdout_and_stderr(server, capsys):
    srv, _ = server
    client = RunwatchClient(srv.target, flush_on_exit=False)
    run = client.start_run(run_id="cap-out", project="capture")
    before_out, before_err = sys.stdout, sys.stderr
    with run.capture_output():
        print("iteration 1/10 | lm loss: 2.50")
        print("WARNING: something the line says itself")
        sys.stderr.write(" 10%|#         | 1/10\r 50%|#####     | 5/10\r100%|##########| 10/10\n")
        print("epoch 1 done", end="")  # no newline yet
        print(" (partial line joined)")
        sys.stderr.write('Traceback (most recent call last):\n  File "train.py", line 3\nRuntimeError: boom\n')
        print("last line without newline", end="")
    assert sys.stdout is before_out and sys.stderr is before_err
    out, err = capsys.readouterr()  # the terminal got exactly what the program wrote
    assert out == (
        "iteration 1/10 | lm loss: 2.50\nWARNING: something the line says itself\n"
        "epoch 1 done (partial line joined)\nlast line without newline"
    )
    assert err.startswith(" 10%|#         | 1/10\r 50%") and err.endswith("RuntimeError: boom\n")
    run.finish()
    lines = stored(srv, "cap-out", 8)
    assert [(x.text, x.level) for x in lines] == [
        ("iteration 1/10 | lm loss: 2.50", INFO),
        ("WARNING: something the line says itself", WARNING),
        ("100%|##########| 10/10", WARNING),  # stderr; a progress bar counts once, in its last state
        ("epoch 1 done (partial line joined)", INFO),
        ("Traceback (most recent call last):", ERROR),
        ('  File "train.py", line 3', WARNING),
        ("RuntimeError: boom", ERROR),
        ("last line without newline", INFO),  # sent when the capture stopped
    ]
    client.close()


def test_capture_stops_at_finish_and_never_breaks_the_program(server, capsys):
    srv, _ = server
    client = RunwatchClient(srv.target, flush_on_exit=False)
    run = client.start_run(run_id="cap-finish", project="capture")
    capture = run.capture_output(stderr=False)
    print("before finish")
    run.finish()
    from runwatch.client.capture import _Tee

    assert not capture.running and not isinstance(sys.stdout, _Tee)
    print("after finish")  # no run to send to: printed all the same
    assert capsys.readouterr().out == "before finish\nafter finish\n"
    assert [x.text for x in stored(srv, "cap-finish", 1)] == ["before finish"]
    client.close()


def test_capture_logging_keeps_levels_and_tracebacks(server):
    srv, _ = server
    client = RunwatchClient(srv.target, flush_on_exit=False)
    run = client.start_run(run_id="cap-log", project="capture")
    logger = logging.getLogger("train.loop")
    logger.setLevel(logging.DEBUG)
    with run.capture_logging(logger, level=logging.INFO) as handle:
        assert handle.running
        logger.debug("not captured: below the handler's level")
        logger.info("epoch %d | loss %.2f", 3, 0.41)
        logger.warning("grad overflow, skipping step")
        logging.getLogger("runwatch.client").warning("runwatch's own records are never captured")
        try:
            raise ValueError("NaN in batch 7")
        except ValueError:
            logger.exception("step failed")
    logger.error("after stop: not captured")
    run.finish()
    lines = stored(srv, "cap-log", 6)
    got = [(x.text, x.level) for x in lines]
    assert got[:3] == [
        ("train.loop: epoch 3 | loss 0.41", INFO),
        ("train.loop: grad overflow, skipping step", WARNING),
        ("train.loop: step failed", ERROR),
    ]
    assert got[3] == ("Traceback (most recent call last):", ERROR)  # one line per traceback line, the record's level
    assert got[-1] == ("ValueError: NaN in batch 7", ERROR)
    assert not any("never captured" in t or "after stop" in t or "below" in t for t, _ in got)
    assert not handle.running and handle.handler not in logger.handlers
    client.close()


def test_capture_logging_level_names(server):
    srv, _ = server
    client = RunwatchClient(srv.target, flush_on_exit=False)
    run = client.start_run(run_id="cap-names", project="capture")
    handle = run.capture_logging("some.lib", level="warning")
    assert handle.handler.capture_level == logging.WARNING and handle.logger.name == "some.lib"
    try:
        run.capture_logging(level="LOUD")
    except ValueError as exc:
        assert "level: unknown logging level 'LOUD'" in str(exc)
    else:
        raise AssertionError("an unknown level must be refused")
    run.finish()
    client.close()


_PROGRAM = """
import logging, sys
from runwatch.client import RunwatchClient
client = RunwatchClient(sys.argv[1], flush_on_exit=False)
run = client.start_run(run_id=sys.argv[2], project="capture")
run.capture_logging(level=logging.INFO)
if sys.argv[3] == "configured":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("train")
log.info("step 1 loss 0.5")
log.error("RuntimeError: boom")
run.finish()
client.close()
"""


def test_capture_logging_leaves_the_programs_own_logging_as_it_was(server):
    srv, _ = server
    import subprocess

    # basicConfig after the capture started still installs the program's console handler and level ...
    done = subprocess.run([sys.executable, "-c", _PROGRAM, srv.target, "cap-basic", "configured"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "INFO train: step 1 loss 0.5" in done.stderr and "ERROR train: RuntimeError: boom" in done.stderr
    assert [x.text for x in stored(srv, "cap-basic", 2)] == ["train: step 1 loss 0.5", "train: RuntimeError: boom"]
    # ... and a program with no handler still gets Python's last resort on stderr (WARNING and up, as without it).
    done = subprocess.run([sys.executable, "-c", _PROGRAM, srv.target, "cap-bare", "bare"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "RuntimeError: boom" in done.stderr and "step 1" not in done.stderr
    assert [x.text for x in stored(srv, "cap-bare", 1)] == ["train: RuntimeError: boom"]
