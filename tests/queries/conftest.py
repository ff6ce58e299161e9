"""Fixtures for the central-DP query tests: a short region axis, users, metrics, data, an API client.

Everything here is reached through fixtures (tests/ is not a package): ``q`` is a
small toolbox object with the helpers the tests share.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
from rest_framework.test import APIClient

REGIONS = ["DE", "US"]
QUERIES_URL = "/api/v1/queries"


@pytest.fixture(autouse=True)
def _short_region_axis(settings):
    """Keep grids small: the region axis is ("", "DE", "US")."""
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(REGIONS)}


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


class Toolbox:
    """Helpers shared by the query tests."""

    regions = tuple(REGIONS)
    axis = ("",) + tuple(sorted(REGIONS))  # the grid's region axis, as telemetry.regions.region_axis() builds it

    # --- time ------------------------------------------------------------------
    @staticmethod
    def today() -> date:
        return utc_today()

    @staticmethod
    def day(offset: int) -> date:
        return utc_today() + timedelta(days=offset)

    # --- users ---------------------------------------------------------------------
    @staticmethod
    def user(username: str, role: str = "analyst"):
        from telemetry.services import create_user

        return create_user(username=username, role=role)

    @staticmethod
    def client(token: str | None = None, *, api_key: str | None = None, raise_errors: bool = True) -> APIClient:
        """An API client; with ``raise_errors=False`` a server error is a 500 response, not an exception."""
        client = APIClient(raise_request_exception=raise_errors)
        if token is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        elif api_key is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
        return client

    @staticmethod
    def set_budget(user, daily_epsilon, composition: str = "pure", delta=None):
        from decimal import Decimal

        from accounting.services.policies import set_analyst_budget
        from privacy.epsilon import to_micro

        return set_analyst_budget(username=user.username, daily_epsilon_micro=to_micro(str(daily_epsilon)),
                                  composition=composition, delta=None if delta is None else Decimal(str(delta)))

    @staticmethod
    def set_cap(metric, lifetime_epsilon):
        from accounting.services.policies import set_partition_cap

        from privacy.epsilon import to_micro

        return set_partition_cap(scope=f"metric:{metric.id}", lifetime_epsilon_micro=to_micro(str(lifetime_epsilon)))

    # --- metrics and data ---------------------------------------------------------
    @staticmethod
    def metric(name: str = "color", domain=("red", "green", "blue"), protocol: str = "krr", epsilon: float = 2.0,
               bound: int = 1):
        from telemetry.services import create_metric

        return create_metric(name=name, domain=list(domain), protocol=protocol, epsilon=epsilon,
                             contribution_bound=bound)

    @staticmethod
    def add_krr(metric, day: date, region: str, counts) -> list[int]:
        """Insert k-RR report rows: ``counts[v]`` reports of value index v. Returns their ids."""
        from telemetry.models import Report

        rows = [Report(metric_id=metric.id, day=day, region=region, value=v)
                for v, c in enumerate(counts) for _ in range(int(c))]
        return [r.id for r in Report.objects.bulk_create(rows)]

    @staticmethod
    def add_randomized(metric, day: date, region: str, true_values) -> np.ndarray:
        """Randomize true value indices with the metric's oracle, insert them, return their support counts."""
        from telemetry.catalog import catalog
        from telemetry.models import Report

        oracle = catalog.by_id(metric.id).oracle
        reports = oracle.randomize(np.asarray(true_values, dtype=np.int64))
        if oracle.name == "krr":
            rows = [Report(metric_id=metric.id, day=day, region=region, value=int(v)) for v in reports]
        else:
            rows = [Report(metric_id=metric.id, day=day, region=region, payload=p) for p in oracle.pack(reports)]
        Report.objects.bulk_create(rows)
        return oracle.support_counts(reports)

    # --- queries --------------------------------------------------------------------
    @staticmethod
    def body(metric, start: date, end: date | None = None, **extra) -> dict:
        name = metric if isinstance(metric, str) else metric.name
        end = start if end is None else end
        return {"metric": name, "start": start.isoformat(), "end": end.isoformat(), **extra}

    @staticmethod
    def post(client: APIClient, body):
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return client.post(QUERIES_URL, data=raw, content_type="application/json")

    @staticmethod
    def run(user, body: dict) -> dict:
        """The query service called directly (no HTTP), as a client would parse its JSON."""
        from telemetry.release.request import parse_query_request
        from telemetry.release.responses import dumps
        from telemetry.release.service import run_query

        return orjson.loads(dumps(run_query(user=user, request=parse_query_request(body))))

    @staticmethod
    def noisy(release) -> np.ndarray:
        """The release's stored noisy counts, flat, in grid order."""
        from telemetry.release.codec import unpack_counts

        blob = bytes(release.noisy_counts)
        return unpack_counts(blob, (len(blob) - 1) // blob[0])

    @staticmethod
    def ledger_micro(user=None, metric=None, **filters) -> int:
        """ε charged in the ledger, in µε: of one analyst, on one metric's partitions, or by other filters."""
        from accounting.models import LedgerEntry

        if user is not None:
            filters["spender"] = f"user:{user.pk}"
        entries = LedgerEntry.objects.filter(**filters)
        if metric is not None:
            scope = f"metric:{metric.pk}"
            entries = [e for e in entries if any(s == scope for s, _ in e.partitions)]
        return sum(entry.epsilon_micro for entry in entries)

    @staticmethod
    def counts() -> tuple[int, int, int]:
        """(ledger rows, releases, micro-ε spent in DailySpend): what a refused query must not change."""
        from django.db.models import Sum

        from accounting.models import DailySpend, LedgerEntry
        from telemetry.models import Release

        spent = DailySpend.objects.aggregate(s=Sum("spent_micro"))["s"] or 0
        return LedgerEntry.objects.count(), Release.objects.count(), spent


@pytest.fixture
def q() -> Toolbox:
    return Toolbox()


@pytest.fixture
def analyst(db, q):
    """(user, token) of the analyst 'ana' with the default policy."""
    return q.user("ana", "analyst")


@pytest.fixture
def admin(db, q):
    return q.user("root", "admin")


@pytest.fixture
def color(db, q):
    """A k-RR metric over red/green/blue, local ε 2, contribution bound 1 (Δ = 1)."""
    return q.metric()
