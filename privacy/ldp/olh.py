"""Optimized local hashing (Wang et al. 2017 Sec. 4.4, OLH).

A client draws a uniform 32-bit ``seed`` from the CSPRNG, hashes its value to
``x = H(seed, v)`` in ``[0, g)`` with ``g = round(e^eps) + 1``, and reports
``[seed, y]`` where ``y`` is ``x`` perturbed by g-ary randomized response. A
report supports every value ``u`` with ``H(seed, u) == y``.

The hash family, shared by every client SDK and the server, is

    H(seed, v) = splitmix64(seed * 2**32 + v) mod g

where, in unsigned 64-bit arithmetic (all operations mod 2**64),

    splitmix64(x): z = x + 0x9E3779B97F4A7C15
                   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                   return z ^ (z >> 31)

(the output function of Steele, Lea and Flood's SplitMix64). The hash only
affects utility, never privacy: ``y`` is epsilon-LDP given any ``H``. The
estimator assumes ``P[H(seed, u) == H(seed, v)] = 1/g`` for ``u != v`` over the
random seed, which this mixer meets up to a negligible error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from privacy.csprng import uniform_ints
from privacy.ldp.base import FrequencyOracle, PayloadError, check_int_array, row_chunks
from privacy.ldp.krr import generalized_rr

SEED_RANGE = 2**32
_STORAGE = np.dtype(">u4")
_INCREMENT = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
#: Aggregation hashes one value for a chunk of reports at a time; charging each
#: report this many cells gives chunks of 2**16 reports (0.5 MiB per array),
#: which stay in cache across the mixing steps.
_HASH_CELLS_PER_REPORT = 16


def _finish(z: np.ndarray, g: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64's mixing steps in place on ``z`` (already incremented), then mod g.

    ``z mod g`` is computed as ``z - (z // g) * g``: numpy divides by a scalar
    with libdivide's multiply-and-shift, about ten times faster than its
    ``remainder``, which divides element by element. ``scratch`` (same shape and
    dtype as ``z``) saves the temporaries.
    """
    scratch = np.empty_like(z) if scratch is None else scratch
    divisor = np.uint64(g)
    for shift, multiplier in ((30, _MIX_1), (27, _MIX_2)):
        np.right_shift(z, np.uint64(shift), out=scratch)
        z ^= scratch
        z *= multiplier
    np.right_shift(z, np.uint64(31), out=scratch)
    z ^= scratch
    np.floor_divide(z, divisor, out=scratch)
    scratch *= divisor
    z -= scratch
    return z


def _keys(seeds: np.ndarray) -> np.ndarray:
    """``seed * 2**32 + 0x9E37...`` as uint64: add a value < 2**32 to get the incremented state."""
    return (np.asarray(seeds, dtype=np.uint64) << np.uint64(32)) + _INCREMENT


def olh_hash(seeds: np.ndarray, values: np.ndarray, g: int) -> np.ndarray:
    """``H(seed, v)`` elementwise over 1-D arrays (broadcast), as int64 in [0, g)."""
    z = _keys(np.atleast_1d(seeds)) + np.atleast_1d(values).astype(np.uint64)
    return _finish(z, g).astype(np.int64)


@dataclass(frozen=True)
class OLH(FrequencyOracle):
    """Reports are ``[seed, y]``: array shape (n, 2) int64, wire form ``[seed, y]``."""

    name = "olh"

    @cached_property
    def g(self) -> int:
        # Wang et al. 2017, Sec. 4.4 (OLH): g = round(e^eps) + 1 (>= 2 since eps > 0).
        return round(math.exp(self.epsilon)) + 1

    @cached_property
    def p(self) -> float:
        # Wang et al. 2017, Sec. 4.4 (OLH): p = e^eps/(e^eps + g - 1).
        return math.exp(self.epsilon) / (math.exp(self.epsilon) + self.g - 1)

    @cached_property
    def q(self) -> float:
        # Wang et al. 2017, Sec. 4.4 (OLH): q = 1/g (a random hash maps u to y w.p. 1/g).
        return 1.0 / self.g

    @property
    def max_support(self) -> int:
        return self.k

    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        true = self._check_true(true_indices)
        seeds = uniform_ints(SEED_RANGE, true.size, source)
        hashed = olh_hash(seeds, true, self.g)
        return np.column_stack([seeds, generalized_rr(hashed, self.g, self.p, source)])

    def check_reports(self, reports: Any) -> np.ndarray:
        reports = check_int_array(reports, 2, SEED_RANGE)
        if reports.size and reports[:, 1].max() >= self.g:
            raise PayloadError("invalid_payload", f"y must lie in [0, {self.g})")
        return reports

    def to_wire(self, reports: np.ndarray) -> list:
        return self.check_reports(reports).tolist()

    def parse_wire(self, payload: Any) -> np.ndarray:
        if type(payload) is not list:
            raise PayloadError("invalid_payload", "an olh report is [seed, y]")
        if len(payload) != 2:
            raise PayloadError("invalid_payload_length", "an olh report is [seed, y]")
        seed, y = payload
        if type(seed) is not int or type(y) is not int:
            raise PayloadError("invalid_payload", "seed and y must be integers")
        if not (0 <= seed < SEED_RANGE and 0 <= y < self.g):
            raise PayloadError("invalid_payload", f"seed must lie in [0, 2**32) and y in [0, {self.g})")
        return np.array(payload, dtype=np.int64)

    @property
    def packed_size(self) -> int:
        return 2 * _STORAGE.itemsize

    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        return reports.astype(_STORAGE)

    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        return np.frombuffer(blob, dtype=_STORAGE).reshape(count, 2).astype(np.int64)

    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        """Evaluates H(seed, u) for every report and every u, a chunk of reports at a time."""
        reports = self.check_reports(reports)
        counts = np.zeros(self.k, dtype=np.int64)
        for rows in row_chunks(len(reports), _HASH_CELLS_PER_REPORT):
            keys = _keys(reports[rows, 0])
            y = reports[rows, 1].astype(np.uint64)
            z, scratch, matches = np.empty_like(keys), np.empty_like(keys), np.empty(len(keys), dtype=bool)
            for value in range(self.k):
                np.add(keys, np.uint64(value), out=z)
                np.equal(_finish(z, self.g, scratch), y, out=matches)
                counts[value] += np.count_nonzero(matches)
        return counts
