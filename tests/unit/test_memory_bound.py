"""Memory per active run is bounded whatever the run's length (bench/memory_per_run.py measures it at length)."""

from __future__ import annotations

import pytest

from bench.memory_per_run import BOUND_KIB, retained_per_run

pytestmark = pytest.mark.slow


def test_a_run_holds_no_more_after_20000_steps_than_after_2000(tmp_path):
    short = retained_per_run(2_000, runs=1, data_dir=tmp_path / "short")
    long = retained_per_run(20_000, runs=1, data_dir=tmp_path / "long")
    kib = short["bytes_per_run"] / 1024, long["bytes_per_run"] / 1024
    print(f"\nretained per run: {kib[0]:.1f} KiB after 2,000 steps, {kib[1]:.1f} KiB after 20,000")
    assert long["events"] == 20_000 + 1
    # Every diagnostic and the learned detector on: fixed windows, a bounded evidence tail, the last
    # 256 batches' step ranges. What grows at all fills up within the first few hundred batches.
    assert kib[1] <= BOUND_KIB
    assert kib[1] <= 1.2 * kib[0], f"a run's memory grew {kib[1] / kib[0] - 1:.0%} from 2,000 to 20,000 steps"


@pytest.mark.parametrize("batch", [1, 3])
def test_merging_small_evidence_columns_changes_no_alert_and_no_evidence(monkeypatch, tmp_path, batch):
    """Blocks of one or a few events are what an SDK flushing every step sends: their evidence is compacted."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_eviction import comparable, pipeline_at, training_run

    from runwatch.models import monitor

    batches = training_run("small", 700, batch, seed=1) + training_run("small-nan", 700, batch, seed=2)

    def anomalies(path):
        p = pipeline_at(path)
        out = [comparable(a) for b in batches for a in p.ingest(b).anomalies]
        p.store.close()
        return out

    compact = anomalies(tmp_path / "compact")
    monkeypatch.setattr(monitor, "UNFILED_BLOCKS", 1)  # every block filed as it arrives, as before
    assert compact == anomalies(tmp_path / "filed") and len(compact) >= 3
    monkeypatch.setattr(monitor, "MAX_EVIDENCE_COLUMNS", 10**9)  # and one column per block
    assert compact == anomalies(tmp_path / "whole")
