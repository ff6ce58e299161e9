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
    """Lifetime ε cap of every partition of one scope (overrides the default).

    A scope names what carries a lifetime cap and a partition is one part of it:
    scope ``metric:<id>`` has one partition per data-day; ``dataset:<id>`` or
    ``contributor:<id>`` is one partition (key ``""``). The apps name the scopes;
    the ledger only compares totals with caps.
    """

    scope = models.CharField(max_length=100, unique=True)
    lifetime_epsilon_micro = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)


class DailySpend(models.Model):
    """A spender's running total of ε for one UTC day (basic composition)."""

    spender = models.CharField(max_length=100)
    day = models.DateField()
    spent_micro = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["spender", "day"], name="daily_spend_spender_day")]


class PartitionSpend(models.Model):
    """One partition's lifetime total of charged ε (basic composition)."""

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=100, blank=True)
    spent_micro = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="partition_spend_scope_key")]


class LedgerEntry(models.Model):
    """One charge: a mechanism event, its spender and budget day, the partitions it
    spends, and the subject it paid for (a release, an export, a training job).

    ``epsilon_micro`` is the ε charged to the daily running total and to each
    partition: the event's pure ε, or for an approximate-DP event its own ε at
    ``delta`` by PLD. The daily budget of an approximate policy is checked on the
    PLD composition of the day's ``event`` column, not on this figure.
    """

    spender = models.CharField(max_length=100)
    budget_day = models.DateField()
    event = models.JSONField()
    epsilon_micro = models.BigIntegerField()
    composition = models.CharField(max_length=12, choices=COMPOSITION_CHOICES)
    delta = models.DecimalField(max_digits=20, decimal_places=18, default=0)
    partitions = models.JSONField(default=list)  # [[scope, key], ...]
    subject_kind = models.CharField(max_length=32)
    subject_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["spender", "budget_day"], name="ledger_spender_day"),
            models.Index(fields=["subject_kind", "subject_id"], name="ledger_subject"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(epsilon_micro__gt=0), name="ledger_positive")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("ledger entries are insert-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("ledger entries are insert-only")


class Settlement(models.Model):
    """A reservation settled at what actually ran: the ledger stays insert-only, and nothing is counted twice.

    A spender that charges a whole mechanism before it runs (a training job's T steps) and then
    runs only part of it (t < T steps: cancelled or failed) records one settlement: ``entry`` is a
    new ledger entry of the event that ran (None when nothing ran), which supersedes
    ``reservation`` in every composition, and the running totals drop by ``refunded_micro``
    (the reservation's ε minus the entry's). One per reservation (the one-to-one key), so a
    settlement is made once however often it is asked for. Insert-only like the ledger.
    """

    reservation = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="settlement")
    entry = models.OneToOneField(LedgerEntry, null=True, on_delete=models.PROTECT, related_name="settles")
    refunded_micro = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(refunded_micro__gte=0),
                                              name="settlement_refund_non_negative")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("settlements are insert-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("settlements are insert-only")
