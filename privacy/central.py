"""Central-DP release of local-DP support counts.

The mechanism is the only step that touches raw data: exact discrete Laplace
noise (CKS 2020) is added to the raw observed counts of a data-independent
grid of cells. Everything after it is post-processing of the noisy counts and
costs no privacy (Dwork & Roth 2014, Prop. 2.1): coarsening decided on noisy
totals, debiasing, Norm-Sub, sum-preserving rounding, intervals.

Grid layout: ``noisy`` has one row per cell and ``k`` columns of support
counts; protocols other than k-RR add one column holding the cell's report
count ``n``, because their supports do not sum to ``n``.

A query grouped by region runs a second mechanism on the same cells: each
cell's report count n plus its own discrete Laplace noise (the *selection
count*), at a share of the query's ε. Which regions are shown is decided on
the selection counts alone, so the noise of the grid, from which every
released figure is estimated, is independent of which regions merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

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


def release_noise(shape: tuple[int, int], scale: Fraction, selection_scale: Fraction | None,
                  source: RandomSource) -> tuple[np.ndarray, np.ndarray | None]:
    """(grid noise, selection noise or None) of one release, in the order its audit replays them.

    First the grid's noise at ``scale``, row-major over the (cells, width)
    ``shape``; then, for a release that selects regions, one noise at
    ``selection_scale`` per cell, in cell order. Both come from ``source``
    (the release's DRBG), so the seed re-derives both.
    """
    grid = discrete_laplace_array(scale, shape[0] * shape[1], source).reshape(shape)
    selection = None if selection_scale is None else discrete_laplace_array(selection_scale, shape[0], source)
    return grid, selection


@dataclass
class PostProcessed:
    reports: np.ndarray  # (cells,) int64, rounded non-negative n̂
    counts: np.ndarray  # (cells, k) int64, consistent, each row sums to reports
    unbiased: np.ndarray  # (cells, k) float, debiased before Norm-Sub
    variance: np.ndarray  # (cells, k) float, LDP + central noise variance of `unbiased`


def report_counts(oracle: FrequencyOracle, grid: np.ndarray) -> np.ndarray:
    """The report count n of every row of a raw or noisy ``grid`` (..., width): k-RR's sum of counts, else
    the n column."""
    return grid[..., oracle.k] if counts_n_separately(oracle) else grid.sum(axis=-1)


def debias(oracle: FrequencyOracle, noisy: np.ndarray) -> np.ndarray:
    """Unbiased counts of every cell from its noisy support counts and noisy n."""
    return oracle.estimate(noisy[:, : oracle.k], report_counts(oracle, noisy))


def central_variance(oracle: FrequencyOracle, scale: Fraction) -> float:
    """Variance that the central noise adds to one debiased count of one grid cell.

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


def post_process(oracle: FrequencyOracle, noisy: np.ndarray, scale: Fraction,
                 noise_terms: np.ndarray | int = 1) -> PostProcessed:
    """Debias -> Norm-Sub -> round, on every row at once (all post-processing).

    Row i of ``noisy`` is the noisy raw counts of one released cell: one grid
    cell, or the sum of ``noise_terms[i]`` grid cells (a merged "other" cell),
    whose central noise variances add up.
    """
    unbiased = debias(oracle, noisy)
    reports = np.maximum(np.rint(report_counts(oracle, noisy)), 0).astype(np.int64)
    consistent = norm_sub_rows(unbiased, reports.astype(np.float64))
    counts = round_rows_preserving_sums(consistent, reports)
    terms = np.asarray(noise_terms, dtype=np.float64)
    variance = oracle.variance(reports, unbiased) + central_variance(oracle, scale) * terms[..., None]
    return PostProcessed(reports, counts, unbiased, variance)


def laplace_sum_survival(terms: int, scale: Fraction, threshold: int) -> float:
    """P(Z_1 + ... + Z_terms > threshold) for i.i.d. discrete Laplace(scale) Z_i, threshold >= 0, exactly.

    Z = G - G' with G, G' i.i.d. geometric, P(G = j) = (1-r) r^j, r = e^{-1/scale}
    (Inusah & Kozubowski 2006), so the sum is A - B with A, B i.i.d. negative
    binomial NB(k, r), k = terms. Conditioning on B = j and using
    P(A > m) = sum_{i<k} C(m+k, i) (1-r)^i r^{m+k-i}, Vandermonde's identity
    and sum_j C(j+k-1, j) C(j, l) r^{2j} = C(k+l-1, l) r^{2l} / (1-r^2)^{k+l}:

        P(S > tau) = r^{tau+k} sum_{j+l <= k-1} C(tau+k, j) (1-r)^j r^{-j} C(k+l-1, l) r^l / (1+r)^{k+l},

    a finite sum of positive terms (k = 1: r^{tau+1}/(1+r)), computed in logs
    as sum_j a_j * (sum_{l <= k-1-j} b_l). docs/privacy.md, "Coarsening".
    """
    if terms < 1 or threshold < 0:
        raise ValueError("terms must be >= 1 and threshold >= 0")
    log_r = -1.0 / float(scale)
    log_1mr, log_1pr = math.log(-math.expm1(log_r)), math.log1p(math.exp(log_r))
    idx = np.arange(terms, dtype=np.float64)
    log_binom_top = np.concatenate([[0.0], np.cumsum(np.log(threshold + terms - idx[1:] + 1) - np.log(idx[1:]))])
    log_binom_nb = np.concatenate([[0.0], np.cumsum(np.log(terms + idx[1:] - 1) - np.log(idx[1:]))])
    a = log_binom_top + idx * (log_1mr - log_r)  # C(tau+k, j) (1-r)^j r^{-j}
    b = log_binom_nb + idx * log_r - (terms + idx) * log_1pr  # C(k+l-1, l) r^l / (1+r)^{k+l}
    b_prefix = np.logaddexp.accumulate(b)  # log sum_{l <= m} b_l
    log_sum = np.logaddexp.reduce(a + b_prefix[::-1])
    return math.exp((threshold + terms) * log_r + log_sum)


def empty_cell_threshold(oracle: FrequencyOracle, scale: Fraction, survival: float) -> int:
    """The least tau >= 0 with P(noisy n of an empty cell > tau) <= ``survival``.

    An empty cell's noisy n is pure noise: the sum of its k noises for k-RR,
    the n column's one noise otherwise. A region is shown only if its noisy n
    exceeds tau, so an empty region is shown with probability
    laplace_sum_survival(terms, scale, tau) <= survival. Depends only on public
    parameters (protocol, k, scale), never on the data.
    """
    return survival_threshold(1 if counts_n_separately(oracle) else oracle.k, Fraction(scale), float(survival))


@lru_cache(maxsize=256)
def survival_threshold(terms: int, scale: Fraction, survival: float) -> int:
    """The least tau >= 0 with laplace_sum_survival(terms, scale, tau) <= survival (bisection; it decreases in tau)."""
    if not 0.0 < survival < 0.5:
        raise ValueError("survival must be in (0, 0.5)")
    low, high = -1, 1  # survival(high) <= target < survival(low), reading survival(-1) as 1
    while laplace_sum_survival(terms, scale, high) > survival:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if laplace_sum_survival(terms, scale, middle) <= survival else (middle, high)
    return high


def shown_regions(oracle: FrequencyOracle, noisy: np.ndarray, scale: Fraction, survival: float) -> np.ndarray:
    """(days, regions) mask of the regions shown on their own by releases without selection counts
    (made before them): the grid's own noisy n above :func:`empty_cell_threshold`.

    ``noisy`` is the (days, regions, width) grid of noisy counts; the decision
    uses noisy values and public parameters only (post-processing). The same
    noise then sits in the merged sum, which biases it (docs/privacy.md,
    "Coarsening"); releases with selection counts use :func:`selected_regions`.
    """
    return report_counts(oracle, noisy) > empty_cell_threshold(oracle, scale, survival)


def selection_epsilon_micro(epsilon_micro: int, share: Fraction) -> int:
    """µε of a region-grouped query's selection counts: ``share`` of its ε, floored, at least 1 µε.

    The grid keeps the rest (at least 1 µε), so ``epsilon_micro`` must be >= 2.
    """
    if not 0 < share < 1 or epsilon_micro < 2:
        raise ValueError("share must be in (0, 1) and epsilon_micro >= 2")
    return min(max(1, math.floor(share * epsilon_micro)), epsilon_micro - 1)


def selection_threshold(scale: Fraction, survival: float) -> int:
    """The least tau >= 0 with P(Z > tau) <= ``survival`` for one discrete Laplace Z of ``scale``.

    P(Z > tau) = r^{tau+1}/(1+r), r = e^{-1/scale} (laplace_sum_survival with one
    term), so tau = ceil(scale ln(1/(survival (1+r)))) - 1, corrected by one step
    either way for float rounding. Public parameters only.
    """
    if not 0.0 < survival < 0.5:
        raise ValueError("survival must be in (0, 0.5)")
    t = float(scale)
    tau = max(0, math.ceil(t * -math.log(survival * (1 + math.exp(-1 / t)))) - 1)
    while laplace_sum_survival(1, scale, tau) > survival:
        tau += 1
    while tau > 0 and laplace_sum_survival(1, scale, tau - 1) <= survival:
        tau -= 1
    return tau


def selected_regions(selection: np.ndarray, selection_scale: Fraction, survival: float) -> np.ndarray:
    """Mask of the regions shown on their own: selection count above :func:`selection_threshold`.

    ``selection`` holds each (day, region) cell's noisy selection count: its
    report count plus its own discrete Laplace noise, drawn independently of the
    grid's. An empty region is shown with probability at most ``survival``.
    """
    return selection > selection_threshold(Fraction(selection_scale), float(survival))


@dataclass
class Coarsened:
    """The released rows of a (days, regions) grid: each day's shown regions, then its "other" row if any."""

    rows: np.ndarray  # (cells, width) noisy raw counts: a region's, or the sum of a day's merged regions
    noise_terms: np.ndarray  # (cells,) grid cells whose noise each row sums (1 for a region)
    day: np.ndarray  # (cells,) day index
    slot: np.ndarray  # (cells,) region index, or the number of regions for "other"


def coarsen(noisy: np.ndarray, shown: np.ndarray) -> Coarsened:
    """Merge each day's regions not ``shown`` into one "other" row: the sum of their NOISY RAW counts.

    The merged row is then post-processed as one cell (:func:`post_process`),
    so its estimate is the debiased sum (not a sum of per-region values already
    clipped and rounded) and its variance adds one central noise per merged cell.
    When ``shown`` is decided by noise independent of ``noisy`` (selection
    counts), each merged noise still has mean 0 given the selection, so the
    merged estimate is unbiased for the merged regions' true total.
    """
    days, regions, width = noisy.shape
    merged = ~shown
    other = np.where(merged[..., None], noisy, 0).sum(axis=1, keepdims=True)
    released = np.concatenate([shown, merged.any(axis=1, keepdims=True)], axis=1)  # (days, regions + 1)
    terms = np.concatenate([np.ones((days, regions), dtype=np.int64), merged.sum(axis=1, keepdims=True)], axis=1)
    day, slot = np.nonzero(released)
    return Coarsened(np.concatenate([noisy, other], axis=1)[day, slot], terms[day, slot], day, slot)


def intervals(unbiased: np.ndarray, variance: np.ndarray, confidence: float, simultaneous: bool):
    """Normal intervals around the unbiased estimate, clipped below at 0 (counts are non-negative)."""
    low, high = confidence_intervals(unbiased, variance, confidence=confidence, simultaneous=simultaneous)
    return np.maximum(low, 0.0), np.maximum(high, 0.0)
