"""Shared set-up for the query benchmarks: a throw-away PostgreSQL database full of reports.

Used by ``bench_query.py`` (10^7 reports, latency) and ``query_plans.py``
(10^8 reports, EXPLAIN). Only databases whose name starts with
``privtel_bench`` are ever created or dropped here.

Reports are generated inside PostgreSQL with ``generate_series`` (no Python
round trip): ids ascend with the day, as they do when reports arrive over
time, regions cycle through the 50 configured regions plus "" (no region),
and values are spread pseudo-randomly over the 20 labels.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# 50 real ISO 3166-1 alpha-2 codes: the configured region axis of the benchmark.
REGIONS = (
    "US,DE,FR,GB,IT,ES,NL,BE,CH,AT,SE,NO,DK,FI,PL,CZ,PT,IE,GR,HU,RO,BG,HR,SK,SI,"
    "EE,LV,LT,LU,CA,MX,BR,AR,CL,CO,PE,JP,KR,CN,IN,ID,TH,VN,PH,MY,SG,AU,NZ,ZA,EG"
).split(",")
K = 20
DAYS = 90
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgres://postgres@127.0.0.1:5432")


def _check_name(db: str) -> None:
    if not db.startswith("privtel_bench"):
        raise SystemExit(f"refusing to touch database {db!r}: only privtel_bench* databases")


def admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def database_exists(db: str) -> bool:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone() is not None


def recreate_database(db: str) -> None:
    _check_name(db)
    admin_execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin_execute(f'CREATE DATABASE "{db}"')


def drop_database(db: str) -> None:
    _check_name(db)
    from django.db import connections

    connections.close_all()
    admin_execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def setup_django(db: str) -> None:
    """Point the real settings at ``db`` (PostgreSQL) and Redis db 14, then django.setup()."""
    _check_name(db)
    os.environ["DATABASE_URL"] = f"{PG_BASE}/{db}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ["PRIVACY_REGIONS"] = ",".join(REGIONS)
    os.environ.setdefault("AUDIT_KEY", "ab" * 32)
    os.environ.setdefault("SECRET_KEY", "bench-query-not-secret")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")  # the benchmark's client speaks plain HTTP
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deploy.settings")
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def window(days: int = DAYS) -> tuple[date, date]:
    """The benchmark's data window: ``days`` days ending yesterday (UTC)."""
    end = datetime.now(timezone.utc).date() - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def ensure_metric(name: str = "bench_query_krr"):
    from telemetry.models import Metric
    from telemetry.services import create_metric

    metric = Metric.objects.filter(name=name).first()
    if metric is None:
        metric = create_metric(name=name, domain=[f"v{i:02d}" for i in range(K)], epsilon=2.0, protocol="krr")
    return metric


def ensure_analyst(username: str = "bench_analyst", metric_id: int | None = None):
    """An analyst with a huge daily budget and (for ``metric_id``) a huge partition cap."""
    from django.contrib.auth import get_user_model

    from accounting.services.policies import set_analyst_budget, set_partition_cap
    from privacy.epsilon import to_micro
    from telemetry.services import create_user

    user = get_user_model().objects.filter(username=username).first()
    token = None
    if user is None:
        user, token = create_user(username=username, role="analyst")
    else:
        from rest_framework.authtoken.models import Token

        token = Token.objects.get(user=user).key
    set_analyst_budget(username=username, daily_epsilon_micro=to_micro("1000000"))
    if metric_id is not None:
        set_partition_cap(scope=f"metric:{metric_id}", lifetime_epsilon_micro=to_micro("1000000"))
    return user, token


def report_select_sql(first_id: int, last_id: int, total: int, metric_id: int, start: date, days: int) -> str:
    """SELECT producing report rows for ids [first_id, last_id] of a ``total``-row data set.

    Day = start + floor((i-1) * days / total): ids ascend with the day. The
    region cycles over "" and the 50 regions; the value is a multiplicative
    hash of the id, modulo 20.
    """
    regions = "ARRAY[" + ",".join(["''"] + [f"'{r}'" for r in REGIONS]) + "]::varchar[]"
    nregions = len(REGIONS) + 1
    return (
        f"SELECT i, {metric_id}, DATE '{start.isoformat()}' + (((i - 1) * {days}) / {total})::int,"
        f" ({regions})[1 + (i % {nregions})], ((i * 2654435761) % 1000003 % {K})::smallint, NULL::bytea"
        f" FROM generate_series({first_id}::bigint, {last_id}::bigint) AS i"
    )


def load_reports(total: int, metric_id: int, start: date, days: int = DAYS, chunk: int = 5_000_000,
                 drop_indexes: bool = True, progress=None) -> dict:
    """Insert ``total`` reports with SQL, fast; (re)build the report indexes afterwards.

    Returns timings. Builds the secondary index after the load (much faster
    than maintaining it row by row), with the same name the migration uses.
    """
    from django.db import connection

    timings = {}
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET synchronous_commit = off")
        if drop_indexes:
            cursor.execute("DROP INDEX IF EXISTS report_metric_day_region")
        t0 = time.perf_counter()
        for first in range(1, total + 1, chunk):
            last = min(first + chunk - 1, total)
            cursor.execute(
                "INSERT INTO telemetry_report (id, metric_id, day, region, value, payload) "
                + report_select_sql(first, last, total, metric_id, start, days)
            )
            if progress:
                progress(f"inserted {last:,} / {total:,} rows, {time.perf_counter() - t0:.0f} s")
        timings["insert_s"] = time.perf_counter() - t0
        cursor.execute("SELECT setval(pg_get_serial_sequence('telemetry_report', 'id'), %s)", [total])
        t0 = time.perf_counter()
        cursor.execute(
            "CREATE INDEX IF NOT EXISTS report_metric_day_region"
            " ON telemetry_report (metric_id, day, region, value)"
        )
        timings["index_s"] = time.perf_counter() - t0
        if progress:
            progress(f"index built in {timings['index_s']:.0f} s")
        t0 = time.perf_counter()
        cursor.execute("VACUUM (ANALYZE) telemetry_report")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
    return timings


def report_count(metric_id: int) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_report WHERE metric_id = %s", [metric_id])
        return cursor.fetchone()[0]
