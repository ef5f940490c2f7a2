"""The Kafka benchmark harness runs end to end on a small topic and accounts for every event."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kafka_benchmark_runs_and_counts_every_event():
    done = subprocess.run(
        [sys.executable, "bench/kafka_throughput.py", "--runs", "2", "--steps", "1000", "--batch", "100",
         "--session-timeout-ms", "1500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "filled " in out and "2,000 events" in out
    for row in ("bare kafka-python consumer (poll only)", "bare librdkafka consumer (poll only)", "runwatch (detect"):
        assert re.search(rf"\| {re.escape(row)}.*\|\s+[\d.]+ \|\s*$", out, re.MULTILINE), row
    # Every event detected (the data has spikes and NaNs: anomalies are published), nothing dead-lettered.
    summary = re.search(
        r"runwatch: ([\d,]+) events in (\d+) records, .* (\d+) anomaly records, (\d+) dead letters", out
    )
    assert summary and summary.group(1) == "2,000" and summary.group(2) == "20", out[-2000:]
    assert int(summary.group(3)) >= 1 and int(summary.group(4)) == 0 and " 0 errors, 0 client errors" in out
    assert out.count("target >= 50,000 events/s and ratio >= 0.5 against") == 3
