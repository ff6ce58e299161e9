"""Test wiring: services only for the tests that need them, and the fixtures every app's tests share.

Pure tests (``tests/privacy``, the accountants, the SDK against its own stub server)
need nothing running and pass with no ``DATABASE_URL`` or ``REDIS_URL`` at all. A test
that uses the database (the ``django_db`` mark, or the ``db`` family of fixtures) needs
the machine's real PostgreSQL and Redis, which ``deploy/test.sh`` points
``DATABASE_URL`` and ``REDIS_URL`` at. When they are missing such a test is skipped
with the reason, except under ``CI=true``, where it fails (ARCHITECTURE.md). A test that
needs Redis but not the database requests the ``postgres_and_redis`` fixture.

The helpers themselves live in ``tests/helpers.py`` (importable as ``helpers``: pytest
puts ``tests/`` on ``sys.path`` for this conftest). The ``q`` fixture is that module.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

# Requesting any of these (directly or through another fixture) means the test needs the services.
_SERVICE_FIXTURES = frozenset({"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback",
                               "live_server", "postgres_and_redis"})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def _service_problems() -> list[str]:
    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    problems = []
    if not database_url.startswith("postgres"):
        problems.append("DATABASE_URL must point at PostgreSQL (run the suite with deploy/test.sh)")
    elif not _reachable(database_url, 5432):
        problems.append(f"PostgreSQL is unreachable at {database_url}")
    if not redis_url:
        problems.append("REDIS_URL must be set (run the suite with deploy/test.sh)")
    elif not _reachable(redis_url, 6379):
        problems.append(f"Redis is unreachable at {redis_url}")
    return problems


@pytest.fixture(scope="session")
def postgres_and_redis() -> None:
    """PostgreSQL and Redis are up. Otherwise the test skips, or fails when CI=true.

    Session-scoped: checked once; pytest repeats the outcome for every later test that needs them.
    """
    if problems := _service_problems():
        message = "needs PostgreSQL and Redis: " + "; ".join(problems)
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def django_db_setup(postgres_and_redis, django_db_setup):
    """pytest-django's test database, made only after ``postgres_and_redis`` has found PostgreSQL and Redis up."""
    return django_db_setup


def _needs_services(request) -> bool:
    return request.node.get_closest_marker("django_db") is not None or not _SERVICE_FIXTURES.isdisjoint(
        request.fixturenames
    )


@pytest.fixture(autouse=True)
def _fresh_process_state(request) -> None:
    """A test that uses the services starts with empty in-process caches and an empty Redis test database."""
    if not _needs_services(request):
        return
    request.getfixturevalue("postgres_and_redis")
    import redis
    from django.conf import settings

    from telemetry.auth import ingest_keys
    from telemetry.catalog import catalog
    from telemetry.limits import secrets as limit_secrets

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    limit_secrets.forget()
    catalog.invalidate()
    ingest_keys.clear()


# --- shared fixtures: the toolbox, users, metrics, ingest keys -------------------------------------


@pytest.fixture
def q():
    """The shared helpers (tests/helpers.py), for tests that take them as a fixture."""
    import helpers

    return helpers


@pytest.fixture
def analyst(db, q):
    """(user, token) of the analyst 'ana' with the default policy."""
    return q.user("ana", "analyst")


@pytest.fixture
def admin(db, q):
    """(user, token) of the admin 'root'."""
    return q.user("root", "admin")


@pytest.fixture
def analyst_token(analyst) -> str:
    return analyst[1]


@pytest.fixture
def admin_token(admin) -> str:
    return admin[1]


@pytest.fixture
def make_metric(db, q):
    """``q.metric``: a factory of metrics (the defaults make the k-RR metric 'color')."""
    return q.metric


@pytest.fixture
def color(make_metric):
    """A k-RR metric 'color' over red/green/blue, local ε 2, default contribution bound (1, so Δ = 1)."""
    return make_metric()


@pytest.fixture
def ingest_key(db, q):
    """(IngestKey, plaintext) for the app 'test-app'."""
    return q.ingest_key("test-app")


@pytest.fixture
def key(ingest_key) -> str:
    """The plaintext of ``ingest_key``."""
    return ingest_key[1]


@pytest.fixture
def short_region_axis(settings):
    """Keep grids small: the region axis is ("", "DE", "US")."""
    from helpers import REGIONS

    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(REGIONS)}
