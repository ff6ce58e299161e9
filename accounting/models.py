"""The budget ledger.

Amounts are integer micro-epsilon (1 ε = 1_000_000), so sums are exact.
``LedgerEntry`` is insert-only: a database trigger refuses UPDATE and DELETE
(migration 0002), and the model refuses them too. ``DailySpend`` and
``PartitionSpend`` are running totals of the ledger that double as the rows
check-and-spend locks, so concurrent spends serialize per analyst and
per partition and never overshoot.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

COMPOSITION_CHOICES = [("pure", "basic composition, δ = 0"), ("approximate", "PLD accounting at δ")]


class BudgetPolicy(models.Model):
    """A daily ε budget for one analyst, or for every member of one group."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="budget_policy")
    group = models.OneToOneField(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="budget_policy")
    daily_epsilon_micro = models.BigIntegerField()
    composition = models.CharField(max_length=12, choices=COMPOSITION_CHOICES, default="pure")
    delta = models.DecimalField(max_digits=20, decimal_places=18, null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False),
                name="budget_policy_one_owner",
            ),
            models.CheckConstraint(condition=models.Q(daily_epsilon_micro__gt=0), name="budget_policy_positive"),
        ]


class PartitionCap(models.Model):
    """Lifetime ε cap of each data-day of one metric (overrides the default)."""

    metric = models.OneToOneField("telemetry.Metric", on_delete=models.PROTECT, related_name="partition_cap")
    lifetime_epsilon_micro = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)


class DailySpend(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    day = models.DateField()
    spent_micro = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="daily_spend_user_day")]


class PartitionSpend(models.Model):
    metric = models.ForeignKey("telemetry.Metric", on_delete=models.PROTECT)
    data_day = models.DateField()
    spent_micro = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["metric", "data_day"], name="partition_spend_metric_day")]


class LedgerEntry(models.Model):
    """One spend: ``epsilon_micro`` charged to the analyst's ``budget_day`` and
    to each data-day in ``[data_start, data_end]`` of ``metric``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    budget_day = models.DateField()
    metric = models.ForeignKey("telemetry.Metric", on_delete=models.PROTECT)
    data_start = models.DateField()
    data_end = models.DateField()
    epsilon_micro = models.BigIntegerField()
    composition = models.CharField(max_length=12, choices=COMPOSITION_CHOICES)
    delta = models.DecimalField(max_digits=20, decimal_places=18, default=0)
    release = models.ForeignKey("telemetry.Release", on_delete=models.PROTECT, related_name="ledger_entries")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["user", "budget_day"], name="ledger_user_day")]
        constraints = [models.CheckConstraint(condition=models.Q(epsilon_micro__gt=0), name="ledger_positive")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("ledger entries are insert-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("ledger entries are insert-only")
