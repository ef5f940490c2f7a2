"""A project's run-outlier detector refits from its own healthy runs, through a real server, and survives restarts.

The project trains in curriculum phases: every 100 steps harder data lifts the
loss fourfold and the learning rate drops tenfold. Healthy for this project,
unlike the shipped reference: the shipped model flags each run as a RUN_OUTLIER
at 512 losses. After ``min_runs`` (8) such runs end FINISHED, the
service refits the project's model: a ninth run like them is no longer flagged,
a run off the project's own pattern still is, by "project model, 8 runs", and
a restarted service (SQLite) or a second instance (PostgreSQL) loads the same
model from the store.
"""

from __future__ import annotations

import logging

import numpy as np

from runwatch.client import RunwatchClient
from runwatch.models.learned.artifacts import load_artifact
from runwatch.models.registry import SuiteConfig
from runwatch.v1 import anomaly_pb2, service_pb2

PROJECT = "curriculum"
RUN_OUTLIER = anomaly_pb2.ANOMALY_KIND_RUN_OUTLIER
# The learned detector alone, its run-outlier findings only: the other models' findings would keep runs ineligible.
SUITE = SuiteConfig(
    enabled=["learned"], settings={"learned": {"sequence_outlier": False, "divergence_forecast": False}}
)


def curriculum(seed: int, phase_len: int = 100, steps: int = 600) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(steps):
        phase = s // phase_len
        loss = (9.0 * np.exp(-(s % phase_len) / 10) + 0.05) * 4.0**phase * (1 + 0.01 * rng.normal())
        row = {"loss": loss, "lr": 1e-3 * 0.1**phase, "grad_norm": (1 + 0.05 * rng.normal()) * 3.0**phase,
               "update_ratio/fc": 0.05}
        if s % 10 == 0:
            row["val/loss"] = 8 * loss
        rows.append(row)
    return rows


def stream(target: str, run_id: str, rows: list[dict[str, float]]) -> None:
    client = RunwatchClient(target, flush_on_exit=False)
    try:
        run = client.start_run(run_id=run_id, project=PROJECT, environment={})
        for step, row in enumerate(rows):
            run.log(row, step=step)
        assert run.finish(timeout=60)
    finally:
        client.close(timeout=5)


def outliers(stubs, run_id: str) -> list[anomaly_pb2.Anomaly]:
    found = stubs.runs.ListAnomalies(service_pb2.ListAnomaliesRequest(run_id=run_id), timeout=30).anomalies
    return [a for a in found if a.kind == RUN_OUTLIER]


def model_of(srv):
    refitter = srv.server.pipeline.refitter
    assert refitter.wait_idle(60)
    return refitter.models.get(PROJECT)


def test_a_project_refits_on_its_healthy_runs_and_keeps_its_model_across_a_restart(start_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="runwatch.service")
    data = tmp_path / "data"
    srv, stubs = start_server(data_dir=data, diagnostics=SUITE)
    for k in range(8):
        assert model_of(srv) is None  # cold: the shipped model scores
        stream(srv.target, f"healthy-{k}", curriculum(k))
        flagged = outliers(stubs, f"healthy-{k}")
        assert [a.step for a in flagged] == [511]
        assert all("(shipped model: iforest score" in a.explanation for a in flagged)
    model = model_of(srv)
    assert (model.n_runs, model.fit_at) == (8, 8)
    assert model.alert >= load_artifact().config.thresholds.run_outlier_alert
    refits = [r.getMessage() for r in caplog.records if "run-outlier model refitted" in r.getMessage()]
    assert len(refits) == 1 and refits[0].startswith(f"project {PROJECT}: run-outlier model refitted on 8 runs (48 prefixes)")

    # A ninth run like the others: its project's model knows it.
    stream(srv.target, "healthy-8", curriculum(8))
    assert outliers(stubs, "healthy-8") == []
    # Phases twice as short: off the project's own pattern, flagged by its model.
    stream(srv.target, "odd", curriculum(100, phase_len=50))
    flagged = outliers(stubs, "odd")
    assert flagged and all("(project model, 8 runs: iforest score" in a.explanation for a in flagged)
    # The ninth run teaches the project's model; the odd one, flagged by that model, does not.
    assert srv.server.store.count_run_summaries(PROJECT) == 9
    probe = np.concatenate(srv.server.store.run_summaries(PROJECT, 9, 9))
    before = model.detector.score_samples(probe)

    srv.stop()
    again, stubs = start_server(data_dir=data, diagnostics=SUITE)
    loaded = model_of(again)
    assert loaded is not None and (loaded.n_runs, loaded.fit_at, loaded.alert) == (8, 8, model.alert)
    assert np.array_equal(loaded.detector.score_samples(probe), before)  # the same trees
    stream(again.target, "odd-after-restart", curriculum(100, phase_len=50))
    assert [a.explanation for a in outliers(stubs, "odd-after-restart")] == [a.explanation for a in flagged]


def test_a_second_instance_on_the_shared_store_serves_the_same_project_model(start_server, pg_url, tmp_path):
    learned = {**SUITE.settings["learned"], "project_refit": {"min_runs": 4, "every_runs": 4}}
    cfg = SuiteConfig(enabled=["learned"], settings={"learned": learned})
    a, _ = start_server(store=pg_url, data_dir=tmp_path / "a", diagnostics=cfg)
    for k in range(4):
        stream(a.target, f"healthy-{k}", curriculum(k, steps=300))
    on_a_model = model_of(a)
    assert on_a_model is not None and on_a_model.n_runs == 4

    b, on_b = start_server(store=pg_url, data_dir=tmp_path / "b", diagnostics=cfg)
    on_b_model = model_of(b)
    assert on_b_model is not None and on_b_model.alert == on_a_model.alert
    probe = np.concatenate(b.server.store.run_summaries(PROJECT, 4, 4))
    assert np.array_equal(on_b_model.detector.score_samples(probe), on_a_model.detector.score_samples(probe))
    stream(b.target, "odd-on-b", curriculum(100, phase_len=50, steps=300))
    flagged = outliers(on_b, "odd-on-b")
    assert flagged and all("(project model, 4 runs: iforest score" in x.explanation for x in flagged)
