"""Optimized unary encoding (Wang et al. 2017 Sec. 4.3, OUE).

The client one-hot encodes its value and sends every bit independently
perturbed: the true value's bit is 1 with probability ``p = 1/2``, every other
bit is 1 with probability ``q = 1/(e^eps + 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from privacy.csprng import bernoulli
from privacy.ldp.base import FrequencyOracle, PayloadError, check_int_array, row_chunks


@dataclass(frozen=True)
class OUE(FrequencyOracle):
    """Reports are bit vectors: array shape (n, k) uint8, wire form a '0'/'1' string."""

    name = "oue"

    @property
    def p(self) -> float:
        # Wang et al. 2017, Sec. 4.3 (OUE): p = 1/2.
        return 0.5

    @cached_property
    def q(self) -> float:
        # Wang et al. 2017, Sec. 4.3 (OUE): q = 1/(e^eps + 1).
        return 1.0 / (math.exp(self.epsilon) + 1.0)

    @property
    def max_support(self) -> int:
        return self.k

    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        true = self._check_true(true_indices)
        bits = np.empty((true.size, self.k), dtype=np.uint8)
        for rows in row_chunks(true.size, self.k):
            count = rows.stop - rows.start
            bits[rows] = bernoulli(self.q, count * self.k, source).reshape(count, self.k)
        bits[np.arange(true.size), true] = bernoulli(self.p, true.size, source)
        return bits

    def check_reports(self, reports: Any) -> np.ndarray:
        return check_int_array(reports, self.k, 2, dtype=np.uint8)

    def to_wire(self, reports: np.ndarray) -> list:
        text = (self.check_reports(reports) + ord("0")).tobytes().decode("ascii")
        return [text[start : start + self.k] for start in range(0, len(text), self.k)]

    def parse_wire(self, payload: Any) -> np.ndarray:
        if type(payload) is not str:
            raise PayloadError("invalid_payload", "an oue report is a string of '0' and '1'")
        if len(payload) != self.k:
            raise PayloadError("invalid_payload_length", f"an oue report has {self.k} bits")
        if payload.strip("01"):
            raise PayloadError("invalid_payload", "an oue report holds only '0' and '1'")
        return np.frombuffer(payload.encode("ascii"), dtype=np.uint8) - ord("0")

    @property
    def packed_size(self) -> int:
        return (self.k + 7) // 8

    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        return np.packbits(reports, axis=1)

    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        packed = np.frombuffer(blob, dtype=np.uint8).reshape(count, self.packed_size)
        return np.unpackbits(packed, axis=1, count=self.k)

    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        return np.count_nonzero(self.check_reports(reports), axis=0).astype(np.int64)
