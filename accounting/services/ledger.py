"""Check-and-spend, atomically: the one ledger every privacy spend goes through.

:func:`charge` takes a mechanism event (:mod:`accounting.events`), the spender
who pays, the partitions whose lifetime caps it uses and the subject it pays
for. It runs inside the caller's transaction, before the release is made
public, and locks and spends in set-based statements: an upsert of the
spender's day row, then one upsert of all partition rows in (scope, key) order.
Every charge takes its locks in that one order, so concurrent charges serialize
without deadlocks and never overshoot a budget. A refused charge is undone
with a savepoint, so it changes nothing even if the caller's transaction goes on.

:func:`settle` returns the unspent part of a reservation (a charge made for a
whole mechanism before it ran, of which only part ran) without breaking
insert-only: it inserts the event that ran as a new entry and a
:class:`~accounting.models.Settlement` that makes it supersede the reservation
in every composition, and lowers the running totals by the difference, under
the same locks in the same order as :func:`charge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction

from accounting.accountants import PLDAccountant
from accounting.events import MechanismEvent, event_to_json
from accounting.models import LedgerEntry, Settlement
from accounting.selectors import (day_events, partition_caps_micro, partitions_left_micro, resets_at, spent_micro,
                                  utc_today)
from accounting.types import EffectivePolicy, Partition, Spender, Subject
from deploy.api.errors import ApiError
from privacy.epsilon import from_micro


class PartitionCapReached(ApiError):
    """Some partitions would pass their lifetime cap; ``partitions`` lists them in order."""

    def __init__(self, partitions: list[Partition]) -> None:
        super().__init__("partition_cap_reached", "Some partitions have reached their lifetime epsilon cap.",
                         http_status=403)
        self.partitions = partitions


@dataclass(frozen=True)
class Charge:
    """A charge that passed its checks; its locks hold until the transaction ends."""

    entry: LedgerEntry
    budget_day: date
    policy: EffectivePolicy | None
    remaining_after: Decimal | None  # of the daily budget; None without one


def _charged_micro(event: MechanismEvent, policy: EffectivePolicy | None) -> tuple[int, str, Decimal]:
    """(ε charged to running totals, composition, δ) of one event under the spender's policy."""
    if event.pure_epsilon_micro is not None:
        return event.pure_epsilon_micro, policy.composition if policy else "pure", policy.delta if policy else Decimal(0)
    if policy is not None and policy.composition == "pure":
        raise ApiError("approximate_dp_required", f"A {event.kind} mechanism has no pure epsilon: its spender "
                       "needs an approximate (epsilon, delta) budget policy.", http_status=409)
    delta = policy.delta if policy else Decimal(settings.PRIVACY["APPROXIMATE_DELTA"])
    return PLDAccountant(delta).spent_micro([event]), "approximate", delta


def _spend_daily(spender_key: str, day: date, epsilon_micro: int) -> int:
    """Add ε to the spender's running total for ``day`` (creating the row); the new total.

    The upsert leaves the row locked until the transaction ends: the lock that serializes a spender's charges.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounting_dailyspend (spender, day, spent_micro) VALUES (%s, %s, %s)"
            " ON CONFLICT (spender, day) DO UPDATE"
            " SET spent_micro = accounting_dailyspend.spent_micro + excluded.spent_micro RETURNING spent_micro",
            [spender_key, day, epsilon_micro],
        )
        return cursor.fetchone()[0]


def _spend_partitions(partitions: Sequence[Partition], epsilon_micro: int) -> list[tuple[str, str, int]]:
    """Add ε to the lifetime total of each partition (creating rows); (scope, key, new total) each.

    One upsert for all: its rows are written, hence locked, in the order of the VALUES list.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounting_partitionspend (scope, key, spent_micro) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(partitions))
            + " ON CONFLICT (scope, key) DO UPDATE"
            " SET spent_micro = accounting_partitionspend.spent_micro + excluded.spent_micro"
            " RETURNING scope, key, spent_micro",
            [value for partition in partitions for value in (partition.scope, partition.key, epsilon_micro)],
        )
        return cursor.fetchall()


def _check_daily(spender: Spender, day: date, event: MechanismEvent, charged_micro: int) -> Decimal | None:
    """Spend on the spender's day and check the daily budget; the remaining budget after, or raise."""
    total_after = _spend_daily(spender.key, day, charged_micro)
    policy = spender.policy
    if policy is None:
        return None
    if policy.composition == "pure":  # the locked running total is Σ ε_i
        spent_before, spent_after = total_after - charged_micro, total_after
    else:
        accountant, events = policy.accountant(), day_events(spender.key, day)
        spent_before, spent_after = accountant.spent_micro(events), accountant.spent_micro([*events, event])
    if spent_after > policy.daily_epsilon_micro:
        raise ApiError(
            "budget_exhausted",
            "This charge's epsilon exceeds the remaining daily privacy budget.",
            http_status=429,
            budget_remaining=float(from_micro(max(0, policy.daily_epsilon_micro - spent_before))),
            resets_at=resets_at(day).isoformat(),
        )
    return from_micro(policy.daily_epsilon_micro - spent_after)


def _check_partitions(partitions: Sequence[Partition], charged_micro: int) -> None:
    if not partitions:
        return
    caps = partition_caps_micro(partition.scope for partition in partitions)
    totals = _spend_partitions(partitions, charged_micro)
    capped = sorted(Partition(scope, str(key)) for scope, key, spent in totals if spent > caps[scope])
    if capped:
        raise PartitionCapReached(capped)


def charge(*, spender: Spender, event: MechanismEvent, partitions: Sequence[Partition], subject: Subject,
           now: datetime | None = None) -> Charge:
    """Check and spend ``event`` on the spender's daily budget and on every partition's lifetime cap,
    and write its ledger entry; or raise ApiError (``budget_exhausted``, ``partition_cap_reached``,
    ``approximate_dp_required``) having changed nothing. Must run inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("charge() must run inside the transaction of what it pays for")
    budget_day = utc_today(now)
    ordered = sorted(set(partitions))
    charged_micro, composition, delta = _charged_micro(event, spender.policy)
    with transaction.atomic():
        remaining_after = _check_daily(spender, budget_day, event, charged_micro)
        _check_partitions(ordered, charged_micro)
        entry = LedgerEntry.objects.create(
            spender=spender.key, budget_day=budget_day, event=event_to_json(event), epsilon_micro=charged_micro,
            composition=composition, delta=delta, partitions=[[p.scope, p.key] for p in ordered],
            subject_kind=subject.kind, subject_id=subject.id,
        )
    return Charge(entry, budget_day, spender.policy, remaining_after)


@dataclass(frozen=True)
class ChargePreview:
    """What :func:`charge` would do with an event now, read without writing or locking anything."""

    epsilon_micro: int  # ε the event would add to the running totals
    remaining_before_micro: int | None  # of the daily budget; None without one
    remaining_after_micro: int | None
    partitions_left_after_micro: dict[Partition, int]  # lifetime cap left on each partition after it
    refusal: str | None  # "budget_exhausted", "partition_cap_reached", "approximate_dp_required" or None


def preview(*, spender: Spender, event: MechanismEvent, partitions: Sequence[Partition],
            now: datetime | None = None) -> ChargePreview:
    """The cost of ``event`` and what would be left, by :func:`charge`'s own arithmetic, without spending.

    A read, so a concurrent charge may change the figures before a later :func:`charge`, which checks again.
    """
    budget_day = utc_today(now)
    try:
        charged_micro = _charged_micro(event, spender.policy)[0]
    except ApiError as refused:
        return ChargePreview(event.pure_epsilon_micro or 0, None, None, {}, refused.code)
    before = after = None
    if (policy := spender.policy) is not None:
        if policy.composition == "pure":
            spent_before = spent_micro(spender, budget_day)  # the running total, Σ ε_i
            spent_after = spent_before + charged_micro
        else:
            accountant, events = policy.accountant(), day_events(spender.key, budget_day)
            spent_before, spent_after = accountant.spent_micro(events), accountant.spent_micro([*events, event])
        before, after = policy.daily_epsilon_micro - spent_before, policy.daily_epsilon_micro - spent_after
    left = {p: micro - charged_micro for p, micro in partitions_left_micro(partitions).items()}
    refusal = "budget_exhausted" if after is not None and after < 0 else \
        "partition_cap_reached" if any(value < 0 for value in left.values()) else None
    return ChargePreview(charged_micro, before, after, left, refusal)


def _unspend(spender_key: str, day: date, partitions: Sequence[Partition], epsilon_micro: int) -> None:
    """Lower the running totals a charge raised: the day row, then the partitions in (scope, key) order."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounting_dailyspend SET spent_micro = spent_micro - %s WHERE spender = %s AND day = %s",
                       [epsilon_micro, spender_key, day])
        for partition in partitions:
            cursor.execute("UPDATE accounting_partitionspend SET spent_micro = spent_micro - %s"
                           " WHERE scope = %s AND key = %s", [epsilon_micro, partition.scope, partition.key])


def settle(*, reservation: LedgerEntry, event: MechanismEvent | None) -> Settlement:
    """Settle ``reservation`` at ``event``, the part of its mechanism that ran (None: nothing ran).

    The event is accounted exactly as the reservation was (its composition, at its δ), on the same
    spender, budget day and partitions; it supersedes the reservation wherever events are composed
    (``selectors.day_events``), and the running totals drop by the difference. Idempotent: the
    reservation row is locked first, so a second or concurrent settlement of it waits and then gets
    the first one back. Refuses an event that costs more than the reservation. Must run inside the
    caller's transaction.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("settle() must run inside the transaction of what it settles")
    reservation = LedgerEntry.objects.select_for_update().get(pk=reservation.pk)
    existing = Settlement.objects.filter(reservation=reservation).select_related("entry").first()
    if existing is not None:
        return existing
    if event is None:
        settled_micro = 0
    elif event.pure_epsilon_micro is not None:
        settled_micro = event.pure_epsilon_micro
    else:
        settled_micro = PLDAccountant(reservation.delta).spent_micro([event])
    if settled_micro > reservation.epsilon_micro:
        raise ValueError(f"the settled event costs {settled_micro} µε, more than the {reservation.epsilon_micro} "
                         "reserved")
    partitions = [Partition(scope, key) for scope, key in reservation.partitions]
    _unspend(reservation.spender, reservation.budget_day, sorted(partitions),
             reservation.epsilon_micro - settled_micro)
    entry = None if event is None or settled_micro == 0 else LedgerEntry.objects.create(
        spender=reservation.spender, budget_day=reservation.budget_day, event=event_to_json(event),
        epsilon_micro=settled_micro, composition=reservation.composition, delta=reservation.delta,
        partitions=reservation.partitions, subject_kind=reservation.subject_kind, subject_id=reservation.subject_id,
    )
    return Settlement.objects.create(reservation=reservation, entry=entry,
                                     refunded_micro=reservation.epsilon_micro - settled_micro)
