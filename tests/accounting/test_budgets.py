"""Budgets through the query API: exact arithmetic, midnight-UTC reset, lifetime partition caps,
free cached re-releases, PLD ("approximate") composition, and the admins' budget endpoints."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import dp_accounting
import pytest
import time_machine
from dp_accounting.pld import pld_privacy_accountant

from accounting.accountants import DiscreteLaplaceEvent, PLDAccountant, to_micro
from accounting.models import LedgerEntry, PartitionSpend
from telemetry.models import Release

pytestmark = pytest.mark.django_db

UTC = timezone.utc


def _at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- exactness ---------------------------------------------------------------------------


def test_ten_queries_at_one_spend_exactly_ten_and_the_eleventh_is_refused(q, analyst, color):
    user, token = analyst
    client = q.client(token)
    q.add_krr(color, q.day(-1), "DE", [5, 5, 5])
    remaining = []
    for i in range(10):
        response = q.post(client, q.body(color, q.day(-1 - i), epsilon=1.0))
        assert response.status_code == 200, (i, response.json())
        remaining.append(response.json()["privacy"]["budget_remaining"])
    assert remaining == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert q.ledger_micro(user=user) == 10_000_000
    me = q.client(token).get("/api/v1/budgets/me").json()
    assert (me["spent_today"], me["remaining"]) == (10, 0)
    before = q.counts()
    refused = q.post(client, q.body(color, q.day(-20), epsilon="0.000001"))
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exhausted"
    assert refused.json()["budget_remaining"] == 0
    assert q.counts() == before


def test_three_tenths_are_exactly_three_tenths(q, analyst, color):
    user, token = analyst
    client = q.client(token)
    for i in range(3):
        response = q.post(client, q.body(color, q.day(-1 - i), epsilon=0.1))
        assert response.status_code == 200
    assert q.ledger_micro(user=user) == 300_000
    assert response.json()["privacy"]["budget_remaining"] == 9.7
    me = client.get("/api/v1/budgets/me").json()
    assert (me["spent_today"], me["remaining"]) == (0.3, 9.7)
    # 33 tenths fill a budget of 3.3 exactly; float addition (0.1 x 33 = 3.3000000000000016) would refuse the last
    q.set_budget(user, "3.3")
    for i in range(30):
        assert q.post(client, q.body(color, q.day(-1), epsilon=0.1, fresh=True)).status_code == 200, i
    assert q.ledger_micro(user=user) == 3_300_000
    assert client.get("/api/v1/budgets/me").json()["remaining"] == 0
    assert q.post(client, q.body(color, q.day(-1), epsilon="0.000001", fresh=True)).status_code == 429


# --- midnight UTC -------------------------------------------------------------------------


def test_budget_spent_at_2359_utc_is_available_again_at_midnight(q, analyst, color):
    user, token = analyst
    client = q.client(token)
    with time_machine.travel(_at(2024, 5, 10, 23, 59), tick=False):
        q.add_krr(color, date(2024, 5, 10), "US", [7, 2, 1])
        for i in range(10):
            assert q.post(client, q.body(color, date(2024, 5, 10), epsilon=1, fresh=True)).status_code == 200
        refused = q.post(client, q.body(color, date(2024, 5, 10), epsilon="0.5", fresh=True))
        assert refused.status_code == 429
        assert refused.json()["resets_at"] == "2024-05-11T00:00:00+00:00"
    with time_machine.travel(_at(2024, 5, 10, 23, 59, 59, 999999), tick=False):
        assert q.post(client, q.body(color, date(2024, 5, 10), epsilon="0.5", fresh=True)).status_code == 429
    with time_machine.travel(_at(2024, 5, 11, 0, 0), tick=False):
        me = client.get("/api/v1/budgets/me").json()
        assert (me["spent_today"], me["remaining"]) == (0, 10)
        assert me["resets_at"] == "2024-05-12T00:00:00+00:00"
        assert {"day": "2024-05-10", "spent": 10} in me["history"]
        for i in range(10):  # the full budget, not a cent less
            response = q.post(client, q.body(color, date(2024, 5, 10), epsilon=1, fresh=True))
            assert response.status_code == 200, (i, response.json())
        assert response.json()["privacy"]["resets_at"] == "2024-05-12T00:00:00+00:00"
        assert q.post(client, q.body(color, date(2024, 5, 10), epsilon="0.5", fresh=True)).status_code == 429
    assert sorted(LedgerEntry.objects.values_list("budget_day", flat=True).distinct()) == [
        date(2024, 5, 10), date(2024, 5, 11)]
    assert q.ledger_micro(budget_day=date(2024, 5, 10)) == q.ledger_micro(budget_day=date(2024, 5, 11)) == 10_000_000


# --- lifetime partition caps --------------------------------------------------------------


def test_lifetime_cap_holds_across_days_and_analysts_per_metric_and_data_day(q, analyst, admin, color):
    ana, ana_token = analyst
    _, root_token = admin
    bob, bob_token = q.user("bob")
    other = q.metric(name="shape", domain=["round", "square"])
    d0, d1 = date(2024, 5, 7), date(2024, 5, 8)
    with time_machine.travel(_at(2024, 5, 10, 12), tick=False):
        put = q.client(root_token).put("/api/v1/budgets/partitions/color", {"lifetime_epsilon": "2"}, format="json")
        assert put.status_code == 200 and put.json()["lifetime_epsilon_cap"] == 2
        q.add_krr(color, d1, "DE", [3, 3, 3])
        ana_client = q.client(ana_token)
        assert q.post(ana_client, q.body(color, d1, epsilon=1)).status_code == 200
        assert q.post(ana_client, q.body(color, d1, epsilon=1, group_by=["region"])).status_code == 200
        refused = q.post(ana_client, q.body(color, d1, epsilon="0.000001", fresh=True))
        assert refused.status_code == 403, refused.json()
        assert refused.json()["code"] == "partition_cap_reached"
        assert refused.json()["capped_days"] == ["2024-05-08"]
    with time_machine.travel(_at(2024, 5, 11, 9), tick=False):
        # a new day refreshes ana's daily budget, not the data-day's lifetime cap
        assert q.post(q.client(ana_token), q.body(color, d1, epsilon=1, fresh=True)).status_code == 403
        bob_client = q.client(bob_token)
        before = q.counts()
        assert q.post(bob_client, q.body(color, d1, epsilon="0.5")).status_code == 403
        # a window where only one day is capped is refused entirely and charges nothing, anywhere
        both = q.post(bob_client, q.body(color, d0, d1, epsilon="0.5", group_by=["day"]))
        assert both.status_code == 403 and both.json()["capped_days"] == ["2024-05-08"]
        assert q.counts() == before
        assert PartitionSpend.objects.filter(scope=f"metric:{color.pk}", key=d0.isoformat(), spent_micro__gt=0).count() == 0
        assert bob_client.get("/api/v1/budgets/me").json()["spent_today"] == 0
        # the uncapped day alone is fine, and so is the same day of another metric
        assert q.post(bob_client, q.body(color, d0, epsilon=2)).status_code == 200
        assert q.post(bob_client, q.body(other, d1, epsilon=5)).status_code == 200
        assert q.post(bob_client, q.body(color, d0, epsilon="0.000001")).status_code == 403  # d0 now at its cap
        usage = q.client(root_token).get("/api/v1/budgets/partitions/color").json()
        assert {"day": "2024-05-08", "spent": 2} in usage["days"]
        assert {"day": "2024-05-07", "spent": 2} in usage["days"]
    # the ledger per (metric, data-day) never exceeds the cap
    for day in (d0, d1):
        spent = sum(e.epsilon_micro for e in LedgerEntry.objects.all()
                    if [f"metric:{color.pk}", day.isoformat()] in e.partitions)
        assert spent == 2_000_000


@pytest.mark.parametrize("refusal", ["budget_exhausted", "partition_cap_reached"])
def test_a_refused_charge_undoes_its_spend_even_if_the_transaction_goes_on(q, analyst, color, refusal):
    """charge() writes the spend before checking it (one upsert each); a refusal rolls back to its savepoint."""
    from django.db import transaction

    from accounting.events import DiscreteLaplaceEvent
    from accounting.models import DailySpend
    from accounting.selectors import user_spender
    from accounting.services.ledger import PartitionCapReached, charge
    from accounting.types import Partition, Subject
    from deploy.api.errors import ApiError

    user, _ = analyst
    q.set_budget(user, "1")
    q.set_cap(color, "1")
    d0, d1 = q.day(-3), q.day(-2)
    partitions = [Partition(f"metric:{color.pk}", d1.isoformat()), Partition(f"metric:{color.pk}", d0.isoformat())]
    spend = {"spender": user_spender(user), "partitions": partitions, "subject": Subject("release", "r1")}
    with transaction.atomic():
        charge(**spend, event=DiscreteLaplaceEvent("0.6"))
    if refusal == "partition_cap_reached":  # another analyst, with budget to spare, hits the partitions' cap
        spend["spender"] = user_spender(q.user("bob")[0])
    before = (list(DailySpend.objects.order_by("id").values_list("spender", "spent_micro")),
              sorted(PartitionSpend.objects.values_list("key", "spent_micro")), LedgerEntry.objects.count())
    with transaction.atomic():
        with pytest.raises(ApiError) as refused:
            charge(**spend, event=DiscreteLaplaceEvent("0.5"))
        assert refused.value.code == refusal
        after = (list(DailySpend.objects.order_by("id").values_list("spender", "spent_micro")),
                 sorted(PartitionSpend.objects.values_list("key", "spent_micro")), LedgerEntry.objects.count())
    assert after == before
    assert before[1] == [(d0.isoformat(), 600_000), (d1.isoformat(), 600_000)]
    if refusal == "partition_cap_reached":
        assert isinstance(refused.value, PartitionCapReached)
        assert refused.value.partitions == sorted(partitions)


def test_default_lifetime_cap_applies_without_a_partition_cap(q, analyst, color, settings):
    settings.PRIVACY = {**settings.PRIVACY, "DEFAULT_PARTITION_CAP_EPSILON": "1.5"}
    _, token = analyst
    client = q.client(token)
    assert q.post(client, q.body(color, q.day(-1), epsilon=1)).status_code == 200
    response = q.post(client, q.body(color, q.day(-1), epsilon=1, fresh=True))
    assert response.status_code == 403 and response.json()["code"] == "partition_cap_reached"
    assert q.post(client, q.body(color, q.day(-1), epsilon="0.5", fresh=True)).status_code == 200


# --- cached re-release -------------------------------------------------------------------


def test_cached_re_release_is_free_for_anyone_even_after_exhaustion_and_fresh_pays(q, analyst, color):
    ana, ana_token = analyst
    bob, bob_token = q.user("bob")
    ana_client, bob_client = q.client(ana_token), q.client(bob_token)
    q.add_krr(color, q.day(-1), "DE", [40, 30, 20])
    q.add_krr(color, q.day(-1), "US", [10, 10, 10])
    body = q.body(color, q.day(-2), q.day(-1), epsilon=2, group_by=["day", "region"])
    first = q.post(ana_client, body).json()
    assert first["privacy"]["cached"] is False and first["privacy"]["budget_remaining"] == 8.0
    ledger = LedgerEntry.objects.count()

    again = q.post(ana_client, body).json()
    assert again["privacy"]["cached"] is True
    assert again["privacy"]["budget_remaining"] == 8.0
    assert again["privacy"]["epsilon"] == 2.0
    assert again["release"]["id"] == first["release"]["id"]
    assert again["data"] == first["data"]
    assert LedgerEntry.objects.count() == ledger and Release.objects.count() == 1

    # another analyst gets the same release for free
    bobs = q.post(bob_client, body).json()
    assert bobs["privacy"]["cached"] is True and bobs["privacy"]["budget_remaining"] == 10.0
    assert bobs["data"] == first["data"]
    assert q.ledger_micro(user=bob) == 0

    # a different presentation re-renders the same noisy counts, still free
    wider = q.post(ana_client, {**body, "confidence": 0.99}).json()
    assert wider["privacy"]["cached"] is True and wider["release"]["id"] == first["release"]["id"]
    for narrow_cell, wide_cell in zip(first["data"], wider["data"]):
        assert narrow_cell["counts"] == wide_cell["counts"]
        for n_low, n_high, w_low, w_high in zip(narrow_cell["ci_low"], narrow_cell["ci_high"],
                                                wide_cell["ci_low"], wide_cell["ci_high"]):
            assert w_low <= n_low and w_high >= n_high

    # exhaust ana's budget: cached answers are still served
    assert q.post(ana_client, q.body(color, q.day(-3), epsilon=8)).status_code == 200
    exhausted = q.post(ana_client, body)
    assert exhausted.status_code == 200 and exhausted.json()["privacy"]["cached"] is True
    assert exhausted.json()["privacy"]["budget_remaining"] == 0.0
    # fresh pays again: refused for ana, charged to bob
    assert q.post(ana_client, {**body, "fresh": True}).status_code == 429
    fresh = q.post(bob_client, {**body, "fresh": True}).json()
    assert fresh["privacy"]["cached"] is False and fresh["privacy"]["budget_remaining"] == 8.0
    assert fresh["release"]["id"] != first["release"]["id"]
    assert q.ledger_micro(user=bob) == 2_000_000
    # afterwards the newest release is the cached one
    latest = q.post(ana_client, body).json()
    assert latest["privacy"]["cached"] is True and latest["release"]["id"] == fresh["release"]["id"]


def test_a_different_epsilon_or_window_is_a_new_paid_release(q, analyst, color):
    user, token = analyst
    client = q.client(token)
    assert q.post(client, q.body(color, q.day(-1), epsilon=1)).json()["privacy"]["cached"] is False
    assert q.post(client, q.body(color, q.day(-1), epsilon=2)).json()["privacy"]["cached"] is False
    assert q.post(client, q.body(color, q.day(-2), q.day(-1), epsilon=1)).json()["privacy"]["cached"] is False
    assert q.post(client, q.body(color, q.day(-1), epsilon=1, group_by=["day"])).json()["privacy"]["cached"] is False
    assert q.ledger_micro(user=user) == 5_000_000


# --- PLD ("approximate") -------------------------------------------------------------------


def _dp_accounting_count(per_query: float, budget: float, delta: float) -> int:
    """Largest k with min(k ε, ε_PLD(δ) of k discrete-Laplace ε-mechanisms) ≤ budget, from dp_accounting itself."""
    def spent(k: int) -> float:
        acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
        event = dp_accounting.dp_event.DiscreteLaplaceDpEvent(noise_parameter=per_query, sensitivity=1)
        acc.compose(dp_accounting.SelfComposedDpEvent(event, k))
        return min(k * per_query, acc.get_epsilon(delta))

    k = int(budget / per_query + 1e-9)
    while spent(k + 1) <= budget + 1e-12:
        k += 1
    return k


def test_pld_mode_admits_more_queries_than_pure_and_matches_dp_accounting(q, analyst, admin, color):
    user, token = analyst
    _, root_token = admin
    put = q.client(root_token).put(f"/api/v1/budgets/analysts/{user.username}",
                                   {"daily_epsilon": 2, "composition": "approximate", "delta": "1e-6"}, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["composition"] == "approximate" and put.json()["delta"] == 1e-6
    client = q.client(token)
    q.add_krr(color, q.day(-1), "DE", [3, 3, 3])
    accountant = PLDAccountant(Decimal("1e-6"))
    admitted, remaining = 0, []
    while True:
        response = q.post(client, q.body(color, q.day(-1), epsilon="0.1", fresh=True))
        if response.status_code != 200:
            break
        admitted += 1
        privacy = response.json()["privacy"]
        assert privacy["delta"] == 1e-6
        remaining.append(privacy["budget_remaining"])
        events = [DiscreteLaplaceEvent(Decimal("0.1"))] * admitted
        assert privacy["budget_remaining"] == float(accountant.remaining("2", events))
        assert admitted < 100, "runaway"
    assert response.status_code == 429 and response.json()["code"] == "budget_exhausted"
    assert admitted > 20  # pure composition would stop at 20
    assert admitted == accountant.max_queries("0.1", "2")
    assert admitted == _dp_accounting_count(0.1, 2.0, 1e-6)
    assert remaining == sorted(remaining, reverse=True) and min(remaining) >= 0
    assert set(LedgerEntry.objects.filter(spender=f"user:{user.pk}").values_list("composition", "delta")) == {
        ("approximate", Decimal("0.000001"))}
    me = client.get("/api/v1/budgets/me").json()
    assert me["composition"] == "approximate"
    final = accountant.remaining("2", [DiscreteLaplaceEvent(Decimal("0.1"))] * admitted)
    assert me["remaining"] == float(final) == remaining[-1]


def test_pure_mode_is_the_default_with_delta_zero(q, analyst, color):
    user, token = analyst
    response = q.post(q.client(token), q.body(color, q.day(-1), epsilon="0.1")).json()
    assert response["privacy"]["delta"] == 0.0
    entry = LedgerEntry.objects.get()
    assert (entry.composition, entry.delta) == ("pure", Decimal(0))


# --- admins' budget settings --------------------------------------------------------------


def test_group_budget_applies_and_an_analyst_budget_overrides_it(q, analyst, admin, color):
    user, token = analyst
    root = q.client(admin[1])
    put = root.put("/api/v1/budgets/groups/analyst", {"daily_epsilon": "1.5"}, format="json")
    assert put.status_code == 200 and put.json()["daily_epsilon"] == 1.5
    me = q.client(token).get("/api/v1/budgets/me").json()
    assert (me["daily_epsilon"], me["policy_source"]) == (1.5, "group:analyst")
    client = q.client(token)
    assert q.post(client, q.body(color, q.day(-1), epsilon=1)).status_code == 200
    assert q.post(client, q.body(color, q.day(-2), epsilon=1)).status_code == 429
    put = root.put(f"/api/v1/budgets/analysts/{user.username}", {"daily_epsilon": 4}, format="json")
    assert put.status_code == 200 and put.json()["daily_epsilon"] == 4 and put.json()["policy_source"] == "analyst"
    assert q.post(client, q.body(color, q.day(-2), epsilon=3)).status_code == 200
    assert q.post(client, q.body(color, q.day(-3), epsilon="0.000001")).status_code == 429


_BAD_EPSILONS = [(0, "invalid_epsilon"), ("abc", "invalid_epsilon"), ("0.0000001", "invalid_epsilon"),
                 (None, "invalid_epsilon"), (-2, "invalid_epsilon"), (True, "invalid_epsilon")]
_BAD_POLICIES = [
    ({"daily_epsilon": 5, "composition": "renyi"}, "invalid_composition"),
    ({"daily_epsilon": 5, "composition": "approximate", "delta": "0.5"}, "invalid_delta"),
    ({"daily_epsilon": 5, "composition": "approximate", "delta": "abc"}, "invalid_delta"),
    ({"daily_epsilon": 5, "composition": "approximate", "delta": "-1e-6"}, "invalid_delta"),
    ({"daily_epsilon": 5, "composition": "approximate", "delta": "Infinity"}, "invalid_delta"),
]


def _cases():
    for kind, field in (("analyst", "daily_epsilon"), ("group", "daily_epsilon"), ("partition", "lifetime_epsilon")):
        for value, code in _BAD_EPSILONS:
            yield kind, {field: value}, code
        yield kind, [1, 2], "invalid_body"
        if kind != "partition":
            yield from ((kind, body, code) for body, code in _BAD_POLICIES)


@pytest.mark.parametrize("url_kind, body, code", list(_cases()))
def test_bad_budget_settings_are_400_with_a_code_and_change_nothing(q, analyst, admin, color, url_kind, body, code):
    from accounting.models import BudgetPolicy, PartitionCap

    url = {"analyst": f"/api/v1/budgets/analysts/{analyst[0].username}", "group": "/api/v1/budgets/groups/analyst",
           "partition": "/api/v1/budgets/partitions/color"}[url_kind]
    response = q.client(admin[1]).put(url, body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert BudgetPolicy.objects.count() == 0 and PartitionCap.objects.count() == 0


def test_unknown_targets_of_budget_settings_are_404(q, admin):
    root = q.client(admin[1])
    assert root.put("/api/v1/budgets/analysts/ghost", {"daily_epsilon": 1}, format="json").json()["code"] == \
        "unknown_user"
    assert root.put("/api/v1/budgets/groups/ghosts", {"daily_epsilon": 1}, format="json").json()["code"] == \
        "unknown_group"
    response = root.put("/api/v1/budgets/partitions/ghost", {"lifetime_epsilon": 1}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "unknown_metric"


@pytest.mark.parametrize("delta", ["NaN", "sNaN"])
def test_a_non_numeric_delta_is_a_400_not_a_server_error(q, analyst, admin, delta):
    """Decimal('NaN') < x raises InvalidOperation in accounting.services._parse_policy: a 500."""
    root = q.client(admin[1], raise_errors=False)
    response = root.put(f"/api/v1/budgets/analysts/{analyst[0].username}",
                        {"daily_epsilon": 5, "composition": "approximate", "delta": delta}, format="json")
    assert response.status_code == 400, response.status_code
    assert response.json()["code"] == "invalid_delta"


def test_a_delta_finer_than_the_column_leaves_a_working_budget(q, analyst, admin, color):
    """delta=1e-20 passes 0 < δ < 0.001, but the column keeps 18 decimals: it would be stored as 0, and
    PLDAccountant(0) would then raise on every later query and budget read of this analyst. It is a 400."""
    user, token = analyst
    root = q.client(admin[1], raise_errors=False)
    response = root.put(f"/api/v1/budgets/analysts/{user.username}",
                        {"daily_epsilon": 5, "composition": "approximate", "delta": "1e-20"}, format="json")
    assert response.status_code == 400, response.status_code
    assert response.json()["code"] == "invalid_delta"
    client = q.client(token, raise_errors=False)
    assert client.get("/api/v1/budgets/me").status_code == 200
    assert q.post(client, q.body(color, q.day(-1), epsilon="0.1")).status_code == 200


@pytest.mark.parametrize("field, url", [
    ("daily_epsilon", "/api/v1/budgets/analysts/ana"),
    ("daily_epsilon", "/api/v1/budgets/groups/analyst"),
    ("lifetime_epsilon", "/api/v1/budgets/partitions/color"),
])
def test_an_epsilon_too_large_for_the_column_is_a_400(q, analyst, admin, color, field, url):
    """1e13 ε is 1e19 µε, over PostgreSQL's bigint: the write fails with a database error (500)."""
    root = q.client(admin[1], raise_errors=False)
    response = root.put(url, {field: "1e13"}, format="json")
    assert response.status_code == 400, response.status_code
    assert response.json()["code"] == "invalid_epsilon"


def test_budget_figures_are_computed_by_the_server(q, analyst, color):
    """A client cannot claim a cheaper ε: the body's unknown fields are refused, the ledger holds the query's ε."""
    user, token = analyst
    client = q.client(token)
    response = q.post(client, {**q.body(color, q.day(-1), epsilon="0.7"), "spent": 0})
    assert response.status_code == 400 and response.json()["code"] == "unknown_field"
    ok = q.post(client, q.body(color, q.day(-1), epsilon="0.7")).json()
    release = Release.objects.get(id=ok["release"]["id"])
    assert release.epsilon_micro == to_micro("0.7") == q.ledger_micro(user=user)
    assert release.sensitivity == 1 and release.noise_scale == "10/7"
