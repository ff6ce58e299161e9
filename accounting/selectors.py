"""Reads of budgets and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from accounting.accountants import DiscreteLaplaceEvent, PLDAccountant, PureDPAccountant, from_micro, to_micro
from accounting.models import BudgetPolicy, DailySpend, LedgerEntry, PartitionCap, PartitionSpend


@dataclass(frozen=True)
class EffectivePolicy:
    daily_epsilon_micro: int
    composition: str
    delta: Decimal
    source: str

    def accountant(self):
        return PLDAccountant(self.delta) if self.composition == "approximate" else PureDPAccountant()


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


def day_events(user, day: date) -> list[DiscreteLaplaceEvent]:
    """The day's spends as accountant events, read grouped by ε (one row per distinct ε)."""
    grouped = (LedgerEntry.objects.filter(user=user, budget_day=day)
               .values_list("epsilon_micro").annotate(count=Count("id")).order_by())
    return [event for micro, count in grouped for event in [DiscreteLaplaceEvent(from_micro(micro))] * count]


def spent_micro(user, day: date, policy: EffectivePolicy) -> int:
    """ε spent on ``day`` under the policy's composition. Pure: the running total, Σ ε_i."""
    if policy.composition == "pure":
        return DailySpend.objects.filter(user=user, day=day).values_list("spent_micro", flat=True).first() or 0
    return policy.accountant().spent_micro(day_events(user, day))


def budget_status(user, now: datetime | None = None) -> dict:
    today = utc_today(now)
    policy = effective_policy(user)
    spent = spent_micro(user, today, policy)
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
    rows = DailySpend.objects.filter(user=user, day__gte=since).order_by("-day")
    return [{"day": row.day, "spent": from_micro(row.spent_micro)} for row in rows]


def partition_cap_micro(metric_id: int) -> int:
    cap = PartitionCap.objects.filter(metric_id=metric_id).first()
    return cap.lifetime_epsilon_micro if cap else to_micro(settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"])


def partition_usage(metric_id: int) -> dict:
    rows = PartitionSpend.objects.filter(metric_id=metric_id).order_by("data_day")
    return {
        "lifetime_epsilon_cap": from_micro(partition_cap_micro(metric_id)),
        "days": [{"day": row.data_day, "spent": from_micro(row.spent_micro)} for row in rows],
    }

