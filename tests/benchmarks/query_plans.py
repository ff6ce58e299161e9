"""Query plans of the report store at 10^8 rows (docs/query-plans.md).

Not collected by pytest. Three steps, each restartable (the load takes a while):

    python tests/benchmarks/query_plans.py setup   [--rows 100000000]   # recreate privtel_bench_plan, load, roll up
    python tests/benchmarks/query_plans.py explain [--out plans.json]   # EXPLAIN (ANALYZE, BUFFERS), sizes
    python tests/benchmarks/query_plans.py drop

The plans captured are the service's own statements, with the same parameters:

1. the query path's roll-up read (telemetry.selectors.observed_rows), 90 days of one metric;
2. the audit replay's raw recount (telemetry.selectors.recounted_rows) for one day and one
   region, and for 90 days;
3. the roll-up's incremental aggregation (telemetry.rollup._aggregate_range) of the newest
   100,000 ids.

Each is run twice and the second (warm cache) plan is kept; the first run's time is kept too.
Prints one JSON line and writes the plans to --out.
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def setup(rows: int) -> dict:
    qd.recreate_database(DB)
    qd.setup_django(DB)
    qd.migrate()
    metric = qd.ensure_metric()
    start, _ = qd.window()
    timings = qd.load_reports(rows, metric.id, start, progress=log)
    log(f"load done: {timings}")
    from telemetry.rollup import advance_rollup

    t0 = time.perf_counter()
    watermark = advance_rollup()
    timings["rollup_s"] = time.perf_counter() - t0
    timings["watermark"] = watermark
    log(f"roll-up done: {timings}")
    return timings


def _explain(cursor, sql: str, params: list) -> dict:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
    cold = "\n".join(r[0] for r in cursor.fetchall())
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
    warm = "\n".join(r[0] for r in cursor.fetchall())
    t0 = time.perf_counter()
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    fetch_ms = (time.perf_counter() - t0) * 1000
    return {"sql": sql, "params": [str(p) for p in params], "first_run_plan": cold, "plan": warm,
            "rows_returned": len(rows), "client_fetch_ms": round(fetch_ms, 2)}


def explain(out: Path) -> dict:
    qd.setup_django(DB)
    from datetime import timedelta

    from django.db import connection

    from telemetry import selectors

    metric = qd.ensure_metric()
    start, end = qd.window()
    result: dict = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id), count(*) FROM telemetry_report")
        max_id, total = cursor.fetchone()
        cursor.execute("SELECT report_id FROM telemetry_rollupwatermark WHERE id = 1")
        watermark = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM telemetry_observedcounts")
        rollup_rows = cursor.fetchone()[0]
        sizes = {}
        for rel in ("telemetry_report", "telemetry_report_pkey", "report_metric_day_region",
                    "telemetry_observedcounts", "observed_metric_day_region"):
            cursor.execute("SELECT pg_relation_size(%s), pg_size_pretty(pg_relation_size(%s))", [rel, rel])
            sizes[rel] = cursor.fetchone()
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('telemetry_report'))")
        sizes["telemetry_report_total"] = cursor.fetchone()[0]
        cursor.execute("SELECT version()")
        result["postgres"] = cursor.fetchone()[0]
        for setting in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost",
                        "max_parallel_workers_per_gather"):
            cursor.execute(f"SHOW {setting}")
            result.setdefault("settings", {})[setting] = cursor.fetchone()[0]
        result.update(reports=total, max_id=max_id, watermark=watermark, rollup_rows=rollup_rows, sizes=sizes)

        plans = {}
        plans["rollup_read_90d"] = _explain(cursor, selectors._OBSERVED_BY_DAY, [start, metric.id, start, end])
        recount = (
            "SELECT day, region, value, COUNT(*) FROM telemetry_report"
            " WHERE metric_id = %s AND day >= %s AND day <= %s AND id <= %s GROUP BY day, region, value"
        )
        one_day = start + timedelta(days=45)
        plans["recount_1day_all_regions"] = _explain(cursor, recount, [metric.id, one_day, one_day, watermark])
        plans["recount_1day_1region"] = _explain(
            cursor,
            "SELECT day, region, value, COUNT(*) FROM telemetry_report"
            " WHERE metric_id = %s AND day >= %s AND day <= %s AND region = %s AND id <= %s"
            " GROUP BY day, region, value",
            [metric.id, one_day, one_day, "DE", watermark],
        )
        plans["recount_90d"] = _explain(cursor, recount, [metric.id, start, end, watermark])
        low = max_id - 100_000
        plans["rollup_increment_100k"] = _explain(
            cursor,
            "SELECT metric_id, day, region, value, COUNT(*) FROM telemetry_report"
            " WHERE id > %s AND id <= %s AND value IS NOT NULL GROUP BY metric_id, day, region, value",
            [low, max_id],
        )
        plans["rollup_increment_100k_payload"] = _explain(
            cursor,
            "SELECT metric_id, day, region, payload FROM telemetry_report"
            " WHERE id > %s AND id <= %s AND payload IS NOT NULL",
            [low, max_id],
        )
    result["plans"] = plans
    out.write_text(json.dumps(result, indent=2, default=str))
    return {k: v for k, v in result.items() if k != "plans"} | {
        "plan_ms": {name: p["plan"].splitlines()[-1] for name, p in plans.items()}
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["setup", "explain", "drop"])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--out", type=Path, default=Path("query_plans.json"))
    args = parser.parse_args()
    if args.step == "setup":
        print(json.dumps({"step": "setup", "rows": args.rows, **setup(args.rows)}))
    elif args.step == "explain":
        print(json.dumps({"step": "explain", **explain(args.out)}, default=str))
    else:
        qd.setup_django(DB)
        qd.drop_database(DB)
        print(json.dumps({"step": "drop", "database": DB}))


if __name__ == "__main__":
    main()
