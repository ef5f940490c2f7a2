"""The dashboard's server-side pieces without a server: downsampling, column reads, JSON, metric labels, JSON logs."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from runwatch.service.http.payloads import anomaly_json, health, number
from runwatch.service.http.series import ColumnCache, RunColumns, downsample
from runwatch.service.log_format import JsonFormatter
from runwatch.service.store import RunStore, append_events_op
from runwatch.service.telemetry import ServiceMetrics, reason_of
from runwatch.v1 import anomaly_pb2, runs_pb2


def test_downsample_keeps_extremes_per_bucket_anomaly_points_and_gaps():
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(size=len(steps))
    values[31_337] = 50.0  # a spike one step wide
    values[77_000] = -50.0
    values[90_000:90_010] = np.nan
    x, y = downsample(steps, values, width=800, keep=np.array([12_345, 99_999]))
    assert len(x) <= 3 * 800 + 4
    assert x == sorted(x) and len(set(x)) == len(x)
    got = dict(zip(x, y))
    assert got[31_337] == 50.0 and got[77_000] == -50.0
    assert 12_345 in got and got[12_345] == values[12_345]
    assert got[0] == values[0] and 99_999 in got
    assert any(s in got and got[s] is None for s in range(90_000, 90_010))  # the NaN run shows as a gap
    # Every bucket's min and max are among the points (the envelope is exact).
    bucket = steps * 800 // 100_000
    for b in (0, 123, 799):
        inside = values[bucket == b]
        shown = [v for s, v in got.items() if s * 800 // 100_000 == b and v is not None]
        assert max(shown) == np.nanmax(inside) and min(shown) == np.nanmin(inside)


def test_downsample_range_and_small_curves_pass_through():
    steps = np.arange(0, 1000, 10)
    values = steps / 10.0
    x, y = downsample(steps, values, width=500)
    assert x == steps.tolist() and y == values.tolist()
    x, y = downsample(steps, values, width=500, lo=95, hi=205)
    assert x == list(range(100, 210, 10))
    assert downsample(steps, values, width=10, lo=2000, hi=3000) == ([], [])
    x, y = downsample(np.array([1, 2]), np.array([math.inf, 1.0]), width=10)
    assert y == [None, 1.0]


def _store_with_chunks(location) -> RunStore:
    store = RunStore(location)
    store.open_run(runs_pb2.RunStart(run_id="r1", project="p")).result()
    for first in (0, 100):
        b = runs_pb2.EventBatch()
        for step in range(first, first + 100):
            m = {"loss": 1.0 / (step + 1), "lr": 0.1}
            if step % 10 == 9:
                m["val/loss"] = 2.0 / (step + 1)  # a second layout within the chunk
            b.events.add(run_id="r1", step=step, wall_time=1.0).metrics.update(m)
        store.submit([append_events_op("r1", first, first + 99, 100, b.SerializeToString(), 1.0)]).result()
    return store


def test_run_columns_read_chunks_once_and_then_only_new_ones(store_location):
    store = _store_with_chunks(store_location)  # SQLite, then PostgreSQL (tests/conftest.py)
    try:
        cols = RunColumns("r1")
        added = cols.refresh(store)
        assert cols.names() == ["loss", "lr", "val/loss"]
        steps, values = cols.curve("val/loss")
        assert steps.tolist() == list(range(9, 200, 10)) and values[0] == pytest.approx(0.2)
        assert len(added["loss"][0]) == 200 and cols.last_step == 199
        assert cols.refresh(store) == {}  # nothing new
        b = runs_pb2.EventBatch()
        b.events.add(run_id="r1", step=200).metrics.update({"loss": 0.001, "lr": 0.1})
        store.submit([append_events_op("r1", 200, 200, 1, b.SerializeToString(), 1.0)]).result()
        added = cols.refresh(store)
        assert added["loss"][0].tolist() == [200] and cols.curve("loss")[0][-1] == 200
        assert cols.points() == 200 + 200 + 20 + 2
    finally:
        store.close()


def test_column_cache_forgets_least_recently_viewed_runs(tmp_path):
    store = _store_with_chunks(tmp_path / "runwatch.db")
    try:
        cache = ColumnCache(max_points=500)
        first = cache.get("r1")
        first.refresh(store)
        cache.get("r2").refresh(store)  # no such run: empty
        cache.trim()
        assert cache.get("r1") is first  # 422 points: within the bound
        cache.max_points = 100
        cache.get("r2")  # now r1 is the least recently viewed
        cache.trim()
        assert cache.get("r1") is not first
    finally:
        store.close()


def test_anomaly_json_is_strict_json_and_health_takes_the_worst_open_incident():
    a = anomaly_pb2.Anomaly(
        id="a", run_id="r", kind=anomaly_pb2.ANOMALY_KIND_LOSS_SPIKE, severity=anomaly_pb2.SEVERITY_WARNING,
        score=math.inf, step=5, first_step=4, last_step=5, state=anomaly_pb2.ANOMALY_STATE_OPEN,
    )  # fmt: skip
    a.evidence.add(metric="loss", step=5, value=math.nan)
    text = json.dumps(anomaly_json(a), allow_nan=False)
    assert '"score":"Infinity"' in text.replace(" ", "") and anomaly_json(a)["project"] == "default"
    b = anomaly_pb2.Anomaly(id="b", kind=anomaly_pb2.ANOMALY_KIND_NONFINITE, severity=anomaly_pb2.SEVERITY_ERROR)
    resolved = anomaly_pb2.Anomaly(
        id="c", severity=anomaly_pb2.SEVERITY_CRITICAL, state=anomaly_pb2.ANOMALY_STATE_RESOLVED
    )
    assert health([a, b, resolved]) == {"badge": "error", "open": {"LOSS_SPIKE": 1, "NONFINITE": 1}, "incidents": 2}
    assert health([])["badge"] == "healthy"
    assert number(-math.inf) == "-Infinity" and number(1.5) == 1.5


def test_rejection_reasons_are_bounded_labels():
    assert reason_of("events[3].step") == "events.step"
    assert reason_of("starts[0].hyperparameters.a[2].b") == "starts.hyperparameters"
    m = ServiceMetrics()
    m.observe_batch(1, 0, 5, 0.01, violations=[("events[0].run_id", "unknown run"), ("batch", "too big")])
    (family,) = [f for f in m.registry.collect() if f.name == "runwatch_rejected_items"]
    samples = {tuple(s.labels.values()): s.value for s in family.samples if s.name.endswith("_total")}
    assert samples == {("events.run_id",): 1.0, ("batch",): 1.0, ("unreported",): 3.0}


def test_json_log_lines_carry_extra_fields_and_tracebacks():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("runwatch.x", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info())
    record.run_id = "r1"
    record.path = {"not": "json-able", "obj": object()}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "failed 3" and doc["level"] == "ERROR" and doc["run_id"] == "r1"
    assert "ValueError: boom" in doc["exception"] and doc["time"].endswith("Z")


@pytest.mark.parametrize(
    "module",
    ["series", "payloads", "stream", "access"],
)
def test_dashboard_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"runwatch.service.http.{module}"))
    assert result.failed == 0 and result.attempted > 0


def test_metrics_and_log_format_docstring_examples():
    import doctest

    from runwatch.service import log_format, telemetry

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for module in (telemetry, log_format):
            result = doctest.testmod(module)
            assert result.failed == 0 and result.attempted > 0
    finally:  # configure_logging replaced the root handlers: give pytest's back
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


def test_tail_reads_only_the_newest_points_in_step_order(tmp_path, monkeypatch):
    store = _store_with_chunks(tmp_path / "runwatch.db")
    try:
        cols = RunColumns("r1")
        cols.refresh(store)
        cols.curve("loss")  # collapses the chunks into one array, as a page load does
        b = runs_pb2.EventBatch()
        for step in (200, 201):
            b.events.add(run_id="r1", step=step).metrics.update({"loss": 0.5, "lr": 0.1})
        store.submit([append_events_op("r1", 200, 201, 2, b.SerializeToString(), 1.0)]).result()
        cols.refresh(store)
        assert cols.tail("loss", 198)[0].tolist() == [198, 199, 200, 201]
        assert cols.tail("loss", 500)[0].tolist() == [] and cols.tail("nope", 0) is None
        assert cols.tail("val/loss", 185)[0].tolist() == [189, 199]
        from runwatch.service.http import stream

        assert stream.new_points(cols, 201) == {"loss": {"x": [201], "y": [0.5]}, "lr": {"x": [201], "y": [0.1]}}
        assert len(stream.new_points(cols, 0)["loss"]["x"]) == 202
        monkeypatch.setattr(stream, "MAX_LIVE_POINTS", 100)
        assert stream.new_points(cols, 0) is None  # too many: the page is told to reload instead
    finally:
        store.close()


def _append_watched_steps(store, first: int, last: int) -> None:
    """Steps ``first..last`` of "r1" in one chunk; every 10th step also carries a watch() metric (another layout)."""
    b = runs_pb2.EventBatch()
    for step in range(first, last + 1):
        metrics = {"loss": 1.0 / (step + 1)}
        if step % 10 == 0:
            metrics["grad_norm"] = 0.5
        b.events.add(run_id="r1", step=step, wall_time=1.0).metrics.update(metrics)
    store.submit([append_events_op("r1", first, last, last - first + 1, b.SerializeToString(), 1.0)]).result()


def _page_append(page: dict[str, list[int]], series: dict[str, dict]) -> None:
    """The page's appendPoints (static/app.js): keeps only steps past the last one it has."""
    for name, s in series.items():
        mine = page.setdefault(name, [])
        for x in s["x"]:
            if not mine or x > mine[-1]:
                mine.append(x)


def test_live_points_come_in_step_order_so_the_page_keeps_every_one(tmp_path):
    from runwatch.service.http.stream import last_sent_step, new_points

    store = RunStore(tmp_path / "runwatch.db")
    store.open_run(runs_pb2.RunStart(run_id="r1", project="p")).result()
    try:
        cols, page, since = RunColumns("r1"), {}, 0
        for first in range(0, 300, 25):  # a live run: the page polls after each stored chunk
            _append_watched_steps(store, first, first + 24)
            cols.refresh(store)
            points = new_points(cols, since)
            for name, s in points.items():
                assert s["x"] == sorted(s["x"]), (name, s["x"])
            _page_append(page, points)
            since = last_sent_step(points)
        assert page["loss"] == list(range(300)) and page["grad_norm"] == list(range(0, 300, 10))
        assert cols.curve("loss")[0].tolist() == list(range(300))
    finally:
        store.close()


def test_stream_sends_points_another_request_read_into_the_shared_columns(tmp_path):
    """A page's /api/series refreshes the columns its stream shares: the stream still sends those points."""
    import asyncio
    from types import SimpleNamespace

    from runwatch.service.http.stream import EventStream

    store = RunStore(tmp_path / "runwatch.db")
    store.open_run(runs_pb2.RunStart(run_id="r1", project="p")).result()
    columns = ColumnCache()
    sent: list[dict] = []

    class Response:
        async def write(self, data: bytes) -> None:
            event, _, payload = data.decode().partition("\ndata: ")
            if event == "event: points":
                sent.append(json.loads(payload))
                if len(sent) == 1:  # while this payload goes out, another request reads newer chunks
                    _append_watched_steps(store, 20, 29)
                    columns.get("r1").refresh(store)

    try:
        _append_watched_steps(store, 0, 19)
        dashboard = SimpleNamespace(server=SimpleNamespace(store=store), columns=columns)
        stream = EventStream(dashboard, principal=None, project="", run_id="r1", min_severity=0, since=0)

        async def two_polls():
            last = await stream._poll_run(Response(), None)
            await stream._poll_run(Response(), last)

        asyncio.run(two_polls())
        received = sorted({x for payload in sent for x in payload["series"]["loss"]["x"]})
        assert received == list(range(30))
    finally:
        store.close()
