"""k-ary randomized response (direct encoding, Wang et al. 2017 Sec. 4.1).

A client reports its true value with probability ``p = e^eps / (e^eps + k - 1)``
and otherwise a uniformly random *other* value, so every other value has
probability ``q = 1 / (e^eps + k - 1)`` and ``p / q = e^eps`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from privacy.csprng import bernoulli, uniform_ints
from privacy.ldp.base import FrequencyOracle, PayloadError, check_int_array

_STORAGE = np.dtype(">u2")


def krr_probabilities(k: int, epsilon: float) -> tuple[float, float]:
    """``(p, q)`` of k-ary randomized response."""
    # Wang et al. 2017, Sec. 4.1 (DE): p = e^eps/(e^eps+k-1), q = 1/(e^eps+k-1).
    denominator = math.exp(epsilon) + k - 1
    return math.exp(epsilon) / denominator, 1.0 / denominator


def generalized_rr(values: np.ndarray, domain: int, keep_probability: float, source=None) -> np.ndarray:
    """Keep each value with ``keep_probability``, else draw a uniform other value in [0, domain)."""
    keep = bernoulli(keep_probability, values.size, source)
    other = uniform_ints(domain - 1, values.size, source)
    other += other >= values  # skip the true value: uniform over the domain - 1 others
    return np.where(keep, values, other)


@dataclass(frozen=True)
class KRR(FrequencyOracle):
    """Reports are value indices: array shape (n,), wire form one int."""

    name = "krr"

    @cached_property
    def p(self) -> float:
        return krr_probabilities(self.k, self.epsilon)[0]

    @cached_property
    def q(self) -> float:
        return krr_probabilities(self.k, self.epsilon)[1]

    @property
    def max_support(self) -> int:
        return 1

    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        return generalized_rr(self._check_true(true_indices), self.k, self.p, source)

    def check_reports(self, reports: Any) -> np.ndarray:
        return check_int_array(reports, None, self.k)

    def to_wire(self, reports: np.ndarray) -> list:
        return self.check_reports(reports).tolist()

    def parse_wire(self, payload: Any) -> np.ndarray:
        if type(payload) is not int:
            raise PayloadError("invalid_payload", "a krr report is one integer")
        if not 0 <= payload < self.k:
            raise PayloadError("invalid_payload", f"a krr report must lie in [0, {self.k})")
        return np.array(payload, dtype=np.int64)

    @property
    def packed_size(self) -> int:
        return _STORAGE.itemsize

    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        return reports.astype(_STORAGE)

    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        return np.frombuffer(blob, dtype=_STORAGE).astype(np.int64)

    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        return np.bincount(self.check_reports(reports), minlength=self.k)
