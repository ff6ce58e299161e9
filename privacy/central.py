"""Central-DP release of local-DP support counts.

The mechanism is the only step that touches raw data: exact discrete Laplace
noise (CKS 2020) is added to the raw observed counts of a data-independent
grid of cells. Everything after it is post-processing of the noisy counts and
costs no privacy (Dwork & Roth 2014, Prop. 2.1): debiasing, Norm-Sub,
sum-preserving rounding, coarsening decided on noisy totals, intervals.

Grid layout: ``noisy`` has one row per cell and ``k`` columns of support
counts; protocols other than k-RR add one column holding the cell's report
count ``n``, because their supports do not sum to ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from privacy.csprng import RandomSource
from privacy.ldp import FrequencyOracle, confidence_intervals
from privacy.ldp.postprocess import norm_sub_rows
from privacy.epsilon import MICRO_PER_EPSILON
from privacy.noise import discrete_laplace_array, discrete_laplace_variance



def counts_n_separately(oracle: FrequencyOracle) -> bool:
    """k-RR supports exactly one value per report, so n is the sum of its counts."""
    return oracle.name != "krr"


def grid_width(oracle: FrequencyOracle) -> int:
    return oracle.k + (1 if counts_n_separately(oracle) else 0)


def l1_sensitivity(oracle: FrequencyOracle, contribution_bound: int) -> int:
    """L1 change of one cell row when one client-day is added or removed.

    One client-day sends at most ``m`` reports per metric (enforced at ingest);
    each report adds at most ``max_support`` to the support counts, plus 1 to
    the n column when n is released separately (docs/privacy.md derives it).
    """
    per_report = oracle.max_support + (1 if counts_n_separately(oracle) else 0)
    return contribution_bound * per_report


def noise_scale(sensitivity: int, epsilon_micro: int) -> Fraction:
    # Laplace mechanism: scale b = Δ1/ε gives ε-DP (Dwork & Roth 2014, Thm. 3.6; CKS 2020, Thm. 7 for the discrete case).
    return Fraction(sensitivity * MICRO_PER_EPSILON, epsilon_micro)


def add_noise(raw: np.ndarray, scale: Fraction, source: RandomSource) -> tuple[np.ndarray, np.ndarray]:
    """(noisy counts, the noise): noise drawn in row-major order of ``raw``."""
    noise = discrete_laplace_array(scale, raw.size, source).reshape(raw.shape)
    return raw + noise, noise


@dataclass
class PostProcessed:
    reports: np.ndarray  # (cells,) int64, rounded non-negative n̂
    counts: np.ndarray  # (cells, k) int64, consistent, each row sums to reports
    unbiased: np.ndarray  # (cells, k) float, debiased before Norm-Sub
    variance: np.ndarray  # (cells, k) float, LDP + central noise variance of `unbiased`


def _noisy_n(oracle: FrequencyOracle, noisy: np.ndarray) -> np.ndarray:
    return noisy[:, oracle.k] if counts_n_separately(oracle) else noisy.sum(axis=1)


def debias(oracle: FrequencyOracle, noisy: np.ndarray) -> np.ndarray:
    """Unbiased counts of every cell from its noisy support counts and noisy n."""
    return oracle.estimate(noisy[:, : oracle.k], _noisy_n(oracle, noisy))


def central_variance(oracle: FrequencyOracle, scale: Fraction) -> float:
    """Variance that the central noise adds to one debiased count.

    With noise Z_v on C(v) and Z_n on n: k-RR has Z_n = sum_u Z_u, so the error
    is ((1-q) Z_v - q sum_{u != v} Z_u) / (p-q); otherwise (Z_v - q Z_n)/(p-q).
    """
    sigma2 = discrete_laplace_variance(scale)
    p, q, k = oracle.p, oracle.q, oracle.k
    if counts_n_separately(oracle):
        return sigma2 * (1 + q * q) / (p - q) ** 2
    return sigma2 * ((1 - q) ** 2 + (k - 1) * q * q) / (p - q) ** 2


def round_rows_preserving_sums(values: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of non-negative rows to integers summing to ``totals``."""
    floors = np.floor(values).astype(np.int64)
    short = totals - floors.sum(axis=1)
    remainders = values - floors
    ranks = np.argsort(np.argsort(-remainders, axis=1, kind="stable"), axis=1, kind="stable")
    return floors + (ranks < short[:, None])


def post_process(oracle: FrequencyOracle, noisy: np.ndarray, scale: Fraction) -> PostProcessed:
    """Debias -> Norm-Sub -> round, on every cell at once (all post-processing)."""
    unbiased = debias(oracle, noisy)
    reports = np.maximum(np.rint(_noisy_n(oracle, noisy)), 0).astype(np.int64)
    consistent = norm_sub_rows(unbiased, reports.astype(np.float64))
    counts = round_rows_preserving_sums(consistent, reports)
    variance = oracle.variance(reports, unbiased) + central_variance(oracle, scale)
    return PostProcessed(reports, counts, unbiased, variance)


def coarsen_mask(reports: np.ndarray, threshold: int) -> np.ndarray:
    """Cells whose noisy report total is below ``threshold``: merged into "other".

    Decided on the post-processed noisy totals only, never on raw counts.
    """
    return reports < threshold


def intervals(unbiased: np.ndarray, variance: np.ndarray, confidence: float, simultaneous: bool):
    """Normal intervals around the unbiased estimate, clipped below at 0 (counts are non-negative)."""
    low, high = confidence_intervals(unbiased, variance, confidence=confidence, simultaneous=simultaneous)
    return np.maximum(low, 0.0), np.maximum(high, 0.0)
