"""Benchmark 1 (issue 2): ingest over HTTP under gunicorn, durable when acknowledged.

    .venv/bin/python tests/benchmarks/bench_ingest.py [--repeat 3] [--duration 15] [--workers N ...]

    BENCH_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/privtel_bench_ingest
    BENCH_REDIS_URL     default redis://127.0.0.1:6379/13 (flushed before and after: use a database of its own)

Sets up its own PostgreSQL database (any name starting ``privtel_bench``; it is
dropped and made fresh), migrates it, creates an ingest key and a k-RR metric
with contribution bound 100, and serves the production WSGI app with the
production gunicorn config (deploy/gunicorn.conf.py) on a free local port. wrk
(Debian package ``wrk``) then drives, with the same connections and the same
request shape, first a bare Django view (``POST /bare``, added only by
tests/benchmarks/bench_settings.py) and then ``POST /api/v1/reports``: batches
of 100 reports, each with a fresh batch_id and client_id. Every run is preceded
by a warm-up that is not measured. With ``--repeat``, the (bare, ingest) round
is repeated and the round with the median ingest rate is reported; every round
is listed, with the share of the machine's CPU that none of the benchmark's
processes used (``foreign_cpu_pct``: other tenants of a shared machine).
``cpu_us_per_request`` splits each request's CPU between gunicorn, the
PostgreSQL backends, Redis and wrk.

Last, after the database check, ``storage_floor`` measures ``POST
/storage-floor`` (tests/benchmarks/bench_urls.py) against a fresh bare run: the
ingest path's durable write alone (claim a batch id, COPY 100 fixed rows,
commit) with nothing parsed, validated or limited. Its ratio to the bare view
is the most any endpoint storing one row per report can reach on this stack.
``storage_floor.one_row_per_batch`` does the same with ``POST
/storage-floor-block``, which stores the batch as one packed row instead.

A 200 means committed: PostgreSQL runs with ``synchronous_commit`` on and
``fsync`` on, both read back and printed. After the run the script checks that
every answer accepted all its reports, that every acknowledged batch_id is in
the database, and that the report rows equal the accepted reports (the
acknowledged ones plus the batches that committed while wrk was cutting off
its last in-flight requests, which it counts separately).

Prints one JSON line. Not collected by pytest (no ``test_`` prefix).
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
BATCH_SIZE = 100
METRIC = "bench_krr"
DOMAIN_SIZE = 20
TARGET_REPORTS_PER_S = 80_000
TARGET_RATIO = 0.35


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recreate_database(url: str) -> None:
    import psycopg

    name = urlparse(url).path.lstrip("/")
    if not name.startswith("privtel_bench"):
        raise SystemExit(f"refusing to drop {name!r}: the benchmark database's name must start with privtel_bench")
    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(url: str) -> None:
    import psycopg

    name = urlparse(url).path.lstrip("/")
    assert name.startswith("privtel_bench")
    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setup_django(env: dict) -> tuple[str, str]:
    """Migrate, then create the ingest key and the metric; returns (api key, today)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from telemetry import services

    call_command("migrate", verbosity=0)
    from django.db import connection

    from tests.benchmarks.bench_urls import BLOCK_TABLE

    with connection.cursor() as cursor:
        cursor.execute(BLOCK_TABLE)
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
    """Who spent the machine's CPU during a run: gunicorn, PostgreSQL backends, Redis, wrk, anything else.

    PostgreSQL backends come and go (Django reconnects after CONN_MAX_AGE), so
    they are sampled every half second while a run lasts, and a backend that
    exits counts with its last sample.
    """

    def __init__(self, gunicorn_pid: int, database_url: str, redis_client) -> None:
        import psycopg

        self._gunicorn_pid, self._redis = gunicorn_pid, redis_client
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

    def _redis_cpu(self) -> float:
        info = self._redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def _snapshot(self) -> dict:
        self._sample_backends()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "gunicorn": sum(_proc_cpu(pid) for pid in _tree(self._gunicorn_pid)),
            "postgres": dict(self._backends),
            "redis": self._redis_cpu(),
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

    @staticmethod
    def per_request(before: dict, after: dict, requests: int, seconds: float) -> dict:
        postgres = sum(cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items())
        spent = {name: after[name] - before[name] for name in ("gunicorn", "redis", "wrk", "machine")}
        spent["postgres"] = postgres
        known = spent["gunicorn"] + spent["postgres"] + spent["redis"] + spent["wrk"]
        per = {name: round(spent[name] / requests * 1e6) for name in ("gunicorn", "postgres", "redis", "wrk")}
        # the rest: kernel time not charged to a process (network softirqs, the WAL flush) and other tenants
        per["other"] = round((spent["machine"] - known) / requests * 1e6)
        capacity = seconds * (os.cpu_count() or 1)
        per["machine_busy_pct"] = round(100 * spent["machine"] / capacity, 1)
        # the machine's CPU that none of the benchmark's processes used: other tenants, unattributed kernel work
        per["foreign_cpu_pct"] = round(100 * max(0.0, spent["machine"] - known) / capacity, 1)
        return per

    def close(self) -> None:
        self._db.close()


def _wrk(base: str, mode: str, path: str, api_key: str, day: str, duration: float, connections: int,
         threads: int, workdir: Path, meter: _CpuMeter | None = None) -> dict:
    out = workdir / f"wrk-{mode}-{secrets.token_hex(4)}.json"
    run_id = secrets.token_hex(4)  # 8 hex digits: the first group of every batch_id in this run
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
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
    if meter:
        result["cpu_us_per_request"] = meter.per_request(before, after, max(1, result["requests"]), elapsed)
    return result


def _measure(base: str, mode: str, path: str, api_key: str, day: str, args, workdir: Path,
             meter: _CpuMeter) -> dict:
    """A warm-up, then a measured wrk run."""
    _wrk(base, mode, path, api_key, day, args.warmup, args.connections, args.wrk_threads, workdir)
    return _wrk(base, mode, path, api_key, day, args.duration, args.connections, args.wrk_threads, workdir, meter)


def _rate(result: dict) -> float:
    return result["status_200"] / (result["duration_us"] / 1e6)


def _check_database(url: str) -> dict:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM telemetry_report").fetchone()[0]
        batches = dict(conn.execute(
            "SELECT batch_id::text, item_count - jsonb_array_length(rejections) FROM telemetry_batch"
        ).fetchall())
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync')"
        ).fetchall())
        client_columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'telemetry_report'"
            " AND column_name LIKE '%%client%%'"
        ).fetchone()[0]
    return {"rows": rows, "batches": batches, "settings": settings, "client_columns": client_columns}


def _summary(bare: dict, ingest: dict) -> dict:
    return {
        "reports_per_s": round(_rate(ingest) * BATCH_SIZE),
        "ratio_to_bare": round(_rate(ingest) / _rate(bare), 3),
        "bare_requests_per_s": round(_rate(bare), 1),
        "foreign_cpu_pct": ingest["cpu_us_per_request"]["foreign_cpu_pct"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per endpoint and round")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of unmeasured warm-up per endpoint")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of (bare, ingest) on the same server; the round with the median ingest rate "
                             "is reported (on a shared machine, other tenants' load comes and goes)")
    parser.add_argument("--connections", type=int, default=None,
                        help="wrk connections (default: 2 per gunicorn thread, so every thread has one queued)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="GUNICORN_WORKERS (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="GUNICORN_THREADS (default: the config's)")
    parser.add_argument("--worker-class", default=None, help="GUNICORN_WORKER_CLASS (default: the config's)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    if not urlparse(database_url).path.lstrip("/").startswith("privtel_bench"):
        database_url = DEFAULT_DATABASE_URL
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)

    import redis

    redis_client = redis.Redis.from_url(redis_url)
    redis_client.flushdb()  # the benchmark's own Redis database: counters of past runs would reject
    _recreate_database(database_url)

    port = _free_port()
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.benchmarks.bench_settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        "AUDIT_KEY": os.environ.get("AUDIT_KEY") or secrets.token_hex(32),
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
        # and stay there for the run; many real clients average out. Same setting for both endpoints.
        env["GUNICORN_WORKER_CONNECTIONS"] = os.environ["GUNICORN_WORKER_CONNECTIONS"] = str(
            -(-args.connections // config["workers"]))
        config = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))

    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "deploy.wsgi:application"],
        cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    ingest_runs = []  # every wrk run against the ingest endpoint, warm-ups included: all are checked
    rounds = []  # (bare, ingest) measured runs
    try:
        _wait_ready(base, gunicorn)
        meter = _CpuMeter(gunicorn.pid, database_url, redis_client)
        for _ in range(max(1, args.repeat)):
            measured = {}
            for mode, path in (("bare", "/bare"), ("ingest", "/api/v1/reports")):
                warm = _wrk(base, mode, path, api_key, day, args.warmup, args.connections, args.wrk_threads, workdir)
                measured[mode] = _wrk(base, mode, path, api_key, day, args.duration, args.connections,
                                      args.wrk_threads, workdir, meter)
                if mode == "ingest":
                    ingest_runs += [warm, measured[mode]]
            rounds.append((measured["bare"], measured["ingest"]))
        db = _check_database(database_url)  # before the floor, whose batches are not the ingest endpoint's
        floor_bare, floor, block_floor = (_measure(base, "bare", path, api_key, day, args, workdir, meter)
                                          for path in ("/bare", "/storage-floor", "/storage-floor-block"))
        meter.close()
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    acked_ids = [i for run in ingest_runs for i in run["acked_batch_ids"]]
    acked_accepted = sum(run["accepted"] for run in ingest_runs)
    unacked = set(db["batches"]) - set(acked_ids)
    unacked_accepted = sum(db["batches"][i] for i in unacked)
    acceptance = {
        "acknowledged_batches": len(acked_ids),
        "acknowledged_reports_accepted": acked_accepted,
        "acknowledged_reports_rejected": sum(run["rejected"] for run in ingest_runs),
        "non_200": sum(run["status_other"] for run in ingest_runs),
        "socket_errors": sum(sum(run["errors"].values()) for run in ingest_runs),
        "acknowledged_missing_in_db": len(set(acked_ids) - set(db["batches"])),
        # wrk stops mid-request: batches in flight then commit without anyone reading the 200
        "committed_unacknowledged_batches": len(unacked),
        "db_report_rows": db["rows"],
        "db_reports_accepted": sum(db["batches"].values()),
        "client_id_columns": db["client_columns"],
    }
    acceptance["ok"] = (
        acceptance["acknowledged_reports_rejected"] == 0
        and acceptance["non_200"] == 0
        and acked_accepted == BATCH_SIZE * len(acked_ids)
        and acceptance["acknowledged_missing_in_db"] == 0
        and len(unacked) <= args.connections * len(ingest_runs)
        and db["rows"] == acked_accepted + unacked_accepted == acceptance["db_reports_accepted"]
        and db["client_columns"] == 0
    )
    ordered = sorted(rounds, key=lambda pair: _rate(pair[1]))
    bare, ingest = ordered[(len(ordered) - 1) // 2]
    reports_per_s = _rate(ingest) * BATCH_SIZE
    ratio = _rate(ingest) / _rate(bare)
    durable = db["settings"].get("synchronous_commit") == "on" and db["settings"].get("fsync") == "on"
    result = {
        "benchmark": "ingest_http",
        "batch_size": BATCH_SIZE,
        "reports_per_s": round(reports_per_s),
        "batches_per_s": round(_rate(ingest), 1),
        "p50_ms": round(ingest["latency_us"]["p50"] / 1000, 2),
        "p99_ms": round(ingest["latency_us"]["p99"] / 1000, 2),
        "bare_requests_per_s": round(_rate(bare), 1),
        "bare_p50_ms": round(bare["latency_us"]["p50"] / 1000, 2),
        "bare_p99_ms": round(bare["latency_us"]["p99"] / 1000, 2),
        "ratio_to_bare": round(ratio, 3),
        "targets": {"reports_per_s": TARGET_REPORTS_PER_S, "ratio_to_bare": TARGET_RATIO},
        "meets_targets": reports_per_s >= TARGET_REPORTS_PER_S and ratio >= TARGET_RATIO,
        "durable": {**db["settings"], "ok": durable},
        "acceptance": acceptance,
        "load": {"connections": args.connections, "wrk_threads": args.wrk_threads, "duration_s": args.duration,
                 "warmup_s": args.warmup, "rounds": len(rounds)},
        "rounds": [_summary(b, i) for b, i in rounds],
        "gunicorn": {k: config[k] for k in ("worker_class", "workers", "threads", "worker_connections", "keepalive",
                                            "preload_app")},
        "cpu_us_per_request": {"bare": bare["cpu_us_per_request"], "ingest": ingest["cpu_us_per_request"]},
        # The durable write alone (tests/benchmarks/bench_urls.py): what one row per report costs before any
        # parsing, validation, limits or rendering. Measured right after its own bare run.
        "storage_floor": {
            "requests_per_s": round(_rate(floor), 1),
            "status_other": floor["status_other"],
            "ratio_to_bare": round(_rate(floor) / _rate(floor_bare), 3),
            "bare_requests_per_s": round(_rate(floor_bare), 1),
            "cpu_us_per_request": floor["cpu_us_per_request"],
            "one_row_per_batch": {
                "requests_per_s": round(_rate(block_floor), 1),
                "status_other": block_floor["status_other"],
                "ratio_to_bare": round(_rate(block_floor) / _rate(floor_bare), 3),
                "cpu_us_per_request": block_floor["cpu_us_per_request"],
            },
        },
        "cpu_count": os.cpu_count(),
    }
    redis_client.flushdb()
    if not args.keep:
        _drop_database(database_url)
    print(json.dumps(result))
    if not (acceptance["ok"] and durable):
        sys.exit(1)


if __name__ == "__main__":
    main()
