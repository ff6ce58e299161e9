"""Reads of budgets and the ledger."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from accounting.events import MechanismEvent, event_from_json
from accounting.models import BudgetPolicy, DailySpend, LedgerEntry, PartitionCap, PartitionSpend
from accounting.types import EffectivePolicy, Spender
from privacy.epsilon import from_micro, to_micro


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


def resets_at(day: date) -> datetime:
    """Budgets reset at the next midnight UTC."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=timezone.utc)


def _policy_from(row: BudgetPolicy, source: str) -> EffectivePolicy:
    delta = row.delta if row.composition == "approximate" else Decimal(0)
    return EffectivePolicy(row.daily_epsilon_micro, row.composition, delta, source)


def effective_policy(user) -> EffectivePolicy:
    """The analyst's own policy, else the tightest of their groups', else the default."""
    own = BudgetPolicy.objects.filter(user=user).first()
    if own is not None:
        return _policy_from(own, "analyst")
    group_rows = BudgetPolicy.objects.filter(group__in=user.groups.all()).select_related("group")
    tightest = min(group_rows, key=lambda row: row.daily_epsilon_micro, default=None)
    if tightest is not None:
        return _policy_from(tightest, f"group:{tightest.group.name}")
    return EffectivePolicy(to_micro(settings.PRIVACY["MAX_DAILY_EPSILON"]), "pure", Decimal(0), "default")


def user_spender(user) -> Spender:
    """An analyst or admin as a spender, with the daily budget that applies to them."""
    return Spender(f"user:{user.pk}", effective_policy(user))


def day_events(spender_key: str, day: date) -> list[MechanismEvent]:
    """The day's charges as mechanism events, read grouped (one row per distinct event)."""
    grouped = (LedgerEntry.objects.filter(spender=spender_key, budget_day=day)
               .values_list("event").annotate(count=Count("id")).order_by())
    return [event for data, count in grouped for event in [event_from_json(data)] * count]


def spent_micro(spender: Spender, day: date) -> int:
    """ε spent on ``day`` under the spender's composition. Pure: the running total, Σ ε_i."""
    if spender.policy is None or spender.policy.composition == "pure":
        return DailySpend.objects.filter(spender=spender.key, day=day).values_list("spent_micro", flat=True).first() or 0
    return spender.policy.accountant().spent_micro(day_events(spender.key, day))


def budget_status(user, now: datetime | None = None) -> dict:
    today = utc_today(now)
    spender = user_spender(user)
    policy = spender.policy
    spent = spent_micro(spender, today)
    return {
        "daily_epsilon": from_micro(policy.daily_epsilon_micro),
        "spent": from_micro(spent),
        "remaining": from_micro(max(0, policy.daily_epsilon_micro - spent)),
        "composition": policy.composition,
        "delta": policy.delta,
        "policy_source": policy.source,
        "resets_at": resets_at(today),
    }


def usage_history(user, days: int = 30, now: datetime | None = None) -> list[dict]:
    since = utc_today(now) - timedelta(days=days - 1)
    rows = DailySpend.objects.filter(spender=f"user:{user.pk}", day__gte=since).order_by("-day")
    return [{"day": row.day, "spent": from_micro(row.spent_micro)} for row in rows]


def partition_caps_micro(scopes: Iterable[str]) -> dict[str, int]:
    """The lifetime cap of each scope: its PartitionCap, else the default."""
    scopes = set(scopes)
    default = to_micro(settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"])
    caps = dict(PartitionCap.objects.filter(scope__in=scopes).values_list("scope", "lifetime_epsilon_micro"))
    return {scope: caps.get(scope, default) for scope in scopes}


def partition_usage(scope: str) -> dict:
    """The cap of a scope and the ε spent on each of its partitions, by key."""
    rows = PartitionSpend.objects.filter(scope=scope).order_by("key")
    return {
        "lifetime_epsilon_cap": from_micro(partition_caps_micro([scope])[scope]),
        "partitions": [{"key": row.key, "spent": from_micro(row.spent_micro)} for row in rows],
    }


def charges_for(subject_kind: str, subject_ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
    """The ledger entries of each subject, in one query."""
    by_subject: dict[str, list[LedgerEntry]] = {}
    for entry in LedgerEntry.objects.filter(subject_kind=subject_kind, subject_id__in=list(subject_ids)).order_by("id"):
        by_subject.setdefault(entry.subject_id, []).append(entry)
    return by_subject
