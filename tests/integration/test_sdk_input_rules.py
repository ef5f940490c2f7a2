"""The SDK's input rules against a real server, read back through the dashboard's JSON API.

Bad steps and bad argument types are refused by name and lose nothing else of the run; log lines
without a step carry the run's current step; ``finish()`` says whether the server accepted the run.
"""

from __future__ import annotations

import json
import logging
import urllib.request

import grpc
import numpy as np
import pytest

import runwatch.client as rw
from runwatch.service.tokens import create_token


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture
def dashboard(start_server):
    srv, _ = start_server(http_port=0)
    return srv, f"http://127.0.0.1:{srv.server.http_port}"


def open_run(target: str, run_id: str, **kwargs) -> rw.Run:
    return rw.init(
        project="rules", run_id=run_id, target=target, spool_dir=False, capture_env=False,
        system_metrics=False, flush_on_exit=False, **kwargs,
    )  # fmt: skip


def stored_points(base: str, run_id: str, metric: str) -> list[tuple[int, float]]:
    series = get_json(f"{base}/api/series?run={run_id}&m={metric}")["series"][metric]
    return list(zip(series["x"], series["y"], strict=True))


def stored_lines(base: str, run_id: str) -> list[tuple[str, int]]:
    return [(line["text"], line["step"]) for line in get_json(f"{base}/api/logs?run={run_id}")["logs"]]


BAD_STEPS = [
    (2.9, ValueError, "step must be a whole number, got 2.9 (float): rounding"),
    (float("nan"), ValueError, "step must be a whole number, got nan"),
    (True, TypeError, "step must be an int, got True (bool)"),
    (np.bool_(True), TypeError, "step must be an int, got"),
    ("4", TypeError, "step must be an int, got '4' (str)"),
    (b"5", TypeError, "step must be an int, got b'5' (bytes)"),
    (-1, ValueError, "step must be >= 0, got -1"),
    (2**64, ValueError, "step must fit in a signed 64-bit integer (at most 9223372036854775807"),
]


def test_bad_steps_are_refused_by_name_and_lose_nothing_else(dashboard):
    srv, base = dashboard
    run = open_run(srv.target, "bad-steps")
    run.log({"loss": 1.0}, step=2)
    for step, error, message in BAD_STEPS:
        with pytest.raises(error) as info:
            run.log({"loss": 9.0}, step=step)
        assert str(info.value).startswith(message), step
        with pytest.raises(error):
            run.log_text("never sent", step=step)
    assert run.step == 3  # no refused step moved the run on
    run.log({"loss": 0.9}, step=np.int64(3))
    run.log({"loss": 0.8}, step=4.0)  # a whole float is the step it names
    run.log({"loss": 0.7})  # the next step, as if nothing had been refused
    assert run.finish(timeout=10)
    assert stored_points(base, "bad-steps", "loss") == [(2, 1.0), (3, 0.9), (4, 0.8), (5, 0.7)]
    assert stored_lines(base, "bad-steps") == []


def test_arguments_of_the_wrong_type_are_refused_by_name(dashboard):
    srv, base = dashboard
    with pytest.raises(TypeError, match=r"^config must be a mapping such as \{'lr': 0.001\}, got 5 \(int\)$"):
        open_run(srv.target, "bad-config", config=5)
    with pytest.raises(TypeError, match=r"^environment must be a mapping such as \{'gpu': 'A100'\}, got \['a100'\] \(list\)$"):
        open_run(srv.target, "bad-env", environment=["a100"])
    assert rw.current_run() is None  # no run was opened for either
    run = open_run(srv.target, "bad-metrics")
    run.log({"loss": 1.0}, step=0)
    with pytest.raises(TypeError, match=r"^metrics must be a mapping such as \{'loss': 0.5\}, got \[1, 2\] \(list\)$"):
        run.log([1, 2])
    run.log({"loss": 0.5})
    assert run.finish(timeout=10)
    assert stored_points(base, "bad-metrics", "loss") == [(0, 1.0), (1, 0.5)]
    assert get_json(f"{base}/api/runs?project=rules")["runs"][0]["run_id"] == "bad-metrics"


@pytest.mark.parametrize(
    ("project", "reason"),
    [
        ("p\nBcc: x@evil.example", "control character '\\n' at 1"),
        ("tab\there", "control character '\\t' at 3"),
        (" ", "' ' is blank or starts or ends with whitespace"),
        ("vision ", "'vision ' is blank or starts or ends with whitespace"),
    ],
)
def test_a_project_name_that_breaks_the_lines_it_is_printed_on_is_refused(start_server, project, reason):
    """A newline in a project name split the server's log records and lost every e-mail alert of the run (a header
    may not hold one); a blank name showed as an empty link. The SDK refuses it before a connection opens, and the
    server refuses a RunStart carrying it, naming the field."""
    from runwatch.v1 import runs_pb2

    srv, stubs = start_server()
    with pytest.raises(ValueError, match="^project: " + reason.replace("\\", "\\\\")):
        rw.init(project=project, run_id="bad-project", target=srv.target, spool_dir=False, capture_env=False,
                system_metrics=False, flush_on_exit=False)  # fmt: skip
    assert rw.current_run() is None
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="bad-project", project=project)
    b.starts.add(run_id="good-project", project="vision")
    with pytest.raises(grpc.RpcError) as info:
        stubs.ingest.Ingest(b, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"accepted 1, rejected 1: starts[0].project: {reason}")


def test_log_lines_without_a_step_carry_the_runs_current_step(dashboard, capsys):
    srv, base = dashboard
    run = open_run(srv.target, "line-steps")
    run.log_text("before any step")
    for step in range(256):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    logger = logging.getLogger("rules.train")
    logger.setLevel(logging.INFO)
    run.capture_logging(logger)
    with run.capture_output(stderr=False):
        print("printed at step 255")
    logger.warning("logged at step 255")
    run.log_text("sent at step 255")
    run.log_text("an explicit step wins", step=7)
    run.log({"loss": 0.001})  # step 256
    run.log_text("sent at step 256")
    assert run.finish(timeout=10)
    assert stored_lines(base, "line-steps") == [
        ("before any step", 0),
        ("printed at step 255", 255),
        ("rules.train: logged at step 255", 255),
        ("sent at step 255", 255),
        ("an explicit step wins", 7),
        ("sent at step 256", 256),
    ]
    assert capsys.readouterr().out == "printed at step 255\n"


def test_finish_is_false_when_the_server_rejected_the_run(start_server, tmp_path):
    tokens = tmp_path / "tokens.json"
    alpha_only = create_token(tokens, projects=["alpha"], scopes=["ingest", "read"])[0]
    srv, _ = start_server(auth_tokens=tokens)
    client = rw.RunwatchClient(srv.target, token=alpha_only, flush_on_exit=False)
    try:
        refused = client.start_run(run_id="not-granted", project="beta")
        for step in range(5):
            refused.log({"loss": 1.0}, step=step)
        assert not refused.finish(timeout=10)  # every item was answered, and every one refused
        assert client.stats().rejected == 7 and client.stats().pending == 0
        assert any("PERMISSION_DENIED" in reason for _, _, reason in client.violations)
        accepted = client.start_run(run_id="granted", project="alpha")
        accepted.log({"loss": 1.0}, step=0)
        assert accepted.finish(timeout=10)  # the earlier run's refusals are not this run's
    finally:
        client.close(timeout=1)
