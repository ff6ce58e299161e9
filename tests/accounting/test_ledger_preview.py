"""``ledger.preview``: what ``charge`` would do, by its own arithmetic, without writing anything."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from accounting.events import DiscreteLaplaceEvent, GaussianEvent
from accounting.models import DailySpend, LedgerEntry, PartitionSpend
from accounting.selectors import budget_status, user_spender
from accounting.services import ledger
from accounting.types import Partition, Subject
from django.db import transaction

pytestmark = pytest.mark.django_db

DAYS = [Partition("metric:1", "2026-11-28"), Partition("metric:1", "2026-11-29")]


def _rows() -> tuple[int, int, int]:
    return DailySpend.objects.count(), PartitionSpend.objects.count(), LedgerEntry.objects.count()


@pytest.mark.parametrize("composition, delta", [("pure", None), ("approximate", "1e-6")])
def test_the_preview_is_what_the_charge_then_does(analyst, q, composition, delta):
    user = analyst[0]
    q.set_budget(user, 5, composition, delta)
    q.set_cap(SimpleNamespace(id=1), 3)
    event = DiscreteLaplaceEvent(Decimal("1.25"), 1)
    with transaction.atomic():
        ledger.charge(spender=user_spender(user), event=event, partitions=DAYS[:1], subject=Subject("test", "0"))
    before = _rows()
    preview = ledger.preview(spender=user_spender(user), event=event, partitions=DAYS)
    assert _rows() == before  # nothing written
    assert preview.epsilon_micro == 1_250_000
    # the day's spend as the budget meter shows it (under PLD a hair below 1.25: min(PLD, basic), rounded up)
    assert Decimal(preview.remaining_before_micro) / 10**6 == budget_status(user)["remaining"]
    if composition == "pure":
        assert preview.remaining_before_micro == 3_750_000
    assert preview.partitions_left_after_micro == {DAYS[0]: 500_000, DAYS[1]: 1_750_000}
    assert preview.refusal is None
    with transaction.atomic():
        paid = ledger.charge(spender=user_spender(user), event=event, partitions=DAYS, subject=Subject("test", "1"))
    assert paid.remaining_after == Decimal(preview.remaining_after_micro) / 10**6


def test_the_preview_names_the_refusal_the_charge_would_give(analyst, q):
    user = analyst[0]
    q.set_budget(user, 1)
    big = DiscreteLaplaceEvent(Decimal("1.5"), 1)
    assert ledger.preview(spender=user_spender(user), event=big, partitions=DAYS).refusal == "budget_exhausted"
    q.set_budget(user, 10)
    q.set_cap(SimpleNamespace(id=1), 1)
    assert ledger.preview(spender=user_spender(user), event=big, partitions=DAYS).refusal == "partition_cap_reached"
    gaussian = GaussianEvent(2.0)
    assert ledger.preview(spender=user_spender(user), event=gaussian, partitions=[]).refusal == "approximate_dp_required"
