"""`runwatch export --out - | head`: a reader that goes away stops export quietly, as Unix tools do."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from runwatch.v1 import runs_pb2

pytestmark = pytest.mark.slow


def test_export_to_a_reader_that_goes_away_stops_quietly(server):
    srv, stubs = server
    batch = runs_pb2.EventBatch()
    batch.starts.add(run_id="long", project="p")
    for step in range(20_000):  # far more CSV than a pipe holds
        batch.events.add(run_id="long", step=step, wall_time=1.7e9 + step).metrics.update({"loss": 1.0, "lr": 0.1})
    stubs.ingest.Ingest(batch, timeout=60)
    srv.server.store.flush()
    export = subprocess.Popen(
        [sys.executable, "-m", "runwatch.service.cli", "export", "--what", "history", "--run", "long", "--out", "-",
         "--target", srv.target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert export.stdout.readline().startswith(b"_step,")
    export.stdout.close()  # what `head -1` does
    err = export.stderr.read()
    assert export.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == b""  # no "error: [Errno 32] Broken pipe", no "Exception ignored"
