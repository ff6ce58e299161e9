"""Privacy accountants: immutable events in, exact epsilon out.

Framework-free (no Django import): the budget ledger calls these functions,
tests and benchmarks call them directly. The split follows Google's
``dp_accounting``: a release is described by an immutable *event*
(:mod:`accounting.events`, mechanism parameters only); an *accountant* turns a
sequence of events of any kinds into a privacy figure (ARCHITECTURE.md, invariant 5: figures are computed from mechanism
parameters, never copied from a client).

Exact arithmetic (invariant 4). Budgets and per-query epsilons are integer
micro-epsilon (1 ε = 1_000_000 µε) internally and :class:`~decimal.Decimal`
at the edges; :func:`to_micro` refuses anything finer than 1e-6 ε, so 10
queries at 1.0 spend exactly 10 and 3 at 0.1 exactly 0.3.

Two accountants with one interface (:class:`Accountant`):

* :class:`PureDPAccountant` — basic composition, δ = 0: spent = Σ ε_i, exact;
  it refuses events with no pure ε (:class:`NotPureDP`).
* :class:`PLDAccountant` — (ε, δ)-DP for a fixed δ via privacy loss
  distributions (``dp_accounting.pld``). Its "spent" is ε(δ) of the whole
  composition (each distinct event self-composed), rounded *up* to the next µε;
  never more than basic composition when every event is pure.

"Remaining budget" means the same for both: ``remaining(budget, events)`` =
budget − spent (floored at 0), in ε at the accountant's δ; and
``queries_remaining(per_query_epsilon, budget, events)`` = how many more
queries at that ε still fit. For PLD, ε is not additive, so the remaining ε is
informative only; ``can_afford``/``queries_remaining`` are the decisions.
"""

from __future__ import annotations

import collections
import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Protocol, Union

from accounting.events import DiscreteLaplaceEvent, MechanismEvent, event_sort_key
from privacy.epsilon import EpsilonLike, ceil_micro, from_micro, to_micro

if TYPE_CHECKING:  # dp_accounting takes ~2 s to import: load it on first PLD use only
    import dp_accounting

__all__ = [
    "NotPureDP",
    "Accountant",
    "PureDPAccountant",
    "PLDAccountant",
    "pld_epsilon",
    "max_queries",
]


class NotPureDP(ValueError):
    """A pure-ε accountant was given an event with no pure ε (a Gaussian, say)."""


# --------------------------------------------------------------------------
# accountants
# --------------------------------------------------------------------------


class Accountant(Protocol):
    """The interface both accountants share."""

    @property
    def delta(self) -> Decimal: ...

    def spent(self, events: Iterable[MechanismEvent]) -> Decimal: ...

    def remaining(self, budget_epsilon: EpsilonLike, events: Iterable[MechanismEvent]) -> Decimal: ...

    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[MechanismEvent], new_event: MechanismEvent
    ) -> bool: ...

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int: ...

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[MechanismEvent] = (),
    ) -> int: ...


def _basic_micro(events: Iterable[MechanismEvent]) -> int | None:
    """Σ ε_i of pure events (basic composition); None if any event has no pure ε."""
    total = 0
    for event in events:
        if event.pure_epsilon_micro is None:
            return None
        total += event.pure_epsilon_micro
    return total


class _MicroAccountant:
    """``spent`` and ``remaining`` in ε, from a subclass's exact ``spent_micro``."""

    def spent_micro(self, events: Iterable[MechanismEvent]) -> int:
        raise NotImplementedError

    def spent(self, events: Iterable[MechanismEvent]) -> Decimal:
        return from_micro(self.spent_micro(events))

    def remaining(self, budget_epsilon: EpsilonLike, events: Iterable[MechanismEvent]) -> Decimal:
        """budget − spent, floored at 0 (for PLD informative only: its ε is not additive)."""
        return from_micro(max(0, to_micro(budget_epsilon) - self.spent_micro(events)))


class PureDPAccountant(_MicroAccountant):
    """Basic composition of pure ε-DP events: δ = 0 and ε adds up exactly (spent = Σ ε_i)."""

    @property
    def delta(self) -> Decimal:
        return Decimal(0)

    def spent_micro(self, events: Iterable[MechanismEvent]) -> int:
        total = _basic_micro(events)
        if total is None:
            raise NotPureDP("an event without a pure epsilon needs approximate (PLD) accounting")
        return total

    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[MechanismEvent], new_event: MechanismEvent
    ) -> bool:
        return self.spent_micro([*events, new_event]) <= to_micro(budget_epsilon)

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int:
        """⌊budget / ε⌋, exactly."""
        return to_micro(budget_epsilon) // to_micro(per_query_epsilon)

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[MechanismEvent] = (),
    ) -> int:
        left = to_micro(budget_epsilon) - self.spent_micro(events)
        return max(0, left) // to_micro(per_query_epsilon)


def _parse_delta(delta: Union[Decimal, str, float]) -> float:
    if isinstance(delta, bool):
        raise TypeError("delta must be a number")
    try:
        value = float(Decimal(repr(delta)) if isinstance(delta, float) else Decimal(delta))
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"delta: cannot read {delta!r}") from exc
    if not 0.0 < value < 1.0:
        raise ValueError("delta must be in (0, 1)")
    return value


Composition = tuple  # ((event, count), ...) in event_sort_key order: hashable, canonical


def _composition(events: Iterable[MechanismEvent]) -> Composition:
    counts = collections.Counter(events)
    return tuple(sorted(counts.items(), key=lambda item: event_sort_key(item[0])))


@functools.lru_cache(maxsize=4096)
def _pld_epsilon_cached(composition: Composition, delta: float, interval: float) -> float:
    if not composition:
        return 0.0
    from dp_accounting import SelfComposedDpEvent
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    for event, count in composition:
        accountant.compose(SelfComposedDpEvent(event.to_dp_event(), count))
    return float(accountant.get_epsilon(delta))


def pld_epsilon(
    events: Iterable[MechanismEvent], delta: Union[Decimal, str, float], *, value_discretization_interval: float = 1e-4
) -> float:
    """ε(δ) of the composition by dp_accounting's PLD accountant (pessimistic estimate).

    Identical events are grouped into ``SelfComposedDpEvent`` (one FFT
    self-composition per distinct ε instead of one convolution per event).
    """
    return _pld_epsilon_cached(_composition(events), _parse_delta(delta), value_discretization_interval)


class PLDAccountant(_MicroAccountant):
    """(ε, δ)-DP accounting at a fixed δ with privacy loss distributions.

    ``spent(events)`` = min(ε(δ) by dp_accounting's PLD accountant, Σ ε_i),
    rounded up to whole µε. Basic composition is also a valid (ε, δ) bound
    (it has δ = 0), so the minimum never exceeds the pure-DP figure, even when
    the PLD's pessimistic discretization would. Results are cached per
    composition (multiset of per-event ε), so ledger look-ups stay cheap.
    """

    def __init__(
        self, delta: Union[Decimal, str, float], *, value_discretization_interval: float = 1e-4
    ) -> None:
        self._delta = _parse_delta(delta)
        self._delta_decimal = Decimal(delta) if not isinstance(delta, float) else Decimal(repr(delta))
        self._interval = value_discretization_interval

    @property
    def delta(self) -> Decimal:
        return self._delta_decimal

    def _spent_micro_of(self, composition: Composition) -> int:
        if not composition:
            return 0
        pld = ceil_micro(_pld_epsilon_cached(composition, self._delta, self._interval))
        pure = [(event.pure_epsilon_micro, count) for event, count in composition]
        if any(micro is None for micro, _ in pure):
            return pld
        return min(sum(micro * count for micro, count in pure), pld)

    def spent_micro(self, events: Iterable[MechanismEvent]) -> int:
        return self._spent_micro_of(_composition(events))

    def epsilon(self, events: Iterable[MechanismEvent]) -> float:
        """The unrounded ε(δ) from dp_accounting (no basic-composition cap)."""
        return _pld_epsilon_cached(_composition(events), self._delta, self._interval)


    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[MechanismEvent], new_event: MechanismEvent
    ) -> bool:
        return self.spent_micro([*events, new_event]) <= to_micro(budget_epsilon)

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int:
        return self.queries_remaining(per_query_epsilon, budget_epsilon, ())

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[MechanismEvent] = (),
    ) -> int:
        """Largest k ≥ 0 such that the events plus k queries at ``per_query_epsilon`` fit.

        Exponential then binary search over k, starting from the basic-
        composition count (always affordable). Every returned k has been
        checked; ε(δ) is monotone in k, so it is the largest such k.
        """
        query = DiscreteLaplaceEvent(per_query_epsilon)
        budget = to_micro(budget_epsilon)
        events = list(events)

        def fits(k: int) -> bool:
            return self._spent_micro_of(_composition([*events, *[query] * k])) <= budget

        if not fits(0):
            return 0
        basic = _basic_micro(events)  # k queries fit by basic composition when basic + k ε <= budget
        low = max(0, budget - basic) // query.pure_epsilon_micro if basic is not None else 0
        high = max(1, 2 * low)
        while fits(high):
            low, high = high, 2 * high
        while high - low > 1:  # invariant: fits(low), not fits(high)
            mid = (low + high) // 2
            if fits(mid):
                low = mid
            else:
                high = mid
        return low


def max_queries(
    per_query_epsilon: EpsilonLike, delta: Union[Decimal, str, float], budget_epsilon: EpsilonLike
) -> int:
    """How many queries at ``per_query_epsilon`` fit in ``budget_epsilon`` at ``delta`` (PLD)."""
    return PLDAccountant(delta).max_queries(per_query_epsilon, budget_epsilon)
