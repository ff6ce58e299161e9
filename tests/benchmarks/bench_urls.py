"""The production URLs plus two yardsticks for the ingest benchmark.

* ``POST /bare``: a bare Django view, the request in and a small JSON answer out.
* ``POST /storage-floor``: the ingest path's durable write alone: claim a fresh
  batch id and COPY 100 fixed k-RR report rows in one transaction, through the
  same libpq path as ``POST /api/v1/reports``; nothing parsed, validated, limited
  or rendered. Its rate bounds any ingest endpoint that stores one row per
  report on this stack.
* ``POST /storage-floor-block``: the same claim, but the 100 reports go into
  one packed row of a scratch table (``bench_report_block``): the floor of a
  design that stores a batch as one columnar block.
"""

import uuid
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from deploy.api.db import OK, LibpqSession
from deploy.urls import handler404, handler500  # noqa: F401
from telemetry.catalog import catalog
from telemetry.ingest.libpq_store import LibpqStore, claim_statement
from telemetry.ingest.store import BatchHeader
from telemetry.models import IngestKey

FLOOR_METRIC = "bench_krr"  # tests/benchmarks/bench_ingest.py's metric
_FLOOR_REGIONS = ("US", "DE", "FR", "JP", "BR", "")


@csrf_exempt
def bare(request):
    """A bare Django view: the same request in, a small JSON answer out, no work."""
    return HttpResponse(b'{"ok":true}', content_type="application/json")


@lru_cache(maxsize=1)
def _floor_fixture(today) -> tuple[int, list[tuple]]:
    """The ingest key id and 100 rows shaped like the benchmark's batches (ingest.lua)."""
    metric_id = catalog.lookup(FLOOR_METRIC).id
    rows = [(metric_id, today, _FLOOR_REGIONS[i % 6], (i * 7) % 20, None) for i in range(1, 101)]
    return IngestKey.objects.order_by("id").values_list("id", flat=True).first(), rows


def _floor_request(request):
    """What both floors start with: the body read like the real endpoint, the fixture, an open connection."""
    request.body  # noqa: B018
    key_id, rows = _floor_fixture(datetime.now(timezone.utc).date())
    db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()
    return key_id, rows, db


@csrf_exempt
def storage_floor(request):
    key_id, rows, db = _floor_request(request)
    with LibpqStore(db, BatchHeader(uuid.uuid4(), key_id, "0" * 64, len(rows))) as store:
        store.claim([], has_rows=True)
        store.commit(rows, [])
    return HttpResponse(b'{"ok":true}', content_type="application/json")


# One packed row per batch instead of one row per report: the storage a batch
# would cost if reports were kept as columnar blocks (not what ships). bench_ingest.py creates it.
BLOCK_TABLE = ("CREATE TABLE bench_report_block"
               " (id bigserial PRIMARY KEY, day date NOT NULL, reports int NOT NULL, packed bytea NOT NULL)")
_BLOCK_SQL = "BEGIN; %s; INSERT INTO bench_report_block (day, reports, packed) VALUES ('%s', %d, '\\x%s'::bytea); COMMIT"


@csrf_exempt
def storage_floor_block(request):
    key_id, rows, db = _floor_request(request)
    packed = np.array([row[3] for row in rows], dtype="<i2").tobytes().hex()
    claim = claim_statement(BatchHeader(uuid.uuid4(), key_id, "0" * 64, len(rows)), "'[]'", datetime.now(timezone.utc))
    session = LibpqSession(db)
    try:
        session.require_commit(session.execute(_BLOCK_SQL % (claim, rows[0][1].isoformat(), len(rows), packed), OK))
    except BaseException:
        session.abort()
        raise
    return HttpResponse(b'{"ok":true}', content_type="application/json")


urlpatterns = [
    path("bare", bare),
    path("storage-floor", storage_floor),
    path("storage-floor-block", storage_floor_block),
    path("", include("deploy.urls")),
]
