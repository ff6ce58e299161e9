"""Post-processing of count estimates: consistency and confidence intervals.

Both only transform released estimates, so they cost no privacy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def norm_sub(estimates: np.ndarray, n: float) -> np.ndarray:
    """Norm-Sub: non-negative counts that sum to ``n``.

    Wang, Lopuhaa-Zwakenberg, Li, Skoric and Li, "Locally Differentially
    Private Frequency Estimation with Consistency" (NDSS 2020), Sec. IV:
    shift every estimate by one delta and clip at zero, with delta chosen so
    the result sums to n. Sorting descending, delta = (n - top-m sum) / m for
    the largest m whose m-th estimate stays positive after the shift.
    """
    values = np.asarray(estimates, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("estimates must be a 1-D array of finite numbers")
    if n < 0 or not math.isfinite(n):
        raise ValueError("n must be a finite number >= 0")
    if n == 0 or values.size == 0:
        if n > 0:
            raise ValueError("cannot spread n > 0 over no values")
        return np.zeros_like(values)
    ranked = np.sort(values)[::-1]
    # NDSS 2020, Norm-Sub: sum_v max(est_v + delta, 0) = n.
    deltas = (n - np.cumsum(ranked)) / np.arange(1, values.size + 1)
    kept = np.flatnonzero(ranked + deltas > 0)[-1]  # never empty: the top one gets n > 0
    return np.maximum(values + deltas[kept], 0.0)


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
