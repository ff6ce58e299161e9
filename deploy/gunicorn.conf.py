"""Production gunicorn config: ``gunicorn -c deploy/gunicorn.conf.py deploy.wsgi``.

Everything comes from the environment, so one file serves the container, the
Kubernetes manifests and the benchmark (tests/benchmarks/bench_ingest.py):

GUNICORN_BIND          address to listen on; default ``0.0.0.0:$PORT`` (PORT defaults to 8000)
GUNICORN_WORKERS       worker processes; default 2 * CPU cores + 1
GUNICORN_THREADS       threads per worker; default 1 (the sync worker)
GUNICORN_WORKER_CLASS  default ``sync``, or ``gthread`` when GUNICORN_THREADS > 1
GUNICORN_WORKER_CONNECTIONS  gthread only: open connections per worker (default 1000)
GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE   seconds
GUNICORN_MAX_REQUESTS  recycle a worker after this many requests (0, the default: never); jittered by 10%
GUNICORN_BACKLOG       listen backlog
GUNICORN_PRELOAD       import the app once in the arbiter (default on)
GUNICORN_ACCESSLOG     a path, or ``-`` for stdout; unset (default): no access log on the hot path
LOG_LEVEL              gunicorn's error log level (default ``warning``)

Why sync workers, 2n+1 of them: an ingest request is CPU-bound Python (parse,
validate) around two waits (PostgreSQL claim and counters, PostgreSQL commit,
durable before the 200). Single-threaded processes overlap those waits across
processes without fighting over a GIL, and every request is accepted by an
idle worker, so load spreads evenly. Measured on 2 cores
(tests/benchmarks/bench_ingest.py), 5 sync workers beat gthread (3x4, 4x2,
2x4) on throughput, latency and CPU per batch: with threads, a process's
threads queue on its GIL behind whichever one the OS preempted, and a handful
of keep-alive connections can pile onto one worker for their lifetime. The
sync worker closes the connection after each response: run it behind a
buffering reverse proxy (nginx, the ingress), which keeps client connections
alive and shields workers from slow clients. Choose gthread
(GUNICORN_THREADS > 1) only when clients must reach gunicorn directly with
keep-alive.

Each worker (each thread, with gthread) keeps its own PostgreSQL connection
open (``CONN_MAX_AGE``): ``workers * threads`` connections per instance, to
keep well below the server's ``max_connections``, with room for Celery and the
roll-up.
"""

import gc
import os

_cores = os.cpu_count() or 1


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{_int('PORT', 8000)}"
workers = _int("GUNICORN_WORKERS", 2 * _cores + 1)
threads = _int("GUNICORN_THREADS", 1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or ("gthread" if threads > 1 else "sync")
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 1000)
backlog = _int("GUNICORN_BACKLOG", 2048)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
preload_app = os.environ.get("GUNICORN_PRELOAD", "1").strip().lower() in {"1", "true", "yes", "on"}
# The heartbeat file is touched on every loop: keep it in memory, not on disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "warning").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "privtel"


def when_ready(server):
    """In the arbiter, once the app is loaded: finish importing, then freeze the heap before forking.

    Django imports the URLconf, and with it every view module, on the first
    request; doing it here means workers start warm and share those pages.
    ``gc.freeze()`` moves everything imported so far out of the collector's
    reach, so the workers' full collections only walk what each request made
    (and copy-on-write pages stay shared). Nothing here opens a connection:
    databases, Redis and the metric catalog are all opened lazily, per worker.
    """
    if not preload_app:
        return
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and the views
    gc.collect()
    gc.freeze()
