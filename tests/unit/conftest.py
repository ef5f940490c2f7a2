"""Shared fixtures for the unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_suite():
    """Every rule diagnostic with fusion off: the rules' own behaviour, which these tests pin down.

    The service's default adds the learned detectors and lets them gate the rules
    (``service_suite``); tests of the fused behaviour use that one.
    """
    from runwatch.models.fusion import FusionConfig
    from runwatch.models.registry import DIAGNOSTICS, DiagnosticSuite, SuiteConfig

    return DiagnosticSuite(SuiteConfig(enabled=[n for n in DIAGNOSTICS if n != "learned"], fusion=FusionConfig(enabled=False)))


@pytest.fixture(scope="session")
def service_suite():
    """The whole default suite, as the service builds it (rules, learned detectors, fusion)."""
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    from runwatch.models.registry import DIAGNOSTICS

    return DiagnosticSuite(SuiteConfig(enabled=list(DIAGNOSTICS)))


EARLIER_FORECASTER = Path(__file__).resolve().parent.parent / "fixtures" / "learned" / "forecaster_until_2026-12-06"


def _earlier_forecaster_artifact(floors: bool):
    """The shipped artifact with the divergence forecaster (and its alert levels) shipped until 2026-12-06.

    That forecaster was fitted without healthy long warm-ups and reads a long warm-up, a gradient norm far
    below its first value and a loss logged as 0 as precursors of divergence: the forecast guards (feature
    floors, calm patience, the converged-loss bar) are shown on it, a forecaster that needs them.
    """
    from safetensors.numpy import load_file

    from runwatch.models.learned.artifacts import LearnedArtifact, load_artifact
    from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig

    art = load_artifact()
    meta = json.loads((EARLIER_FORECASTER / "config.json").read_text())
    fc_cfg = ForecasterConfig.model_validate(meta["forecaster"])
    if not floors:
        fc_cfg = fc_cfg.model_copy(update={"feature_floors": {}})
    forecaster = DivergenceForecaster.from_tensors(fc_cfg, load_file(EARLIER_FORECASTER / "weights.safetensors"))
    levels = art.config.thresholds.model_copy(
        update={"forecast_alert": meta["forecast_alert"], "forecast_gate": meta["forecast_gate"]})
    config = art.config.model_copy(update={"forecaster": fc_cfg, "thresholds": levels})
    return LearnedArtifact(config, art.sequence_ae, forecaster, art.run_outlier)


@pytest.fixture(scope="session")
def earlier_learned(tmp_path_factory):
    """A LearnedConfig of the shipped artifact with the forecaster shipped until 2026-12-06 (floors included)."""
    from runwatch.models.learned.detector import LearnedConfig

    folder = tmp_path_factory.mktemp("earlier")
    _earlier_forecaster_artifact(floors=True).save(folder)
    return LearnedConfig(artifact=str(folder))


@pytest.fixture(scope="session")
def unfloored_learned(tmp_path_factory):
    """As ``earlier_learned`` without the forecaster's feature floors (weights unchanged): what that forecaster
    did before them."""
    from runwatch.models.learned.detector import LearnedConfig

    folder = tmp_path_factory.mktemp("unfloored")
    _earlier_forecaster_artifact(floors=False).save(folder)
    return LearnedConfig(artifact=str(folder))


@pytest.fixture
def offline_run():
    """``make(**init_kwargs)``: a run of ``runwatch.client.init`` against an address where nothing listens, so what
    the SDK sends stays queued where a test can read it; runs still open are finished at teardown."""
    import runwatch.client as rw

    runs = []

    def make(**kw):
        kw.setdefault("capture_env", False)
        run = rw.init(project="sdk-unit", target="127.0.0.1:1", spool_dir=False, flush_on_exit=False, **kw)
        runs.append(run)
        return run

    yield make
    for run in runs:
        if not run.finished:
            run.finish(timeout=0)
