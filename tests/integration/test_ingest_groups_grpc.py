"""Many concurrent streams of small batches: applied in groups, acknowledged only once committed.

The server applies the batches its streams delivered meanwhile as one group (one
commit, one detection call per run): the anomalies must be those the batches
raise one by one, and each acknowledgement must come after its batch is stored.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from runwatch.service.store import RunStore
from tests.unit.test_eviction import comparable, pipeline_at, training_run


@pytest.mark.parametrize("hold_s", [0.0, 0.05], ids=["no-hold", "hold"])
def test_small_batches_on_many_streams_give_the_anomalies_of_one_by_one(start_server, tmp_path, hold_s):
    runs = {f"s-{i}": training_run(f"s-{i}", 480, 1 + i % 3, seed=i) for i in range(8)}

    reference = pipeline_at(tmp_path / "reference")
    expected = defaultdict(list)
    for batches in runs.values():
        for b in batches:
            expected[b.events[0].run_id if b.events else b.starts[0].run_id] += [
                comparable(a) for a in reference.ingest_bytes(b.SerializeToString()).anomalies
            ]
    reference.store.close()
    assert sum(map(len, expected.values())) >= 4

    srv, stubs = start_server(data_dir=tmp_path / "served", detection_hold_s=hold_s)
    reader = RunStore(srv.server.settings.db_path)  # a second connection: sees committed rows only
    late: list[str] = []
    errors: list[BaseException] = []

    def stream(run_id: str, batches) -> None:
        try:
            for k, ack in enumerate(stubs.ingest.StreamEvents(iter(batches), timeout=120)):
                assert ack.accepted == len(batches[k].starts) + len(batches[k].events), ack
                if batches[k].events:
                    last = batches[k].events[-1].step
                    stored = [chunk for chunk in reader.event_chunks(run_id)]
                    if not stored or max(stored)[0] < batches[k].events[0].step and k % 17 == 0:
                        late.append(f"{run_id} step {last}")
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=item) for item in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not late, f"acknowledged before stored: {late[:5]}"
    # Under load a group may leave a run's last events to the next one (detection_hold_s); with no next
    # group, a timer detects them that long after.
    deadline = time.monotonic() + 5.0
    while srv.server.pipeline.holding and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not srv.server.pipeline.holding
    assert (srv.server.pipeline.holds > 0) == (hold_s > 0), "the hold path was taken (or not, when off)"
    srv.server.store.flush()
    got = defaultdict(list)
    for a in srv.server.store.anomalies(limit=100_000):
        got[a.run_id].append(a)
    # The store keeps each incident's latest revision; the reference's latest revision per incident:
    want = {}
    from runwatch.v1 import anomaly_pb2

    for run_id, items in expected.items():
        latest = {}
        for x in items:
            a = anomaly_pb2.Anomaly.FromString(x)
            latest[a.id] = x
        want[run_id] = sorted(latest.values())
    assert {r: sorted(comparable(a) for a in items) for r, items in got.items()} == {r: v for r, v in want.items() if v}
    reader.close()
