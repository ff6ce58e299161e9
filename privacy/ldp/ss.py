"""Subset selection (Wang et al. 2016, arXiv:1607.08025; Ye and Barg 2018).

A client reports a set of ``omega = max(1, round(k / (e^eps + 1)))`` distinct
values. With probability ``p = omega e^eps / (omega e^eps + k - omega)`` the set
is its true value plus ``omega - 1`` uniformly chosen others; otherwise it is
``omega`` uniformly chosen others. Any set holding ``v`` is then exactly
``e^eps`` times likelier under true value ``v`` than under one it lacks.
Reports are sorted ascending, so the order of a set reveals nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from privacy.csprng import bernoulli, uniform_ints
from privacy.ldp.base import FrequencyOracle, PayloadError, check_int_array, row_chunks

_STORAGE = np.dtype(">u2")


def sample_others(values: np.ndarray, k: int, size: int, source=None) -> np.ndarray:
    """Per row, ``size`` distinct values drawn uniformly from [0, k) minus that row's value.

    Partial Fisher-Yates over the k - 1 other values, vectorized over rows:
    step i swaps position i with a uniform position in [i, k - 1).
    """
    rows = np.arange(values.size)
    pool = np.tile(np.arange(k - 1, dtype=np.int64), (values.size, 1))
    for i in range(size):
        j = i + uniform_ints(k - 1 - i, values.size, source)
        chosen = pool[rows, j]
        pool[rows, j] = pool[rows, i]
        pool[rows, i] = chosen
    picked = pool[:, :size]
    return picked + (picked >= values[:, None])  # skip each row's own value


@dataclass(frozen=True)
class SubsetSelection(FrequencyOracle):
    """Reports are sorted sets: array shape (n, omega) int64, wire form a list of omega ints."""

    name = "ss"

    @cached_property
    def omega(self) -> int:
        # Ye and Barg 2018: the variance-optimal subset size is about k/(e^eps + 1).
        return max(1, round(self.k / (math.exp(self.epsilon) + 1)))

    @cached_property
    def p(self) -> float:
        # Ye and Barg 2018: p = omega e^eps / (omega e^eps + k - omega).
        weight = self.omega * math.exp(self.epsilon)
        return weight / (weight + self.k - self.omega)

    @cached_property
    def q(self) -> float:
        # Wang et al. 2016 / Ye and Barg 2018: q = (p (omega-1) + (1-p) omega) / (k-1).
        return (self.p * (self.omega - 1) + (1 - self.p) * self.omega) / (self.k - 1)

    @property
    def max_support(self) -> int:
        return self.omega

    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        true = self._check_true(true_indices)
        subsets = np.empty((true.size, self.omega), dtype=np.int64)
        for rows in row_chunks(true.size, self.k):
            subsets[rows] = sample_others(true[rows], self.k, self.omega, source)
        include = bernoulli(self.p, true.size, source)
        subsets[include, -1] = true[include]  # the first omega - 1 others stay uniform
        subsets.sort(axis=1)
        return subsets

    def check_reports(self, reports: Any) -> np.ndarray:
        reports = check_int_array(reports, self.omega, self.k)
        if not np.all(reports[:, 1:] > reports[:, :-1]):
            raise PayloadError("invalid_payload", "each ss report must be strictly increasing")
        return reports

    def to_wire(self, reports: np.ndarray) -> list:
        return self.check_reports(reports).tolist()

    def parse_wire(self, payload: Any) -> np.ndarray:
        if type(payload) is not list:
            raise PayloadError("invalid_payload", "an ss report is a list of integers")
        if len(payload) != self.omega:
            raise PayloadError("invalid_payload_length", f"an ss report has {self.omega} values")
        for item in payload:
            if type(item) is not int or not 0 <= item < self.k:
                raise PayloadError("invalid_payload", f"ss values must be integers in [0, {self.k})")
        if len(set(payload)) != self.omega:
            raise PayloadError("invalid_payload", "ss values must be distinct")
        return np.array(sorted(payload), dtype=np.int64)

    @property
    def packed_size(self) -> int:
        return self.omega * _STORAGE.itemsize

    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        return reports.astype(_STORAGE)

    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        return np.frombuffer(blob, dtype=_STORAGE).reshape(count, self.omega).astype(np.int64)

    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        return np.bincount(self.check_reports(reports).ravel(), minlength=self.k)
