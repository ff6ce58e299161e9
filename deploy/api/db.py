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


def insert_binary(instance) -> None:
    """``instance.save(force_insert=True)``, but on PostgreSQL with the values bound server-side,
    so binary fields travel as raw bytes rather than as hex-escaped SQL text (3x faster for a
    release's noisy counts). Like save(), it fills each field's value with ``pre_save``; it
    sends no model signals."""
    if not is_postgresql():
        instance.save(force_insert=True)
        return
    import psycopg

    fields = instance._meta.concrete_fields
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    quote = connection.ops.quote_name
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"INSERT INTO {quote(instance._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
                       f" VALUES ({', '.join(['%s'] * len(fields))})", values, prepare=False)
    instance._state.adding, instance._state.db = False, connection.alias
