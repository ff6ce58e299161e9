"""Test wiring: the machine's real PostgreSQL and Redis.

``deploy/test.sh`` points DATABASE_URL and REDIS_URL at them. When they are
unreachable the run stops with an error: it never skips (ARCHITECTURE.md).
"""

import os
import socket
from urllib.parse import urlparse

import pytest


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def pytest_configure(config):
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
    if problems:
        pytest.exit("; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts with empty in-process caches and an empty Redis test database."""
    import redis
    from django.conf import settings

    from telemetry.auth import ingest_keys
    from telemetry.catalog import catalog
    from telemetry.limits import get_limiter

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    get_limiter.cache_clear()
    catalog.invalidate()
    ingest_keys.clear()
    yield
