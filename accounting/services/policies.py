"""Admins' budget settings: daily budgets per analyst or group, lifetime caps per partition.

Amounts arrive parsed and typed (micro-ε integers, δ as Decimal); these services check the
rules a setting must follow and write it.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounting.models import BudgetPolicy, PartitionCap
from deploy.api.errors import ApiError

COMPOSITIONS = ("pure", "approximate")
MIN_DELTA, MAX_DELTA = Decimal("1e-18"), Decimal("0.001")  # the delta column keeps 18 decimal places


def _policy_fields(daily_epsilon_micro: int, composition: str, delta: Decimal | None) -> dict:
    if composition not in COMPOSITIONS:
        raise ApiError("invalid_composition", "composition must be 'pure' or 'approximate'.")
    if composition == "pure":
        delta = None
    else:
        delta = Decimal(settings.PRIVACY["APPROXIMATE_DELTA"]) if delta is None else delta
        if not MIN_DELTA <= delta < MAX_DELTA or delta != delta.quantize(MIN_DELTA):
            raise ApiError("invalid_delta", f"delta must be a number in [{MIN_DELTA}, {MAX_DELTA}) "
                                            "with at most 18 decimal places.")
    return {"daily_epsilon_micro": daily_epsilon_micro, "composition": composition, "delta": delta,
            "updated_at": timezone.now()}


@transaction.atomic
def set_analyst_budget(*, username: str, daily_epsilon_micro: int, composition: str = "pure",
                       delta: Decimal | None = None) -> BudgetPolicy:
    """The analyst's own daily budget; ``delta`` (approximate composition only) defaults to APPROXIMATE_DELTA."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ApiError("unknown_user", f"No user named {username!r}.", http_status=404)
    fields = _policy_fields(daily_epsilon_micro, composition, delta)
    policy, _ = BudgetPolicy.objects.update_or_create(user=user, defaults=fields)
    return policy


@transaction.atomic
def set_group_budget(*, name: str, daily_epsilon_micro: int, composition: str = "pure",
                     delta: Decimal | None = None) -> BudgetPolicy:
    """The daily budget of every member of the group who has no own setting."""
    group = Group.objects.filter(name=name).first()
    if group is None:
        raise ApiError("unknown_group", f"No group named {name!r}.", http_status=404)
    fields = _policy_fields(daily_epsilon_micro, composition, delta)
    policy, _ = BudgetPolicy.objects.update_or_create(group=group, defaults=fields)
    return policy


@transaction.atomic
def set_partition_cap(*, scope: str, lifetime_epsilon_micro: int) -> PartitionCap:
    """The lifetime cap of every partition of ``scope`` (see ``PartitionCap``)."""
    cap, _ = PartitionCap.objects.update_or_create(
        scope=scope, defaults={"lifetime_epsilon_micro": lifetime_epsilon_micro, "updated_at": timezone.now()}
    )
    return cap
