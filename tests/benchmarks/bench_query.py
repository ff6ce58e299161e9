"""Benchmark: the roll-up's throughput, and central-DP query latency over 10^7 reports, against raw SQL.

Not collected by pytest. Run (PostgreSQL and Redis on localhost):

    python tests/benchmarks/bench_query.py [--rows 10000000] [--iterations 200] [--reload]
    python tests/benchmarks/bench_query.py --rows 100000000 --yardstick-rows 0 --rollup-only

Set-up, in the benchmark's own database ``privtel_bench_query`` (recreated on
``--reload`` or when it holds another data set; the real settings with
DATABASE_URL -> it, PRIVACY_REGIONS = 50 regions): one k-RR metric (k = 20,
local ε = 2); the yardstick table ``bench_reports`` (one row per report, the
former ``telemetry_report``, benchmark database only; kept between runs since
it takes minutes to build); see ``query_data.py`` for the data set.

Measured, in this order, in one process:

* ``rollup``: ``rows`` reports staged as the service stages them (one
  ``telemetry_stagedreports`` row per batch of 100, COPY BINARY, committed),
  then ``telemetry.rollup.advance_rollup()`` over all of them, timed end to end
  (seal the staging slot, read it in steps, fold, epoch and CountDelta rows,
  ObservedCounts upsert, TRUNCATE, COMMIT): ``--rollup-repeats`` times from empty counts, then once
  more with each part timed (the breakdown). The counts it leaves are the
  data the queries read; they are checked against the yardstick's GROUP BY.
* ``service``: ``telemetry.release.service.run_query`` for a 90-day query grouped by day
  and region, ``fresh: true`` (so every call is a real, paid, audited release:
  budget charge, the roll-up read, grid, exact noise, Release + ledger rows,
  post-processing), ε = 0.01. The analyst has a huge budget and partition cap.
* ``http``: the same through ``POST /api/v1/queries`` with ``django.test.Client``
  (middleware, DRF token auth, JSON rendering; no socket).
* ``cached``: the same query without ``fresh``: a free re-release of the stored
  noisy counts, re-rendered (post-processing only).
* ``raw_sql_rollup``: the service's own read alone (``telemetry.selectors._OBSERVED_BY_DAY``:
  the latest epoch and ObservedCounts, one binary row per day), with nothing around it.
* ``raw_sql_reports``: ``SELECT day, region, value, count(*) FROM bench_reports
  WHERE metric_id=%s AND day BETWEEN %s AND %s GROUP BY 1,2,3`` on the
  yardstick: the same counts from one row per report, which is what a
  per-report design would scan per query. The ratio target is service /
  this.
* ``audit_recount``: ``telemetry.selectors.recounted_rows`` at the last
  release's epoch (the audit replay's raw grid, from the CountDelta rows).
* ``pending``: with the counts rolled up, P more reports staged and not
  rolled up (P in --pending), for another metric and for the queried metric:
  the service query's latency at each P (it must not grow with P: queries
  never run or wait for the roll-up). The volumes are swept up, then down,
  so that a drift of the shared machine's load shows as such; each is
  followed by the VACUUM (ANALYZE) that autovacuum would run, untimed.

Each run first empties the release and ledger tables of the bench database, so
the analyst's ledger for the day starts empty. Latencies are wall-clock, client
side (execute + fetch for SQL). Then a separate, instrumented pass (so the
headline numbers carry no wrapper cost) times each step of the service path,
and cProfile names the hottest functions. Prints one JSON line.
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
import shutil
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


def prepare(rows: int, yardstick_rows: int, reload: bool) -> tuple[object, dict]:
    """The metric and the yardstick's set-up (built in this run, or by the run that built it)."""
    start, end = qd.window()
    wanted = {"rows": yardstick_rows, "start": start.isoformat(), "end": end.isoformat()}
    if not reload and qd.database_exists(DB):
        qd.setup_django(DB)
        from django.db import connection

        qd.migrate()
        with connection.cursor() as cursor:
            setup = _meta(cursor, "yardstick")
        if not yardstick_rows or (setup and {k: setup.get(k) for k in wanted} == wanted):
            log(f"reusing {DB}: yardstick {setup}")
            return qd.ensure_metric(), (setup or {}) | {"reused": True}
        log(f"{DB} holds another yardstick ({setup}); reloading")
        connection.close()
    qd.recreate_database(DB)
    qd.setup_django(DB)
    from django.db import connection

    qd.migrate()
    metric = qd.ensure_metric()
    setup = {}
    if yardstick_rows:
        log(f"loading the yardstick: {yardstick_rows:,} report rows")
        timings = qd.load_yardstick(yardstick_rows, metric.id, start, progress=log)
        setup = wanted | {k: round(v, 2) for k, v in timings.items()}
        with connection.cursor() as cursor:
            _meta(cursor, "yardstick", setup)
    return metric, setup | {"reused": False}


# --- the roll-up ----------------------------------------------------------------------


def _delete_returning_server_ms() -> list[float]:
    """The server's own time (ms) to delete every staged row as one DELETE ... RETURNING (what the roll-up's
    steps delete together; EXPLAIN ANALYZE, rolled back), twice: the first pass is the first reader of the
    freshly committed rows, as the roll-up is."""
    from django.db import connection, transaction

    times = []
    for _ in range(2):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM telemetry_stagedreports"
                           " RETURNING metric_id, payload")
            plan = cursor.fetchone()[0]
            times.append(round((plan if isinstance(plan, list) else json.loads(plan))[0]["Execution Time"], 1))
            transaction.set_rollback(True)
    return times


def _stage_for_rollup(metric_id: int, rows: int) -> dict:
    from django.db import connection

    qd.clear_counts()
    start, _ = qd.window()
    staged = qd.stage_reports(metric_id, rows, start, progress=log)
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(pg_relation_size(relid)), 0)::bigint FROM pg_partition_tree('telemetry_stagedreports')")
        staged["table_bytes"] = cursor.fetchone()[0]
    return staged


def backend_cpu_s() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (None unless it runs on this host)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class CpuClock:
    """Wall time, this process's CPU time and the backend's CPU time between start() and stop()."""

    def start(self) -> None:
        self.wall, self.client, self.backend = time.perf_counter(), time.process_time(), backend_cpu_s()

    def stop(self) -> dict:
        backend = backend_cpu_s()
        out = {"wall_s": time.perf_counter() - self.wall, "client_cpu_s": time.process_time() - self.client,
               "backend_cpu_s": None if backend is None or self.backend is None else backend - self.backend}
        return {k: None if v is None else round(v, 3) for k, v in out.items()}


def rollup_breakdown(rollup_once) -> dict:
    """One roll-up with its parts timed: wall ms and this process's CPU ms per part; what remains of the
    total is the advisory lock and Django's glue."""
    from django.db import connections

    from telemetry import rollup, staging
    from telemetry.models import RollupEpoch

    parts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    undo = []

    def wrap(owner, attr: str, name: str) -> None:
        original, own = getattr(owner, attr), attr in vars(owner)

        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                parts[name][0] += time.perf_counter() - wall
                parts[name][1] += time.process_time() - cpu

        setattr(owner, attr, wrapper)
        undo.append((owner, attr, original if own else None))

    wrap(rollup, "_seal", "seal (wait for ingest, move it to the other slot)")
    wrap(rollup, "_read_pages", "read (SELECT per step of CHUNK_PAGES pages, payloads joined: server + transfer)")
    wrap(rollup, "_empty", "empty (TRUNCATE the sealed slot)")
    wrap(staging, "fold_cells", "fold (numpy, per metric and step)")
    wrap(staging, "merge_cells", "merge (the steps' cells, per metric)")
    wrap(rollup, "_with_totals", "totals (read the ObservedCounts rows concerned, add, to columns)")
    wrap(RollupEpoch.objects, "create", "epoch_insert")
    wrap(rollup, "_write_counts", "write_counts (CountDelta append + ObservedCounts upsert, one statement)")
    wrap(connections["default"], "commit", "commit")
    clock = CpuClock()
    try:
        clock.start()
        rollup_once()
        total = clock.stop()
    finally:
        for owner, attr, original in reversed(undo):
            if original is None:
                delattr(owner, attr)  # the class's method shows through again
            else:
                setattr(owner, attr, original)
    rest = total["wall_s"] - sum(wall for wall, _ in parts.values())
    ms = {name: {"wall_ms": round(wall * 1000, 1), "client_cpu_ms": round(cpu * 1000, 1)}
          for name, (wall, cpu) in sorted(parts.items(), key=lambda kv: -kv[1][0])}
    return {"total": total, "parts": ms, "other_unattributed_wall_ms (advisory lock, glue)": round(rest * 1000, 1)}


def measure_rollup(metric_id: int, rows: int, repeats: int) -> dict:
    """Stage ``rows`` reports and roll them up: ``repeats`` times plain, once with its parts timed, then
    the DELETE's server time alone. Wall times are on a shared machine; the CPU seconds (this process
    + its PostgreSQL backend) are what the roll-up itself used."""
    from telemetry.models import CountDelta, ObservedCounts
    from telemetry.rollup import advance_rollup

    runs, staging = [], []
    for _ in range(repeats):
        staging.append(_stage_for_rollup(metric_id, rows))
        gc.collect()
        clock = CpuClock()
        clock.start()
        advance_rollup()
        runs.append(clock.stop())
        log(f"roll-up of {rows:,} reports: {runs[-1]} ({rows / runs[-1]['wall_s']:,.0f} reports/s)")
    staged = _stage_for_rollup(metric_id, rows)
    gc.collect()
    breakdown = rollup_breakdown(advance_rollup)
    cells = {"observed_counts": ObservedCounts.objects.count(), "count_delta": CountDelta.objects.count()}
    qd.stage_reports(metric_id, rows, qd.window()[0])  # staged again (the counts stay), for EXPLAIN only
    breakdown["delete_returning_server_ms (EXPLAIN ANALYZE of one DELETE of every staged row, what the roll-up"
              " ran before the slots, for comparison: first reader, again)"] = _delete_returning_server_ms()
    qd.clear_staged()  # the counts of the breakdown's run stay: the queries read them
    walls = [run["wall_s"] for run in runs]
    cpus = [run["client_cpu_s"] + (run["backend_cpu_s"] or 0) for run in runs]
    seconds = float(np.median(walls))
    return {
        "rollup_reports": rows, "rollup_staged_rows": staged["rows"], "rollup_staged_table_bytes": staged["table_bytes"],
        "rollup_runs": runs, "rollup_s_median": round(seconds, 3),
        "rollup_reports_per_s": round(rows / seconds), "rollup_reports_per_s_best": round(rows / min(walls)),
        "rollup_cpu_s_median": round(float(np.median(cpus)), 3),
        "rollup_reports_per_cpu_s": round(rows / float(np.median(cpus))),
        "rollup_target_reports_per_s": 10_000_000, "meets_rollup_target": rows / seconds >= 10_000_000,
        "rollup_cells_written": cells,
        "rollup_breakdown": breakdown,
        "staging_load": {k: round(v, 2) if isinstance(v, float) else v for k, v in staged.items()},
    }


def counts_match(metric_id: int, start, end, raw_rows: list) -> bool:
    """The rolled-up counts equal the yardstick's GROUP BY (same reports, two ways)."""
    from telemetry.catalog import catalog
    from telemetry.selectors import observed_rows

    rows = observed_rows(catalog.by_id(metric_id), start, end)
    rolled = {(day, region): support.tolist() for day, region, support in zip(rows.days, rows.regions, rows.support)}
    counted: dict = defaultdict(lambda: [0] * qd.K)
    for day, region, value, count in raw_rows:
        counted[(day, region)][value] = count
    return rolled == dict(counted) and int(rows.reports.sum()) == sum(r[3] for r in raw_rows)


# --- the profile ----------------------------------------------------------------------


class StepTimer:
    """Wraps named functions where telemetry.release looks them up; sums time per step per query."""

    def __init__(self, rest: str = "other_unattributed (commit, run_query glue)") -> None:
        self.rest = rest
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
        means[self.rest] = means["total"] - sum(
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
    timer.wrap(ledger, "charge", "budget_charge (two upserts: locks, checks, spends; ledger INSERT)")
    timer.wrap(selectors, "observed_rows", "counts_read (observed_rows: latest epoch + ObservedCounts, binary -> numpy)")
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
    parser.add_argument("--rows", type=int, default=10_000_000, help="reports staged and rolled up")
    parser.add_argument("--yardstick-rows", type=int, default=None,
                        help="rows of the per-report yardstick table (default: --rows; 0: none)")
    parser.add_argument("--rollup-repeats", type=int, default=3, help="timed roll-ups of --rows staged reports")
    parser.add_argument("--iterations", type=int, default=200, help="service queries timed")
    parser.add_argument("--http-iterations", type=int, default=100)
    parser.add_argument("--raw-iterations", type=int, default=5, help="raw GROUP BY over the yardstick (slow)")
    parser.add_argument("--rollup-iterations", type=int, default=200, help="reads of the counts alone")
    parser.add_argument("--cached-iterations", type=int, default=30, help="cached (free) re-releases timed")
    parser.add_argument("--audit-iterations", type=int, default=20, help="audit recounts timed")
    parser.add_argument("--pending", default="0,200000,400000,1000000", help="pending report volumes")
    parser.add_argument("--pending-iterations", type=int, default=40,
                        help="service queries timed per volume, target metric and sweep")
    parser.add_argument("--profile-iterations", type=int, default=30)
    parser.add_argument("--epsilon", default="0.01")
    parser.add_argument("--reload", action="store_true", help="rebuild the database and the yardstick")
    parser.add_argument("--rollup-only", action="store_true",
                        help="measure the roll-up alone (no yardstick needed: use with --yardstick-rows 0)")
    args = parser.parse_args()
    yardstick_rows = args.rows if args.yardstick_rows is None else args.yardstick_rows

    metric, setup = prepare(args.rows, yardstick_rows, args.reload)
    from deploy.api.db import fetch_binary
    from django.db import connection
    from django.test import Client

    from telemetry import selectors
    from telemetry.catalog import catalog
    from telemetry.release import request as release_request
    from telemetry.release.service import run_query

    load_start = os.getloadavg()[0]
    rollup = measure_rollup(metric.id, args.rows, args.rollup_repeats)
    if args.rollup_only:
        loadavg = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
        print(json.dumps({"benchmark": "rollup", **rollup, "loadavg_1m": loadavg}))
        return
    with connection.cursor() as cursor:  # what autovacuum would do after the roll-up's DELETE
        cursor.execute("VACUUM (ANALYZE) telemetry_stagedreports, telemetry_observedcounts, telemetry_countdelta")
        # every run starts from an empty ledger (bench database only)
        cursor.execute("TRUNCATE telemetry_release, accounting_ledgerentry, accounting_dailyspend,"
                       " accounting_partitionspend")
    other = qd.ensure_metric("bench_query_other")
    user, token = qd.ensure_analyst(metric_id=metric.id)
    start, end = qd.window()
    spec = catalog.by_id(metric.id)
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

    raw_reports_sql = (f"SELECT day, region, value, count(*) FROM {qd.YARDSTICK}"
                       " WHERE metric_id = %s AND day BETWEEN %s AND %s GROUP BY 1, 2, 3")
    raw_rows = {}

    def counts_read():  # the service's own read, fetched the same way (binary, one row per day)
        raw_rows["counts_read_days"] = len(fetch_binary(selectors._OBSERVED_BY_DAY, [start, metric.id, start, end]))

    def raw_reports():
        with connection.cursor() as cursor:
            cursor.execute(raw_reports_sql, [metric.id, start, end])
            last["raw_reports"] = cursor.fetchall()
        raw_rows["reports_groupby"] = len(last["raw_reports"])

    def cached():
        last["cached"] = run_query(user=user, request=release_request.parse_query_request(dict(body, fresh=False)))

    def audit_recount():
        release = selectors.latest_release(last["result_query_key"])
        raw_rows["audit_recount_cells"] = len(selectors.recounted_rows(spec, start, end, release.data_epoch).regions)

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
    last["result_query_key"] = release_request.parse_query_request(dict(body)).query.key
    log("audit recount from the count deltas")
    audit_s = timed(audit_recount, args.audit_iterations, warmup=1)
    log("raw SQL: the service's read of the counts")
    counts_read_s = timed(counts_read, args.rollup_iterations, warmup=3)
    reports_p, plan_top, match = None, None, None
    if yardstick_rows:
        log("raw SQL over the yardstick (one row per report)")
        reports_sql_s = timed(raw_reports, args.raw_iterations, warmup=1)
        reports_p = percentiles(reports_sql_s)
        match = counts_match(metric.id, start, end, last["raw_reports"]) if yardstick_rows == args.rows else None
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + raw_reports_sql, [metric.id, start, end])
            plan = cursor.fetchone()[0]
            plan_top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]["Node Type"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_size(noisy_counts) FROM telemetry_release ORDER BY created_at DESC LIMIT 1")
        (noisy_bytes,) = cursor.fetchone()

    log("latency against the pending (staged, not rolled up) volume")
    volumes = [int(p) for p in args.pending.split(",")]
    version = result["release"]["data_version"]
    pending: dict = {}
    for sweep in ("up", "down"):  # both orders, so that a drift of the machine's load shows as such
        for volume in volumes if sweep == "up" else volumes[::-1]:
            for name, target in (("other_metric", other), ("same_metric", metric)):
                qd.clear_staged()
                if volume:
                    qd.stage_reports(target.id, volume, start)
                with connection.cursor() as cursor:  # autovacuum would run now; keep it out of the timing
                    cursor.execute("VACUUM (ANALYZE) telemetry_stagedreports")
                samples = percentiles(timed(service, args.pending_iterations, warmup=2))
                assert last["result"]["release"]["data_version"] == version, "a roll-up ran during the benchmark"
                pending.setdefault(str(volume), {}).setdefault(name, {})[sweep] = {
                    k: samples[k] for k in ("p50_ms", "p99_ms", "mean_ms")}
                log(f"pending {volume:,} ({name}, {sweep}): p50 {samples['p50_ms']} ms, p99 {samples['p99_ms']} ms")
    qd.clear_staged()

    log("profile")
    steps = profile_steps(service, args.profile_iterations)
    top = cprofile_top(service, 10)

    service_p, http_p, counts_p, cached_p, audit_p = (
        percentiles(s) for s in (service_s, http_s, counts_read_s, cached_s, audit_s))
    p50s = [v["p50_ms"] for by_target in pending.values() for by_sweep in by_target.values()
            for v in by_sweep.values()]
    out = {
        "benchmark": "central_dp_query_latency_and_rollup",
        "query": "90 days, group_by day+region, fresh (paid) releases, epsilon=" + args.epsilon,
        "reports_rolled_up": args.rows,
        "days": qd.DAYS, "regions_on_axis": len(qd.REGIONS) + 1, "k": qd.K,
        "grid_cells": qd.DAYS * (len(qd.REGIONS) + 1), "noised_counts": qd.DAYS * (len(qd.REGIONS) + 1) * qd.K,
        "released_cells": cells,
        **{k: rollup[k] for k in ("rollup_reports_per_s", "rollup_reports_per_s_best", "rollup_target_reports_per_s",
                                  "meets_rollup_target", "rollup_s_median", "rollup_cpu_s_median",
                                  "rollup_reports_per_cpu_s")},
        "service_p50_ms": service_p["p50_ms"], "service_p99_ms": service_p["p99_ms"],
        "http_p50_ms": http_p["p50_ms"], "http_p99_ms": http_p["p99_ms"], "http_response_bytes": last["http_bytes"],
        "cached_rerelease_p50_ms": cached_p["p50_ms"], "cached_rerelease_p99_ms": cached_p["p99_ms"],
        "audit_recount_p50_ms": audit_p["p50_ms"], "audit_recount_p99_ms": audit_p["p99_ms"],
        "raw_sql_counts_read_p50_ms": counts_p["p50_ms"], "raw_sql_counts_read_p99_ms": counts_p["p99_ms"],
        "raw_sql_yardstick_groupby_p50_ms": reports_p and reports_p["p50_ms"],
        "raw_sql_yardstick_groupby_p99_ms": reports_p and reports_p["p99_ms"],
        "yardstick_reports": yardstick_rows,
        "baselines": {
            "raw_sql_yardstick_groupby": f"SELECT day, region, value, count(*) GROUP BY over {qd.YARDSTICK}: one row "
                                         "per report (the former telemetry_report, same index), in the benchmark "
                                         "database only; what a per-report design would scan per query",
            "raw_sql_counts_read": "the service's own read alone (telemetry.selectors._OBSERVED_BY_DAY: latest epoch "
                                   "+ ObservedCounts rows, binary)",
        },
        "ratio_service_to_yardstick_p50": reports_p and round(service_p["p50_ms"] / reports_p["p50_ms"], 3),
        "ratio_service_to_yardstick_p99": reports_p and round(service_p["p99_ms"] / reports_p["p99_ms"], 3),
        "ratio_service_to_counts_read_p50": round(service_p["p50_ms"] / counts_p["p50_ms"], 2),
        "ratio_service_to_counts_read_p99": round(service_p["p99_ms"] / counts_p["p99_ms"], 2),
        "target_p99_ms": 100, "target_ratio": 3,
        "meets_p99_target": service_p["p99_ms"] <= 100,
        "meets_ratio_vs_yardstick": reports_p and service_p["p99_ms"] / reports_p["p99_ms"] <= 3,
        "rolled_up_counts_match_yardstick": match,
        "pending_latency_ms": pending,
        "pending_p50_ms_median_by_volume": {  # over both sweeps and both target metrics
            volume: float(np.median([v["p50_ms"] for by_sweep in by_target.values() for v in by_sweep.values()]))
            for volume, by_target in pending.items()},
        "pending_p50_spread_ms": round(max(p50s) - min(p50s), 2),
        "rollup": rollup, "yardstick_setup": setup,
        "raw_rows": raw_rows, "yardstick_plan_top": plan_top, "data_version_unchanged_while_pending": True,
        "release_row_bytes": {"noisy_counts": noisy_bytes},
        "loadavg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "disk_free_gb": round(shutil.disk_usage("/").free / 1e9, 1),
        "detail": {"service": service_p, "http": http_p, "cached": cached_p, "audit_recount": audit_p,
                   "raw_sql_yardstick": reports_p, "raw_sql_counts_read": counts_p},
        "profile": {"mean_ms_per_query": steps, "cprofile_top": top},
        "python": platform.python_version(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
