"""The logs-topic benchmark harness runs end to end on a small topic and accounts for every line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_logs_benchmark_runs_and_counts_every_line():
    done = subprocess.run(
        [sys.executable, "bench/kafka_logs_throughput.py", "--runs", "2", "--lines", "600", "--session-timeout-ms", "1500"],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "filled " in out and "1,200 lines of 2 runs" in out
    for row in ("bare librdkafka consumer (poll only)", "runwatch (store, analyse", "runwatch, text analysis off"):
        assert re.search(rf"\| {re.escape(row)}.*\|\s+[\d.]+ \|\s*$", out, re.MULTILINE), row
    assert "runwatch: 1,200 lines accepted of 1,200 records" in out and "0 dead letters, 0 forwarded, 0 errors" in out
    assert out.count("(aim >= 0.5)") == 4
