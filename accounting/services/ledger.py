"""Check-and-spend, atomically: the one ledger every privacy spend goes through.

``reserve`` runs inside the caller's transaction, before the release is
computed, and ``record`` in the same transaction, after. ``reserve`` locks and
spends in two set-based statements: an upsert of the analyst's day row, then one
upsert of all the partition rows in date order. Every spend takes its locks in
that one order (the analyst's day row, then partition rows by date), so
concurrent spends serialize without deadlocks and can never overshoot a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from accounting.accountants import DiscreteLaplaceEvent, from_micro, to_micro
from accounting.models import BudgetPolicy, LedgerEntry, PartitionCap
from accounting.selectors import EffectivePolicy, day_events, effective_policy, partition_cap_micro, resets_at, utc_today
from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal, parse_epsilon_micro


@dataclass(frozen=True)
class Charge:
    """A spend that passed its checks and holds its locks until the transaction ends."""

    user: object
    metric_id: int
    data_days: tuple[date, ...]
    epsilon_micro: int
    budget_day: date
    policy: EffectivePolicy
    remaining_after: Decimal


def _days(start: date, end: date) -> tuple[date, ...]:
    return tuple(start + timedelta(days=i) for i in range((end - start).days + 1))


def _spend_daily(user, day: date, epsilon_micro: int) -> int:
    """Add ε to the analyst's running total for ``day`` (creating the row); the new total.

    The upsert leaves the row locked until the transaction ends: the lock that serializes an analyst's spends.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounting_dailyspend (user_id, day, spent_micro) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, day) DO UPDATE"
            " SET spent_micro = accounting_dailyspend.spent_micro + excluded.spent_micro RETURNING spent_micro",
            [user.pk, day, epsilon_micro],
        )
        return cursor.fetchone()[0]


def _spend_partitions(metric_id: int, days: tuple[date, ...], epsilon_micro: int) -> list[tuple]:
    """Add ε to the lifetime total of each data-day (creating rows); (day, new total) per day.

    One upsert for all days: its rows are written, hence locked, in the order of the VALUES list,
    which is date order.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounting_partitionspend (metric_id, data_day, spent_micro) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(days))
            + " ON CONFLICT (metric_id, data_day) DO UPDATE"
            " SET spent_micro = accounting_partitionspend.spent_micro + excluded.spent_micro"
            " RETURNING data_day, spent_micro",
            [value for day in days for value in (metric_id, day, epsilon_micro)],
        )
        return cursor.fetchall()


def _iso(day) -> str:
    return day if isinstance(day, str) else day.isoformat()  # SQLite returns dates of raw SQL as text


def reserve(*, user, metric_id: int, data_start: date, data_end: date, epsilon_micro: int, now: datetime | None = None) -> Charge:
    """Check and spend ε on the analyst's day and on every data-day of the window, or raise ApiError.

    The spend is written at once and undone with a savepoint if a check fails, so a refused
    query changes nothing even if the caller's transaction goes on.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("reserve() must run inside the release's transaction")
    budget_day = utc_today(now)
    with transaction.atomic():
        spent_after_sum = _spend_daily(user, budget_day, epsilon_micro)
        policy = effective_policy(user)
        budget = policy.daily_epsilon_micro
        if policy.composition == "pure":  # the locked running total is Σ ε_i
            spent_before, spent_after = spent_after_sum - epsilon_micro, spent_after_sum
        else:
            accountant, events = policy.accountant(), day_events(user, budget_day)
            spent_before = accountant.spent_micro(events)
            spent_after = accountant.spent_micro([*events, DiscreteLaplaceEvent(from_micro(epsilon_micro))])
        if spent_after > budget:
            raise ApiError(
                "budget_exhausted",
                "This query's epsilon exceeds your remaining daily privacy budget.",
                http_status=429,
                budget_remaining=str(from_micro(max(0, budget - spent_before))),
                resets_at=resets_at(budget_day).isoformat(),
            )
        days = _days(data_start, data_end)
        cap = partition_cap_micro(metric_id)
        capped = sorted(_iso(day) for day, spent in _spend_partitions(metric_id, days, epsilon_micro) if spent > cap)
        if capped:
            raise ApiError(
                "partition_cap_reached",
                "Some data-days of this metric have reached their lifetime epsilon cap.",
                http_status=403,
                capped_days=capped,
            )
    return Charge(user, metric_id, days, epsilon_micro, budget_day, policy, from_micro(budget - spent_after))


def record(charge: Charge, release) -> LedgerEntry:
    """Write the ledger row of a reserved spend (whose totals reserve() already added); same transaction."""
    return LedgerEntry.objects.create(
        user=charge.user,
        budget_day=charge.budget_day,
        metric_id=charge.metric_id,
        data_start=charge.data_days[0],
        data_end=charge.data_days[-1],
        epsilon_micro=charge.epsilon_micro,
        composition=charge.policy.composition,
        delta=charge.policy.delta,
        release=release,
    )
