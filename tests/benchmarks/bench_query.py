"""Benchmark: central-DP query latency over 10^7 stored reports, against raw SQL, in one run.

Not collected by pytest. Run (PostgreSQL and Redis on localhost):

    python tests/benchmarks/bench_query.py [--rows 10000000] [--iterations 200] [--reload]

Set-up (skipped when ``privtel_bench_query`` already holds the same data set,
unless ``--reload``): recreate the database, migrate with the real settings
(DATABASE_URL -> it, REDIS_URL=redis://127.0.0.1:6379/14, PRIVACY_REGIONS = 50
regions), create one k-RR metric (k = 20, local ε = 2), insert ``rows`` reports
over 90 days x 51 region values ("" + 50) with ``INSERT ... SELECT FROM
generate_series``, build the index, then run ``telemetry.rollup.advance_rollup()``
once (timed).

Measured, in this order, in one process:

* ``service``: ``telemetry.release.service.run_query`` for a 90-day query grouped by day
  and region, ``fresh: true`` (so every call is a real, paid, audited release:
  roll-up check, budget reserve, grid, exact noise, Release + ledger rows,
  post-processing), ε = 0.01. The analyst has a huge budget and partition cap.
* ``http``: the same through ``POST /api/v1/queries`` with ``django.test.Client``
  (middleware, DRF token auth, JSON rendering; no socket).
* ``cached``: the same query without ``fresh``: a free re-release of the stored
  noisy counts, re-rendered (post-processing only).
* ``raw_sql_reports``: ``SELECT day, region, value, count(*) FROM telemetry_report
  WHERE metric_id=%s AND day BETWEEN %s AND %s GROUP BY 1,2,3``: the same counts
  computed from the raw reports (what a naive implementation runs per query).
* ``raw_sql_rollup``: the service's own roll-up statement alone
  (``telemetry.selectors._OBSERVED_BY_DAY``, one binary row per day): the same
  counts read from ``telemetry_observedcounts``, with nothing around it.

Each run first empties the release and ledger tables of the bench database, so
the analyst's ledger for the day (which reserve() reads) starts empty; it
holds a few hundred rows by the end. Latencies are wall-clock, client side (execute + fetch for SQL). Then a
separate, instrumented pass (so the headline numbers carry no wrapper cost)
times each step of the service path, and cProfile names the hottest functions.
Prints one JSON line (details of the profile under "profile").
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import query_data as qd  # noqa: E402

DB = "privtel_bench_query"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "min_ms": round(float(ms.min()), 2),
            "max_ms": round(float(ms.max()), 2), "n": len(ms)}


def timed(fn, iterations: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


# --- set-up ---------------------------------------------------------------------------


def _meta(cursor, key: str, value=None):
    cursor.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value jsonb)")
    if value is None:
        cursor.execute("SELECT value FROM bench_meta WHERE key = %s", [key])
        row = cursor.fetchone()
        return None if row is None else (json.loads(row[0]) if isinstance(row[0], str) else row[0])
    cursor.execute("INSERT INTO bench_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                   [key, json.dumps(value)])


def prepare(rows: int, reload: bool) -> tuple[object, dict]:
    """The metric and the set-up timings (from this run, or from the run that loaded the data)."""
    start, end = qd.window()
    wanted = {"rows": rows, "start": start.isoformat(), "end": end.isoformat()}
    if not reload and qd.database_exists(DB):
        qd.setup_django(DB)
        from django.db import connection

        qd.migrate()
        with connection.cursor() as cursor:
            setup = _meta(cursor, "setup")
        if setup and {k: setup.get(k) for k in wanted} == wanted:
            log(f"reusing {DB}: {setup}")
            return qd.ensure_metric(), setup | {"reused": True}
        log(f"{DB} holds another data set ({setup}); reloading")
        connection.close()
    qd.recreate_database(DB)
    qd.setup_django(DB)
    from django.db import connection

    qd.migrate()
    metric = qd.ensure_metric()
    log(f"loading {rows:,} reports")
    timings = qd.load_reports(rows, metric.id, start, progress=log)
    from telemetry.rollup import advance_rollup

    t0 = time.perf_counter()
    watermark = advance_rollup()
    timings["rollup_s"] = time.perf_counter() - t0
    log(f"roll-up of {watermark:,} reports: {timings['rollup_s']:.1f} s")
    setup = wanted | {k: round(v, 2) for k, v in timings.items()} | {"watermark": watermark}
    with connection.cursor() as cursor:
        _meta(cursor, "setup", setup)
    return metric, setup | {"reused": False}


# --- the profile ----------------------------------------------------------------------


class StepTimer:
    """Wraps named functions where telemetry.release looks them up; sums time per step per query."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.queries: list[dict[str, float]] = []
        self._undo: list = []

    def wrap(self, owner, attr: str, step: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[step] += time.perf_counter() - t0

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, original))

    def next_query(self, total: float) -> None:
        self.current["total"] = total
        self.queries.append(dict(self.current))
        self.current = defaultdict(float)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)

    def summary(self) -> dict:
        steps = sorted({k for q in self.queries for k in q})
        means = {k: float(np.mean([q.get(k, 0.0) for q in self.queries])) * 1000 for k in steps}
        means["other_unattributed (commit, run_query glue)"] = means["total"] - sum(
            v for k, v in means.items() if k != "total" and not k.startswith(" "))
        return {k: round(v, 2) for k, v in sorted(means.items(), key=lambda kv: -kv[1])}


def profile_steps(run, iterations: int) -> dict:
    from accounting.services import ledger
    from privacy import central
    from telemetry import selectors
    from telemetry.release import request as release_request
    from telemetry.release import service as release_service
    from telemetry.release.released import ReleasedData

    timer = StepTimer()
    # Order matters only for readability; steps do not nest except where noted.
    timer.wrap(release_request, "parse_query_request", "parse_query")
    timer.wrap(release_service, "advance_rollup", "rollup_check (advance_rollup, no new reports)")
    timer.wrap(ledger, "charge", "budget_charge (two upserts: locks, checks, spends; ledger INSERT)")
    timer.wrap(release_service, "advisory_xact_lock", "advisory locks (identical queries, roll-up shared)")
    timer.wrap(selectors, "observed_rows", "rollup_read (observed_rows: binary SQL -> numpy)")
    timer.wrap(release_service, "build_grid", "grid_build (vectorized)")
    timer.wrap(central, "add_noise", "noise (discrete Laplace, ChaCha20 DRBG)")
    timer.wrap(release_service, "seal", "seal_seed (AES-GCM)")
    timer.wrap(release_service, "released_data", "post_process_and_render (debias, Norm-Sub, round, coarsen, CIs: columns)")
    timer.wrap(release_service, "insert_binary", "db_write_release (Release INSERT, binary)")
    timer.wrap(ReleasedData, "digest", "released_digest (SHA-256 of the canonical columns)")
    timer.wrap(ReleasedData, "cells", "cells (per-cell dicts of numpy rows for the JSON)")
    # Sub-steps of render, reported separately (they are inside post_process_and_render).
    timer.wrap(central, "post_process", "  render.post_process (vectorized)")
    timer.wrap(central, "intervals", "  render.intervals (vectorized)")
    try:
        for _ in range(iterations):
            t0 = time.perf_counter()
            run()
            timer.next_query(time.perf_counter() - t0)
    finally:
        timer.restore()
    return timer.summary()  # the release transaction's COMMIT is in "other_unattributed"


def cprofile_top(run, iterations: int, top: int = 18) -> list[str]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return [f"{iterations} queries; tottime per query = tottime/{iterations}"] + [
        " ".join(line.split()) for line in lines[start:start + top + 1] if line.strip()
    ]


# --- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--iterations", type=int, default=200, help="service queries timed")
    parser.add_argument("--http-iterations", type=int, default=100)
    parser.add_argument("--raw-iterations", type=int, default=5, help="raw GROUP BY over the reports (slow)")
    parser.add_argument("--rollup-iterations", type=int, default=200, help="roll-up table reads")
    parser.add_argument("--cached-iterations", type=int, default=30, help="cached (free) re-releases timed")
    parser.add_argument("--profile-iterations", type=int, default=30)
    parser.add_argument("--epsilon", default="0.01")
    parser.add_argument("--reload", action="store_true", help="regenerate the data even if it is there")
    args = parser.parse_args()

    metric, setup = prepare(args.rows, args.reload)
    from django.db import connection
    from django.test import Client

    from telemetry import selectors
    from telemetry.release import request as release_request
    from telemetry.release.service import run_query

    with connection.cursor() as cursor:  # every run starts from an empty ledger (bench database only)
        cursor.execute("TRUNCATE telemetry_release, accounting_ledgerentry, accounting_dailyspend,"
                       " accounting_partitionspend")
    user, token = qd.ensure_analyst(metric_id=metric.id)
    start, end = qd.window()
    body = {"metric": metric.name, "start": start.isoformat(), "end": end.isoformat(),
            "group_by": ["day", "region"], "fresh": True, "epsilon": args.epsilon}

    last = {}

    def service():
        last["result"] = run_query(user=user, request=release_request.parse_query_request(dict(body)))

    client = Client()
    payload = json.dumps(body)

    def http():
        response = client.post("/api/v1/queries", data=payload, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Token {token}")
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code}: {response.content[:500]!r}")
        last["http_bytes"] = len(response.content)

    raw_reports_sql = ("SELECT day, region, value, count(*) FROM telemetry_report"
                       " WHERE metric_id = %s AND day BETWEEN %s AND %s GROUP BY 1, 2, 3")
    raw_rows = {}

    def rollup_read():  # the service's own roll-up statement, fetched the same way (binary, one row per day)
        raw_rows["rollup_days"] = len(selectors._fetch_binary(selectors._OBSERVED_BY_DAY, [start, metric.id, start, end]))

    def raw(sql, name):
        def run():
            with connection.cursor() as cursor:
                cursor.execute(sql, [metric.id, start, end])
                raw_rows[name] = len(cursor.fetchall())
        return run

    def cached():
        last["cached"] = run_query(user=user, request=release_request.parse_query_request(dict(body, fresh=False)))

    load_start = os.getloadavg()[0]
    gc.collect()
    log("service path")
    service_s = timed(service, args.iterations, warmup=3)
    result = last["result"]
    cells = len(result["data"])
    log("HTTP path")
    http_s = timed(http, args.http_iterations, warmup=2)
    log("cached re-release (free, re-rendered)")
    cached_s = timed(cached, args.cached_iterations, warmup=1)
    assert last["cached"]["privacy"]["cached"] is True
    log("raw SQL over the roll-up table")
    rollup_sql_s = timed(rollup_read, args.rollup_iterations, warmup=3)
    log("raw SQL over the reports")
    reports_sql_s = timed(raw(raw_reports_sql, "reports"), args.raw_iterations, warmup=1)

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + raw_reports_sql, [metric.id, start, end])
        plan = cursor.fetchone()[0]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        cursor.execute("SELECT pg_column_size(noisy_counts) FROM telemetry_release ORDER BY created_at DESC LIMIT 1")
        (noisy_bytes,) = cursor.fetchone()

    log("profile")
    steps = profile_steps(service, args.profile_iterations)
    top = cprofile_top(service, 10)

    service, http_p, rollup_p, reports_p, cached_p = (
        percentiles(s) for s in (service_s, http_s, rollup_sql_s, reports_sql_s, cached_s))
    out = {
        "benchmark": "central_dp_query_latency",
        "query": "90 days, group_by day+region, fresh (paid) releases, epsilon=" + args.epsilon,
        "reports_stored": setup["rows"],
        "days": qd.DAYS, "regions_on_axis": len(qd.REGIONS) + 1, "k": qd.K,
        "grid_cells": qd.DAYS * (len(qd.REGIONS) + 1), "noised_counts": qd.DAYS * (len(qd.REGIONS) + 1) * qd.K,
        "released_cells": cells,
        "service_p50_ms": service["p50_ms"], "service_p99_ms": service["p99_ms"],
        "http_p50_ms": http_p["p50_ms"], "http_p99_ms": http_p["p99_ms"], "http_response_bytes": last["http_bytes"],
        "cached_rerelease_p50_ms": cached_p["p50_ms"], "cached_rerelease_p99_ms": cached_p["p99_ms"],
        "raw_sql_reports_groupby_p50_ms": reports_p["p50_ms"], "raw_sql_reports_groupby_p99_ms": reports_p["p99_ms"],
        "raw_sql_rollup_read_p50_ms": rollup_p["p50_ms"], "raw_sql_rollup_read_p99_ms": rollup_p["p99_ms"],
        "ratio_service_to_raw_reports_p50": round(service["p50_ms"] / reports_p["p50_ms"], 3),
        "ratio_service_to_raw_reports_p99": round(service["p99_ms"] / reports_p["p99_ms"], 3),
        "ratio_service_to_rollup_read_p50": round(service["p50_ms"] / rollup_p["p50_ms"], 2),
        "ratio_service_to_rollup_read_p99": round(service["p99_ms"] / rollup_p["p99_ms"], 2),
        "target_p99_ms": 100, "target_ratio": 3,
        "meets_p99_target": service["p99_ms"] <= 100,
        "meets_ratio_vs_raw_reports": service["p99_ms"] / reports_p["p99_ms"] <= 3,
        "rollup_once_s": setup.get("rollup_s"), "load": setup,
        "raw_rows": raw_rows, "raw_reports_plan_top": plan[0]["Plan"]["Node Type"],
        "release_row_bytes": {"noisy_counts": noisy_bytes},
        "loadavg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "detail": {"service": service, "http": http_p, "cached": cached_p, "raw_sql_reports": reports_p, "raw_sql_rollup": rollup_p},
        "profile": {"mean_ms_per_query": steps, "cprofile_top": top},
        "python": platform.python_version(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
