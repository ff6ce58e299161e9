"""Unbiased integer sampling from a cryptographically secure byte source.

Every random draw that protects privacy goes through a :class:`RandomSource`
(ARCHITECTURE.md, invariant 2). The default source is ``os.urandom``; an
auditable DRBG seeded from it lives in :mod:`privacy.drbg`. Integers are drawn
by rejection sampling, never by reducing modulo the range, so there is no
modulo bias.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


class RandomSource(Protocol):
    """Anything that returns uniformly random bytes."""

    def random_bytes(self, count: int) -> bytes: ...


class SystemRandomSource:
    """The operating system's CSPRNG (``os.urandom``)."""

    def random_bytes(self, count: int) -> bytes:
        return os.urandom(count)


SYSTEM_RANDOM = SystemRandomSource()


def randbelow(upper: int, source: RandomSource | None = None) -> int:
    """A uniform integer in ``[0, upper)`` for an arbitrary-size ``upper``.

    Rejection sampling on the smallest number of whole bits that covers
    ``upper``: each try succeeds with probability > 1/2.
    """
    if upper < 1:
        raise ValueError("upper must be >= 1")
    if upper == 1:
        return 0
    source = source or SYSTEM_RANDOM
    bits = (upper - 1).bit_length()
    nbytes = (bits + 7) // 8
    excess = nbytes * 8 - bits
    while True:
        candidate = int.from_bytes(source.random_bytes(nbytes), "big") >> excess
        if candidate < upper:
            return candidate


def uniform_ints(upper: int, size: int, source: RandomSource | None = None) -> np.ndarray:
    """``size`` independent uniform integers in ``[0, upper)`` as int64.

    Vectorized rejection sampling: draw 64-bit words, keep the top ``bits``
    bits, reject candidates ``>= upper`` and redraw only those.
    """
    if not 1 <= upper <= 2**63:
        raise ValueError("upper must be in [1, 2**63]")
    out = np.empty(size, dtype=np.int64)
    if size == 0:
        return out
    if upper == 1:
        out.fill(0)
        return out
    source = source or SYSTEM_RANDOM
    shift = np.uint64(64 - (upper - 1).bit_length())
    pending = np.arange(size)
    while pending.size:
        # Acceptance probability is > 1/2, so over-draw a little to finish in ~1 round.
        draw = pending.size + pending.size // 2 + 16
        words = np.frombuffer(source.random_bytes(8 * draw), dtype=np.uint64) >> shift
        accepted = words[words < np.uint64(upper)][: pending.size]
        out[pending[: accepted.size]] = accepted.astype(np.int64)
        pending = pending[accepted.size :]
    return out


def bernoulli(probability: float, size: int, source: RandomSource | None = None) -> np.ndarray:
    """``size`` Bernoulli draws with success probability ``probability``.

    The probability is rounded to the nearest multiple of 2**-53 (a double's
    precision); each draw compares a uniform 53-bit integer against it, so the
    realized probability is exactly that dyadic rational.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError("probability must be in [0, 1]")
    threshold = round(probability * 2**53)
    return uniform_ints(2**53, size, source) < threshold
