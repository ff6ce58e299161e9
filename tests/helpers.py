"""Helpers shared by every app's tests: time, users, metrics, reports, ingest and query calls.

One module, reached two ways: ``from helpers import post_batch, ...`` (tests/ is on
``sys.path`` through tests/conftest.py), or through the ``q`` fixture, which is this
module (``q.day(-1)``, ``q.post(client, body)``). The fixtures built on it (``analyst``,
``admin``, ``color``, ``key``, ...) are in tests/conftest.py.

Django models are imported inside the functions, so importing this module needs no
configured app registry.
"""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timedelta, timezone

import numpy as np
import orjson

REPORTS_URL = "/api/v1/reports"
QUERIES_URL = "/api/v1/queries"

# The short region axis the query tests set (tests/conftest.py: short_region_axis): grids stay small.
REGIONS = ("DE", "US")
axis = ("",) + tuple(sorted(REGIONS))  # the grid's region axis, as telemetry.regions.region_axis() builds it


# --- time ------------------------------------------------------------------------------------------


def today() -> date:
    """Today in UTC, the service's day."""
    return datetime.now(timezone.utc).date()


def day(offset: int) -> date:
    """Today (UTC) plus ``offset`` days."""
    return today() + timedelta(days=offset)


def day_str(offset: int = 0) -> str:
    """Today (UTC) plus ``offset`` days, as YYYY-MM-DD."""
    return day(offset).isoformat()


# --- users, keys, API clients ---------------------------------------------------------------------


def user(username: str, role: str = "analyst"):
    """(user, token) of a new user with one role."""
    from deploy.api.users.services import create_user

    return create_user(username=username, role=role)


def ingest_key(app: str = "test-app"):
    """(IngestKey, plaintext) of a new ingest key."""
    from telemetry.services import create_ingest_key

    return create_ingest_key(app=app)


def client(token: str | None = None, *, api_key: str | None = None, raise_errors: bool = True):
    """A DRF API client; with ``raise_errors=False`` a server error is a 500 response, not an exception."""
    from rest_framework.test import APIClient

    api = APIClient(raise_request_exception=raise_errors)
    if token is not None:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    elif api_key is not None:
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return api


# --- budgets --------------------------------------------------------------------------------------


def set_budget(user, daily_epsilon, composition: str = "pure", delta=None):
    from decimal import Decimal

    from accounting.services.policies import set_analyst_budget
    from privacy.epsilon import to_micro

    return set_analyst_budget(username=user.username, daily_epsilon_micro=to_micro(str(daily_epsilon)),
                              composition=composition, delta=None if delta is None else Decimal(str(delta)))


def set_cap(metric, lifetime_epsilon):
    from accounting.services.policies import set_partition_cap
    from privacy.epsilon import to_micro

    return set_partition_cap(scope=f"metric:{metric.id}", lifetime_epsilon_micro=to_micro(str(lifetime_epsilon)))


# --- metrics and stored data ----------------------------------------------------------------------


def metric(name: str = "color", domain=("red", "green", "blue"), protocol: str = "krr", epsilon: float = 2.0,
           bound: int | None = None, **extra):
    """A new metric; ``bound=None`` takes the default contribution bound (1)."""
    from telemetry.services import create_metric

    return create_metric(name=name, domain=list(domain), protocol=protocol, epsilon=epsilon,
                         contribution_bound=bound, **extra)


def stage(metric, rows, *, roll_up: bool = True) -> None:
    """Stage report rows ``(day, region, value, payload)`` of a metric as ingest does, then (by default)
    fold them into the counts with a roll-up, as the periodic task would."""
    from telemetry import staging
    from telemetry.catalog import catalog
    from telemetry.models import StagedReports
    from telemetry.rollup import advance_rollup

    spec = catalog.by_id(metric.id)
    StagedReports.objects.create(metric_id=metric.id, payload=staging.pack_rows(spec, [(metric.id, *r) for r in rows]))
    if roll_up:
        advance_rollup()


def add_krr(metric, day: date, region: str, counts, *, roll_up: bool = True) -> None:
    """k-RR reports, ``counts[v]`` of value index v, staged and (by default) rolled up."""
    stage(metric, [(day, region, v, None) for v, c in enumerate(counts) for _ in range(int(c))], roll_up=roll_up)


def add_randomized(metric, day: date, region: str, true_values, *, roll_up: bool = True) -> np.ndarray:
    """Randomize true value indices with the metric's oracle, stage them (and roll up); their support counts."""
    from telemetry.catalog import catalog

    oracle = catalog.by_id(metric.id).oracle
    reports = oracle.randomize(np.asarray(true_values, dtype=np.int64))
    if oracle.name == "krr":
        rows = [(day, region, int(v), None) for v in reports]
    else:
        rows = [(day, region, None, p) for p in oracle.pack(reports)]
    stage(metric, rows, roll_up=roll_up)
    return oracle.support_counts(reports)


def staged_reports(metric=None, **fields) -> list[tuple]:
    """The staged (not yet rolled-up) reports as (metric_id, day, region, value, payload) rows,
    optionally only those of ``metric`` and with the given field values (day=, region=, value=)."""
    from telemetry import staging
    from telemetry.catalog import catalog
    from telemetry.models import StagedReports

    names = ("metric_id", "day", "region", "value", "payload")
    rows = [row for staged in StagedReports.objects.all()
            for row in staging.unpack_rows(catalog.by_id(staged.metric_id), bytes(staged.payload))]
    return [row for row in rows if (metric is None or row[0] == metric.id)
            and all(row[names.index(name)] == value for name, value in fields.items())]


def row_counts() -> tuple[int, int]:
    """(stored batches, staged reports)."""
    from telemetry.models import Batch

    return Batch.objects.count(), len(staged_reports())


# --- ingest: POST /api/v1/reports -----------------------------------------------------------------


def new_batch_id() -> str:
    return str(uuid.uuid4())


def envelope(reports, *, client_id="client-1", batch_id=None) -> dict:
    return {"batch_id": batch_id or new_batch_id(), "client_id": client_id, "reports": reports}


def krr_item(metric="color", value="red", **extra) -> dict:
    return {"metric": metric, "value": value, "day": extra.pop("day", day_str()), **extra}


def post_raw(body: bytes | str, key: str | None, *, http_client=None):
    """POST a batch body as given, with the ingest key (none when ``key`` is None)."""
    from django.test import Client

    http_client = http_client or Client()
    headers = {} if key is None else {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    return http_client.post(REPORTS_URL, data=body, content_type="application/json", **headers)


def post_batch(body: dict, key: str | None, **kwargs):
    return post_raw(orjson.dumps(body), key, **kwargs)


def item_codes(response) -> list:
    """Per-item status: 'accepted' or the rejection code."""
    return [item["code"] if item["status"] == "rejected" else "accepted" for item in response.json()["items"]]


# --- queries: POST /api/v1/queries ----------------------------------------------------------------


def body(metric, start: date, end: date | None = None, **extra) -> dict:
    """A query body over [start, end] (one day when ``end`` is None)."""
    name = metric if isinstance(metric, str) else metric.name
    end = start if end is None else end
    return {"metric": name, "start": start.isoformat(), "end": end.isoformat(), **extra}


def post(api, body):
    """POST a query (a dict, or raw bytes as sent)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return api.post(QUERIES_URL, data=raw, content_type="application/json")


def run(user, body: dict) -> dict:
    """The query service called directly (no HTTP), as a client would parse its JSON."""
    from telemetry.release.request import parse_query_request
    from telemetry.release.responses import dumps
    from telemetry.release.service import run_query

    return orjson.loads(dumps(run_query(user=user, request=parse_query_request(body))))


def noisy(release) -> np.ndarray:
    """The release's stored noisy counts, flat, in grid order."""
    from telemetry.release.codec import unpack_counts

    blob = bytes(release.noisy_counts)
    return unpack_counts(blob, (len(blob) - 1) // blob[0])


def ledger_micro(user=None, metric=None, **filters) -> int:
    """ε charged in the ledger, in µε: of one analyst, on one metric's partitions, or by other filters."""
    from accounting.models import LedgerEntry

    if user is not None:
        filters["spender"] = f"user:{user.pk}"
    entries = LedgerEntry.objects.filter(**filters)
    if metric is not None:
        scope = f"metric:{metric.pk}"
        entries = [entry for entry in entries if any(s == scope for s, _ in entry.partitions)]
    return sum(entry.epsilon_micro for entry in entries)


def counts() -> tuple[int, int, int]:
    """(ledger rows, releases, micro-ε spent in DailySpend): what a refused query must not change."""
    from django.db.models import Sum

    from accounting.models import DailySpend, LedgerEntry
    from telemetry.models import Release

    spent = DailySpend.objects.aggregate(s=Sum("spent_micro"))["s"] or 0
    return LedgerEntry.objects.count(), Release.objects.count(), spent


# --- threads --------------------------------------------------------------------------------------


def run_threads(count, target):
    """Run target(i) in `count` threads released together; each closes its DB connections."""
    from django.db import connections

    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run_one(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as error:  # noqa: BLE001 - surfaced below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results
