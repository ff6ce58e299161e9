"""Statistics of what a query shows, on the pure release functions (privacy/central.py), over many releases.

* The coarsening cut-off: exact tail of the noise of an empty region's n, the least cut-off with
  that tail <= EMPTY_REGION_SURVIVAL, and the rate at which empty regions are shown.
* The merged "other" cell: estimated from the sum of its regions' noisy raw counts, its interval
  covers the merged regions' true count at its level; the old way (per-region values summed) does not.

Every draw comes from a fresh-seeded DRBG (privacy noise) and k-RR's own randomizer, so the tests
are not seeded; each states its tolerance, chosen so that a correct implementation fails with
probability below 1e-4, and the error it has the power to catch.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from privacy import central
from privacy.drbg import DRBG, new_seed
from privacy.ldp import make_oracle
from privacy.noise import discrete_laplace_pmf, discrete_laplace_variance

SURVIVAL = 0.01
V1_THRESHOLD = 5  # the fixed cut-off before: regions whose rounded noisy n was below 5 were merged


def _brute_force_survival(terms: int, scale: Fraction, threshold: int) -> float:
    """P(sum of ``terms`` discrete Laplace > threshold) by convolving the PMF on [-60t, 60t] (tail < 1e-25)."""
    half = int(60 * scale) + 20
    pmf = discrete_laplace_pmf(np.arange(-half, half + 1), scale)
    law = pmf
    for _ in range(terms - 1):
        law = np.convolve(law, pmf)
    return float(law[terms * half + threshold + 1:].sum())


@pytest.mark.parametrize("terms, scale", [(1, Fraction(1)), (1, Fraction(7, 2)), (3, Fraction(1)),
                                          (3, Fraction(1, 3)), (5, Fraction(5, 2)), (20, Fraction(1))])
def test_the_survival_of_a_sum_of_discrete_laplace_noises_is_exact(terms, scale):
    """The closed form against a brute-force convolution of the PMF, to 1e-9 relative (float rounding only)."""
    for threshold in (0, 1, 2, 5, 9, 17):
        exact = _brute_force_survival(terms, scale, threshold)
        assert central.laplace_sum_survival(terms, scale, threshold) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    a = 1 / float(scale)  # one count: P(Z > x) = e^{-a(x+1)}/(1+e^{-a})
    if terms == 1:
        assert central.laplace_sum_survival(1, scale, 4) == pytest.approx(math.exp(-5 * a) / (1 + math.exp(-a)))


@pytest.mark.parametrize("terms, scale, survival", [(1, Fraction(1), 0.01), (1, Fraction(3), 0.01),
                                                    (3, Fraction(1), 0.01), (20, Fraction(2), 0.001),
                                                    (8, Fraction(10**6), 0.01), (1000, Fraction(100), 0.05)])
def test_the_cut_off_is_the_least_that_an_empty_cell_passes_at_most_at_the_stated_rate(terms, scale, survival):
    threshold = central.survival_threshold(terms, scale, survival)
    assert central.laplace_sum_survival(terms, scale, threshold) <= survival
    assert threshold == 0 or central.laplace_sum_survival(terms, scale, threshold - 1) > survival
    # the cut-off is about the (1 - survival) quantile of a spread of sqrt(terms) noise SDs, not one SD
    assert threshold > math.sqrt(terms * discrete_laplace_variance(scale))


def test_the_cut_off_uses_the_noise_of_the_statistic_that_decides():
    """k-RR's n is the sum of its k noisy counts; other protocols release n in a column of its own."""
    scale = Fraction(3)
    assert central.empty_cell_threshold(make_oracle("krr", 3, 2.0), scale, SURVIVAL) == \
        central.survival_threshold(3, scale, SURVIVAL)
    assert central.empty_cell_threshold(make_oracle("ss", 20, 2.0), scale, SURVIVAL) == \
        central.survival_threshold(1, scale, SURVIVAL)
    with pytest.raises(ValueError):
        central.survival_threshold(1, scale, 0.5)


def _empty_grid_shown(oracle, scale: Fraction, cells: int) -> np.ndarray:
    noisy, _ = central.add_noise(np.zeros((1, cells, central.grid_width(oracle)), dtype=np.int64), scale,
                                 DRBG(new_seed()))
    return noisy


@pytest.mark.parametrize("protocol, k, scale", [("krr", 3, Fraction(1)), ("ss", 20, Fraction(3))])
def test_empty_regions_are_shown_at_the_stated_rate(protocol, k, scale):
    """200,000 empty regions (k-RR k = 3 at t = 1; SS k = 20 at t = 3, its Δ = 3 at ε = 1).

    The number shown is Binomial(N, p) with p = laplace_sum_survival(terms, t, cut-off) <= 0.01,
    exact; tolerance 4.5 SD (false failure < 1e-5). Power: a cut-off one lower raises p by more than
    10 SD here, and the fixed threshold 5 of before shows 3.1 % (k-RR) and 11 % (SS) of empty regions.
    """
    oracle, cells = make_oracle(protocol, k, 2.0), 200_000
    noisy = _empty_grid_shown(oracle, scale, cells)
    shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
    threshold = central.empty_cell_threshold(oracle, scale, SURVIVAL)
    terms = 1 if central.counts_n_separately(oracle) else k
    p = central.laplace_sum_survival(terms, scale, threshold)
    assert 0.001 < p <= SURVIVAL
    sd = math.sqrt(cells * p * (1 - p))
    assert abs(int(shown.sum()) - cells * p) <= 4.5 * sd, (int(shown.sum()), cells * p)
    assert (central.laplace_sum_survival(terms, scale, threshold - 1) - p) * cells > 10 * sd
    shown_before = np.rint(central.noisy_n(oracle, noisy)) >= V1_THRESHOLD
    assert shown_before.mean() > 2.5 * SURVIVAL  # exactly 0.031 (k-RR) and 0.110 (SS): >= 14 SE above


def test_populated_regions_still_show():
    """k-RR k = 3, local ε = 2, t = 1: the cut-off is 6, so a region of 20 reports misses it only if its
    noise sums to <= -14: probability laplace_sum_survival(3, 1, 13) = 1.8e-5 each, 0.18 expected misses
    in 10,000 such regions; the test allows 4 (false failure < 2e-6). A region of 3 reports is shown
    with probability P(S > 3) = 0.063 (10,000 regions: SE 0.0024, bounds 0.04-0.09 >= 9 SE away)."""
    oracle, scale, regions = make_oracle("krr", 3, 2.0), Fraction(1), 10_000
    source = DRBG(new_seed())
    for reports, low, high in ((20, 0.99, 1.0), (3, 0.04, 0.09)):
        values = oracle.randomize(np.zeros(regions * reports, dtype=np.int64), source).reshape(regions, reports)
        raw = np.stack([(values == v).sum(axis=1) for v in range(3)], axis=1)[None]
        noisy, _ = central.add_noise(raw, scale, source)
        shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
        assert low <= shown.mean() <= high, (reports, shown.mean())
        if reports == 20:
            assert central.laplace_sum_survival(3, scale, 13) < 2e-5 and int((~shown).sum()) <= 4


# --- the merged "other" cell -------------------------------------------------------------------------------


def _krr_days(days: int, regions: int, true_value_per_region: list[int], scale: Fraction):
    """(oracle, noisy grid (days, regions, 3), true counts per region): regions of the given true values,
    randomized by k-RR (k = 3, local ε = 2), noised at ``scale``."""
    oracle, source = make_oracle("krr", 3, 2.0), DRBG(new_seed())
    per_region = len(true_value_per_region)
    truth = np.bincount(true_value_per_region, minlength=3)
    values = oracle.randomize(np.tile(np.asarray(true_value_per_region), days * regions), source)
    raw = np.stack([(values.reshape(-1, per_region) == v).sum(axis=1) for v in range(3)], axis=1)
    noisy, _ = central.add_noise(raw.reshape(days, regions, 3), scale, source)
    return oracle, noisy, truth


def _other_cell_coverage(oracle, noisy, truth, scale: Fraction, shown: np.ndarray) -> np.ndarray:
    """Per value, how often the 95 % interval of each day's "other" cell (as released now) covers its truth."""
    cells = central.coarsen(noisy, shown)
    processed = central.post_process(oracle, cells.rows, scale, cells.noise_terms)
    other = cells.slot == noisy.shape[1]
    low, high = central.intervals(processed.unbiased[other], processed.variance[other], 0.95, False)
    true_counts = cells.noise_terms[other, None] * truth
    return ((low <= true_counts) & (true_counts <= high)).mean(axis=0)


def _v1_other_cell_coverage(oracle, noisy, truth, scale: Fraction) -> np.ndarray:
    """The same for the "other" cell of before: regions of rounded noisy n < 5, their per-region unbiased
    estimates and variances (at the per-region clipped n) summed."""
    days, regions, width = noisy.shape
    processed = central.post_process(oracle, noisy.reshape(-1, width), scale)
    small = (processed.reports < V1_THRESHOLD).reshape(days, regions)

    def summed(column):
        return np.where(small[..., None], column.reshape(days, regions, -1), 0).sum(axis=1)

    low, high = central.intervals(summed(processed.unbiased), summed(processed.variance), 0.95, False)
    true_counts = small.sum(axis=1)[:, None] * truth
    return ((low <= true_counts) & (true_counts <= high)).mean(axis=0)


def test_the_other_cell_of_a_fixed_set_of_regions_covers_at_its_level():
    """No selection: every region of 20,000 days merged (248 regions of one report of value 0, k-RR k = 3,
    local ε = 2, central t = 1): the merged cell is the debiased sum, its variance the LDP variance at the
    merged n plus 248 central noise variances.

    Coverage of value 0 (true count 248; the other values' truth is 0, where clipping the interval at 0
    makes it one-sided) within 0.95 ± 0.01: SE = 0.0015 for 20,000 days; 40,000 simulated days gave
    0.948, 5.2 SE inside (false failure < 1e-6). A variance 1.2x too small (coverage 0.926) or too large
    (0.968) is caught with power > 0.9999.
    """
    oracle, scale = make_oracle("krr", 3, 2.0), Fraction(1)
    _, noisy, truth = _krr_days(20_000, 248, [0], scale)
    coverage = _other_cell_coverage(oracle, noisy, truth, scale, np.zeros(noisy.shape[:2], dtype=bool))
    assert abs(coverage[0] - 0.95) <= 0.01, coverage


def test_the_other_cell_covers_when_its_regions_are_chosen_by_the_noise():
    """The release rule itself: 10,000 days of 248 regions of one report (k-RR k = 3, local ε = 2, t = 1),
    regions shown when their noisy n exceeds the 1 % cut-off (6), the rest merged.

    Coverage of value 0 within 0.95 ± 0.02. The noise that chooses the merged regions is the noise in their
    sum, which biases it a little: two runs of 40,000 simulated days gave 0.943 and 0.946 (SE 0.0011);
    for 10,000 days the bounds are >= 5.5 SE away. The way before (threshold 5, per-region values summed) gives 0.87 and fails.
    """
    oracle, scale = make_oracle("krr", 3, 2.0), Fraction(1)
    _, noisy, truth = _krr_days(10_000, 248, [0], scale)
    shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
    coverage = _other_cell_coverage(oracle, noisy, truth, scale, shown)
    assert abs(coverage[0] - 0.95) <= 0.02, coverage
    assert _v1_other_cell_coverage(oracle, noisy, truth, scale)[0] < 0.9


def test_regions_near_the_cut_off_still_bias_the_other_cell():
    """What the rule cannot fix (docs/privacy.md, "Coarsening"): 248 regions of 3 reports (one of each
    value; k-RR k = 3, local ε = 2, t = 1). Each is shown when its noise sum exceeds 3 (about 6 %), and
    those are missing from "other" with their noise, so it runs low: coverage 0.875 per value in
    20,000 simulated days (was 0.42). 4,000 days here: SE 0.005; bounds 0.85-0.90 are 5 SE away.
    """
    oracle, scale = make_oracle("krr", 3, 2.0), Fraction(1)
    _, noisy, truth = _krr_days(4000, 248, [0, 1, 2], scale)
    shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
    coverage = _other_cell_coverage(oracle, noisy, truth, scale, shown)
    assert np.all((0.85 <= coverage) & (coverage <= 0.90)), coverage
    assert np.all(_v1_other_cell_coverage(oracle, noisy, truth, scale) < 0.5)


def test_the_other_cell_of_empty_regions_shows_few_phantom_reports():
    """SS, k = 20, local ε = 2 (Δ = 3: t = 3 at central ε = 1), 249 empty regions, 2,000 days.

    Its reports are max(noisy n of the merged sum, 0). Each merged noise is conditioned on being <= the
    cut-off, so the sum S is stochastically below an unconditioned sum of M <= 249 noises, and
    E[max(S, 0)] <= E|S_unconditioned|/2 <= sqrt(249 Var Z)/2 = 33.4. Tolerance: the mean over 2,000
    days may exceed it by 4 SE, SE <= sqrt(249 Var Z)/sqrt(2000) = 1.5. Before: 161 reports a day.
    """
    oracle, scale, days, regions = make_oracle("ss", 20, 2.0), Fraction(3), 2000, 249
    assert central.l1_sensitivity(oracle, 1) == 3
    noisy, _ = central.add_noise(np.zeros((days, regions, 21), dtype=np.int64), scale, DRBG(new_seed()))
    shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
    cells = central.coarsen(noisy, shown)
    processed = central.post_process(oracle, cells.rows, scale, cells.noise_terms)
    phantom = processed.reports[cells.slot == regions]
    bound = math.sqrt(regions * discrete_laplace_variance(scale)) / 2
    assert len(phantom) == days and phantom.mean() <= bound + 4 * 2 * bound / math.sqrt(days), phantom.mean()
    assert (processed.counts[cells.slot == regions].sum(axis=1) == phantom).all()
    before = central.post_process(oracle, noisy.reshape(-1, 21), scale).reports.reshape(days, regions)
    assert np.where(before < V1_THRESHOLD, before, 0).sum(axis=1).mean() > 100
