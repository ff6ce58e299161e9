"""Shared fixtures for the telemetry tests: metrics, ingest keys, users."""

from __future__ import annotations

import pytest

from telemetry import services


@pytest.fixture
def make_metric(db):
    def make(name="color", domain=("red", "green", "blue"), protocol="krr", epsilon=2.0, bound=None, **kw):
        return services.create_metric(
            name=name, domain=list(domain), protocol=protocol, epsilon=epsilon, contribution_bound=bound, **kw
        )

    return make


@pytest.fixture
def color(make_metric):
    """A k-RR metric 'color' over red/green/blue, default bound (1)."""
    return make_metric()


@pytest.fixture
def ingest_key(db):
    """(IngestKey, plaintext)."""
    return services.create_ingest_key(app="test-app")


@pytest.fixture
def key(ingest_key) -> str:
    return ingest_key[1]


@pytest.fixture
def admin_token(db) -> str:
    return services.create_user(username="root", role="admin")[1]


@pytest.fixture
def analyst_token(db) -> str:
    return services.create_user(username="ana", role="analyst")[1]
