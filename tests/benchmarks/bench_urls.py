"""The production URLs plus the two yardsticks of the ingest benchmark (tests/benchmarks/bench_ingest.py).

* ``POST /bare``: a bare Django view, the request in and a small JSON answer out.
* ``POST /durable-write-floor``: the durable-write floor of issue 8: parse the
  batch's JSON, COPY one row per report (its metric, value, day and region as
  sent) into an unindexed table, and commit; no claim, validation or limits.
  It runs on Django's connection through the same libpq path as ``POST
  /api/v1/reports`` (``deploy.api.db.LibpqSession``), in one transaction whose
  commit is flushed before the 200. What any endpoint that keeps every report
  durably costs at the least on this stack.

Both exist only under ``tests.benchmarks.bench_settings``, never in production:
the floor trusts its input (a report's fields go into COPY's text format
unescaped), which only the benchmark's fixed batches make safe.
"""

import orjson
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from deploy.api.db import COPY_IN, OK, LibpqSession
from deploy.urls import handler404, handler500  # noqa: F401

FLOOR_TABLE = "bench_floor_report"
# No index, no key, no constraint; autovacuum off so that vacuuming the floor's rows never runs
# during another endpoint's measurement (the benchmark truncates it after each floor run).
# A logged table: its rows are as durable as the endpoint's.
FLOOR_TABLE_SQL = (f"CREATE TABLE {FLOOR_TABLE} (metric text NOT NULL, value text NOT NULL, day date NOT NULL,"
                   " region text NOT NULL) WITH (autovacuum_enabled = false)")
_FLOOR_SQL = f"BEGIN; COPY {FLOOR_TABLE} (metric, value, day, region) FROM STDIN; COMMIT"
_OK_BODY = b'{"ok":true}'


@csrf_exempt
def bare(request):
    """A bare Django view: the same request in, a small JSON answer out, no work."""
    return HttpResponse(_OK_BODY, content_type="application/json")


@csrf_exempt
def durable_write_floor(request):
    """Parse the batch, COPY one row per report, commit: the floor of a durable ingest endpoint."""
    reports = orjson.loads(request.body)["reports"]
    rows = "".join([f"{r['metric']}\t{r['value']}\t{r['day']}\t{r.get('region', '')}\n" for r in reports])
    db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()
    session = LibpqSession(db)
    try:
        session.send(_FLOOR_SQL, OK, COPY_IN)  # BEGIN, then the server waits in the COPY
        session.require_commit(session.copy(rows.encode(), OK, OK))  # the rows, COPY's result, COMMIT's
    except BaseException:
        session.abort()
        raise
    return HttpResponse(_OK_BODY, content_type="application/json")


urlpatterns = [
    path("bare", bare),
    path("durable-write-floor", durable_write_floor),
    path("", include("deploy.urls")),
]
