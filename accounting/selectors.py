"""Reads of budgets and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Count

from accounting.accountants import DiscreteLaplaceEvent, PLDAccountant, PureDPAccountant, from_micro, to_micro
from accounting.models import BudgetPolicy, DailySpend, LedgerEntry, PartitionCap, PartitionSpend
from deploy.api.auth import role_of


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


def analyst_or_admin(username: str):
    """The user of that name if they hold a role (analyst or admin), else None."""
    user = get_user_model().objects.filter(username=username).prefetch_related("groups").first()
    return user if user is not None and role_of(user) is not None else None


def group_policy(name: str) -> BudgetPolicy | None:
    return BudgetPolicy.objects.filter(group__name=name).select_related("group").first()


def group_exists(name: str) -> bool:
    return Group.objects.filter(name=name).exists()


def group_policies() -> list[BudgetPolicy]:
    return list(BudgetPolicy.objects.filter(group__isnull=False).select_related("group").order_by("group__name"))


def _effective_policies(users, rows: list[BudgetPolicy]) -> dict[int, EffectivePolicy]:
    """:func:`effective_policy` of each user, from all policy rows read once."""
    own = {row.user_id: row for row in rows if row.user_id is not None}
    group_rows = [row for row in rows if row.group_id is not None]
    default = EffectivePolicy(to_micro(settings.PRIVACY["MAX_DAILY_EPSILON"]), "pure", Decimal(0), "default")
    policies = {}
    for user in users:
        if user.id in own:
            policies[user.id] = _policy_from(own[user.id], "analyst")
            continue
        group_ids = {group.id for group in user.groups.all()}
        tightest = min((row for row in group_rows if row.group_id in group_ids),
                       key=lambda row: row.daily_epsilon_micro, default=None)
        policies[user.id] = default if tightest is None else _policy_from(tightest, f"group:{tightest.group.name}")
    return policies


def budget_statuses(now: datetime | None = None) -> list[tuple[object, dict]]:
    """(user, :func:`budget_status`) of every analyst and admin by username, in at most five queries
    whatever their number: users, their groups, policies, today's running totals, and today's
    ledger events of those under approximate composition."""
    today = utc_today(now)
    users = [user for user in get_user_model().objects.order_by("username").prefetch_related("groups")
             if role_of(user) is not None]
    policies = _effective_policies(users, list(BudgetPolicy.objects.select_related("group")))
    pure = [user.id for user in users if policies[user.id].composition == "pure"]
    approximate = [user.id for user in users if policies[user.id].composition == "approximate"]
    spent = dict(DailySpend.objects.filter(day=today, user_id__in=pure).values_list("user_id", "spent_micro"))
    events: dict[int, list[DiscreteLaplaceEvent]] = {user_id: [] for user_id in approximate}
    grouped = (LedgerEntry.objects.filter(budget_day=today, user_id__in=approximate)
               .values_list("user_id", "epsilon_micro").annotate(count=Count("id")).order_by())
    for user_id, micro, count in grouped:
        events[user_id] += [DiscreteLaplaceEvent(from_micro(micro))] * count
    for user_id, day_events_of_user in events.items():
        spent[user_id] = policies[user_id].accountant().spent_micro(day_events_of_user)
    statuses = []
    for user in users:
        policy, spent_micro_today = policies[user.id], spent.get(user.id, 0)
        statuses.append((user, {
            "daily_epsilon": from_micro(policy.daily_epsilon_micro),
            "spent": from_micro(spent_micro_today),
            "remaining": from_micro(max(0, policy.daily_epsilon_micro - spent_micro_today)),
            "composition": policy.composition,
            "delta": policy.delta,
            "policy_source": policy.source,
            "resets_at": resets_at(today),
        }))
    return statuses
