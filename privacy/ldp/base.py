"""What every frequency oracle shares: parameters, debiasing, variance, storage.

A frequency oracle is a *pure* LDP protocol in the sense of Wang, Blocki, Li
and Jha, "Locally Differentially Private Protocols for Frequency Estimation"
(USENIX Security 2017), Sec. 3: each report *supports* a set of values, a
report from a holder of ``v`` supports ``v`` with probability ``p`` and a
report from anyone else supports ``v`` with probability ``q``. Counting the
reports that support each value and debiasing those counts is therefore the
same for every protocol; only the client encoding and the wire/storage forms
differ.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

#: Largest domain: stored reports hold value indices as uint16.
MAX_DOMAIN = 2**16
#: Largest epsilon: keeps OLH's hash range e^eps + 1 inside uint32. LDP at
#: epsilon > 20 protects nothing anyway.
MAX_EPSILON = 20.0
#: The service's defaults: 20 metric values, client epsilon 2 (spec 004).
DEFAULT_K = 20
DEFAULT_EPSILON = 2.0
#: Upper bound on array cells materialized at once by the chunked loops.
CHUNK_CELLS = 2**20


class PayloadError(ValueError):
    """A malformed report, with a stable machine-readable ``code``.

    ``code`` is ``'invalid_payload_length'`` when the report has the wrong
    length or size, ``'invalid_payload'`` for anything else malformed.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_int_array(reports: Any, width: int | None, upper: int, dtype=np.int64) -> np.ndarray:
    """``reports`` as a ``dtype`` array of shape (n,) or (n, width), values in [0, upper)."""
    array = np.asarray(reports)
    shape_ok = array.ndim == 1 if width is None else array.ndim == 2 and array.shape[1] == width
    if not shape_ok:
        expected = "(n,)" if width is None else f"(n, {width})"
        raise PayloadError("invalid_payload_length", f"reports must have shape {expected}")
    if array.size == 0:
        return array.astype(dtype)
    if not np.issubdtype(array.dtype, np.integer):
        raise PayloadError("invalid_payload", "reports must be integers")
    if array.min() < 0 or array.max() >= upper:
        raise PayloadError("invalid_payload", f"report values must lie in [0, {upper})")
    return array.astype(dtype, copy=False)


def row_chunks(rows: int, cells_per_row: int) -> Iterator[slice]:
    """Slices over ``rows`` so that each holds at most ~CHUNK_CELLS cells."""
    step = max(1, CHUNK_CELLS // max(1, cells_per_row))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


@dataclass(frozen=True)
class FrequencyOracle(ABC):
    """An epsilon-LDP frequency oracle over the domain ``{0, ..., k-1}``.

    Immutable: ``k`` and ``epsilon`` are fixed at construction, and the
    derived probabilities are computed from them.
    """

    k: int = DEFAULT_K
    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str]

    def __post_init__(self) -> None:
        if type(self.k) is not int or not 2 <= self.k <= MAX_DOMAIN:
            raise ValueError(f"k must be an int in [2, {MAX_DOMAIN}]")
        epsilon = float(self.epsilon)
        if not (math.isfinite(epsilon) and 0.0 < epsilon <= MAX_EPSILON):
            raise ValueError(f"epsilon must be in (0, {MAX_EPSILON}]")
        object.__setattr__(self, "epsilon", epsilon)

    # --- protocol parameters -------------------------------------------------

    @property
    @abstractmethod
    def p(self) -> float:
        """P[a report supports v | the true value is v]."""

    @property
    @abstractmethod
    def q(self) -> float:
        """P[a report supports v | the true value is not v]."""

    @property
    @abstractmethod
    def max_support(self) -> int:
        """The most values one report can support (its L1 weight in counts)."""

    # --- client ---------------------------------------------------------------

    @abstractmethod
    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        """One randomized report per true value, drawn from the CSPRNG."""

    def _check_true(self, true_indices: Any) -> np.ndarray:
        values = np.asarray(true_indices)
        if values.ndim != 1 or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
            raise ValueError("true_indices must be a 1-D integer array")
        values = values.astype(np.int64, copy=False)
        if values.size and (values.min() < 0 or values.max() >= self.k):
            raise ValueError(f"true_indices must lie in [0, {self.k})")
        return values

    # --- wire and storage -----------------------------------------------------

    @abstractmethod
    def to_wire(self, reports: np.ndarray) -> list:
        """The JSON value of each report."""

    @abstractmethod
    def parse_wire(self, payload: Any) -> np.ndarray:
        """One report's JSON value back to its array row; strict."""

    @abstractmethod
    def check_reports(self, reports: Any) -> np.ndarray:
        """``reports`` as a validated int array of this protocol's shape."""

    @property
    @abstractmethod
    def packed_size(self) -> int:
        """Bytes per report in storage form."""

    @abstractmethod
    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        """A C-contiguous array whose bytes, row by row, are the packed reports."""

    @abstractmethod
    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        """Inverse of :meth:`_to_storage` over the concatenated bytes."""

    def pack(self, reports: np.ndarray) -> list[bytes]:
        """Compact bytes per report, for the database."""
        blob = self._to_storage(self.check_reports(reports)).tobytes()
        size = self.packed_size
        return [blob[start : start + size] for start in range(0, len(blob), size)]

    def unpack(self, packed: list[bytes]) -> np.ndarray:
        """Reports array from :meth:`pack` output; validates sizes and ranges."""
        if any(len(item) != self.packed_size for item in packed):
            raise PayloadError("invalid_payload_length", f"packed reports must be {self.packed_size} bytes")
        return self.unpack_blob(b"".join(packed), len(packed))

    def unpack_blob(self, blob: bytes, count: int) -> np.ndarray:
        """``count`` reports from their :meth:`pack` encodings laid end to end; validates ranges."""
        if len(blob) != count * self.packed_size:
            raise PayloadError("invalid_payload_length", f"packed reports must be {self.packed_size} bytes")
        return self.check_reports(self._from_storage(blob, count))

    # --- server ---------------------------------------------------------------

    @abstractmethod
    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        """How many reports support each value: int64 array of shape (k,)."""

    def _rows(self, values, name: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 0 or array.shape[-1] != self.k:
            raise ValueError(f"{name} must have shape (..., {self.k})")
        return array

    def estimate(self, support_counts: np.ndarray, n) -> np.ndarray:
        """Unbiased count estimates from the support counts of ``n`` reports.

        Broadcasts: ``support_counts`` of shape (..., k) with ``n`` a number or of shape (...,),
        one release per row (the central-DP grid debiases every cell at once). Noisy counts
        and totals, even negative ones, debias the same way.
        """
        counts = self._rows(support_counts, "support_counts")
        totals = np.asarray(n, dtype=np.float64)
        # Wang et al. 2017, Sec. 3 (Thm. 2): c~(v) = (C(v) - n q) / (p - q).
        return (counts - totals[..., None] * self.q) / (self.p - self.q)

    def variance(self, n, counts: np.ndarray | None = None) -> np.ndarray:
        """Exact variance of each count estimate, broadcasting as :meth:`estimate`.

        With ``counts`` (true or estimated counts of each value; estimates are
        clipped to [0, n]) this is the exact variance; without them the
        ``c_v = 0`` term alone, which is the usual approximation when
        frequencies are small and is what protocol selection compares.
        """
        p, q = self.p, self.q
        totals = np.asarray(n, dtype=np.float64)[..., None]
        # Wang et al. 2017, Sec. 3 (Thm. 2): Var = n q(1-q)/(p-q)^2 + c_v (1-p-q)/(p-q).
        base = totals * q * (1 - q) / (p - q) ** 2
        if counts is None:
            return np.broadcast_to(base, (*base.shape[:-1], self.k)).copy()
        held = np.clip(self._rows(counts, "counts"), 0, totals)
        return base + held * (1 - p - q) / (p - q)
