"""The run-outlier refit policy: which runs count, when a project refits, how many runs it keeps, and determinism.

Pure policy functions first, then the same policy through real parts: a
:class:`DetectionPipeline` on a SQLite store deciding which ended runs leave
reference rows, and a :class:`ProjectRefitter` fitting from what the store holds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.learned.artifacts import load_artifact
from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic
from runwatch.models.learned.project_refit import (
    ProjectRefitConfig,
    alert_level,
    eligible,
    fit_point,
    fit_project_model,
    shipped_flag_rate,
)
from runwatch.models.registry import DiagnosticSuite, SuiteConfig
from runwatch.service.outlier_refit import ProjectRefitter
from runwatch.service.pipeline import DetectionPipeline
from runwatch.service.settings import ServiceSettings
from runwatch.service.store import RunStore, save_run_summaries_op
from runwatch.v1 import runs_pb2

RUN_OUTLIER, LOSS_SPIKE, PLATEAU = int(AnomalyKind.RUN_OUTLIER), int(AnomalyKind.LOSS_SPIKE), int(AnomalyKind.PLATEAU)
WIDTH = 60  # 3 summaries x 20 features


# -- the policy, pure --------------------------------------------------------------------------------


def test_no_refit_under_min_runs_then_at_min_runs_and_every_every_runs():
    policy = ProjectRefitConfig()
    assert [fit_point(n, policy) for n in range(8)] == [0] * 8
    assert [fit_point(n, policy) for n in (8, 9, 15, 16, 17, 24, 100)] == [8, 8, 8, 16, 16, 24, 96]
    other = ProjectRefitConfig(min_runs=3, every_runs=5)
    assert [fit_point(n, other) for n in (2, 3, 7, 8, 12, 13)] == [0, 3, 3, 8, 8, 13]


def test_only_finished_runs_without_a_warning_count():
    policy = ProjectRefitConfig()
    assert eligible(True, {}, policy)
    assert eligible(True, {PLATEAU: int(Severity.INFO)}, policy)  # INFO is not a problem
    assert not eligible(False, {}, policy)  # failed or killed
    assert not eligible(True, {LOSS_SPIKE: int(Severity.WARNING)}, policy)
    assert not eligible(True, {LOSS_SPIKE: int(Severity.CRITICAL), RUN_OUTLIER: int(Severity.WARNING)}, policy)
    # The shipped model's verdict, which the refit revises, does not keep a run out (unless told to) ...
    assert eligible(True, {RUN_OUTLIER: int(Severity.WARNING)}, policy)
    # ... the project's own model's does.
    assert not eligible(True, {RUN_OUTLIER: int(Severity.WARNING)}, policy, project_flagged=True)
    assert not eligible(True, {RUN_OUTLIER: int(Severity.WARNING)}, ProjectRefitConfig(ignore_run_outlier=False))


def test_the_level_flags_at_most_the_shipped_rate_and_never_less_than_the_shipped_level():
    scores = np.linspace(0.0, 0.99, 100)
    level = alert_level(scores, rate=0.05, floor=0.0)
    assert np.sum(np.round(scores, 6) >= level) == 5
    assert alert_level(scores, rate=0.0, floor=0.0) > scores.max()  # rate 0: nothing in the reference flagged
    assert alert_level(scores, rate=0.05, floor=2.0) == 2.0
    art = load_artifact()
    assert shipped_flag_rate(art.run_outlier, art.config.thresholds.run_outlier_alert) == 0.0


def test_the_config_round_trips_through_the_suite_config():
    cfg = SuiteConfig(enabled=["learned"], settings={"learned": {"project_refit": {"min_runs": 4, "enabled": False}}})
    back = SuiteConfig.model_validate_json(cfg.model_dump_json())
    assert LearnedConfig.model_validate(back.settings["learned"]).project_refit == ProjectRefitConfig(min_runs=4, enabled=False)
    with pytest.raises(ValueError, match="min_runs"):
        SuiteConfig(enabled=["learned"], settings={"learned": {"project_refit": {"min_runs": 0}}})


# -- determinism ---------------------------------------------------------------------------------------


def _runs(n: int, seed: int = 0, shift: float = 3.0) -> list[np.ndarray]:
    """Reference-like rows moved off the shipped reference: a project of its own."""
    ref = load_artifact().run_outlier.reference
    rng = np.random.default_rng(seed)
    return [ref[rng.integers(0, len(ref), 5)] + shift for _ in range(n)]


def test_same_rows_give_the_same_model():
    art = load_artifact()
    shipped, alert = art.run_outlier, art.config.thresholds.run_outlier_alert
    runs = _runs(8)
    one, two = fit_project_model(shipped, alert, 0.0, runs, 8), fit_project_model(shipped, alert, 0.0, runs, 8)
    probe = np.concatenate([shipped.reference[:50], *runs])
    assert np.array_equal(one.detector.score_samples(probe), two.detector.score_samples(probe))
    assert one.alert == two.alert and one.alert >= alert
    # The project's own rows are flagged at the shipped rate (0): none of them.
    assert (np.round(one.detector.score_samples(np.concatenate(runs)), 6) < one.alert).all()


def test_a_refitter_fits_what_the_store_holds_capped_to_the_newest_runs(tmp_path):
    store = RunStore(tmp_path / "runwatch.db")
    runs = _runs(11)
    store.submit([save_run_summaries_op(f"r{i}", "p", rows) for i, rows in enumerate(runs)]).result()
    store.submit([save_run_summaries_op("r0", "p", runs[5])]).result()  # an end delivered twice keeps its rows
    store.submit([save_run_summaries_op("other", "q", runs[0])]).result()
    assert store.count_run_summaries("p") == 11
    got = store.run_summaries("p", first=8, newest=3)
    assert [np.array_equal(a, b, equal_nan=True) for a, b in zip(got, runs[5:8])] == [True] * 3

    config = LearnedConfig(project_refit=ProjectRefitConfig(min_runs=4, every_runs=4, max_reference_runs=3))
    refitter = ProjectRefitter(store, config)
    refitter.start()
    try:
        assert refitter.wait_idle()
        model = refitter.models.get("p")
        assert (model.fit_at, model.n_runs, model.label) == (8, 3, "project model, 3 runs")
        assert refitter.models.get("q") is None  # 1 run: under min_runs
        art = load_artifact()
        expected = fit_project_model(art.run_outlier, art.config.thresholds.run_outlier_alert, 0.0, runs[5:8], 8)
        probe = np.concatenate(runs)
        assert np.array_equal(model.detector.score_samples(probe), expected.detector.score_samples(probe))
        assert model.alert == expected.alert
        # A fresh refitter on the same store (a restart) builds the same trees.
        again = ProjectRefitter(store, config)
        again.start()
        assert again.wait_idle()
        assert np.array_equal(again.models.get("p").detector.score_samples(probe), model.detector.score_samples(probe))
        again.close()
    finally:
        refitter.close()
        store.close()


# -- the pipeline: which ended runs leave rows --------------------------------------------------------


def _run(run_id: str, steps: int, status: int, nan_at: int = -1) -> runs_pb2.EventBatch:
    b = runs_pb2.EventBatch()
    b.starts.add(run_id=run_id, project="p", start_time=1.7e9)
    for s in range(steps):
        loss = math.nan if 0 <= nan_at <= s else 2.3 * 0.99**s
        b.events.add(run_id=run_id, step=s, wall_time=1.7e9 + s).metrics.update({"loss": loss, "lr": 1e-3})
    b.ends.add(run_id=run_id, status=status)
    return b


def _pipeline(path, **learned) -> DetectionPipeline:
    suite = SuiteConfig(enabled=["nonfinite", "learned"], settings={"learned": learned} if learned else {})
    settings = ServiceSettings(data_dir=path, diagnostics=suite)
    return DetectionPipeline(settings, RunStore(settings.db_path))


def test_only_runs_ended_ok_without_a_warning_leave_rows(tmp_path):
    p = _pipeline(tmp_path)
    finished, failed = runs_pb2.RUN_STATUS_FINISHED, runs_pb2.RUN_STATUS_FAILED
    p.ingest(_run("ok", 40, finished))
    p.ingest(_run("failed", 40, failed))
    assert p.ingest(_run("nan", 40, finished, nan_at=36)).anomalies  # NONFINITE: an ERROR
    p.ingest(_run("short", 10, finished))  # ended before its first checkpoint (16 losses)
    p.store.flush()
    assert p.store.count_run_summaries("p") == 1
    (rows,) = p.store.run_summaries("p", 10, 10)
    assert rows.shape == (2, WIDTH)  # checkpoints 16 and 32
    p.store.close()


def test_refits_off_store_nothing_and_score_with_the_shipped_model(tmp_path):
    p = _pipeline(tmp_path, project_refit={"enabled": False})
    assert p.refitter is None and p.suite.project_models is None
    p.ingest(_run("ok", 40, runs_pb2.RUN_STATUS_FINISHED))
    p.store.flush()
    assert p.store.count_run_summaries("p") == 0
    p.store.close()


def test_a_run_scores_with_its_projects_model_once_there_is_one(tmp_path):
    p = _pipeline(tmp_path)
    b = _run("live", 20, runs_pb2.RUN_STATUS_FINISHED)
    del b.ends[:]
    p.ingest(b)
    learned = next(d for d in p.runs["live"].monitor.diagnostics if d.name == "learned")
    assert learned.context.project == "p" and learned.run_outlier_model()[2] == "shipped model"
    art = load_artifact()
    model = fit_project_model(art.run_outlier, art.config.thresholds.run_outlier_alert, 0.0, _runs(8), 8)
    p.refitter.models.put("p", model)
    assert learned.run_outlier_model()[2] == "project model, 8 runs"
    p.store.close()


# -- checkpoints keep the rows; older checkpoints still load ----------------------------------------


def test_recorded_rows_survive_a_checkpoint_and_old_checkpoints_load():
    suite = DiagnosticSuite(SuiteConfig(enabled=["learned"]))
    first = suite.monitor("r", "p")
    for s in range(40):
        first.observe(s, 0.0, {"loss": 2.3 * 0.99**s})
    learned = first.diagnostics[0]
    assert learned.checkpoint_summaries.shape == (2, WIDTH)
    first.severities[RUN_OUTLIER] = int(Severity.WARNING)
    snap = json.loads(json.dumps(first.state_dict()))

    second = suite.monitor("r", "p")
    assert second.load_state_dict(snap) == []
    assert np.array_equal(second.diagnostics[0].checkpoint_summaries, learned.checkpoint_summaries, equal_nan=True)
    assert second.severities == {RUN_OUTLIER: int(Severity.WARNING)}

    # A checkpoint from before refits: no rows, no severities, a config without project_refit.
    old = json.loads(json.dumps(snap))
    del old["severities"]
    diag = old["diagnostics"][0]
    del diag["config"]["project_refit"]
    del diag["state"]["dict"]["checkpoint_summaries"]
    third = suite.monitor("r", "p")
    assert third.load_state_dict(old) == []
    assert third.diagnostics[0].checkpoint_summaries.shape == (0, WIDTH)
    assert third.severities == {}  # no open incident to read them from

    # The refit policy is not detection state: a changed one still restores the run.
    other = DiagnosticSuite(SuiteConfig(enabled=["learned"], settings={"learned": {"project_refit": {"min_runs": 3}}}))
    assert other.monitor("r", "p").load_state_dict(snap) == []
    changed = DiagnosticSuite(SuiteConfig(enabled=["learned"], settings={"learned": {"patience": 3}}))
    assert changed.monitor("r", "p").load_state_dict(snap) == ["learned"]


def test_the_learned_diagnostic_reports_which_model_scored():
    d = LearnedDiagnostic()
    assert d.run_outlier_model()[1] == load_artifact().config.thresholds.run_outlier_alert
