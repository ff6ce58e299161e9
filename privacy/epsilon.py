"""Exact ε arithmetic: integer micro-epsilon inside, Decimal at the edges (invariant 4).

1 ε = 1_000_000 µε. :func:`to_micro` refuses anything finer than 1e-6 ε, so
10 spends of 1.0 add up to exactly 10 and 3 of 0.1 to exactly 0.3. The one
place the service's ε resolution is defined.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Union

EpsilonLike = Union[Decimal, int, str, Fraction, float]

MICRO_PER_EPSILON = 1_000_000


def to_micro(epsilon: EpsilonLike) -> int:
    """Epsilon as an exact integer number of µε; refuse non-positive or finer than 1e-6.

    Accepts Decimal, int, str (``"0.1"``, ``"1/10"``), Fraction, and float
    (read through its shortest repr, so ``0.1`` is 0.1 but ``0.1 * 3`` =
    0.30000000000000004 is refused as finer than 1e-6).
    """
    if isinstance(epsilon, bool):
        raise TypeError("epsilon must be a number, not bool")
    try:
        if isinstance(epsilon, float):
            value = Fraction(Decimal(repr(epsilon)))
        elif isinstance(epsilon, (Decimal, int, str, Fraction)):
            value = Fraction(epsilon.strip() if isinstance(epsilon, str) else epsilon)
        else:
            raise TypeError(f"epsilon must be Decimal, int, str or Fraction, not {type(epsilon).__name__}")
    except (ValueError, ArithmeticError) as exc:  # NaN, inf, garbage text
        raise ValueError(f"epsilon: cannot read {epsilon!r} as a finite number") from exc
    if value <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    micro = value * MICRO_PER_EPSILON
    if micro.denominator != 1:
        raise ValueError(f"epsilon {epsilon!r} is finer than the 1e-6 resolution")
    return micro.numerator


def from_micro(micro: int) -> Decimal:
    """Integer µε back to an exact Decimal (``100_000 -> Decimal('0.1')``).

    Zero is allowed here (nothing spent / nothing left); negatives are not.
    """
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise TypeError("micro-epsilon must be an int")
    if micro < 0:
        raise ValueError("micro-epsilon must be >= 0")
    with localcontext() as ctx:
        ctx.prec = max(28, len(str(micro)) + 7)  # the division below is exact
        return Decimal(micro) / Decimal(MICRO_PER_EPSILON)


def ceil_micro(epsilon: float) -> int:
    """A float epsilon rounded up to whole µε (exactly, via Fraction)."""
    if math.isinf(epsilon) or math.isnan(epsilon):
        raise ValueError("epsilon is not finite")
    return math.ceil(Fraction(epsilon) * MICRO_PER_EPSILON)
