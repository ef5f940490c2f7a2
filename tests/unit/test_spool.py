"""The on-disk spool: order, acknowledgement, bounds, survival across owners, damaged segments."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from runwatch.client.spool import Spool
from runwatch.v1 import runs_pb2


def batch(run_id: str, steps: range, start: bool = False, end: bool = False) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    if start:
        b.starts.add(run_id=run_id, project="p")
    for s in steps:
        b.events.add(run_id=run_id, step=s, metrics={"loss": float(s), "pad": 0.5})
    if end:
        b.ends.add(run_id=run_id)
    return b


def put(spool: Spool, b: runs_pb2.EventBatch, first_id: int = 1):
    items = len(b.starts) + len(b.events) + len(b.ends)
    return spool.append(b.SerializeToString(), items=items, control=bool(b.starts or b.ends), first_id=first_id, batch=b)


def drain(spool: Spool) -> list[runs_pb2.EventBatch]:
    out = []
    while (rec := spool.take_next()) is not None:
        out.append(spool.load(rec))
        spool.ack(rec)
    return out


def test_fifo_ack_and_empty_close_removes_the_folder(tmp_path):
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        put(s, batch("r", range(i * 10, i * 10 + 10), start=i == 0))
    assert s.pending_items == 51
    rec = s.take_next()
    assert s.oldest_pending_id() == 1
    s.untake(rec)  # could not be sent: taken again next time, still first
    got = drain(s)
    assert [b.events[0].step for b in got] == [0, 10, 20, 30, 40] and len(got[0].starts) == 1
    assert s.pending_items == 0 and s.pending_bytes == 0
    path = s.path
    s.close()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_unacked_batches_survive_and_are_adopted_in_order(tmp_path):
    a = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(4):
        put(a, batch("r", range(i * 3, i * 3 + 3), start=i == 0))
    first = a.take_next()
    a.ack(first)  # acknowledged: must not come back
    a.close()
    b = Spool(tmp_path, max_bytes=1 << 20)
    assert b.adopted_items == 9
    put(b, batch("r", range(100, 101)), first_id=7)
    got = drain(b)
    assert [e.step for g in got for e in g.events] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 100]
    b.close()
    assert list(tmp_path.iterdir()) == []


def test_a_live_owner_is_not_adopted(tmp_path):
    a = Spool(tmp_path, max_bytes=1 << 20)
    put(a, batch("r", range(3)))
    b = Spool(tmp_path, max_bytes=1 << 20)  # same process, its own lock: a is alive
    assert b.adopted_items == 0 and a.pending_items == 3
    b.close()
    a.close()


def test_a_dead_process_spool_is_adopted(tmp_path):
    code = (
        "import sys; from runwatch.client.spool import Spool; from runwatch.v1 import runs_pb2\n"
        "s = Spool(sys.argv[1]); b = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id='r', step=7, metrics={'loss': 1.0})])\n"
        "s.append(b.SerializeToString(), items=1, control=False, first_id=1)\n"
        "import os; os._exit(0)  # dies without closing: the lock goes with the process\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    s = Spool(tmp_path)
    assert s.adopted_items == 1
    assert drain(s)[0].events[0].step == 7
    s.close()


def test_drop_oldest_keeps_start_and_end_and_stays_bounded(tmp_path, caplog):
    s = Spool(tmp_path, max_bytes=8 << 10)  # 4 KiB segments
    put(s, batch("r", range(20), start=True))
    for i in range(1, 60):
        put(s, batch("r", range(i * 20, i * 20 + 20)), first_id=i * 20)
    put(s, batch("r", range(1200, 1201), end=True), first_id=1300)
    assert s.dropped_items > 0
    assert s.pending_bytes <= s.max_bytes + s.segment_bytes
    assert s.disk_bytes() <= s.max_bytes + 2 * s.segment_bytes
    got = drain(s)
    assert len(got[0].starts) == 1 and not got[0].events  # the RunStart, kept in place of its batch
    steps = [e.step for g in got for e in g.events]
    assert steps == sorted(steps) and steps[-1] == 1200  # the newest survive
    assert len(got[-1].ends) == 1
    assert 1 + 1201 + 1 == s.dropped_items + sum(len(g.starts) + len(g.events) + len(g.ends) for g in got)
    s.close()


def test_drop_newest_refuses_new_events_but_keeps_the_end(tmp_path):
    s = Spool(tmp_path, max_bytes=4 << 10, on_full="drop_newest")
    put(s, batch("r", range(20), start=True))
    for i in range(1, 40):
        put(s, batch("r", range(i * 20, i * 20 + 20)))
    put(s, batch("r", range(800, 801), end=True))
    got = drain(s)
    steps = [e.step for g in got for e in g.events]
    assert steps[0] == 0 and steps == list(range(len(steps)))  # the oldest survive, contiguous
    assert len(got[-1].ends) == 1 and s.dropped_items > 0
    s.close()


def test_a_torn_record_ends_its_segment_with_a_warning(tmp_path, caplog):
    a = Spool(tmp_path)
    for i in range(3):
        put(a, batch("r", range(i, i + 1)))
    seg = next(p for p in a.path.iterdir() if p.suffix == ".rws")
    a.close()
    with open(seg, "r+b") as f:  # a crash in the middle of writing the last record
        f.truncate(os.path.getsize(seg) - 5)
    with caplog.at_level(logging.WARNING, logger="runwatch.client"):
        b = Spool(tmp_path)
    assert b.adopted_items == 2
    assert any("cut short" in r.getMessage() and "at byte" in r.getMessage() for r in caplog.records)
    assert [g.events[0].step for g in drain(b)] == [0, 1]
    b.close()


def test_bad_settings():
    with pytest.raises(ValueError):
        Spool("/tmp", on_full="block")
    with pytest.raises(ValueError):
        Spool("/tmp", max_bytes=10)
