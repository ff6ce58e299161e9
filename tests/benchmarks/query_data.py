"""Shared set-up for the query benchmarks: a throw-away PostgreSQL database, staged reports, a yardstick.

Used by ``bench_query.py`` (latency, roll-up throughput) and ``query_plans.py``
(EXPLAIN). Only databases whose name starts with ``privtel_bench`` are ever
created or dropped here.

The data set: ``total`` k-RR reports (k = 20) over 90 days. Report ``i``
(1-based) falls on day ``start + (i - 1) * days // total`` (days ascend with
``i``, as they do when reports arrive over time), in region ``("", *REGIONS)[i
% 51]``, with value ``i * 2654435761 % 1000003 % 20``. The same reports exist
in two forms:

* staged, as the service stores them before the roll-up: one
  ``telemetry_stagedreports`` row per simulated batch of 100 reports, its
  payload in the :mod:`telemetry.staging` record layout; built with numpy in
  chunks (so 10^8 reports fit in memory) and written with ``COPY ... (FORMAT
  BINARY)``;
* as a yardstick table ``bench_reports`` that the service does not have: one
  row per report, indexed like the former ``telemetry_report``, generated in
  PostgreSQL with ``generate_series``. It is what a per-report design would
  scan per query (the baseline of the latency ratio).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# 50 real ISO 3166-1 alpha-2 codes: the configured region axis of the benchmark.
REGIONS = (
    "US,DE,FR,GB,IT,ES,NL,BE,CH,AT,SE,NO,DK,FI,PL,CZ,PT,IE,GR,HU,RO,BG,HR,SK,SI,"
    "EE,LV,LT,LU,CA,MX,BR,AR,CL,CO,PE,JP,KR,CN,IN,ID,TH,VN,PH,MY,SG,AU,NZ,ZA,EG"
).split(",")
REGION_VALUES = ("", *REGIONS)  # the 51 region values of the reports ("" = no region)
K = 20
DAYS = 90
BATCH = 100  # reports per staged row: one simulated ingest batch of one metric
CHUNK = 5_000_000  # reports generated per numpy pass
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgres://postgres@127.0.0.1:5432")
YARDSTICK = "bench_reports"


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
    """Point the real settings at ``db`` (PostgreSQL) and Redis (db 14 unless REDIS_URL is set), then
    django.setup()."""
    _check_name(db)
    os.environ["DATABASE_URL"] = f"{PG_BASE}/{db}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ["PRIVACY_REGIONS"] = ",".join(REGIONS)
    os.environ.setdefault("AUDIT_KEY", "ab" * 32)
    os.environ.setdefault("LOG_SIGNING_KEY", "cd" * 32)
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
    from deploy.api.users.services import create_user

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


# --- the reports, staged ---------------------------------------------------------------


def report_columns(first: int, last: int, total: int, start: date, days: int = DAYS):
    """(day as days since 1970-01-01, index into REGION_VALUES, value) of reports first..last (1-based)."""
    from telemetry.staging import EPOCH_DAY

    i = np.arange(first, last + 1, dtype=np.int64)
    day = (start - EPOCH_DAY).days + (i - 1) * days // total
    return day, i % len(REGION_VALUES), i * 2654435761 % 1000003 % K


def staged_records(spec, first: int, last: int, total: int, start: date, days: int = DAYS) -> np.ndarray:
    """Reports first..last as :mod:`telemetry.staging` records of the k-RR metric ``spec``."""
    from telemetry.staging import record_dtype

    day, region, value = report_columns(first, last, total, start, days)
    records = np.empty(len(day), dtype=record_dtype(spec))
    records["day"] = day
    records["region"] = np.array([r.encode() for r in REGION_VALUES], dtype="S2")[region]
    records["value"] = value
    return records


_COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def copy_tuples(metric_id: int, records: np.ndarray, batch: int = BATCH) -> bytes:
    """COPY BINARY tuples (metric_id int8, payload bytea) of ``records``, ``batch`` records a row."""
    width = records.dtype.itemsize
    out = []
    full = len(records) // batch * batch
    for part in (records[:full], records[full:]):
        if not len(part):
            continue
        per_row = min(batch, len(part))
        tuples = np.empty(len(part) // per_row, dtype=[("fields", ">i2"), ("id_len", ">i4"), ("metric_id", ">i8"),
                                                        ("payload_len", ">i4"), ("payload", f"V{per_row * width}")])
        tuples["fields"], tuples["id_len"], tuples["metric_id"] = 2, 8, metric_id
        tuples["payload_len"] = per_row * width
        tuples["payload"] = np.ascontiguousarray(part).view(f"V{per_row * width}")
        out.append(tuples.tobytes())
    return b"".join(out)


def stage_reports(metric_id: int, total: int, start: date, days: int = DAYS, *, count: int | None = None,
                  chunk: int = CHUNK, progress=None) -> dict:
    """Stage reports 1..count (default: all) of a ``total``-report data set for ``metric_id``, 100 a row,
    in one committed COPY per chunk. Returns {"rows", "reports", "generate_s", "copy_s"}."""
    from django.db import connection, transaction

    from telemetry.catalog import catalog

    spec = catalog.by_id(metric_id)
    assert spec.protocol == "krr", "the benchmark data set is k-RR"
    count = total if count is None else count
    generate_s = copy_s = 0.0
    rows = 0
    connection.ensure_connection()
    for first in range(1, count + 1, chunk):
        last = min(first + chunk - 1, count)
        t0 = time.perf_counter()
        data = copy_tuples(metric_id, staged_records(spec, first, last, total, start, days))
        generate_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        with transaction.atomic(), connection.connection.cursor() as cursor:
            with cursor.copy("COPY telemetry_stagedreports (metric_id, payload) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(_COPY_HEADER + data + _COPY_TRAILER)
            rows += cursor.rowcount
        copy_s += time.perf_counter() - t0
        if progress and count > chunk:
            progress(f"staged {last:,} / {count:,} reports ({rows:,} rows)")
    return {"rows": rows, "reports": count, "generate_s": generate_s, "copy_s": copy_s}


def clear_counts() -> None:
    """Empty the staged rows, counts, deltas and epochs (bench database only), for a fresh roll-up."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE telemetry_stagedreports, telemetry_observedcounts, telemetry_countdelta,"
                       " telemetry_rollupepoch")


def clear_staged() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE telemetry_stagedreports")


# --- the yardstick: one row per report ------------------------------------------------


def report_select_sql(first_id: int, last_id: int, total: int, metric_id: int, start: date, days: int) -> str:
    """SELECT producing the yardstick's rows for reports [first_id, last_id] (:func:`report_columns` in SQL)."""
    regions = "ARRAY[" + ",".join(f"'{r}'" for r in REGION_VALUES) + "]::varchar[]"
    return (
        f"SELECT i, {metric_id}, DATE '{start.isoformat()}' + (((i - 1) * {days}) / {total})::int,"
        f" ({regions})[1 + (i % {len(REGION_VALUES)})], ((i * 2654435761) % 1000003 % {K})::smallint, NULL::bytea"
        f" FROM generate_series({first_id}::bigint, {last_id}::bigint) AS i"
    )


def load_yardstick(total: int, metric_id: int, start: date, days: int = DAYS, chunk: int = CHUNK,
                   progress=None) -> dict:
    """(Re)create ``bench_reports`` (the former ``telemetry_report``: id primary key, index on
    (metric_id, day, region, value)) holding the data set, one row per report. Returns timings."""
    from django.db import connection

    timings = {}
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(f"DROP TABLE IF EXISTS {YARDSTICK}")
        cursor.execute(f"CREATE TABLE {YARDSTICK} (id bigint PRIMARY KEY, metric_id bigint NOT NULL,"
                       " day date NOT NULL, region varchar(2) NOT NULL, value smallint, payload bytea)")
        t0 = time.perf_counter()
        for first in range(1, total + 1, chunk):
            last = min(first + chunk - 1, total)
            cursor.execute(f"INSERT INTO {YARDSTICK} (id, metric_id, day, region, value, payload) "
                           + report_select_sql(first, last, total, metric_id, start, days))
            if progress:
                progress(f"yardstick: inserted {last:,} / {total:,} rows, {time.perf_counter() - t0:.0f} s")
        timings["insert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cursor.execute(f"CREATE INDEX {YARDSTICK}_metric_day_region ON {YARDSTICK} (metric_id, day, region, value)")
        timings["index_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cursor.execute(f"VACUUM (ANALYZE) {YARDSTICK}")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
    return timings


def yardstick_count() -> int | None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [YARDSTICK])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT count(*) FROM {YARDSTICK}")
        return cursor.fetchone()[0]
