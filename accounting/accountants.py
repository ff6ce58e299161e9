"""Privacy accountants: immutable events in, exact epsilon out.

Framework-free (no Django import): the budget ledger calls these functions,
tests and benchmarks call them directly. The split follows Google's
``dp_accounting``: a release is described by an immutable *event* (mechanism
parameters only); an *accountant* turns a sequence of events into a privacy
figure (ARCHITECTURE.md, invariant 5: figures are computed from mechanism
parameters, never copied from a client).

Exact arithmetic (invariant 4). Budgets and per-query epsilons are integer
micro-epsilon (1 ε = 1_000_000 µε) internally and :class:`~decimal.Decimal`
at the edges; :func:`to_micro` refuses anything finer than 1e-6 ε, so 10
queries at 1.0 spend exactly 10 and 3 at 0.1 exactly 0.3.

Two accountants with one interface (:class:`Accountant`):

* :class:`PureDPAccountant` — basic composition, δ = 0: spent = Σ ε_i, exact.
* :class:`PLDAccountant` — (ε, δ)-DP for a fixed δ via privacy loss
  distributions (``dp_accounting.pld``). Its "spent" is ε(δ) of the whole
  composition, rounded *up* to the next µε; never more than basic composition.

"Remaining budget" means the same for both: ``remaining(budget, events)`` =
budget − spent (floored at 0), in ε at the accountant's δ; and
``queries_remaining(per_query_epsilon, budget, events)`` = how many more
queries at that ε still fit. For PLD, ε is not additive, so the remaining ε is
informative only; ``can_afford``/``queries_remaining`` are the decisions.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING, Iterable, Protocol, Union

from privacy.epsilon import MICRO_PER_EPSILON, EpsilonLike, ceil_micro as _ceil_micro, from_micro, to_micro

if TYPE_CHECKING:  # dp_accounting takes ~2 s to import: load it on first PLD use only
    import dp_accounting

__all__ = [
    "MICRO_PER_EPSILON",
    "EpsilonLike",
    "to_micro",
    "from_micro",
    "PrivacyEvent",
    "DiscreteLaplaceEvent",
    "Accountant",
    "PureDPAccountant",
    "PLDAccountant",
    "pld_epsilon",
    "max_queries",
]

# --------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------


class PrivacyEvent(Protocol):
    """What an accountant needs from an event."""

    @property
    def micro_epsilon(self) -> int: ...

    def to_dp_event(self) -> dp_accounting.DpEvent: ...


@dataclass(frozen=True)
class DiscreteLaplaceEvent:
    """One release noised with discrete Laplace noise of scale Δ/ε (pure ε-DP).

    ``epsilon`` is normalized to an exact Decimal on a 1e-6 grid;
    ``sensitivity`` Δ (the enforced per-client L1 contribution bound) only sets
    :attr:`scale`, the accounting depends on ε alone.
    """

    epsilon: Decimal
    sensitivity: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", from_micro(to_micro(self.epsilon)))
        if isinstance(self.sensitivity, bool) or not isinstance(self.sensitivity, int) or self.sensitivity < 1:
            raise ValueError("sensitivity must be a positive int")

    @property
    def micro_epsilon(self) -> int:
        return to_micro(self.epsilon)

    @property
    def scale(self) -> Fraction:
        """The discrete Laplace scale t = Δ/ε to give :mod:`privacy.noise`."""
        return Fraction(self.sensitivity) / Fraction(self.epsilon)

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """The dp_accounting event used for PLD accounting.

        ``DiscreteLaplaceDpEvent(noise_parameter=ε, sensitivity=1)``: its
        privacy loss is ±ε, the two-point PLD that dominates *every* pure
        ε-DP mechanism. It is therefore exact for a scalar count and sound for
        a vector of counts with L1 sensitivity Δ and scale Δ/ε, however a
        client's contribution is spread over cells. (``LaplaceDpEvent`` would
        be the *continuous* Laplace, whose PLD is strictly better: it would
        under-report ε for discrete noise.)
        """
        from dp_accounting.dp_event import DiscreteLaplaceDpEvent

        return DiscreteLaplaceDpEvent(noise_parameter=float(self.epsilon), sensitivity=1)


# --------------------------------------------------------------------------
# accountants
# --------------------------------------------------------------------------


class Accountant(Protocol):
    """The interface both accountants share."""

    @property
    def delta(self) -> Decimal: ...

    def spent(self, events: Iterable[PrivacyEvent]) -> Decimal: ...

    def remaining(self, budget_epsilon: EpsilonLike, events: Iterable[PrivacyEvent]) -> Decimal: ...

    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[PrivacyEvent], new_event: PrivacyEvent
    ) -> bool: ...

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int: ...

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[PrivacyEvent] = (),
    ) -> int: ...


def _basic_micro(events: Iterable[PrivacyEvent]) -> int:
    return sum(event.micro_epsilon for event in events)


class _MicroAccountant:
    """``spent`` and ``remaining`` in ε, from a subclass's exact ``spent_micro``."""

    def spent_micro(self, events: Iterable[PrivacyEvent]) -> int:
        raise NotImplementedError

    def spent(self, events: Iterable[PrivacyEvent]) -> Decimal:
        return from_micro(self.spent_micro(events))

    def remaining(self, budget_epsilon: EpsilonLike, events: Iterable[PrivacyEvent]) -> Decimal:
        """budget − spent, floored at 0 (for PLD informative only: its ε is not additive)."""
        return from_micro(max(0, to_micro(budget_epsilon) - self.spent_micro(events)))


class PureDPAccountant(_MicroAccountant):
    """Basic composition of pure ε-DP events: δ = 0 and ε adds up exactly (spent = Σ ε_i)."""

    @property
    def delta(self) -> Decimal:
        return Decimal(0)

    def spent_micro(self, events: Iterable[PrivacyEvent]) -> int:
        return _basic_micro(events)

    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[PrivacyEvent], new_event: PrivacyEvent
    ) -> bool:
        return self.spent_micro(events) + new_event.micro_epsilon <= to_micro(budget_epsilon)

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int:
        """⌊budget / ε⌋, exactly."""
        return to_micro(budget_epsilon) // to_micro(per_query_epsilon)

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[PrivacyEvent] = (),
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


Composition = tuple  # tuple of (micro_epsilon, count) pairs, sorted


def _composition(events: Iterable[PrivacyEvent]) -> Composition:
    counts = collections.Counter(event.micro_epsilon for event in events)
    return tuple(sorted(counts.items()))


@functools.lru_cache(maxsize=4096)
def _pld_epsilon_cached(composition: Composition, delta: float, interval: float) -> float:
    if not composition:
        return 0.0
    from dp_accounting import SelfComposedDpEvent
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    for micro, count in composition:
        event = DiscreteLaplaceEvent(from_micro(micro)).to_dp_event()
        accountant.compose(SelfComposedDpEvent(event, count))
    return float(accountant.get_epsilon(delta))


def pld_epsilon(
    events: Iterable[PrivacyEvent], delta: Union[Decimal, str, float], *, value_discretization_interval: float = 1e-4
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
        basic = sum(micro * count for micro, count in composition)
        if basic == 0:
            return 0
        pld = _ceil_micro(_pld_epsilon_cached(composition, self._delta, self._interval))
        return min(basic, pld)

    def spent_micro(self, events: Iterable[PrivacyEvent]) -> int:
        return self._spent_micro_of(_composition(events))

    def epsilon(self, events: Iterable[PrivacyEvent]) -> float:
        """The unrounded ε(δ) from dp_accounting (no basic-composition cap)."""
        return _pld_epsilon_cached(_composition(events), self._delta, self._interval)


    def can_afford(
        self, budget_epsilon: EpsilonLike, events: Iterable[PrivacyEvent], new_event: PrivacyEvent
    ) -> bool:
        return self.spent_micro([*events, new_event]) <= to_micro(budget_epsilon)

    def max_queries(self, per_query_epsilon: EpsilonLike, budget_epsilon: EpsilonLike) -> int:
        return self.queries_remaining(per_query_epsilon, budget_epsilon, ())

    def queries_remaining(
        self,
        per_query_epsilon: EpsilonLike,
        budget_epsilon: EpsilonLike,
        events: Iterable[PrivacyEvent] = (),
    ) -> int:
        """Largest k ≥ 0 such that the events plus k queries at ``per_query_epsilon`` fit.

        Exponential then binary search over k, starting from the basic-
        composition count (always affordable). Every returned k has been
        checked; ε(δ) is monotone in k, so it is the largest such k.
        """
        per = to_micro(per_query_epsilon)
        budget = to_micro(budget_epsilon)
        base = collections.Counter(dict(_composition(events)))

        def fits(k: int) -> bool:
            counts = base.copy()
            if k:
                counts[per] += k
            return self._spent_micro_of(tuple(sorted(counts.items()))) <= budget

        if not fits(0):
            return 0
        low = max(0, budget - sum(m * c for m, c in base.items())) // per  # fits by basic composition
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
