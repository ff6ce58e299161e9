"""The one ledger: any mechanism event, any spender, partitions and subjects.

A new mechanism is one event class: these tests charge a Poisson-subsampled
Gaussian (DP-SGD), a discrete Laplace (a query) and a composed event (a query
grouped by region: its grid and its selection counts) to one spender and check
the composed ε against dp-accounting's own PLD accountant, computed independently.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import transaction
from django.db.models import Sum
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from accounting.accountants import PLDAccountant, PureDPAccountant, pld_epsilon
from accounting.events import (
    ComposedEvent,
    DiscreteLaplaceEvent,
    GaussianEvent,
    PoissonSampledGaussianEvent,
    event_from_json,
    event_to_json,
)
from accounting.models import DailySpend, LedgerEntry, PartitionCap, PartitionSpend
from accounting.selectors import day_events, spent_micro, utc_today
from accounting.services.ledger import PartitionCapReached, charge
from accounting.types import EffectivePolicy, Partition, Spender, Subject
from deploy.api.errors import ApiError
from privacy.epsilon import MICRO_PER_EPSILON, to_micro

pytestmark = pytest.mark.django_db

DELTA = Decimal("1e-5")
TRAINING = PoissonSampledGaussianEvent(noise_multiplier=1.1, sampling_probability=0.01, steps=500)
QUERY = DiscreteLaplaceEvent("0.5", sensitivity=2)
# A query grouped by region at ε = 1: the grid at 0.9 (Δ = 3), the selection counts at 0.1 (m = 1).
REGION_QUERY = ComposedEvent((DiscreteLaplaceEvent("0.9", sensitivity=3), DiscreteLaplaceEvent("0.1", sensitivity=1)))


def _approximate(daily: str = "10") -> EffectivePolicy:
    return EffectivePolicy(to_micro(daily), "approximate", DELTA, "analyst")


def _charge(spender: Spender, event, partitions=(), subject_id: str = "s1"):
    with transaction.atomic():
        return charge(spender=spender, event=event, partitions=list(partitions), subject=Subject("test", subject_id))


def _dp_accounting_epsilon(*events: dp_event.DpEvent) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for event in events:
        accountant.compose(event)
    return accountant.get_epsilon(float(DELTA))


def test_a_subsampled_gaussian_and_a_discrete_laplace_compose_as_dp_accounting_says():
    spender = Spender("user:1", _approximate())
    _charge(spender, TRAINING, subject_id="job-1")
    _charge(spender, QUERY, subject_id="release-1")

    independent = _dp_accounting_epsilon(
        dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 500),
        dp_event.DiscreteLaplaceDpEvent(noise_parameter=0.5, sensitivity=1),
    )
    assert spent_micro(spender, utc_today()) == math.ceil(independent * MICRO_PER_EPSILON)
    # the composition is more than either event alone and less than their sum
    alone = _dp_accounting_epsilon(TRAINING.to_dp_event())
    assert alone < independent < alone + 0.5
    assert sorted(map(event_to_json, day_events("user:1", utc_today())), key=str) == sorted(
        [event_to_json(TRAINING), event_to_json(QUERY)], key=str)


def test_each_entry_keeps_its_event_spender_partitions_and_subject():
    spender = Spender("contributor:7", None)
    paid = _charge(spender, TRAINING, [Partition("dataset:3")], subject_id="job-9")
    entry = LedgerEntry.objects.get()
    assert entry == paid.entry
    assert (entry.spender, entry.subject_kind, entry.subject_id) == ("contributor:7", "test", "job-9")
    assert event_from_json(entry.event) == TRAINING
    assert entry.partitions == [["dataset:3", ""]]
    assert entry.composition == "approximate" and entry.delta == Decimal("0.000001")  # settings' default δ
    # a Gaussian has no pure ε: it is charged its own PLD ε at that δ
    assert entry.epsilon_micro == math.ceil(_dp_accounting_epsilon_at(TRAINING, 1e-6) * MICRO_PER_EPSILON)
    assert PartitionSpend.objects.get().spent_micro == entry.epsilon_micro
    assert paid.remaining_after is None


def _dp_accounting_epsilon_at(event, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(event.to_dp_event())
    return accountant.get_epsilon(delta)


def test_a_pure_policy_refuses_an_event_without_pure_epsilon_and_writes_nothing():
    spender = Spender("user:2", EffectivePolicy(to_micro(10), "pure", Decimal(0), "default"))
    with pytest.raises(ApiError) as refused:
        _charge(spender, GaussianEvent(2.0))
    assert refused.value.code == "approximate_dp_required" and refused.value.http_status == 409
    assert not LedgerEntry.objects.exists() and not DailySpend.objects.exists()


def test_the_daily_budget_is_checked_on_the_composition():
    spender = Spender("user:3", _approximate(daily="2"))
    _charge(spender, TRAINING)  # about 1.5 at δ = 1e-5
    with pytest.raises(ApiError) as refused:
        _charge(spender, DiscreteLaplaceEvent("1"), subject_id="s2")
    assert refused.value.code == "budget_exhausted" and refused.value.http_status == 429
    remaining = refused.value.extra["budget_remaining"]
    assert isinstance(remaining, float) and remaining == pytest.approx(2 - spent_micro(spender, utc_today()) / 1e6)
    assert LedgerEntry.objects.count() == 1


def test_partition_caps_are_per_scope_and_refusals_name_the_partitions():
    PartitionCap.objects.create(scope="dataset:1", lifetime_epsilon_micro=to_micro("1"))
    spender = Spender("user:4", None)
    _charge(spender, DiscreteLaplaceEvent("0.6"), [Partition("dataset:1"), Partition("dataset:2")])
    with pytest.raises(PartitionCapReached) as refused:
        _charge(spender, DiscreteLaplaceEvent("0.6"), [Partition("dataset:2"), Partition("dataset:1")], "s2")
    assert refused.value.partitions == [Partition("dataset:1")]  # dataset:2 has the default cap (50)
    assert dict(PartitionSpend.objects.values_list("scope", "spent_micro")) == {"dataset:1": 600_000,
                                                                                "dataset:2": 600_000}


@pytest.mark.django_db(transaction=True)  # no test-wide transaction around it
def test_charge_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError):
        charge(spender=Spender("user:5", None), event=QUERY, partitions=[], subject=Subject("test", "x"))


@pytest.mark.parametrize("event", [QUERY, GaussianEvent(0.8), TRAINING, REGION_QUERY,
                                   ComposedEvent((TRAINING, REGION_QUERY))])
def test_events_read_back_from_their_json(event):
    assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_a_composed_event_is_its_parts_in_json_and_in_the_ledger():
    assert event_to_json(REGION_QUERY) == {"kind": "composed", "parts": [
        {"kind": "discrete_laplace", "epsilon": "0.9", "sensitivity": 3},
        {"kind": "discrete_laplace", "epsilon": "0.1", "sensitivity": 1}]}
    assert [part.scale for part in REGION_QUERY.parts] == [Fraction(10, 3), Fraction(10)]
    _charge(Spender("user:8", None), REGION_QUERY)
    assert event_from_json(LedgerEntry.objects.get().event) == REGION_QUERY
    assert day_events("user:8", utc_today()) == [REGION_QUERY]


def test_the_pure_accountant_sums_a_composed_event_s_parts():
    """Basic composition: ε = 0.9 + 0.1, charged exactly; a part without pure ε makes the whole impure."""
    assert REGION_QUERY.pure_epsilon_micro == 1_000_000
    assert PureDPAccountant().spent([REGION_QUERY, REGION_QUERY, QUERY]) == Decimal("2.5")
    assert ComposedEvent((QUERY, GaussianEvent(1.0))).pure_epsilon_micro is None
    spender = Spender("user:9", EffectivePolicy(to_micro("2.5"), "pure", Decimal(0), "analyst"))
    _charge(spender, REGION_QUERY, subject_id="r1")
    _charge(spender, REGION_QUERY, subject_id="r2")
    assert spent_micro(spender, utc_today()) == 2_000_000 == LedgerEntry.objects.aggregate(s=Sum("epsilon_micro"))["s"]
    with pytest.raises(ApiError) as refused:  # 3.0 > 2.5
        _charge(spender, REGION_QUERY, subject_id="r3")
    assert refused.value.code == "budget_exhausted"


def test_the_pld_of_a_composed_event_is_dp_accounting_s_of_its_parts_computed_independently():
    parts = (dp_event.DiscreteLaplaceDpEvent(noise_parameter=0.9, sensitivity=1),
             dp_event.DiscreteLaplaceDpEvent(noise_parameter=0.1, sensitivity=1))
    assert REGION_QUERY.to_dp_event() == dp_event.ComposedDpEvent(list(parts))
    one = _dp_accounting_epsilon(*parts)
    assert pld_epsilon([REGION_QUERY], DELTA) == pytest.approx(one, rel=1e-9)
    three = _dp_accounting_epsilon(*parts * 3)
    assert pld_epsilon([REGION_QUERY] * 3, DELTA) == pytest.approx(three, rel=1e-9)
    # charged to one spender next to a training job: the ledger's figure is dp-accounting's composition
    spender = Spender("user:10", _approximate())
    _charge(spender, TRAINING, subject_id="job-1")
    _charge(spender, REGION_QUERY, subject_id="release-1")
    independent = _dp_accounting_epsilon(
        dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 500),
        *parts)
    assert spent_micro(spender, utc_today()) == math.ceil(independent * MICRO_PER_EPSILON)
    assert PLDAccountant(DELTA).spent_micro([REGION_QUERY]) <= 1_000_000  # never more than basic composition


@pytest.mark.parametrize("data", [{"kind": "nope"}, {"kind": "gaussian", "noise_multiplier": -1},
                                  {"kind": "poisson_sampled_gaussian", "noise_multiplier": 1,
                                   "sampling_probability": 1.5, "steps": 3},
                                  {"kind": "discrete_laplace", "epsilon": "0.0000001"},
                                  {"kind": "composed", "parts": []}, {"kind": "composed", "parts": [{"kind": "nope"}]},
                                  {"kind": "composed", "parts": "discrete_laplace"}])
def test_bad_event_json_is_refused(data):
    with pytest.raises((ValueError, TypeError)):
        event_from_json(data)
