"""Admins' budget settings: daily budgets per analyst or group, lifetime caps per partition."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounting.models import BudgetPolicy, PartitionCap
from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal, parse_epsilon_micro

MIN_DELTA, MAX_DELTA = Decimal("1e-18"), Decimal("0.001")  # the delta column keeps 18 decimal places


def _parse_policy(data: dict) -> dict:
    composition = data.get("composition", "pure")
    if composition not in ("pure", "approximate"):
        raise ApiError("invalid_composition", "composition must be 'pure' or 'approximate'.")
    delta = None
    if composition == "approximate":
        delta = finite_decimal(data.get("delta", "1e-6"))
        if delta is None or not MIN_DELTA <= delta < MAX_DELTA or delta != delta.quantize(MIN_DELTA):
            raise ApiError("invalid_delta", f"delta must be a number in [{MIN_DELTA}, {MAX_DELTA}) "
                                            "with at most 18 decimal places.")
    return {
        "daily_epsilon_micro": parse_epsilon_micro(data.get("daily_epsilon"), "daily_epsilon"),
        "composition": composition,
        "delta": delta,
        "updated_at": timezone.now(),
    }


@transaction.atomic
def set_analyst_budget(*, username: str, data: dict) -> BudgetPolicy:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ApiError("unknown_user", f"No user named {username!r}.", http_status=404)
    policy, _ = BudgetPolicy.objects.update_or_create(user=user, defaults=_parse_policy(data))
    return policy


@transaction.atomic
def set_group_budget(*, name: str, data: dict) -> BudgetPolicy:
    group = Group.objects.filter(name=name).first()
    if group is None:
        raise ApiError("unknown_group", f"No group named {name!r}.", http_status=404)
    policy, _ = BudgetPolicy.objects.update_or_create(group=group, defaults=_parse_policy(data))
    return policy


@transaction.atomic
def set_partition_cap(*, scope: str, data: dict) -> PartitionCap:
    cap_micro = parse_epsilon_micro(data.get("lifetime_epsilon"), "lifetime_epsilon")
    cap, _ = PartitionCap.objects.update_or_create(
        scope=scope, defaults={"lifetime_epsilon_micro": cap_micro, "updated_at": timezone.now()}
    )
    return cap
