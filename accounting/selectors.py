"""Reads of budgets and the ledger."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Count, Q

from accounting.events import MechanismEvent, event_from_json
from accounting.models import BudgetPolicy, DailySpend, LedgerEntry, PartitionCap, PartitionSpend
from accounting.types import EffectivePolicy, Partition, Spender
from deploy.api.auth import role_of
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
    rows = BudgetPolicy.objects.filter(Q(user=user) | Q(group__in=user.groups.all())).select_related("group")
    return _effective_policies([user], list(rows))[user.id]


def user_spender(user) -> Spender:
    """An analyst or admin as a spender, with the daily budget that applies to them."""
    return Spender(f"user:{user.pk}", effective_policy(user))


def day_events(spender_key: str, day: date) -> list[MechanismEvent]:
    """The day's charges as mechanism events, read grouped (one row per distinct event); a settled
    reservation counts as the event it was settled at (its settlement's entry, another row of the day)."""
    grouped = (LedgerEntry.objects.filter(spender=spender_key, budget_day=day, settlement__isnull=True)
               .values_list("event").annotate(count=Count("id")).order_by())
    return [event for data, count in grouped for event in [event_from_json(data)] * count]


def spent_micro(spender: Spender, day: date) -> int:
    """ε spent on ``day`` under the spender's composition. Pure: the running total, Σ ε_i."""
    if spender.policy is None or spender.policy.composition == "pure":
        return DailySpend.objects.filter(spender=spender.key, day=day).values_list("spent_micro", flat=True).first() or 0
    return spender.policy.accountant().spent_micro(day_events(spender.key, day))


def _status(policy: EffectivePolicy, spent: int, today: date) -> dict:
    return {
        "daily_epsilon": from_micro(policy.daily_epsilon_micro),
        "spent": from_micro(spent),
        "remaining": from_micro(max(0, policy.daily_epsilon_micro - spent)),
        "composition": policy.composition,
        "delta": policy.delta,
        "policy_source": policy.source,
        "resets_at": resets_at(today),
    }


def budget_status(user, now: datetime | None = None) -> dict:
    today = utc_today(now)
    spender = user_spender(user)
    return _status(spender.policy, spent_micro(spender, today), today)


def usage_history(user, days: int = 30, now: datetime | None = None) -> list[dict]:
    """The ε charged to the user on each of the last ``days`` days that had any, newest first."""
    return list(reversed(usage_histories([user], days, now)[user.pk]))


def usage_histories(users, days: int = 30, now: datetime | None = None) -> dict[int, list[dict]]:
    """:func:`usage_history` of each user (oldest day first), read in one query."""
    since = utc_today(now) - timedelta(days=days - 1)
    ids = {f"user:{user.pk}": user.pk for user in users}
    histories: dict[int, list[dict]] = {user.pk: [] for user in users}
    rows = DailySpend.objects.filter(spender__in=list(ids), day__gte=since).order_by("day")
    for row in rows:
        histories[ids[row.spender]].append({"day": row.day, "spent": from_micro(row.spent_micro)})
    return histories


def partition_caps_micro(scopes: Iterable[str]) -> dict[str, int]:
    """The lifetime cap of each scope: its PartitionCap, else the default."""
    scopes = set(scopes)
    default = to_micro(settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"])
    caps = dict(PartitionCap.objects.filter(scope__in=scopes).values_list("scope", "lifetime_epsilon_micro"))
    return {scope: caps.get(scope, default) for scope in scopes}


def partitions_left_micro(partitions: Iterable[Partition]) -> dict[Partition, int]:
    """The lifetime cap left on each partition now: its scope's cap less the ε charged to it."""
    partitions = sorted(set(partitions))
    caps = partition_caps_micro(p.scope for p in partitions)
    spent = {(row.scope, row.key): row.spent_micro for row in PartitionSpend.objects.filter(
        scope__in={p.scope for p in partitions}, key__in={p.key for p in partitions})}
    return {p: caps[p.scope] - spent.get((p.scope, p.key), 0) for p in partitions}


def partition_usage(scope: str) -> dict:
    """The cap of a scope and the ε spent on each of its partitions, by key."""
    rows = PartitionSpend.objects.filter(scope=scope).order_by("key")
    return {
        "lifetime_epsilon_cap": from_micro(partition_caps_micro([scope])[scope]),
        "partitions": [{"key": row.key, "spent": from_micro(row.spent_micro)} for row in rows],
    }


def reservation(subject_kind: str, subject_id: str) -> LedgerEntry | None:
    """A subject's first charge that is not itself a settlement's entry: what a settlement replaces."""
    return (LedgerEntry.objects.filter(subject_kind=subject_kind, subject_id=subject_id, settles__isnull=True)
            .order_by("id").first())


def charges_for(subject_kind: str, subject_ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
    """The ledger entries of each subject, in one query."""
    by_subject: dict[str, list[LedgerEntry]] = {}
    for entry in LedgerEntry.objects.filter(subject_kind=subject_kind, subject_id__in=list(subject_ids)).order_by("id"):
        by_subject.setdefault(entry.subject_id, []).append(entry)
    return by_subject
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
    keys = {f"user:{user.id}": user.id for user in users}
    pure = [key for key, user_id in keys.items() if policies[user_id].composition == "pure"]
    approximate = [key for key, user_id in keys.items() if policies[user_id].composition == "approximate"]
    spent = {keys[key]: micro for key, micro in
             DailySpend.objects.filter(day=today, spender__in=pure).values_list("spender", "spent_micro")}
    events: dict[str, list[MechanismEvent]] = {key: [] for key in approximate}
    grouped = (LedgerEntry.objects.filter(budget_day=today, spender__in=approximate, settlement__isnull=True)
               .values_list("spender", "event").annotate(count=Count("id")).order_by())
    for key, data, count in grouped:
        events[key] += [event_from_json(data)] * count
    for key, day_events_of_user in events.items():
        spent[keys[key]] = policies[keys[key]].accountant().spent_micro(day_events_of_user)
    return [(user, _status(policies[user.id], spent.get(user.id, 0), today)) for user in users]
