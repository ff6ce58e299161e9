"""Check-and-spend is atomic: 32 parallel queries, each on its own PostgreSQL connection, never overshoot
an analyst's daily budget nor a partition's lifetime cap; the ledger sums to the budget exactly."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection

from accounting.accountants import PLDAccountant
from accounting.models import DailySpend, LedgerEntry, PartitionSpend
from telemetry.models import Release

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 32


def _race(q, jobs) -> list:
    """Run ``jobs`` (list of (token, body)) at once, one thread and one DB connection each.

    Returns (status, code) per job.
    """
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def work(i, token, body):
        try:
            client = q.client(token, raise_errors=False)
            barrier.wait(timeout=30)
            response = q.post(client, body)
            results[i] = (response.status_code, response.json().get("code"))
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, token, body)) for i, (token, body) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a query hung (deadlock?)"
    return results


def test_parallel_queries_never_overshoot_a_daily_budget(q, analyst, color):
    user, token = analyst
    q.set_budget(user, "5")  # exactly 10 queries at 0.5
    q.add_krr(color, q.day(-1), "DE", [4, 4, 4])
    jobs = [(token, q.body(color, q.day(-1 - (i % 5)), epsilon="0.5", fresh=True)) for i in range(THREADS)]
    results = _race(q, jobs)
    tally = Counter(results)
    assert tally == {(200, None): 10, (429, "budget_exhausted"): THREADS - 10}, tally
    assert q.ledger_micro(user=user) == 5_000_000
    assert LedgerEntry.objects.filter(spender=f"user:{user.pk}").count() == Release.objects.count() == 10
    assert DailySpend.objects.get(spender=f"user:{user.pk}").spent_micro == 5_000_000


def test_parallel_queries_of_many_analysts_never_overshoot_a_partition_cap(q, color):
    analysts = [q.user(f"a{i}") for i in range(8)]
    q.set_cap(color, "3")  # exactly 6 queries at 0.5 on the same data-days
    q.add_krr(color, q.day(-2), "US", [4, 4, 4])
    jobs = [(analysts[i % 8][1], q.body(color, q.day(-2), q.day(-1), epsilon="0.5", fresh=True))
            for i in range(THREADS)]
    results = _race(q, jobs)
    tally = Counter(results)
    assert tally == {(200, None): 6, (403, "partition_cap_reached"): THREADS - 6}, tally
    assert q.ledger_micro(metric=color) == 3_000_000
    assert sorted(PartitionSpend.objects.filter(scope=f"metric:{color.pk}").values_list("spent_micro", flat=True)) == [
        3_000_000, 3_000_000]
    assert sum(DailySpend.objects.values_list("spent_micro", flat=True)) == 3_000_000


def test_parallel_queries_under_pld_composition_admit_exactly_the_accountants_count(q, analyst, color):
    user, token = analyst
    q.set_budget(user, "2", composition="approximate", delta="1e-6")
    expected = PLDAccountant(Decimal("1e-6")).max_queries("0.1", "2")
    assert 20 < expected < THREADS
    jobs = [(token, q.body(color, q.day(-1), epsilon="0.1", fresh=True)) for _ in range(THREADS)]
    tally = Counter(_race(q, jobs))
    assert tally == {(200, None): expected, (429, "budget_exhausted"): THREADS - expected}, tally
    assert LedgerEntry.objects.filter(spender=f"user:{user.pk}").count() == expected


def test_parallel_identical_queries_all_succeed_and_stay_within_budget(q, analyst, color):
    """Non-fresh identical queries racing: each is answered; whatever is paid is within the budget and
    every paid one has its ledger row."""
    user, token = analyst
    q.set_budget(user, "3")
    jobs = [(token, q.body(color, q.day(-1), epsilon=1)) for _ in range(THREADS)]
    tally = Counter(_race(q, jobs))
    assert tally[(200, None)] >= 1
    assert set(tally) <= {(200, None), (429, "budget_exhausted")}, tally
    paid = LedgerEntry.objects.filter(spender=f"user:{user.pk}").count()
    assert paid == Release.objects.count() <= 3
    assert q.ledger_micro(user=user) == paid * 1_000_000 <= 3_000_000
