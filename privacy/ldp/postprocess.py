"""Post-processing of count estimates: consistency and confidence intervals.

Both only transform released estimates, so they cost no privacy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def norm_sub_rows(estimates: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Norm-Sub of every row at once: rows non-negative, row i summing to totals[i] (0 where totals[i] <= 0).

    Wang, Lopuhaa-Zwakenberg, Li, Skoric and Li, "Locally Differentially
    Private Frequency Estimation with Consistency" (NDSS 2020), Sec. IV:
    shift every estimate by one delta and clip at zero, with delta chosen so
    the result sums to n. Sorting descending, delta = (n - top-m sum) / m for
    the largest m whose m-th estimate stays positive after the shift.
    """
    ranked = np.sort(estimates, axis=1)[:, ::-1]
    width = estimates.shape[1]
    deltas = np.cumsum(ranked, axis=1)  # then, in place: (n - top-j sum) / j
    np.subtract(totals[:, None], deltas, out=deltas)
    deltas /= np.arange(1, width + 1)
    positive = ranked + deltas > 0
    kept = width - 1 - np.argmax(positive[:, ::-1], axis=1)  # last index still positive
    shift = deltas[np.arange(len(totals)), kept]
    result = estimates + shift[:, None]
    np.maximum(result, 0.0, out=result)
    result[totals <= 0] = 0.0
    return result


def norm_sub(estimates: np.ndarray, n: float) -> np.ndarray:
    """Norm-Sub of one release (:func:`norm_sub_rows`), with its inputs checked."""
    values = np.asarray(estimates, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("estimates must be a 1-D array of finite numbers")
    if n < 0 or not math.isfinite(n):
        raise ValueError("n must be a finite number >= 0")
    if values.size == 0:
        if n > 0:
            raise ValueError("cannot spread n > 0 over no values")
        return values
    return norm_sub_rows(values[None, :], np.array([float(n)]))[0]


def confidence_intervals(
    estimates: np.ndarray,
    variances: np.ndarray,
    confidence: float = 0.95,
    simultaneous: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal-approximation intervals ``estimate +- z sqrt(variance)``.

    With ``simultaneous`` the level is Bonferroni-corrected over the k values
    (the last axis, so a 2-D array is a stack of k-value releases), and all k
    intervals of a release hold together with probability >= ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    centers = np.asarray(estimates, dtype=np.float64)
    spreads = np.asarray(variances, dtype=np.float64)
    if centers.shape != spreads.shape or np.any(spreads < 0):
        raise ValueError("variances must match estimates in shape and be >= 0")
    alpha = 1.0 - confidence
    if simultaneous:
        alpha /= max(1, centers.shape[-1] if centers.ndim else 1)  # Bonferroni over the k values
    half_width = NormalDist().inv_cdf(1.0 - alpha / 2.0) * np.sqrt(spreads)
    return centers - half_width, centers + half_width
