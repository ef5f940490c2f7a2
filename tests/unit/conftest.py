"""Shared fixtures for the unit tests."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def unfloored_learned(tmp_path_factory):
    """A LearnedConfig of the shipped artifact without its forecaster's feature floors (weights unchanged):
    what the shipped forecaster did before them."""
    from runwatch.models.learned.artifacts import LearnedArtifact, load_artifact
    from runwatch.models.learned.detector import LearnedConfig
    from runwatch.models.learned.forecaster import DivergenceForecaster

    art = load_artifact()
    fc_cfg = art.forecaster.config.model_copy(update={"feature_floors": {}})
    plain = LearnedArtifact(art.config.model_copy(update={"forecaster": fc_cfg}), art.sequence_ae,
                            DivergenceForecaster.from_tensors(fc_cfg, art.forecaster.tensors()), art.run_outlier)
    folder = tmp_path_factory.mktemp("unfloored")
    plain.save(folder)
    return LearnedConfig(artifact=str(folder))
