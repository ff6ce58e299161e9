"""Every PostgreSQL-only statement and every ``connection.vendor`` branch of the apps.

The service runs on PostgreSQL in production and on SQLite for the embedded
default. SQLite serializes writers with ``transaction_mode=IMMEDIATE``, so the
advisory locks that PostgreSQL needs are no-ops there.
"""

from __future__ import annotations

from django.db import connection


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def advisory_xact_lock(key: int, *, shared: bool = False) -> None:
    """Take a transaction-scoped advisory lock (PostgreSQL); nothing on SQLite."""
    if not is_postgresql():
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [key])
