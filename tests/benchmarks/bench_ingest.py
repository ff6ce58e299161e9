"""Benchmark 1 (issues 2 and 8): ingest over HTTP under gunicorn, against a durable-write floor of the same run.

    .venv/bin/python tests/benchmarks/bench_ingest.py [--repeat 3] [--duration 10] [--warmup 3] [--workers N ...]

    BENCH_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/privtel_bench_ingest
                        (the name must start with privtel_bench: it is dropped, made fresh, and dropped at the end)
    BENCH_REDIS_URL     default redis://127.0.0.1:6379/13 (the settings require one; ingest never uses it,
                        and the run checks that no client id reached it)

Migrates its own database, creates an ingest key and a k-RR metric whose bound
m is the batch size (100), and serves the production WSGI app with the
production gunicorn config (deploy/gunicorn.conf.py) on a free local port. wrk
(Debian package ``wrk``) then drives, with the same connections and the same
request body, three endpoints of that one server (tests/benchmarks/bench_urls.py):

* ``POST /bare``: a bare Django view (requests/s);
* ``POST /durable-write-floor``: issue 8's floor: parse the batch, COPY one row
  per report into an unindexed table, commit; no claim, validation or limits;
* ``POST /api/v1/reports``: the ingest endpoint.

Every request is a batch of 100 reports of one metric and one day with a fresh
batch_id and a client_id of its own, so each client sends exactly its daily
caps (MAX_DAILY_CONTRIBUTIONS = 100, m = 100; checked at start-up) and the
limits drop nothing: every report answered ``accepted`` must be kept.

A round is (bare, floor, endpoint), each an unmeasured warm-up then a measured
run; with ``--repeat``, the round with the median endpoint rate is reported and
every round is listed with its own ratios. ``cpu_us_per_request`` splits each
request's CPU between gunicorn, the PostgreSQL backends and wrk; ``other`` is
the machine's remaining busy time (unattributed kernel work, and on a shared
machine other tenants: ``foreign_cpu_pct``).

A 200 means committed: PostgreSQL runs with ``synchronous_commit`` and
``fsync`` on, both read back and printed, and the floor's table is a logged one.
After the load, the acceptance check: every answer accepted all its reports,
every acknowledged batch_id is recorded, the roll-up
(``telemetry.rollup.advance_rollup``) then counts exactly the reports accepted
(``ObservedCounts`` plus whatever is still staged), and so do the limit
counters; wrk cuts off the requests in flight when a run ends, and those that
committed unread are recorded too, so they are counted separately. No
client id may be stored anywhere: no column is named for one, and no row of
any table (before and after the roll-up) nor any Redis key holds one. The
floor's table must hold at least 100 rows per acknowledged floor request.

Prints one JSON line; exits 1 if the acceptance check fails or the database is
not durable. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/privtel_bench_ingest"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
BENCH_DATABASE_PREFIX = "privtel_bench"
BATCH_SIZE = 100
METRIC = "bench_krr"
DOMAIN_SIZE = 20
TARGET_REPORTS_PER_S = 80_000
TARGET_RATIO_TO_FLOOR = 0.8
ENDPOINTS = (("bare", "/bare"), ("floor", "/durable-write-floor"), ("ingest", "/api/v1/reports"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_url(url: str) -> tuple[str, str]:
    """(the maintenance database's URL, the benchmark database's name), refusing any other name."""
    name = urlparse(url).path.lstrip("/")
    if not name.startswith(BENCH_DATABASE_PREFIX):
        raise SystemExit(f"refusing to use {name!r}: the benchmark database's name must start with "
                         f"{BENCH_DATABASE_PREFIX} (it is dropped and made fresh)")
    return urlunparse(urlparse(url)._replace(path="/postgres")), name


def _recreate_database(url: str) -> None:
    import psycopg

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(url: str) -> None:
    import psycopg

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setup_django(env: dict) -> tuple[str, str]:
    """Migrate, create the floor's table, the ingest key and the metric; returns (api key, today)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, connections

    from telemetry import services
    from tests.benchmarks.bench_urls import FLOOR_TABLE_SQL

    # One batch per client, so a client's reports are the batch size: within every bound, nothing dropped.
    if not BATCH_SIZE <= min(settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"], settings.PRIVACY["MAX_BATCH_SIZE"]):
        raise SystemExit(f"a batch of {BATCH_SIZE} exceeds MAX_DAILY_CONTRIBUTIONS or MAX_BATCH_SIZE: "
                         "the limits would drop acknowledged reports")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(FLOOR_TABLE_SQL)
    _, api_key = services.create_ingest_key(app="bench")
    services.create_metric(name=METRIC, domain=[f"v{i}" for i in range(DOMAIN_SIZE)], epsilon=2.0,
                           protocol="krr", contribution_bound=BATCH_SIZE)
    connections.close_all()
    return api_key, datetime.now(timezone.utc).date().isoformat()


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not become ready")


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / _TICK


class _CpuMeter:
    """Who spent the machine's CPU during a run: gunicorn, PostgreSQL backends, wrk, anything else.

    PostgreSQL backends come and go (Django reconnects after CONN_MAX_AGE), so
    they are sampled every half second while a run lasts, and a backend that
    exits counts with its last sample.
    """

    _PARTS = ("gunicorn", "postgres", "wrk")

    def __init__(self, gunicorn_pid: int, database_url: str) -> None:
        import psycopg

        self._gunicorn_pid = gunicorn_pid
        self._db = psycopg.connect(database_url, autocommit=True)
        self._name = urlparse(database_url).path.lstrip("/")
        self._backends: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample_backends(self) -> None:
        for (pid,) in self._db.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [self._name]):
            cpu = _proc_cpu(pid)
            if cpu:
                self._backends[pid] = max(cpu, self._backends.get(pid, 0.0))
        for pid in list(self._backends):  # a backend that is gone keeps its last sample
            cpu = _proc_cpu(pid)
            if cpu:
                self._backends[pid] = max(cpu, self._backends[pid])

    def _snapshot(self) -> dict:
        self._sample_backends()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "gunicorn": sum(_proc_cpu(pid) for pid in _tree(self._gunicorn_pid)),
            "postgres": dict(self._backends),
            "wrk": usage.ru_utime + usage.ru_stime,
            "machine": _machine_busy(),
        }

    def start(self) -> dict:
        before = self._snapshot()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.5):
                self._sample_backends()

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()
        return before

    def stop(self) -> dict:
        self._stop.set()
        self._sampler.join()
        return self._snapshot()

    @classmethod
    def per_request(cls, before: dict, after: dict, requests: int, seconds: float) -> dict:
        spent = {name: after[name] - before[name] for name in ("gunicorn", "wrk", "machine")}
        spent["postgres"] = sum(cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items())
        known = sum(spent[name] for name in cls._PARTS)
        per = {name: round(spent[name] / requests * 1e6) for name in cls._PARTS}
        # the rest: kernel time not charged to a process (network softirqs, the WAL flush) and other tenants
        per["other"] = round((spent["machine"] - known) / requests * 1e6)
        capacity = seconds * (os.cpu_count() or 1)
        per["machine_busy_pct"] = round(100 * spent["machine"] / capacity, 1)
        # the machine's CPU that none of the benchmark's processes used: other tenants, unattributed kernel work
        per["foreign_cpu_pct"] = round(100 * max(0.0, spent["machine"] - known) / capacity, 1)
        return per

    def close(self) -> None:
        self._db.close()


def _wrk(base: str, mode: str, path: str, api_key: str, day: str, duration: float, args, workdir: Path,
         meter: _CpuMeter | None = None) -> dict:
    out = workdir / f"wrk-{mode}-{secrets.token_hex(4)}.json"
    run_id = secrets.token_hex(4)  # 8 hex digits: the first group of every batch_id of this run
    command = [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
        "-s", str(HERE / "ingest.lua"), base + path, "--",
        mode, path, api_key, METRIC, day, run_id, str(out), str(DOMAIN_SIZE),
    ]
    before = meter.start() if meter else None
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = meter.stop() if meter else None
    if completed.returncode != 0 or not out.exists():
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    result = json.loads(out.read_text())
    result["run_id"] = run_id
    if meter:
        result["cpu_us_per_request"] = meter.per_request(before, after, max(1, result["requests"]), elapsed)
    return result


def _rate(result: dict) -> float:
    """Answered 200s per second."""
    return result["status_200"] / (result["duration_us"] / 1e6)


def _latency_ms(result: dict) -> dict:
    return {"p50": round(result["latency_us"]["p50"] / 1000, 2), "p99": round(result["latency_us"]["p99"] / 1000, 2)}


def _take_floor_rows(database_url: str) -> int:
    """The floor table's rows, then empty it (so that its size and vacuum stay out of later runs)."""
    import psycopg

    from tests.benchmarks.bench_urls import FLOOR_TABLE

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {FLOOR_TABLE}").fetchone()[0]
        conn.execute(f"TRUNCATE {FLOOR_TABLE}")
    return rows


def _client_id_patterns(run_ids: list[str]) -> list[str]:
    """LIKE patterns for the client ids of these runs, as text and as bytea's hex."""
    prefixes = [f"c-{run_id}" for run_id in run_ids]
    return [f"%{p}%" for p in prefixes] + [f"%{p.encode().hex()}%" for p in prefixes]


def _client_id_hits(patterns: list[str]) -> dict[str, int]:
    """Rows, per table of the database, whose text (every column, bytea as hex) holds a client id."""
    from django.db import connection

    hits = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM {quoted} AS t WHERE t::text LIKE ANY(%s)", [patterns])
            if found := cursor.fetchone()[0]:
                hits[table] = found
    return hits


def _staged_reports() -> int:
    """Reports still staged (packed records of telemetry.staging), over every metric."""
    from django.db import connection

    from telemetry import staging
    from telemetry.catalog import catalog

    with connection.cursor() as cursor:
        cursor.execute("SELECT metric_id, sum(length(payload)) FROM telemetry_stagedreports GROUP BY metric_id")
        sizes = cursor.fetchall()
    return sum(int(size) // staging.record_dtype(catalog.by_id(metric_id)).itemsize for metric_id, size in sizes)


def _check_database(ingest_run_ids: list[str]) -> dict:
    """After the load: the durability settings, the batch records, the roll-up's count and the client-id scans."""
    from django.db import connection, connections
    from django.db.models import Sum

    from telemetry.models import Batch, ClientCounter, ObservedCounts
    from telemetry.rollup import advance_rollup
    from tests.benchmarks.bench_urls import FLOOR_TABLE

    with connection.cursor() as cursor:
        cursor.execute("SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync')")
        settings = dict(cursor.fetchall())
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", [FLOOR_TABLE])
        settings["floor_table_logged"] = cursor.fetchone()[0] == "p"
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [FLOOR_TABLE])
        settings["floor_table_indexes"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
                       " AND column_name LIKE %s", ["%client%"])
        client_columns = cursor.fetchone()[0]
    batches = {str(batch_id): count - len(rejections)
               for batch_id, count, rejections in Batch.objects.values_list("batch_id", "item_count", "rejections")}
    patterns = _client_id_patterns(ingest_run_ids)
    hits_staged = _client_id_hits(patterns)  # while the reports are staged
    staged_before = _staged_reports()
    started = time.monotonic()
    advance_rollup()
    rollup_s = time.monotonic() - started
    hits_counted = _client_id_hits(patterns)  # once they are counts
    result = {
        "settings": settings,
        "client_columns": client_columns,
        "batches": batches,
        "staged_before_rollup": staged_before,
        "rollup_s": round(rollup_s, 3),
        "counted": ObservedCounts.objects.aggregate(total=Sum("reports"))["total"] or 0,
        "staged_after_rollup": _staged_reports(),
        # what the limits counted as kept: each kept report is in its client's daily total and in its
        # metric's count (one metric per client in this load), so half the sum of all counters
        "counter_total": (ClientCounter.objects.aggregate(total=Sum("count"))["total"] or 0) // 2,
        "client_id_hits": {table: hits_staged.get(table, 0) + hits_counted.get(table, 0)
                           for table in hits_staged.keys() | hits_counted.keys()},
    }
    connections.close_all()
    return result


def _redis_keys_with_client_id(redis_url: str, run_ids: list[str]) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for run_id in run_ids for _ in client.scan_iter(match=f"*c-{run_id}*", count=1000))
    finally:
        client.close()


def _acceptance(ingest_runs: list[dict], floor_checks: list[dict], db: dict, redis_hits: int, args) -> dict:
    acked_ids = [i for run in ingest_runs for i in run["acked_batch_ids"]]
    acked_accepted = sum(run["accepted"] for run in ingest_runs)
    unacked = set(db["batches"]) - set(acked_ids)
    unacked_accepted = sum(db["batches"][i] for i in unacked)
    kept = db["counted"] + db["staged_after_rollup"]
    acceptance = {
        "acknowledged_batches": len(acked_ids),
        "acknowledged_reports_accepted": acked_accepted,
        "acknowledged_reports_rejected": sum(run["rejected"] for run in ingest_runs),
        "non_200": sum(run["status_other"] for run in ingest_runs),
        "socket_errors": sum(sum(run["errors"].values()) for run in ingest_runs),
        "acknowledged_missing_in_db": len(set(acked_ids) - set(db["batches"])),
        # wrk stops mid-request: batches in flight then commit without anyone reading the 200
        "committed_unacknowledged_batches": len(unacked),
        "committed_unacknowledged_reports": unacked_accepted,
        "staged_reports_before_rollup": db["staged_before_rollup"],
        "rollup_s": db["rollup_s"],
        "counted_reports": db["counted"],
        "staged_reports_after_rollup": db["staged_after_rollup"],
        "kept_reports": kept,
        "limit_counter_reports": db["counter_total"],
        "client_id_columns": db["client_columns"],
        "client_id_rows": db["client_id_hits"],
        "redis_keys_with_client_id": redis_hits,
        "floor": {
            "acknowledged_reports": BATCH_SIZE * sum(check["acknowledged"] for check in floor_checks),
            "rows_kept": sum(check["rows"] for check in floor_checks),
            "non_200": sum(check["non_200"] for check in floor_checks),
        },
    }
    floor = acceptance["floor"]
    acceptance["ok"] = (
        acceptance["acknowledged_reports_rejected"] == 0
        and acceptance["non_200"] == 0
        and acked_accepted == BATCH_SIZE * len(acked_ids)
        and acceptance["acknowledged_missing_in_db"] == 0
        and len(unacked) <= args.connections * len(ingest_runs)
        # every report acknowledged (or committed unread) is counted, none twice, none dropped by the limits
        and kept == acked_accepted + unacked_accepted == db["staged_before_rollup"] == db["counter_total"]
        and db["staged_after_rollup"] == 0
        and db["client_columns"] == 0
        and not db["client_id_hits"]
        and redis_hits == 0
        and floor["non_200"] == 0
        and floor["acknowledged_reports"] <= floor["rows_kept"]
        <= floor["acknowledged_reports"] + BATCH_SIZE * args.connections * sum(check["runs"] for check in floor_checks)
    )
    return acceptance


def _round_summary(measured: dict) -> dict:
    bare, floor, ingest = (_rate(measured[mode]) for mode, _ in ENDPOINTS)
    return {
        "reports_per_s": round(ingest * BATCH_SIZE),
        "floor_reports_per_s": round(floor * BATCH_SIZE),
        "bare_requests_per_s": round(bare, 1),
        "ratio_to_floor": round(ingest / floor, 3),
        "ratio_to_bare": round(ingest / bare, 3),
        "floor_ratio_to_bare": round(floor / bare, 3),
        "foreign_cpu_pct": {mode: measured[mode]["cpu_us_per_request"]["foreign_cpu_pct"] for mode, _ in ENDPOINTS},
    }


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per endpoint and round")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of unmeasured warm-up per endpoint and round")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of (bare, floor, endpoint) on the same server; the round with the median "
                             "endpoint rate is reported (on a shared machine, other tenants' load comes and goes)")
    parser.add_argument("--connections", type=int, default=None,
                        help="wrk connections (default: 2 per gunicorn thread, so every thread has one queued)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="GUNICORN_WORKERS (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="GUNICORN_THREADS (default: the config's)")
    parser.add_argument("--worker-class", default=None, help="GUNICORN_WORKER_CLASS (default: the config's)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    return parser.parse_args()


def _run(args: argparse.Namespace, database_url: str, redis_url: str) -> dict:
    """Set up, serve, load the three endpoints, check; the result line."""
    port = _free_port()
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.benchmarks.bench_settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        "AUDIT_KEY": os.environ.get("AUDIT_KEY") or secrets.token_hex(32),
        "LOG_SIGNING_KEY": os.environ.get("LOG_SIGNING_KEY") or secrets.token_hex(32),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "PYTHONPATH": str(ROOT),
    }
    for option, name in ((args.workers, "GUNICORN_WORKERS"), (args.threads, "GUNICORN_THREADS"),
                         (args.worker_class, "GUNICORN_WORKER_CLASS")):
        if option is not None:
            env[name] = str(option)
    api_key, day = _setup_django(env)
    config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))  # as gunicorn will read it, under env
    if args.connections is None:
        args.connections = 2 * config["workers"] * config["threads"]
    if config["worker_class"] == "gthread" and "GUNICORN_WORKER_CONNECTIONS" not in os.environ:
        # wrk's few keep-alive connections would otherwise pile onto whichever worker won the accept race
        # and stay there for the run; many real clients average out. Same setting for every endpoint.
        env["GUNICORN_WORKER_CONNECTIONS"] = os.environ["GUNICORN_WORKER_CONNECTIONS"] = str(
            -(-args.connections // config["workers"]))
        config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))

    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "deploy.wsgi:application"],
        cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    ingest_runs = []  # every wrk run against the endpoint, warm-ups included: all are checked
    floor_checks = []  # per round: the floor's runs, acknowledged requests (warm-up included) and rows kept
    rounds = []  # {mode: measured run}
    try:
        _wait_ready(base, gunicorn)
        meter = _CpuMeter(gunicorn.pid, database_url)
        for _ in range(max(1, args.repeat)):
            measured = {}
            for mode, path in ENDPOINTS:
                warm = _wrk(base, mode, path, api_key, day, args.warmup, args, workdir)
                measured[mode] = _wrk(base, mode, path, api_key, day, args.duration, args, workdir, meter)
                if mode == "ingest":
                    ingest_runs += [warm, measured[mode]]
                if mode == "floor":
                    floor_checks.append({"runs": 2, "acknowledged": warm["status_200"] + measured[mode]["status_200"],
                                         "non_200": warm["status_other"] + measured[mode]["status_other"],
                                         "rows": _take_floor_rows(database_url)})
            rounds.append(measured)
        meter.close()
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    ingest_run_ids = [run["run_id"] for run in ingest_runs]
    db = _check_database(ingest_run_ids)
    acceptance = _acceptance(ingest_runs, floor_checks, db, _redis_keys_with_client_id(redis_url, ingest_run_ids),
                             args)
    measured = sorted(rounds, key=lambda r: _rate(r["ingest"]))[(len(rounds) - 1) // 2]
    summary = _round_summary(measured)
    durable = (db["settings"].get("synchronous_commit") == "on" and db["settings"].get("fsync") == "on"
               and db["settings"]["floor_table_logged"])
    result = {
        "benchmark": "ingest_http",
        "batch_size": BATCH_SIZE,
        "reports_per_s": summary["reports_per_s"],
        "floor_reports_per_s": summary["floor_reports_per_s"],
        "ratio_to_floor": summary["ratio_to_floor"],
        "ratio_to_bare": summary["ratio_to_bare"],
        "floor_ratio_to_bare": summary["floor_ratio_to_bare"],
        "bare_requests_per_s": summary["bare_requests_per_s"],
        "latency_ms": {mode: _latency_ms(measured[mode]) for mode, _ in ENDPOINTS},
        "targets": {"reports_per_s": TARGET_REPORTS_PER_S, "ratio_to_floor": TARGET_RATIO_TO_FLOOR},
        "meets_targets": (summary["reports_per_s"] >= TARGET_REPORTS_PER_S
                          and summary["ratio_to_floor"] >= TARGET_RATIO_TO_FLOOR and acceptance["ok"]),
        "durable": {**db["settings"], "ok": durable},
        "acceptance": acceptance,
        "load": {"connections": args.connections, "wrk_threads": args.wrk_threads, "duration_s": args.duration,
                 "warmup_s": args.warmup, "rounds": len(rounds),
                 "clients": "one client_id per batch; each sends its daily caps exactly (100 reports, m = 100)"},
        "rounds": [_round_summary(r) for r in rounds],
        "gunicorn": {k: config[k] for k in ("worker_class", "workers", "threads", "worker_connections", "keepalive",
                                            "preload_app")},
        "cpu_us_per_request": {mode: measured[mode]["cpu_us_per_request"] for mode, _ in ENDPOINTS},
        "cpu_count": os.cpu_count(),
    }
    return result


def main() -> None:
    args = _parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    _recreate_database(database_url)
    try:
        result = _run(args, database_url, redis_url)
    finally:
        if not args.keep:
            _drop_database(database_url)
    print(json.dumps(result))
    if not (result["acceptance"]["ok"] and result["durable"]["ok"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
