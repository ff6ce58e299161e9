"""Tests for accounting.accountants (no Django)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant

from accounting.accountants import PLDAccountant, PureDPAccountant, max_queries, pld_epsilon
from accounting.events import DiscreteLaplaceEvent
from privacy.epsilon import MICRO_PER_EPSILON, from_micro, to_micro

DELTA = 1e-6


def _events(eps, n):
    return [DiscreteLaplaceEvent(Decimal(eps))] * n


# ---------------------------------------------------------------- exact arithmetic


def test_micro_round_trip():
    assert MICRO_PER_EPSILON == 1_000_000
    assert to_micro(Decimal("0.1")) == 100_000
    assert to_micro("1") == to_micro(1) == to_micro(Fraction(1)) == 1_000_000
    assert to_micro("0.000001") == 1
    assert to_micro(0.1) == 100_000  # float through its shortest repr
    assert from_micro(100_000) == Decimal("0.1") and str(from_micro(100_000)) == "0.1"
    assert str(from_micro(10_000_000)) == "10"
    assert from_micro(0) == 0
    for m in (1, 7, 123_456_789, 10**30 + 1):
        assert to_micro(from_micro(m)) == m


@pytest.mark.parametrize("bad", ["0.0000001", Decimal("1E-7"), "1/3", 0.1 * 3])
def test_to_micro_rejects_finer_resolution(bad):
    with pytest.raises(ValueError):
        to_micro(bad)


@pytest.mark.parametrize("bad", [0, "0", "-0.1", Decimal("-1"), -1])
def test_to_micro_rejects_non_positive(bad):
    with pytest.raises(ValueError):
        to_micro(bad)


@pytest.mark.parametrize("bad", ["abc", Decimal("NaN"), Decimal("Infinity"), "inf"])
def test_to_micro_rejects_garbage(bad):
    with pytest.raises(ValueError):
        to_micro(bad)


def test_to_micro_and_from_micro_types():
    with pytest.raises(TypeError):
        to_micro(True)
    with pytest.raises(TypeError):
        from_micro(1.0)
    with pytest.raises(ValueError):
        from_micro(-1)


def test_event_is_immutable_and_normalized():
    event = DiscreteLaplaceEvent("0.100000", sensitivity=2)
    assert event.epsilon == Decimal("0.1") and isinstance(event.epsilon, Decimal)
    assert event.scale == Fraction(20)
    assert event == DiscreteLaplaceEvent(Decimal("0.1"), 2)
    with pytest.raises(Exception):
        event.epsilon = Decimal(1)  # frozen
    with pytest.raises(ValueError):
        DiscreteLaplaceEvent("0.1", sensitivity=0)
    with pytest.raises(ValueError):
        DiscreteLaplaceEvent("0")


# ---------------------------------------------------------------- pure DP


def test_pure_composition_is_exact():
    acc = PureDPAccountant()
    assert acc.delta == 0
    assert acc.spent(_events("1.0", 10)) == Decimal(10)
    assert acc.spent(_events("0.1", 3)) == Decimal("0.3")
    assert str(acc.spent(_events("0.1", 3))) == "0.3"
    assert acc.spent([]) == 0
    assert acc.remaining(10, _events("0.1", 3)) == Decimal("9.7")
    assert acc.remaining(1, _events("1", 3)) == 0


def test_pure_budget_fits_100_queries_at_0_1_in_10():
    acc = PureDPAccountant()
    assert acc.max_queries("0.1", "10") == 100
    spent = _events("0.1", 99)
    assert acc.can_afford("10", spent, DiscreteLaplaceEvent("0.1"))
    assert not acc.can_afford("10", spent + _events("0.1", 1), DiscreteLaplaceEvent("0.1"))
    assert acc.queries_remaining("0.1", "10", spent) == 1
    assert acc.queries_remaining("0.1", "10", _events("0.1", 100)) == 0


# ---------------------------------------------------------------- PLD


def _direct_pld_epsilon(event: dp_accounting.DpEvent, count: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, count))
    return accountant.get_epsilon(delta)


def _is_max_count(event: dp_accounting.DpEvent, n: int, delta: float, budget: float) -> bool:
    """With dp_accounting only: n compositions fit in the budget and n + 1 do not."""
    return _direct_pld_epsilon(event, n, delta) <= budget < _direct_pld_epsilon(event, n + 1, delta)


def _exact_binomial_delta(eps: float, n: int, target: float) -> float:
    """δ(target) of n-fold discrete Laplace at ε, exactly (loss is ±ε: a binomial)."""
    p = 1 / (1 + math.exp(-eps))  # P[loss = +eps]
    total = 0.0
    for k in range(n + 1):
        loss = eps * (2 * k - n)
        if loss > target:
            log_w = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            log_w += k * math.log(p) + (n - k) * math.log1p(-p)
            total += math.exp(log_w) * -math.expm1(target - loss)
    return total


def test_pld_matches_direct_dp_accounting():
    dp_event = dp_accounting.dp_event.DiscreteLaplaceDpEvent(noise_parameter=0.1, sensitivity=1)
    for n in (1, 50, 200):
        ours = pld_epsilon(_events("0.1", n), DELTA)
        assert ours == _direct_pld_epsilon(dp_event, n, DELTA)
        assert PLDAccountant(DELTA).epsilon(_events("0.1", n)) == ours
    # Mixed compositions are grouped, not approximated.
    mixed = _events("0.1", 20) + _events("0.5", 3)
    direct = pld_privacy_accountant.PLDAccountant()
    direct.compose(dp_accounting.dp_event.DiscreteLaplaceDpEvent(0.1, 1), 20)
    direct.compose(dp_accounting.dp_event.DiscreteLaplaceDpEvent(0.5, 1), 3)
    assert pld_epsilon(mixed, DELTA) == pytest.approx(direct.get_epsilon(DELTA), abs=1e-9)


def test_pld_spent_is_rounded_up_and_capped_by_basic_composition():
    acc = PLDAccountant("1e-6")
    assert acc.delta == Decimal("1e-6")
    eps = acc.epsilon(_events("0.1", 200))
    spent = acc.spent(_events("0.1", 200))
    assert spent >= Decimal(repr(eps)) and spent - Decimal(repr(eps)) < Decimal("0.000001")
    assert spent < Decimal(20)
    for n in (1, 2, 10, 100):
        assert acc.spent(_events("0.1", n)) <= PureDPAccountant().spent(_events("0.1", n))
    assert acc.spent([]) == 0


def test_pld_remaining_interface():
    acc = PLDAccountant(DELTA)
    events = _events("0.1", 100)
    assert acc.remaining(10, events) == Decimal(10) - acc.spent(events)
    assert acc.queries_remaining("0.1", 10, events) == acc.max_queries("0.1", 10) - 100
    assert acc.queries_remaining("0.1", 10, _events("0.1", acc.max_queries("0.1", 10))) == 0


def test_max_queries_discrete_laplace_at_0_1_delta_1e6_budget_10():
    """Queries at ε=0.1 that fit in ε=10 at δ=1e-6 for *discrete* Laplace noise: 346.

    Checked three independent ways: our accountant, a plain dp_accounting
    linear search, and the exact binomial δ(ε) of the ±ε privacy loss.
    """
    ours = max_queries("0.1", DELTA, "10")
    dp_event = dp_accounting.dp_event.DiscreteLaplaceDpEvent(noise_parameter=0.1, sensitivity=1)
    assert _is_max_count(dp_event, ours, DELTA, 10.0)
    assert _exact_binomial_delta(0.1, ours, 10.0) <= DELTA < _exact_binomial_delta(0.1, ours + 1, 10.0)
    assert ours == 346
    assert ours > PureDPAccountant().max_queries("0.1", "10") == 100
    acc = PLDAccountant(DELTA)
    assert acc.can_afford(10, _events("0.1", ours - 1), DiscreteLaplaceEvent("0.1"))
    assert not acc.can_afford(10, _events("0.1", ours), DiscreteLaplaceEvent("0.1"))


def test_issue_figure_357_is_the_continuous_laplace_pld():
    """The issue's "357 queries" is dp_accounting's figure for *continuous* Laplace.

    ``LaplaceDpEvent(noise_multiplier=1/0.1)`` at δ=1e-6, budget ε=10: 357 fit.
    Our releases use discrete Laplace noise, whose PLD (±ε) is worse, so the
    accountant (correctly) allows 346; it must never allow more than 357.
    """
    laplace = dp_accounting.LaplaceDpEvent(noise_multiplier=10.0)
    n = 357
    assert _is_max_count(laplace, n, DELTA, 10.0)
    assert max_queries("0.1", DELTA, "10") <= n


def test_pld_validation():
    for bad in (0, 1, "-1e-6", "2"):
        with pytest.raises(ValueError):
            PLDAccountant(bad)
