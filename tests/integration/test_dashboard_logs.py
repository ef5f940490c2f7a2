"""`/api/logs` shows a long run's end (where its traceback is), with a real `runwatch pipe` child and server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

LINES = 2500
# All on stdout: pipe's two reader threads would interleave stderr as read, not as written.
CHILD = (
    f"import sys\nfor i in range({LINES}):\n    print(f'line {{i}}')\n"
    "print('Traceback (most recent call last):\\nRuntimeError: CUDA error: an illegal memory access')\n"
    "sys.exit(1)\n"
)


def logs(base: str, query: str = "") -> list[str]:
    with urllib.request.urlopen(f"{base}/api/logs?run=long-run{query}", timeout=30) as r:
        return [line["text"] for line in json.load(r)["logs"]]


@pytest.fixture
def long_run(start_server):
    srv, _ = start_server(http_port=0)
    subprocess.run(
        [sys.executable, "-m", "runwatch.service.cli", "pipe", "--run-id", "long-run", "--target", srv.target, "-q",
         "--no-spool", "--", sys.executable, "-c", CHILD],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while len(srv.server.store.log_lines("long-run", LINES + 10)) < LINES + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{srv.server.http_port}"


def test_the_newest_lines_come_by_default_oldest_first(long_run):
    shown = logs(long_run)
    assert len(shown) == 2000
    assert shown[-2:] == ["Traceback (most recent call last):", "RuntimeError: CUDA error: an illegal memory access"]
    assert shown[:2] == [f"line {LINES - 1998}", f"line {LINES - 1997}"]


def test_limit_and_offset_page_back_from_the_end(long_run):
    assert logs(long_run, "&limit=3") == ["line 2499", "Traceback (most recent call last):",
                                          "RuntimeError: CUDA error: an illegal memory access"]  # fmt: skip
    assert logs(long_run, "&limit=3&offset=2") == ["line 2497", "line 2498", "line 2499"]
    assert logs(long_run, f"&limit=5&offset={LINES}") == ["line 0", "line 1"]
