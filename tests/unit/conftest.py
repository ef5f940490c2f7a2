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
