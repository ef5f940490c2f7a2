"""Shared fixtures for the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_suite():
    """The whole default diagnostic suite, as the service builds it."""
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    return DiagnosticSuite(SuiteConfig())
