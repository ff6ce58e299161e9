"""usage_histories: every user's daily ε over a window, in one query (the admin budgets page's chart)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounting.models import DailySpend
from accounting.selectors import usage_histories
from helpers import today, user

pytestmark = pytest.mark.django_db


def test_usage_histories_read_each_users_window_oldest_first_in_one_query():
    ana, _ = user("ana", "analyst")
    bob, _ = user("bob", "analyst")
    DailySpend.objects.create(spender=f"user:{ana.pk}", day=today(), spent_micro=1_500_000)
    DailySpend.objects.create(spender=f"user:{ana.pk}", day=today() - timedelta(days=2), spent_micro=250_000)
    DailySpend.objects.create(spender=f"user:{ana.pk}", day=today() - timedelta(days=30), spent_micro=9_000_000)
    DailySpend.objects.create(spender="contributor:1", day=today(), spent_micro=7_000_000)
    with CaptureQueriesContext(connection) as queries:
        histories = usage_histories([ana, bob], days=30)
    assert len(queries) == 1
    assert histories[bob.pk] == []
    assert histories[ana.pk] == [{"day": today() - timedelta(days=2), "spent": Decimal("0.25")},
                                 {"day": today(), "spent": Decimal("1.5")}]
