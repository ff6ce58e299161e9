"""Per-client contribution limits, in the database, in the transaction that stores the batch.

Two bounds per client and *data day* (the report's ``day``, which is also the
privacy unit of central DP, docs/privacy.md):

* at most ``MAX_DAILY_CONTRIBUTIONS`` reports over all metrics;
* at most ``m`` = ``Metric.contribution_bound`` reports per metric.

Counters (``ClientCounter``) are keyed by ``HMAC-SHA256(secret of the day,
client_id NUL metric)``, cut to 64 bits. The secret (``DailySecret``) is made once per day in the database,
so every worker uses the same one; secrets and counters are deleted once their
day can no longer receive reports (:func:`expire`), after which nobody can link a
counter to a client id (invariant 1). Because the counters are written in the
batch's own transaction, a count exists exactly when its reports are stored: a
crash on either side of COMMIT can neither lose nor double a count, and losing
Redis cannot raise a bound (docs/operations.md).

The stores lock a batch's counters, read them, apply :func:`decide` and write
the increments back before they commit.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction

from telemetry.models import ClientCounter, DailySecret

ALL_METRICS = "*"


@dataclass(frozen=True)
class Contribution:
    """A (data day, metric) group of a batch's items, with the metric's bound m."""

    day: date
    metric_id: int
    bound: int


class _Secrets:
    """This process's copy of the daily secrets; the database holds the one true secret of each day."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_day: dict[date, bytes] = {}

    def of(self, day: date) -> bytes:
        secret = self._by_day.get(day)
        if secret is None:
            secret = self._load(day)
            with self._lock:
                if len(self._by_day) > 64:  # bounded memory in long-lived workers
                    self._by_day.clear()
                self._by_day[day] = secret
        return secret

    @staticmethod
    def _load(day: date) -> bytes:
        """The day's secret, made by whichever worker asks first (committed at once outside a transaction)."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO telemetry_dailysecret (day, secret) VALUES (%s, %s) ON CONFLICT (day) DO NOTHING",
                           [day, os.urandom(32)])
            cursor.execute("SELECT secret FROM telemetry_dailysecret WHERE day = %s", [day])
            return bytes(cursor.fetchone()[0])

    def forget(self) -> None:
        with self._lock:
            self._by_day.clear()


secrets = _Secrets()


@dataclass(frozen=True)
class CounterPlan:
    """The counters one batch touches: each group's daily-total key and metric key, and every key's day."""

    daily_keys: list[int]
    metric_keys: list[int]
    days: dict[int, date]


def counter_key(secret: bytes, client_id: str, metric: str) -> int:
    """A client's counter of one day and metric (or ALL_METRICS): 64 bits of an HMAC under the day's secret."""
    digest = hmac.digest(secret, f"{client_id}\0{metric}".encode(), "sha256")
    return int.from_bytes(digest[:8], "big", signed=True)


def plan(client_id: str, groups: list[Contribution]) -> CounterPlan:
    daily_of_day: dict[date, int] = {}
    daily_keys, metric_keys, days = [], [], {}
    for group in groups:
        secret = secrets.of(group.day)
        daily_key = daily_of_day.get(group.day)
        if daily_key is None:
            daily_key = daily_of_day[group.day] = counter_key(secret, client_id, ALL_METRICS)
        metric_key = counter_key(secret, client_id, str(group.metric_id))
        daily_keys.append(daily_key)
        metric_keys.append(metric_key)
        days[daily_key] = days[metric_key] = group.day
    return CounterPlan(daily_keys, metric_keys, days)


def if_all_admitted(counters: CounterPlan, groups: list[Contribution],
                    item_groups: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """(the increment of each counter if every item is admitted, each counter's bound)."""
    cap = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"]
    increments: dict[int, int] = {}
    bounds: dict[int, int] = {}
    for group, wanted in Counter(item_groups).items():
        metric_key, daily_key = counters.metric_keys[group], counters.daily_keys[group]
        increments[metric_key] = increments.get(metric_key, 0) + wanted
        increments[daily_key] = increments.get(daily_key, 0) + wanted
        bounds[metric_key], bounds[daily_key] = groups[group].bound, cap
    return increments, bounds


def _all_fit(counters: CounterPlan, groups: list[Contribution], requested: Counter, counts: dict[int, int],
             cap: int) -> dict[int, int] | None:
    """The increments when every item of the batch fits both bounds (the usual case), else None."""
    increments: dict[int, int] = {}
    for group, wanted in requested.items():
        metric_key, daily_key = counters.metric_keys[group], counters.daily_keys[group]
        if counts.get(metric_key, 0) + wanted > groups[group].bound:
            return None
        increments[metric_key] = wanted
        increments[daily_key] = increments.get(daily_key, 0) + wanted
    if any(counts.get(key, 0) + increments[key] > cap for key in set(counters.daily_keys)):
        return None
    return increments


def decide(counters: CounterPlan, groups: list[Contribution], item_groups: list[int],
           counts: dict[int, int]) -> tuple[list[bool], dict[int, int]]:
    """(whether each item is admitted, the increment of each counter), deciding items in order."""
    cap = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"]
    increments = _all_fit(counters, groups, Counter(item_groups), counts, cap)
    if increments is not None:
        return [True] * len(item_groups), increments
    current = dict(counts)
    admitted, increments = [], {}
    for group in item_groups:
        daily_key, metric_key = counters.daily_keys[group], counters.metric_keys[group]
        ok = current.get(daily_key, 0) < cap and current.get(metric_key, 0) < groups[group].bound
        if ok:
            for key in (daily_key, metric_key):
                current[key] = current.get(key, 0) + 1
                increments[key] = increments.get(key, 0) + 1
        admitted.append(ok)
    return admitted, increments


def expire(today: date) -> int:
    """Delete the secrets and counters of data days that can no longer receive reports; rows deleted."""
    oldest = today - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"] + 1)
    with transaction.atomic():
        deleted, _ = ClientCounter.objects.filter(day__lt=oldest).delete()
        secrets_deleted, _ = DailySecret.objects.filter(day__lt=oldest).delete()
    secrets.forget()
    return deleted + secrets_deleted
