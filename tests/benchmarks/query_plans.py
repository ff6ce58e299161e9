"""Query plans of the staged storage (docs/query-plans.md): the reads the service runs, on a full history.

Not collected by pytest. Three steps, each restartable:

    python tests/benchmarks/query_plans.py setup   [--rows 100000000] [--epochs-per-day 2880]
    python tests/benchmarks/query_plans.py explain [--out plans.json]   # EXPLAIN (ANALYZE, BUFFERS), sizes
    python tests/benchmarks/query_plans.py drop

``setup`` recreates ``privtel_bench_plan``, stages ``rows`` k-RR reports (90 days x 51
regions, ``query_data.py``) and rolls them up with ``telemetry.rollup.advance_rollup()``
(timed). A roll-up every 30 s for 90 days leaves a long CountDelta history, which is
what the audit recount reads: ``setup`` then appends a synthetic one, ``epochs-per-day``
epochs a day, each adding one delta row per region to the day its reports arrived on
(the rows the roll-up writes: one per (epoch, metric, day, region) it touched), with
their RollupEpoch rows. Their counts are not those of the staged reports; the plans do
not depend on the values.

The plans captured are the service's own statements, with the same parameters:

1. the query's read: the latest epoch and the ObservedCounts rows of 90 days, one
   statement (``telemetry.selectors._OBSERVED_BY_DAY``);
2. the audit recount over CountDelta up to an epoch (``telemetry.selectors.recounted_rows``),
   for one day and for 90 days, at the latest epoch and at an epoch in mid-window;
3. the roll-up's statements on 10^6 newly staged reports: ``DELETE ... RETURNING``, the
   read of the totals concerned, and the one statement that appends the deltas and
   upserts the totals (each in a transaction rolled back afterwards).

Each read is run twice and the second (warm cache) plan is kept; the first run's plan
is kept too. Prints one JSON line and writes the plans to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import query_data as qd  # noqa: E402

DB = "privtel_bench_plan"
INCREMENT = 1_000_000  # reports newly staged for the roll-up's plans


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _history_sql(metric_id: int, epochs_per_day: int, first_epoch: int) -> tuple[str, str]:
    """(RollupEpoch rows, CountDelta rows) of a synthetic history: epochs first_epoch + 0 .. 90 x
    epochs_per_day - 1, epoch e adding to day start + e // epochs_per_day, every region, k counts."""
    start, _ = qd.window()
    epochs = qd.DAYS * epochs_per_day
    regions = "ARRAY[" + ",".join(f"'{r}'" for r in qd.REGION_VALUES) + "]::varchar[]"
    support = "decode(repeat('0100000000000000', %d), 'hex')" % qd.K  # k little-endian int64 ones
    series = f"generate_series(0, {epochs - 1}) AS e"
    return (
        "INSERT INTO telemetry_rollupepoch (id, token, completed_at)"
        f" SELECT {first_epoch} + e, md5(e::text), now() FROM {series}",
        "INSERT INTO telemetry_countdelta (epoch, metric_id, day, region, reports, support)"
        f" SELECT {first_epoch} + e, {metric_id}, DATE '{start.isoformat()}' + (e / {epochs_per_day})::int, region,"
        f" {qd.K}, {support} FROM {series}, unnest({regions}) AS region",
    )


def setup(rows: int, epochs_per_day: int) -> dict:
    qd.recreate_database(DB)
    qd.setup_django(DB)
    qd.migrate()
    from django.db import connection

    from telemetry.rollup import advance_rollup

    metric = qd.ensure_metric()
    start, _ = qd.window()
    staged = qd.stage_reports(metric.id, rows, start, progress=log)
    timings = {"stage_generate_s": round(staged["generate_s"], 1), "stage_copy_s": round(staged["copy_s"], 1)}
    t0 = time.perf_counter()
    epoch = advance_rollup()
    timings["rollup_s"] = round(time.perf_counter() - t0, 2)
    log(f"roll-up of {rows:,} reports: {timings['rollup_s']} s")
    epochs_sql, deltas_sql = _history_sql(metric.id, epochs_per_day, epoch.id + 1)
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        t0 = time.perf_counter()
        cursor.execute(epochs_sql)
        cursor.execute(deltas_sql)
        timings["history_insert_s"] = round(time.perf_counter() - t0, 1)
        cursor.execute("SELECT setval(pg_get_serial_sequence('telemetry_rollupepoch', 'id'),"
                       " (SELECT max(id) FROM telemetry_rollupepoch))")
        t0 = time.perf_counter()
        cursor.execute("VACUUM (ANALYZE) telemetry_countdelta, telemetry_rollupepoch, telemetry_observedcounts,"
                       " telemetry_stagedreports")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
    log(f"history of {qd.DAYS * epochs_per_day:,} epochs written: {timings}")
    return {"reports": rows, "epochs_per_day": epochs_per_day} | timings


def _plan_text(cursor, sql: str, params: list) -> str:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, WAL) " + sql, params)
    return "\n".join(r[0] for r in cursor.fetchall())


def _explain(cursor, sql: str, params: list) -> dict:
    cold = _plan_text(cursor, sql, params)
    warm = _plan_text(cursor, sql, params)
    t0 = time.perf_counter()
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    fetch_ms = (time.perf_counter() - t0) * 1000
    return {"sql": sql, "params": [str(p) for p in params], "first_run_plan": cold, "plan": warm,
            "rows_returned": len(rows), "client_fetch_ms": round(fetch_ms, 2)}


def _explain_rolled_back(sql: str, params: list) -> dict:
    """The plan of a write, in a transaction rolled back afterwards (the data stays as it was)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        plan = _plan_text(cursor, sql, params)
        transaction.set_rollback(True)
    return {"sql": sql, "params": [str(p)[:200] for p in params], "plan": plan}


def _rollup_plans(metric_id: int, start) -> dict:
    """Plans of the roll-up's statements over INCREMENT newly staged reports."""
    from django.db import connection, transaction

    from telemetry import rollup

    qd.stage_reports(metric_id, INCREMENT, start)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) telemetry_stagedreports")
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(pg_sequence_last_value('telemetry_staging_generation'), 0) % 2")
        slot = f"telemetry_stagedreports_{cursor.fetchone()[0]}"
    plans = {"rollup_read_step": _explain_rolled_back(rollup._READ_PAGES.format(slot=slot), [0, rollup.CHUNK_PAGES])}
    with transaction.atomic():  # the rows the roll-up would write, computed as it does; nothing kept
        rows = rollup._with_totals(rollup._fold_staged())
        transaction.set_rollback(True)
    first, last = qd.window()
    plans["rollup_totals_read"] = _explain_rolled_back(
        "SELECT day, region, reports, support FROM telemetry_observedcounts"
        " WHERE metric_id = %s AND day >= %s AND day <= %s", [metric_id, first, last])
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) + 1 FROM telemetry_rollupepoch")
        (next_epoch,) = cursor.fetchone()
    plans["rollup_write_counts"] = _explain_rolled_back(
        rollup._WRITE_COUNTS,
        [b"".join(rows.supports), b"".join(rows.total_supports), rows.metric_ids, rows.days, rows.regions,
         rows.reports, rows.total_reports, rows.starts(), rows.widths, next_epoch])
    plans["rollup_write_counts"]["cells"] = len(rows.metric_ids)
    qd.clear_staged()
    return plans


def explain(out: Path) -> dict:
    qd.setup_django(DB)
    from datetime import timedelta

    from django.db import connection

    from telemetry import selectors
    from telemetry.catalog import catalog

    metric = qd.ensure_metric()
    start, end = qd.window()
    result: dict = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id), count(*) FROM telemetry_rollupepoch")
        first_epoch, latest, epochs = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM telemetry_countdelta")
        (deltas,) = cursor.fetchone()
        cursor.execute("SELECT count(*), sum(reports) FROM telemetry_observedcounts")
        observed_rows, observed_reports = cursor.fetchone()
        sizes = {}
        for rel in ("telemetry_observedcounts", "observed_metric_day_region", "telemetry_countdelta",
                    "countdelta_metric_day_epoch", "telemetry_rollupepoch", "telemetry_stagedreports"):
            cursor.execute("SELECT pg_relation_size(%s), pg_size_pretty(pg_relation_size(%s))", [rel, rel])
            sizes[rel] = cursor.fetchone()
        cursor.execute("SELECT version()")
        result["postgres"] = cursor.fetchone()[0]
        for setting in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost",
                        "max_parallel_workers_per_gather", "jit"):
            cursor.execute(f"SHOW {setting}")
            result.setdefault("settings", {})[setting] = cursor.fetchone()[0]
        result.update(epochs=epochs, latest_epoch=latest, count_delta_rows=deltas, observed_rows=observed_rows,
                      observed_reports=observed_reports, sizes=sizes)

        plans = {"query_read_90d": _explain(cursor, selectors._OBSERVED_BY_DAY, [start, metric.id, start, end])}
        recount = ("SELECT day, region, reports, support FROM telemetry_countdelta"
                   " WHERE metric_id = %s AND day >= %s AND day <= %s AND epoch <= %s")
        one_day = start + timedelta(days=45)
        middle = (first_epoch + latest) // 2
        plans["recount_1day_latest_epoch"] = _explain(cursor, recount, [metric.id, one_day, one_day, latest])
        plans["recount_90d_latest_epoch"] = _explain(cursor, recount, [metric.id, start, end, latest])
        plans["recount_90d_mid_epoch"] = _explain(cursor, recount, [metric.id, start, end, middle])
    spec = catalog.by_id(metric.id)
    # The whole recount of one day, as an audit runs it (SQL, fetch, sum in Python); a 90-day one fetches
    # 90 times the rows, which the 90-day plans above count.
    t0 = time.perf_counter()
    cells = len(selectors.recounted_rows(spec, one_day, one_day, latest).regions)
    result["recounted_rows_1day_latest_epoch"] = {"ms": round((time.perf_counter() - t0) * 1000, 1), "cells": cells}
    result["plans"] = plans | _rollup_plans(metric.id, start)
    out.write_text(json.dumps(result, indent=2, default=str))
    return {k: v for k, v in result.items() if k != "plans"} | {
        "plan_ms": {name: p["plan"].splitlines()[-1] for name, p in result["plans"].items()}
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["setup", "explain", "drop"])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--epochs-per-day", type=int, default=2880, help="2880: a roll-up every 30 s")
    parser.add_argument("--out", type=Path, default=Path("query_plans.json"))
    args = parser.parse_args()
    if args.step == "setup":
        print(json.dumps({"step": "setup", **setup(args.rows, args.epochs_per_day)}))
    elif args.step == "explain":
        print(json.dumps({"step": "explain", **explain(args.out)}, default=str))
    else:
        qd.setup_django(DB)
        qd.drop_database(DB)
        print(json.dumps({"step": "drop", "database": DB}))


if __name__ == "__main__":
    main()
