"""The benchmark harness (bench/): its metrics on hand-checkable cases, its streaming against the
service's own pipeline, the corpus labels, and every system on the committed fixture slice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import metrics as M
from bench.corpus import labels as L
from bench.corpus.store import RunRecord, load, save
from bench.evaluate import FIXTURE, evaluate_runs, load_corpus, make_systems, stream, thin_record, truth_of
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.monitor import RunMonitor
from runwatch.models.registry import DiagnosticSuite

A = M.AlertRecord


# -- metrics ------------------------------------------------------------------------------------


def test_alerts_before_onset_do_not_detect_the_fault_but_count_as_false_alarms():
    truths = [
        M.Truth("f1", True, "nan", onset=100, manifest=120, healthy_steps=100),
        M.Truth("f2", True, "stall", onset=50, manifest=50, healthy_steps=50),
        M.Truth("h1", False, healthy_steps=300),
        M.Truth("h2", False, healthy_steps=300),
    ]
    alerts = {
        "f1": [A("f1", "d", "K", 2, 1.0, 110, "a")],  # after onset: detection
        "f2": [A("f2", "d", "K", 3, 1.0, 10, "b")],  # before onset only: missed, and a false alarm
        "h1": [A("h1", "d", "K", 2, 1.0, 5, "c"), A("h1", "d", "K", 4, 9.0, 6, "c", 2), A("h1", "d", "K", 2, 1.0, 250, "e")],
    }
    c = M.confusion(truths, alerts)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (1, 1, 1, 1)
    assert c["precision"] == 0.5 and c["recall"] == 0.5 and c["f1"] == 0.5
    fa = M.false_alarms(truths, alerts)
    # f2's incident b (before onset) and h1's incidents c and e; c's second revision is the same incident
    assert fa["false_alarms"] == 3 and fa["healthy_steps"] == 750
    assert fa["per_10k"] == pytest.approx(40.0)
    assert M.recall_by_fault(truths, alerts) == {"nan": (1, 1), "stall": (0, 1)}


def test_run_score_orders_by_severity_then_score_and_auroc_handles_ties():
    warn_big, crit_small = [A("r", "d", "K", 2, 1e6, 1, "i")], [A("r", "d", "K", 4, 0.0, 1, "i")]
    assert 0.0 < M.run_score(warn_big) < M.run_score(crit_small)
    assert M.run_score([A("r", "d", "K", 2, math.inf, 1, "i")]) < 3.0
    assert M.auroc([1, 1, 0, 0], [3, 2, 1, 0]) == 1.0
    assert M.auroc([1, 0, 1, 0], [1, 1, 0, 0]) == 0.5
    assert M.auroc([1, 0, 0], [0.5, 0.5, 0.1]) == 0.75
    assert math.isnan(M.auroc([1, 1], [0.1, 0.2]))


def test_lead_time_counts_unalerted_runs_in_the_share_alerted_before_manifestation():
    truths = [M.Truth(r, True, "divergence", onset=10, manifest=200) for r in "abcd"] + [
        M.Truth("e", True, "divergence", onset=10, manifest=None),  # never manifested: not in lead times
        M.Truth("f", True, "overfitting", onset=0, manifest=300),  # other fault type
    ]
    alerts = {
        "a": [A("a", "d", "K", 2, 1, 150, "1"), A("a", "d", "K", 2, 1, 190, "2")],  # lead 50 (first alert)
        "b": [A("b", "d", "K", 2, 1, 5, "3"), A("b", "d", "K", 2, 1, 230, "4")],  # pre-onset alert ignored: lead -30
        "c": [A("c", "d", "K", 2, 1, 200, "5")],  # lead 0: not before
        "f": [A("f", "d", "K", 2, 1, 0, "6")],
    }
    lt = M.lead_times(truths, alerts, faults=("divergence",))
    assert lt["runs"] == 4 and lt["alerted"] == 3
    assert lt["median"] == 0.0
    assert lt["p10"] == pytest.approx(-30 + 0.2 * 30)  # numpy's linear interpolation over [-30, 0, 50]
    assert lt["frac_before"] == 0.25


# -- labels -------------------------------------------------------------------------------------


def test_label_definitions_on_hand_made_curves():
    steps = np.arange(10)
    loss = np.array([1.0, 0.8, 0.6, 0.5, 0.5, 0.5, 3.0, 9.0, 30.0, np.inf])
    # ema: ... crosses 3 x its running minimum at the 30.0 value (step 8)
    assert L.blowup_step(steps, loss, onset=0) == 8
    assert L.blowup_step(steps, loss, onset=9) == 9  # non-finite counts at once
    assert L.blowup_step(steps[:6], loss[:6], onset=0) is None
    v = np.array([1.0, 0.8, 0.9, 0.95, 0.97])
    assert L.val_rise_step(np.arange(5) * 10, v, onset=0) == 40  # 0.97 >= 1.2 x 0.8 = 0.96
    assert L.val_rise_step(np.arange(5) * 10, v, onset=0, x=0.5) is None
    rec = RunRecord.from_events([(0, 1.0, {"loss": 1.0, "dbg/x": math.nan}), (1, 2.0, {"loss": 0.5, "g": math.inf})], {"run_id": "r"})
    assert L.first_nonfinite_step(rec) == 1  # dbg/ tensors are not SDK telemetry


def test_record_round_trip_and_blocks_match_the_services_block_building(tmp_path):
    events = [(s, 1000.0 + s, {"loss": 1.0 / (s + 1), "lr": 0.1, **({"val/loss": 0.5} if s % 7 == 6 else {})}) for s in range(120)]
    events[60] = (60, 1000.0 + 60 + 500.0, dict(events[60][2]))  # a pause: the SDK's batch ends before it
    events[61:] = [(s, w + 500.0, m) for s, w, m in events[61:]]
    rec = RunRecord.from_events(events, {"run_id": "r"})
    save(rec, tmp_path / "r.npz")
    back = load(tmp_path / "r.npz")
    assert back.events() == events and back.meta == {"run_id": "r"}
    cuts = [(lo, hi) for _, lo, hi in back.blocks(50)]
    assert cuts == [(0, 50), (50, 60), (60, 110), (110, 120)]
    for block, lo, hi in back.blocks(50):
        ref = MetricBlock.from_rows([e[0] for e in events[lo:hi]], [e[1] for e in events[lo:hi]], [e[2] for e in events[lo:hi]])
        assert list(block.columns) == list(ref.columns)
        for name, col in ref.columns.items():
            got = block.columns[name]
            assert np.array_equal(got.steps, col.steps) and np.array_equal(got.values, col.values)
            assert np.array_equal(got.wall_times, col.wall_times)


# -- streaming ----------------------------------------------------------------------------------


class _FiresAt:
    name, version = "fires_at", "1"

    def __init__(self, step: int) -> None:
        self.step = step

    def observe_block(self, block):
        col = block.columns.get("loss")
        if col is not None and self.step in col.steps.tolist():
            return [Finding(AnomalyKind.LOSS_SPIKE, Severity.WARNING, 3.0, self.step, "loss", "x")]
        return []

    def on_idle(self, now, last_wall_time, last_step):
        if now - last_wall_time > 60.0:
            return Finding(AnomalyKind.STALLED, Severity.WARNING, 1.0, last_step, "wall_time", "idle", key="stalled")
        return None


def test_thinning_keeps_evaluations_at_their_own_steps_with_only_their_metrics():
    events = [(s, 1000.0 + s, {"loss": 1.0, **({"val/loss": 2.0} if s % 20 == 19 else {})}) for s in range(100)]
    rec = RunRecord.from_events(events, {"run_id": "r"})
    thin = thin_record(rec, 25)
    assert thin.steps.tolist() == [0, 19, 25, 39, 50, 59, 75, 79, 99]
    assert thin.series("loss")[0].tolist() == [0, 25, 50, 75]  # training metrics only on the grid
    assert thin.series("val/loss")[0].tolist() == [19, 39, 59, 79, 99]
    alike = thin_record(rec, 25, thin_validation=True)
    assert alike.steps.tolist() == [0, 25, 50, 75] and "val/loss" not in alike.columns  # no step 19 + 20k is a multiple of 25


def _run(n: int, ended: bool, gap_at: int | None = None) -> RunRecord:
    wall = [1.0e9 + 0.01 * s + (600.0 if gap_at is not None and s >= gap_at else 0.0) for s in range(n)]
    return RunRecord.from_events([(s, wall[s], {"loss": 1.0}) for s in range(n)], {"run_id": "r", "ended": ended})


def test_thinning_keeps_every_kth_step_and_dates_a_stall_after_the_last_kept_one():
    events = [(s, 1000.0 + s, {"loss": 1.0 / (s + 1)}) for s in range(137)]  # hangs at step 137
    meta = {"run_id": "r", "ended": False, "spec": {"fault": "stall", "onset": 137}, "labels": {"manifest_step": 137}}
    thin = thin_record(RunRecord.from_events(events, meta), 25)
    assert thin.steps.tolist() == [0, 25, 50, 75, 100, 125]
    assert truth_of(thin).onset == 126 and truth_of(thin).healthy_steps == 6
    alerts = stream(thin, DiagnosticSuite().monitor("r"))
    stalls = [a for a in alerts if a.kind == "STALLED"]
    assert stalls and stalls[0].step == 126  # at the onset: the stall is detected, not a false alarm
    other = {"run_id": "b", "spec": {"fault": "bad_batch", "onset": 60}}
    assert thin_record(RunRecord.from_events(events, other), 25).meta["spec"]["onset"] == 60  # only stalls move


def test_stream_places_alerts_and_idle_checks_like_the_service():
    alerts = stream(_run(100, ended=True), RunMonitor("r", [_FiresAt(42)]))
    assert [(a.step, a.kind) for a in alerts] == [(42, "LOSS_SPIKE")]
    # a run that never ended is watched for the horizon; the stall is placed at the step that did not come
    alerts = stream(_run(100, ended=False), RunMonitor("r", [_FiresAt(-1)]))
    assert [(a.step, a.kind, a.revision) for a in alerts] == [(100, "STALLED", 1)]
    # a long gap inside a run: idle checks run between batches
    alerts = stream(_run(100, ended=True, gap_at=70), RunMonitor("r", [_FiresAt(-1)]))
    assert [(a.step, a.kind) for a in alerts] == [(70, "STALLED")]


def test_a_real_log_without_time_stamps_gets_no_idle_time():
    from bench.real_logs import _record

    # a Trainer log written every 6,000 steps: at the synthetic one second per step, 100-minute silences
    steps = [6000 * (i + 1) for i in range(6)]
    rec = _record("hf-more", 0, "x", steps, [0.0] * 6, [{"loss": 1.0 - 0.1 * i} for i in range(6)])
    assert rec.meta["clock"] is False and rec.wall.tolist() == [1.7e9 + s for s in steps]
    assert not [a for a in stream(rec, DiagnosticSuite().monitor("r")) if a.kind == "STALLED"]
    timed = _record("tb", 0, "x", steps, [1000.0 + s for s in steps], [{"loss": 1.0 - 0.1 * i} for i in range(6)])
    assert timed.meta["clock"] is True
    assert [a for a in stream(timed, DiagnosticSuite().monitor("r")) if a.kind == "STALLED"]  # real silences count


def test_harness_alerts_equal_the_detection_pipelines_anomalies(tmp_path):
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    runs = [r for r in _fixture() if r.meta["ended"] and r.meta["spec"]["pause_at"] < 0 and r.meta["spec"]["fault"] in ("divergence", "nan", "bad_batch")]
    rec = runs[0].without(["dbg/"])
    ours = [(a.incident, a.kind, a.step, a.revision) for a in stream(rec, DiagnosticSuite().monitor(rec.run_id))]
    settings = ServiceSettings(port=0, data_dir=tmp_path)
    pipe = DetectionPipeline(settings, RunStore(settings.db_path))
    theirs = []
    try:
        events = rec.events()
        for i in range(0, len(events), 50):
            b = runs_pb2.EventBatch()
            if i == 0:
                b.starts.add(run_id=rec.run_id, project="bench")
            for step, wall, metrics in events[i : i + 50]:
                b.events.add(run_id=rec.run_id, step=step, wall_time=wall).metrics.update(metrics)
            theirs += [(a.id, AnomalyKind(a.kind).name, a.step, a.revision) for a in pipe.ingest(b).anomalies]
        end = runs_pb2.EventBatch()  # the harness ends an ended run as finished
        end.ends.add(run_id=rec.run_id, status=runs_pb2.RUN_STATUS_FINISHED)
        theirs += [(a.id, AnomalyKind(a.kind).name, a.step, a.revision) for a in pipe.ingest(end).anomalies]
    finally:
        pipe.store.close()
    assert ours and ours == theirs


# -- the fixture slice --------------------------------------------------------------------------


_CACHE: dict[str, list[RunRecord]] = {}


def _fixture() -> list[RunRecord]:
    if "runs" not in _CACHE:
        if not (FIXTURE / "labels.csv").exists():
            pytest.skip(f"fixture slice missing: {FIXTURE}")
        _CACHE["runs"] = load_corpus(FIXTURE)
    return _CACHE["runs"]


def test_fixture_slice_is_labelled_and_balanced():
    runs = _fixture()
    faults = {r.meta["spec"]["fault"] for r in runs}
    assert 30 <= len(runs) <= 60
    assert "healthy" in faults and len(faults - {"healthy"}) == 10
    for r in runs:
        lab = r.meta["labels"]
        assert lab["accepted"]
        if r.meta["spec"]["fault"] in ("divergence", "nan", "overfitting", "bad_batch", "data_corruption"):
            assert lab["manifest_step"] is not None and lab["manifest_step"] >= r.meta["spec"]["onset"]
        if r.meta["spec"]["fault"] == "nan":
            assert L.first_nonfinite_step(r) == lab["manifest_step"]


def test_every_system_runs_on_the_fixture_with_sane_numbers():
    runs = _fixture()
    truths = [truth_of(r) for r in runs]
    names = ["runwatch", "sagemaker", "nni_medianstop", "zscore", "lightning", "lightning_patience"]
    ev = evaluate_runs(runs, make_systems(names), truths)
    assert set(ev.alerts) == set(names)
    n_faulty = sum(t.faulty for t in truths)
    for name in names:
        c = M.confusion(truths, ev.alerts[name])
        assert c["tp"] + c["fn"] == n_faulty and c["fp"] + c["tn"] == len(runs) - n_faulty
        assert 0.0 <= c["auroc"] <= 1.0
        assert sum(map(len, ev.alerts[name].values())) > 0, name  # every system raises something
        fa = M.false_alarms(truths, ev.alerts[name])
        assert fa["healthy_steps"] > 5_000 and fa["per_10k"] >= 0.0
    ours = M.confusion(truths, ev.alerts["runwatch"])
    assert ours["recall"] >= 0.6 and ours["precision"] >= 0.6 and ours["auroc"] >= 0.7
    # non-finite values are caught by runwatch and by SageMaker's ExplodingTensor on every NaN run
    for name, det in (("runwatch", "nonfinite"), ("sagemaker", "sm.ExplodingTensor")):
        per = M.recall_by_fault(truths, M.only(ev.alerts[name], det))
        assert per["nan"][0] == per["nan"][1] > 0
    lt = M.lead_times(truths, ev.alerts["runwatch"], faults=("nan",))
    assert lt["alerted"] == lt["runs"] and lt["median"] <= 0  # a NaN cannot be seen before it appears


def test_nni_curvefitting_flags_a_run_far_below_the_best_completed_one():
    from bench.baselines import nni_assessors

    studies = nni_assessors.Studies(lambda: nni_assessors._assessors()[1](epoch_num=20, start_step=6, threshold=0.95, gap=1))

    def trial(run_id: str, acc: list[float]) -> list:
        meta = {"run_id": run_id, "spec": {"dataset": "d", "val_every": 10, "steps": 200}, "ended": True, "status": "completed"}
        rec = RunRecord.from_events([(s, 1e9 + s, {"loss": 1.0, **({"val/acc": acc[s // 10]} if s % 10 == 9 else {})}) for s in range(200)], meta)
        return stream(rec, RunMonitor(run_id, [nni_assessors.Curvefitting(studies, meta)]))

    good = [0.9 - 0.6 * math.exp(-k / 3) for k in range(20)]
    assert trial("good", good) == []
    bad = trial("bad", [0.1 + 0.001 * k for k in range(20)])
    assert len(bad) == 1 and bad[0].detector == "nni.Curvefitting" and 60 <= bad[0].step < 200


def test_a_corpus_run_is_reproducible_and_its_fault_manifests():
    import dataclasses

    from bench.corpus.specs import draw_spec
    from bench.corpus.train import train_run

    spec = draw_spec(0, 3, "nan")
    spec = dataclasses.replace(spec, dataset="wine", arch="mlp", depth=2, width=32, activation="relu", batch_size=16,
                               cause="nan_input", steps=80, onset=40, pause_at=-1, params={**spec.params})
    spec.params.pop("tau", None)
    ev1, facts = train_run(spec)
    ev2, _ = train_run(spec)
    strip = lambda ev: [(s, {k: v for k, v in m.items() if k not in ("step_time", "data_time")}) for s, _, m in ev]
    assert repr(strip(ev1)) == repr(strip(ev2))  # bit-identical apart from timings (NaN-safe comparison)
    rec = RunRecord.from_events(ev1, {"run_id": spec.run_id, "spec": spec.to_dict(), **facts})
    lab = L.label_run(rec)
    assert lab["accepted"] and lab["manifest_step"] == 40 and facts["status"].startswith("crashed")
