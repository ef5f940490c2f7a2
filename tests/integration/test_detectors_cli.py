"""`runwatch detectors train` and `evaluate` on a real store of real (small) PyTorch training runs.

The store is written through :class:`RunStore` with the runs the demo trains
(MLPs on scikit-learn's digits; healthy ones with a few learning rates and
seeds, and one that diverges to Inf), so the detectors see real gradients,
per-layer statistics and validation points. Training uses a small
TrainingConfig (one thinning, two epochs) so each fit takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from runwatch.models.learned.artifacts import load_artifact
from runwatch.service.cli import app
from runwatch.service.store import RunStore, append_events_op, end_run_op, save_anomaly_op
from runwatch.v1 import anomaly_pb2, runs_pb2

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "training_logs"
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"  # a 40-run slice of the benchmark corpus
SMALL = {"thinning": [1], "sequence_ae": {"epochs": 2}, "run_outlier": {"n_estimators": 20}}
N_HEALTHY = 12


def _train(name: str, seed: int, **changes) -> list[tuple[int, dict[str, float]]]:
    from runwatch.service.demo_training import CONFIGS, run_scenario

    events: list[tuple[int, dict[str, float]]] = []
    run_scenario(name, lambda step, m: events.append((step, dict(m))), seed=seed,
                 config=dataclasses.replace(CONFIGS[name], **changes))
    return events


def _write_run(store: RunStore, run_id: str, events, status: int, anomaly: int = 0) -> None:
    store.open_run(runs_pb2.RunStart(run_id=run_id, project="p", start_time=1000.0)).result()
    for lo in range(0, len(events), 40):  # one stored chunk per ingested batch, as the service writes them
        chunk = events[lo:lo + 40]
        batch = runs_pb2.EventBatch(events=[
            runs_pb2.MetricEvent(run_id=run_id, step=s, wall_time=1000.0 + s, metrics=m) for s, m in chunk])
        store.submit([append_events_op(run_id, chunk[0][0], chunk[-1][0], len(chunk), batch.SerializeToString(),
                                       1000.0 + chunk[-1][0])]).result()
    if anomaly:
        store.submit([save_anomaly_op(anomaly_pb2.Anomaly(
            id=f"{run_id}-a", run_id=run_id, project="p", detector="loss_spike",
            kind=anomaly_pb2.ANOMALY_KIND_LOSS_SPIKE, severity=anomaly, first_step=40, revision=1,
            detected_time=1040.0))]).result()
    if status != runs_pb2.RUN_STATUS_RUNNING:
        store.submit([end_run_op(run_id, status, 2000.0, "")]).result()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A store: 12 healthy finished runs, one diverging (failed), one still running, one with an ERROR anomaly."""
    root = tmp_path_factory.mktemp("detectors")
    store = RunStore(root / "store" / "runwatch.db")
    lrs = (5e-4, 1e-3, 2e-3)
    for i in range(N_HEALTHY):
        _write_run(store, f"healthy-{i:02d}", _train("healthy", i, max_steps=100, lr=lrs[i % 3]),
                   runs_pb2.RUN_STATUS_FINISHED)
    diverging = _train("diverging", 0)
    nonfinite = next(s for s, m in diverging if not np.isfinite(m["loss"]))
    _write_run(store, "diverging", diverging, runs_pb2.RUN_STATUS_FAILED)
    _write_run(store, "still-running", _train("healthy", 50, max_steps=60), runs_pb2.RUN_STATUS_RUNNING)
    _write_run(store, "flagged", _train("healthy", 51, max_steps=60), runs_pb2.RUN_STATUS_FINISHED,
               anomaly=anomaly_pb2.SEVERITY_ERROR)
    store.close()
    config = root / "training.json"
    config.write_text(json.dumps(SMALL))
    labels = root / "labels.csv"
    labels.write_text(f"run,fault,onset,manifest_step\ndiverging,divergence,120,{nonfinite}\n")
    return {"root": root, "store": root / "store", "config": config, "labels": labels}


def invoke(*args: str):
    result = CliRunner().invoke(app, ["detectors", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_train_on_a_store_keeps_the_base_forecaster_and_serves(data, tmp_path):
    out = tmp_path / "art"
    r = invoke("train", "--store", data["store"], "--labels", data["labels"], "--config", data["config"], "--out", out)
    assert r.exit_code == 0, r.output
    # The label policy: 12 finished healthy runs + the labelled divergence; running and flagged runs left out.
    assert "training on 13 run(s): 12 healthy, 1 divergence (13 from store)" in r.stdout
    assert "left out 2: " in r.stdout and "1 status running" in r.stdout and "1 ERROR anomaly LOSS_SPIKE" in r.stdout
    art, base = load_artifact(out), load_artifact()
    training = art.config.training
    assert training["forecaster_source"] == "base" and training["divergent_runs"] == 1
    assert training["counts"]["by_fault"] == {"healthy": 12, "divergence": 1}
    assert training["sources"]["store"] == [str(data["store"].resolve())]
    assert training["command"].startswith("runwatch detectors train --out ")
    for name, value in base.forecaster.tensors().items():
        assert np.array_equal(art.forecaster.tensors()[name], value), name
    assert art.config.forecaster == base.config.forecaster
    assert (art.config.thresholds.forecast_alert, art.config.thresholds.forecast_gate) == (
        base.config.thresholds.forecast_alert, base.config.thresholds.forecast_gate)
    # the autoencoder and run-outlier reference are this store's, recalibrated
    assert not np.array_equal(art.run_outlier.reference, base.run_outlier.reference)
    assert art.config.thresholds.sequence_alert != base.config.thresholds.sequence_alert
    assert art.config.sequence_ae.epochs == 2

    # `runwatch serve` takes it through its diagnostics settings, as `train` prints
    assert "--diagnostics-config" in r.stdout
    from runwatch.models.registry import DiagnosticSuite
    from runwatch.service.settings import ServiceSettings

    suite_file = tmp_path / "diagnostics.json"
    suite_file.write_text(json.dumps({"settings": {"learned": {"artifact": str(out)}}}))
    settings = ServiceSettings(diagnostics=f"@{suite_file}")
    learned = next(d for d in DiagnosticSuite(settings.diagnostics).monitor("x").diagnostics if d.name == "learned")
    assert learned.model.config == art.config

    # evaluate on the same store: a table row per run and the summary, with numbers
    r = invoke("evaluate", "--artifact", out, "--store", data["store"], "--labels", data["labels"])
    assert r.exit_code == 0, r.output
    assert "healthy runs flagged: " in r.stdout and "/12 (" in r.stdout
    assert "problem runs caught: 1/1 (100.0%): divergence 1/1" in r.stdout
    assert "alerts per 10k steps on healthy runs: " in r.stdout
    assert "unlabelled runs (not counted; label them with --labels): 2" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("diverging "))
    assert "caught" in row and "divergence" in row

    # the serve configuration file itself drives evaluate
    r = invoke("evaluate", "--store", data["store"], "--diagnostics-config", suite_file)
    assert r.exit_code == 0, r.output
    assert f"detectors: rules + learned ({out})" in r.stdout

    r = invoke("evaluate", "--store", data["store"], "--labels", data["labels"], "--rules-only", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["detectors"] == "rules only"
    assert report["summary"]["problems_caught"] == [1, 1] and report["summary"]["healthy_flagged"][1] == 12
    assert {x["run_id"]: x["label"] for x in report["runs"]}["flagged"] == "unlabelled"
    assert not any("learned" in x["first_kind"] for x in report["runs"])


def test_train_on_logs_with_labels(data, tmp_path):
    out = tmp_path / "art"
    labels = tmp_path / "labels.csv"
    # label by path below --logs and by name; without a label, the failed MLflow run and the one with a NaN loss
    # are left out
    labels.write_text("run_id,fault,onset_step,manifest_step\ntraining_logs/hf/lora_imdb_distilbert,healthy,,\n"
                      "vae-no-such-run,nan,3,9\n")
    r = invoke("train", "--logs", LOGS, "--store", data["store"], "--labels", labels, "--config", data["config"],
               "--out", out)
    assert r.exit_code == 0, r.output
    assert "1 label row(s) match no run read: vae-no-such-run" in r.stderr
    assert "(11 from logs, 12 from store)" in r.stdout  # the fixtures' long-format CSV/JSONL runs count too
    assert "1 the log says the run failed" in r.stdout and "1 non-finite loss" in r.stdout
    counts = load_artifact(out).config.training["counts"]
    assert counts["by_source"] == {"logs": 11, "store": 12} and counts["by_fault"] == {"healthy": 23}

    # the Lightning logs alone hold too few healthy runs with 16+ losses: the error says what is missing
    r = invoke("train", "--logs", LOGS / "lightning", "--config", data["config"], "--out", tmp_path / "no")
    assert r.exit_code == 2
    assert "need at least 8 healthy runs with >= 16 logged losses; got" in r.stderr
    assert not (tmp_path / "no").exists()

    labels.write_text("run,fault\ndiverging-sgd,nan\n")
    r = invoke("evaluate", "--logs", LOGS, "--labels", labels, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["summary"]["problems_caught"] == [1, 1] and report["summary"]["healthy_flagged"][1] == 11
    runs = {x["name"]: x for x in report["runs"]}
    assert runs["diverging-sgd"]["first_kind"].startswith(("NONFINITE", "DIVERGENCE"))
    assert runs["training_logs/tensorboard/generated_tensor_scalars"]["unlabelled_because"] == "non-finite loss"


def test_train_on_the_corpus_fits_the_forecaster_given_enough_divergent_runs(data, tmp_path):
    # bench/ is importable here (pytest puts the repository root on sys.path), as in any checkout
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**SMALL, "min_divergent_runs": 2, "forecaster": {"epochs": 1}}))
    out = tmp_path / "art"
    r = invoke("train", "--corpus", CORPUS, "--store", data["store"], "--labels", data["labels"], "--config", config,
               "--out", out)
    assert r.exit_code == 0, r.output
    assert "from corpus" in r.stdout and "forecaster fitted" in r.stdout
    training = load_artifact(out).config.training
    assert training["forecaster_source"] == "fitted" and training["divergent_runs"] >= 2
    assert training["forecaster_positive_rows"] > 0
    assert {"healthy", "divergence", "nan"} <= set(training["counts"]["by_fault"])
    fitted, shipped = load_artifact(out).forecaster.tensors(), load_artifact().forecaster.tensors()
    assert not np.array_equal(fitted["forecaster.0.weight"], shipped["forecaster.0.weight"])


def test_bad_input_is_named(tmp_path, data):
    empty = tmp_path / "empty"
    RunStore(empty / "runwatch.db").close()
    cmd = [sys.executable, "-m", "runwatch.service.cli", "detectors", "train", "--store", str(empty), "--out",
           str(tmp_path / "a")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    assert "need at least 8 healthy runs with >= 16 logged losses; got 0 (0 healthy run(s) given" in r.stderr

    # a few runs only, with the reason the others were left out
    few = tmp_path / "few"
    store = RunStore(few / "runwatch.db")
    for i in range(3):
        _write_run(store, f"h{i}", _train("healthy", i, max_steps=30), runs_pb2.RUN_STATUS_FINISHED)
    _write_run(store, "k", _train("healthy", 9, max_steps=30), runs_pb2.RUN_STATUS_KILLED)
    store.close()
    r = invoke("train", "--store", few, "--out", tmp_path / "b", "--config", data["config"])
    assert r.exit_code == 2
    assert "got 3 (3 healthy run(s) given, 3 run(s) in all) (left out: 1 status killed)" in r.stderr

    r = invoke("train", "--store", tmp_path / "nowhere", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "no runwatch store there" in r.stderr
    r = invoke("train", "--out", tmp_path / "d")
    assert r.exit_code == 2 and "no training data" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"thinning": "x"}')
    r = invoke("train", "--store", data["store"], "--out", tmp_path / "e", "--config", bad)
    assert r.exit_code == 2 and "--config" in r.stderr and "thinning" in r.stderr
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault,onset\nr1,nan,soon\n")
    r = invoke("evaluate", "--store", data["store"], "--labels", labels)
    assert r.exit_code == 2 and "line 2: onset" in r.stderr
    r = invoke("evaluate", "--store", data["store"], "--artifact", tmp_path)
    assert r.exit_code == 2 and "config.json is missing" in r.stderr


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning", "ignore:Degrees of freedom:RuntimeWarning")
def _synthetic_runs(n: int, steps: int, seed: int, diverging: int = 0) -> list:
    """``n`` decaying losses; the first ``diverging`` of them blow up from step ``steps - 40`` (onset) on."""
    from runwatch.models.block import MetricBlock
    from runwatch.models.learned.training import TrainingRun

    rng = np.random.default_rng(seed)
    onset = steps - 40
    runs = []
    for i in range(n):
        blow_up = i < diverging
        rows = [{"loss": (2.0 * np.exp(-s / 30) + 0.02 * rng.random()) * (1.5 ** max(0, s - onset) if blow_up else 1.0),
                 "lr": 1e-3} for s in range(steps)]
        label = ("divergence", onset, onset + 10) if blow_up else ()
        runs.append(TrainingRun(f"r{i}", MetricBlock.from_rows(list(range(steps)), [0.0] * steps, rows), *label))
    return runs


def test_fit_artifact_without_divergent_runs_needs_a_base():
    from runwatch.models.learned.training import TrainingConfig, TrainingDataError, fit_artifact

    runs = _synthetic_runs(10, 80, seed=0)
    cfg = TrainingConfig.model_validate(SMALL)
    with pytest.raises(TrainingDataError, match="need at least 5 divergent runs .* got 0"):
        fit_artifact(runs, cfg, log=lambda m: None)
    base = load_artifact()
    art = fit_artifact(runs, cfg, log=lambda m: None, base=base)
    assert art.forecaster is base.forecaster and art.config.training["forecaster_source"] == "base"
    # the small-data split still holds back healthy runs for calibration
    assert art.config.training["run_views"]["calibration"] >= 2


@pytest.mark.parametrize("module", ["runwatch.service.detectors_command", "runwatch.models.learned.training"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_thinning_keeps_validation_at_its_own_steps():
    from runwatch.models.block import MetricBlock
    from runwatch.models.learned.training import thin_block

    rows = [{"loss": 1.0, **({"val/loss": 2.0} if s % 20 == 19 else {})} for s in range(100)]
    thin = thin_block(MetricBlock.from_rows(list(range(100)), [float(s) for s in range(100)], rows), 25)
    assert thin.columns["loss"].steps.tolist() == [0, 25, 50, 75]
    assert thin.columns["val/loss"].steps.tolist() == [19, 39, 59, 79, 99]
    assert thin.steps.tolist() == [0, 19, 25, 39, 50, 59, 75, 79, 99]


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning", "ignore:Degrees of freedom:RuntimeWarning")
def test_a_kept_forecaster_stays_whatever_the_runs_and_needs_a_base():
    from runwatch.models.learned.training import TrainingConfig, fit_artifact

    runs = _synthetic_runs(16, 120, seed=1, diverging=6)  # enough divergent runs to fit a forecaster of their own
    cfg = TrainingConfig.model_validate({**SMALL, "thinning": [1, 5]})
    base = load_artifact()
    with pytest.raises(ValueError, match="keep_base_forecaster: needs a base"):
        fit_artifact(runs, cfg, log=lambda m: None, keep_base_forecaster=True)
    art = fit_artifact(runs, cfg, log=lambda m: None, base=base, keep_base_forecaster=True)
    assert art.forecaster is base.forecaster and art.config.training["forecaster_source"] == "base"
    assert art.config.thresholds.forecast_alert == base.config.thresholds.forecast_alert
    assert fit_artifact(runs, cfg, log=lambda m: None, base=base).config.training["forecaster_source"] == "fitted"


def test_other_domain_runs_raise_the_levels_they_would_reach_and_never_lower_one(tmp_path):
    """raise_levels: healthy runs of unseen domains are calibration only; calm ones leave every level as it is."""
    from runwatch.models.learned.training import raise_levels

    base = load_artifact()
    calm = _synthetic_runs(12, 200, seed=2)
    same = raise_levels(base, calm, log=lambda m: None)
    assert same.config.thresholds == base.config.thresholds
    # The same runs against levels set far too low (as if read on quieter domains): each rises to what they reach.
    low = base.config.thresholds.model_copy(update={"sequence_alert": 1e-6, "forecast_alert": 1e-9, "run_outlier_alert": -1.0})
    quiet = dataclasses.replace(base, config=base.config.model_copy(update={"thresholds": low}))
    raised = raise_levels(quiet, calm, log=lambda m: None)
    th = raised.config.thresholds
    for name in ("sequence_alert", "forecast_alert", "run_outlier_alert"):
        assert getattr(th, name) > getattr(low, name), name
    assert (th.sequence_gate, th.forecast_gate) == (low.sequence_gate, low.forecast_gate)  # gates are not alert policy
    assert raised.config.training["other_domain_calibration"]["runs"] == 12
    raised.save(tmp_path / "art")
    assert load_artifact(tmp_path / "art").config.thresholds == th
    # streamed at those levels, none of the calm runs is flagged (each level sits above what they reach)
    from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic

    for run in calm:
        assert LearnedDiagnostic(LearnedConfig(artifact=str(tmp_path / "art"))).observe_block(run.block) == [], run.run_id


# -- stores a user fills with runs that log only loss, grad_norm and lr; PostgreSQL stores; bad artifacts; labels --


def _fill_plain_runs(location, n: int = 10, steps: int = 200) -> None:
    """``n`` finished healthy runs that log only loss, grad_norm and lr (no validation, no per-layer statistics),
    through the store API, into a SQLite file or a PostgreSQL database."""
    rng = np.random.default_rng(0)
    store = RunStore(location)
    try:
        for i in range(n):
            events = [(s, {"loss": 2.0 * np.exp(-s / 60) + 0.05 * rng.random(), "grad_norm": 1.0 + 0.1 * rng.random(),
                           "lr": 1e-3}) for s in range(steps)]
            _write_run(store, f"plain-{i:02d}", events, runs_pb2.RUN_STATUS_FINISHED)
    finally:
        store.close()


@pytest.fixture(scope="module")
def pg_store(postgres_server) -> str:
    """A PostgreSQL store of 10 plain healthy runs; its URL carries a password (trust authentication ignores it)."""
    url = postgres_server.new_database()
    _fill_plain_runs(url)
    return url.replace("runwatch@", "runwatch:s3cret@")


def test_train_and_evaluate_read_a_postgresql_store_and_hide_its_password(pg_store, postgres_server, data, tmp_path):
    """--store takes a postgresql:// URL (before: it was made a Path, "postgresql:/rw:PASSWORD@...", and refused
    with the password in clear); so does $RUNWATCH_STORE when no source is given. Messages show the password as
    ***."""
    out = tmp_path / "art"
    r = invoke("train", "--store", pg_store, "--config", data["config"], "--out", out)
    assert r.exit_code == 0, r.output
    assert "training on 10 run(s): 10 healthy (10 from store)" in r.stdout
    assert "s3cret" not in r.output and "--store postgresql://runwatch:***@127.0.0.1" in r.stdout
    training = load_artifact(out).config.training
    assert training["sources"]["store"] == [pg_store.replace("s3cret", "***")]
    assert "s3cret" not in (out / "config.json").read_text()

    r = invoke("evaluate", "--artifact", out, "--store", pg_store)
    assert r.exit_code == 0, r.output
    assert "healthy runs flagged: " in r.stdout and "/10 (" in r.stdout and "s3cret" not in r.output

    # $RUNWATCH_STORE, as `runwatch serve` reads it, when no --store, --logs or --corpus is given
    r = CliRunner().invoke(app, ["detectors", "evaluate", "--rules-only"], env={"RUNWATCH_STORE": pg_store})
    assert r.exit_code == 0, r.output
    assert "reading the store of $RUNWATCH_STORE: postgresql://runwatch:***@127.0.0.1" in r.stderr
    assert "healthy runs flagged: 0/10 (0.0%)" in r.stdout and "s3cret" not in r.output

    # a database that is not there, one without a runwatch store, a server that is not there: one line each, ***
    base = f"postgresql://runwatch:s3cret@127.0.0.1:{postgres_server.port}"
    for url, says in ((f"{base}/no_such_db", 'database "no_such_db" does not exist'),
                      (f"{base}/postgres", "no runwatch store there"),
                      ("postgresql://runwatch:s3cret@127.0.0.1:1/rw", "Connection refused")):
        for command in ("train", "evaluate"):
            r = invoke(command, "--store", url, "--out", tmp_path / "no") if command == "train" else invoke(
                command, "--store", url)
            assert r.exit_code == 2, r.output
            assert r.stderr.startswith(f"error: --store {url.replace('s3cret', '***')}: ") and says in r.stderr
            assert "s3cret" not in r.output
    assert not (tmp_path / "no").exists()


def test_an_artifact_of_runs_without_validation_trains_and_loads_without_warnings(tmp_path, data):
    """Runs that log only loss, grad_norm and lr leave summaries no reference row has (all NaN). Before, training
    printed numpy's "All-NaN slice encountered" and "Degrees of freedom <= 0", and every load of the artifact
    (train, evaluate, serve) the first one. The scores are what they were: a missing summary's median is 0 and its
    spread 1 (as np.nanmedian + nan_to_num gave)."""
    import warnings

    from runwatch.models.learned import artifacts

    _fill_plain_runs(tmp_path / "store" / "runwatch.db")
    out = tmp_path / "art"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = invoke("train", "--store", tmp_path / "store", "--config", data["config"], "--out", out)
        assert r.exit_code == 0, r.output
        artifacts._load.cache_clear()  # a real load, not the cached one
        art = load_artifact(out)
    ro = art.run_outlier
    missing = np.isnan(ro.reference).all(axis=0)
    assert missing.any() and not missing.all()
    assert (ro.median[missing] == 0).all() and (ro.mad[missing] == 1.4826).all()
    with warnings.catch_warnings():  # what the warning-raising expressions computed
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nan_to_num(np.nanmedian(ro.reference, axis=0))
        mad = np.nanmedian(np.abs(ro.reference - median), axis=0)
    assert np.array_equal(ro.median, median)
    assert np.array_equal(ro.mad, np.where(np.nan_to_num(mad) > 1e-9, np.nan_to_num(mad), 1.0) * 1.4826)


def _copy_artifact(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_corrupt_or_newer_artifact_is_one_error_line_naming_the_file(tmp_path, data):
    """A truncated weights file: before, a raw SafetensorError traceback that named no file (evaluate), and serve
    printed a ~64-line traceback for it and for a config.json of a newer format. Now an ArtifactError naming the
    file, and one `error:` line (exit 2) from both commands."""
    from runwatch.models.learned.artifacts import DEFAULT_ARTIFACT, ArtifactError

    truncated = _copy_artifact(DEFAULT_ARTIFACT, tmp_path / "truncated")
    with open(truncated / "weights.safetensors", "r+b") as f:
        f.truncate(50_000)
    newer = _copy_artifact(DEFAULT_ARTIFACT, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "format_version": 99}))

    with pytest.raises(ArtifactError, match=r"learned artifact .*truncated/weights\.safetensors: not a readable "
                                            r"safetensors file: .*incomplete metadata"):
        load_artifact(truncated)
    r = invoke("evaluate", "--artifact", truncated, "--store", data["store"])
    assert r.exit_code == 2 and "weights.safetensors: not a readable safetensors file" in r.stderr

    exe = Path(sys.executable).with_name("runwatch")
    for art, says in ((truncated, f"{truncated}/weights.safetensors: not a readable safetensors file: "),
                      (newer, f"{newer}/config.json: format_version 99, this runwatch reads 1")):
        suite = tmp_path / f"{art.name}.json"
        suite.write_text(json.dumps({"settings": {"learned": {"artifact": str(art)}}}))
        done = subprocess.run([str(exe), "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                               "--diagnostics-config", str(suite)], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert errors == [line for line in errors if f"error: learned artifact {says}" in line] and len(errors) == 1, \
            done.stderr


def test_labels_with_unknown_fault_kinds_are_warned_about_and_typos_refused(tmp_path, data):
    """Before, any fault string counted: "bogusfault" or a misspelt "healty" made a healthy run a problem run,
    silently. Now an unknown kind is warned about in one line (and still counted: a project may name its own
    kinds), and a near-miss of a known kind is refused."""
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault,onset,manifest_step\nhealthy-02,bogusfault,,\nhealthy-03,Other_Kind,,\n"
                      "healthy-04,bogusfault,,\nhealthy-05,overfitting,,\n")
    r = invoke("evaluate", "--store", data["store"], "--labels", labels, "--rules-only")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.stderr.splitlines() if "not known fault kinds" in line]
    assert len(warned) == 1 and "2 fault name(s)" in warned[0]
    assert ": bogusfault, other_kind (known: healthy, " in warned[0]
    assert "overfitting" not in warned[0].split("(known:")[0]
    assert re.search(r"problem runs caught: \d/4 .*bogusfault \d/2, other_kind \d/1, overfitting \d/1", r.stdout)

    for typo, meant in (("healty", "healthy"), ("Divergance", "divergence")):
        labels.write_text(f"run,fault\nhealthy-01,healthy\nhealthy-02,{typo}\n")
        for command in (["evaluate", "--store", data["store"], "--rules-only"],
                        ["train", "--store", data["store"], "--out", tmp_path / "no"]):
            r = invoke(*command, "--labels", labels)
            assert r.exit_code == 2, r.output
            assert f"error: --labels {labels}:line 3: fault: {typo.lower()!r} is not a fault kind; did you mean " \
                   f"{meant!r}?" in r.stderr
    assert not (tmp_path / "no").exists()

    # the corpus's fault types are all known (bench/ is importable in a checkout)
    from bench.corpus.specs import FAULTS
    from runwatch.service.detectors_command import KNOWN_FAULTS

    assert set(FAULTS) <= set(KNOWN_FAULTS)
