"""Statistics of what a query shows, on the pure release functions (privacy/central.py), over many releases.

A query grouped by region spends SHARE of its ε on selection counts (each cell's n plus its own
discrete Laplace noise) and the rest on the grid, as the service does (:func:`_release`).

* The coarsening cut-off: exact tail of the noise of an empty region's count, the least cut-off with
  that tail <= EMPTY_REGION_SURVIVAL, the rate at which empty regions are shown, and how populated
  regions show.
* The merged "other" cell: estimated from the sum of its regions' noisy raw grid counts, chosen on the
  independent selection counts, it is unbiased and its interval covers the merged regions' true count at
  its level, in the issue's case where choosing on the grid's own noise (releases made before selection
  counts) covered 0.875, and for SS with many empty regions.

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
SHARE = Fraction(1, 10)  # SELECTION_EPSILON_SHARE, the default
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


def _release(oracle, raw: np.ndarray, epsilon_micro: int = 1_000_000, bound: int = 1):
    """What the service releases from a raw (days, regions, width) grid at ε: (noisy grid, shown mask,
    grid scale). SHARE of ε on the selection counts, the rest on the grid, noise drawn in the release's
    order from one fresh DRBG, regions shown on their selection counts."""
    days, regions, width = raw.shape
    selection_micro = central.selection_epsilon_micro(epsilon_micro, SHARE)
    scale = central.noise_scale(central.l1_sensitivity(oracle, bound), epsilon_micro - selection_micro)
    selection_scale = central.noise_scale(bound, selection_micro)
    noise, selection_noise = central.release_noise((days * regions, width), scale, selection_scale,
                                                   DRBG(new_seed()))
    selection = central.report_counts(oracle, raw) + selection_noise.reshape(days, regions)
    return raw + noise.reshape(raw.shape), central.selected_regions(selection, selection_scale, SURVIVAL), scale


def _same_noise_release(oracle, raw: np.ndarray, epsilon_micro: int = 1_000_000):
    """The same as releases made before selection counts: all of ε on the grid, regions shown on its noisy n."""
    scale = central.noise_scale(central.l1_sensitivity(oracle, 1), epsilon_micro)
    noisy, _ = central.add_noise(raw, scale, DRBG(new_seed()))
    return noisy, central.shown_regions(oracle, noisy, scale, SURVIVAL), scale


def _selection_survival(scale: Fraction, threshold: int, reports: int) -> float:
    """P(reports + Z > threshold) for one discrete Laplace Z of ``scale``, exactly (Z is symmetric)."""
    if reports <= threshold:
        return central.laplace_sum_survival(1, scale, threshold - reports)
    return 1 - central.laplace_sum_survival(1, scale, reports - threshold - 1)


@pytest.mark.parametrize("scale", [Fraction(10), Fraction(1), Fraction(5, 2)])
def test_empty_regions_are_shown_at_the_stated_rate(scale):
    """1,000,000 empty regions' selection counts (pure noise of scale m/ε_sel: t = 10 is the default at
    ε = 1, m = 1; t = 1 and 5/2 other ε).

    The number shown is Binomial(N, p) with p = P(Z > cut-off) <= 0.01, exact; tolerance 4.5 SD (false
    failure < 1e-5). Power: a cut-off one lower multiplies p by e^{1/t} (>= 1.105), more than 10 SD here.
    """
    cells = 1_000_000
    selection = central.add_noise(np.zeros((1, cells), dtype=np.int64), scale, DRBG(new_seed()))[0]
    shown = central.selected_regions(selection, scale, SURVIVAL)
    threshold = central.selection_threshold(scale, SURVIVAL)
    p = central.laplace_sum_survival(1, scale, threshold)
    assert 0.004 < p <= SURVIVAL
    sd = math.sqrt(cells * p * (1 - p))
    assert abs(int(shown.sum()) - cells * p) <= 4.5 * sd, (int(shown.sum()), cells * p)
    assert (central.laplace_sum_survival(1, scale, threshold - 1) - p) * cells > 10 * sd


@pytest.mark.parametrize("protocol, k, scale", [("krr", 3, Fraction(1)), ("ss", 20, Fraction(3))])
def test_releases_made_before_selection_counts_showed_empty_regions_at_the_stated_rate(protocol, k, scale):
    """Their cut-off on the grid's own noisy n (kept to re-render them): 200,000 empty regions (k-RR k = 3
    at t = 1; SS k = 20 at t = 3, its Δ = 3 at ε = 1).

    The number shown is Binomial(N, p) with p = laplace_sum_survival(terms, t, cut-off) <= 0.01,
    exact; tolerance 4.5 SD (false failure < 1e-5). Power: a cut-off one lower raises p by more than
    10 SD here, and the fixed threshold 5 of before shows 3.1 % (k-RR) and 11 % (SS) of empty regions.
    """
    oracle, cells = make_oracle(protocol, k, 2.0), 200_000
    noisy, _ = central.add_noise(np.zeros((1, cells, central.grid_width(oracle)), dtype=np.int64), scale,
                                 DRBG(new_seed()))
    shown = central.shown_regions(oracle, noisy, scale, SURVIVAL)
    threshold = central.empty_cell_threshold(oracle, scale, SURVIVAL)
    terms = 1 if central.counts_n_separately(oracle) else k
    p = central.laplace_sum_survival(terms, scale, threshold)
    assert 0.001 < p <= SURVIVAL
    sd = math.sqrt(cells * p * (1 - p))
    assert abs(int(shown.sum()) - cells * p) <= 4.5 * sd, (int(shown.sum()), cells * p)
    assert (central.laplace_sum_survival(terms, scale, threshold - 1) - p) * cells > 10 * sd
    shown_before = np.rint(central.report_counts(oracle, noisy)) >= V1_THRESHOLD
    assert shown_before.mean() > 2.5 * SURVIVAL  # exactly 0.031 (k-RR) and 0.110 (SS): >= 14 SE above


def test_populated_regions_still_show():
    """k-RR k = 3, local ε = 2, central ε = 1: selection counts at t = m/ε_sel = 10, cut-off 39.

    10,000 regions of each size, through the release rule (:func:`_release`). A region of 200 reports is
    merged only if its selection noise is <= -161: probability 5.4e-8, the test allows 1 miss in 10,000
    (false failure < 2e-7). Regions of 100 reports are merged with probability P(Z >= 61) = 0.0012 and
    regions of 39 shown with probability P(Z > 0) = 0.475, exact; the number shown is Binomial, tolerance
    4.5 SD (false failure < 1e-5). Power: a cut-off off by 2 moves the 39-report rate to 0.57 or 0.39
    (19 SD), and a selection scale 20 % too large merges 32 of the 100-report regions instead of 12
    (bound 27).
    """
    oracle, regions = make_oracle("krr", 3, 2.0), 10_000
    selection_scale = central.noise_scale(1, central.selection_epsilon_micro(1_000_000, SHARE))
    threshold = central.selection_threshold(selection_scale, SURVIVAL)
    assert (selection_scale, threshold) == (10, 39)
    source = DRBG(new_seed())
    for reports in (200, 100, 39):
        values = oracle.randomize(np.zeros(regions * reports, dtype=np.int64), source).reshape(regions, reports)
        raw = np.stack([(values == v).sum(axis=1) for v in range(3)], axis=1)[None]
        shown = _release(oracle, raw)[1]
        p = _selection_survival(selection_scale, threshold, reports)
        if reports == 200:
            assert central.laplace_sum_survival(1, selection_scale, reports - threshold - 1) < 6e-8
            assert int((~shown).sum()) <= 1
        else:
            sd = math.sqrt(regions * p * (1 - p))
            assert abs(int(shown.sum()) - regions * p) <= 4.5 * sd, (reports, int(shown.sum()), regions * p)
    assert _selection_survival(selection_scale, threshold, 39) == pytest.approx(math.exp(-0.1) / (1 + math.exp(-0.1)))


# --- the merged "other" cell -------------------------------------------------------------------------------


def _krr_raw(days: int, regions: int, true_value_per_region: list[int]):
    """(oracle, raw grid (days, regions, 3), true counts per region): regions of the given true values,
    randomized by k-RR (k = 3, local ε = 2)."""
    oracle, source = make_oracle("krr", 3, 2.0), DRBG(new_seed())
    per_region = len(true_value_per_region)
    truth = np.bincount(true_value_per_region, minlength=3)
    values = oracle.randomize(np.tile(np.asarray(true_value_per_region), days * regions), source)
    raw = np.stack([(values.reshape(-1, per_region) == v).sum(axis=1) for v in range(3)], axis=1)
    return oracle, raw.reshape(days, regions, 3), truth


def _other_cells(oracle, noisy, scale: Fraction, shown: np.ndarray):
    """(unbiased, variance, 95 % low, high) of each day's "other" cell, as released; days without one dropped."""
    cells = central.coarsen(noisy, shown)
    processed = central.post_process(oracle, cells.rows, scale, cells.noise_terms)
    other = cells.slot == noisy.shape[1]
    low, high = central.intervals(processed.unbiased[other], processed.variance[other], 0.95, False)
    return processed.unbiased[other], processed.variance[other], low, high, other


def _coverage(truth_rows, low, high) -> np.ndarray:
    return ((low <= truth_rows) & (truth_rows <= high)).mean(axis=0)


def _v1_other_cell_coverage(oracle, noisy, truth, scale: Fraction) -> np.ndarray:
    """The same for the "other" cell of before: regions of rounded noisy n < 5, their per-region unbiased
    estimates and variances (at the per-region clipped n) summed."""
    days, regions, width = noisy.shape
    processed = central.post_process(oracle, noisy.reshape(-1, width), scale)
    small = (processed.reports < V1_THRESHOLD).reshape(days, regions)

    def summed(column):
        return np.where(small[..., None], column.reshape(days, regions, -1), 0).sum(axis=1)

    low, high = central.intervals(summed(processed.unbiased), summed(processed.variance), 0.95, False)
    return _coverage(small.sum(axis=1)[:, None] * truth, low, high)


@pytest.mark.slow  # tens of thousands of simulated releases
def test_the_other_cell_of_a_fixed_set_of_regions_covers_at_its_level():
    """No selection: every region of 20,000 days merged (248 regions of one report of value 0, k-RR k = 3,
    local ε = 2, central t = 1): the merged cell is the debiased sum, its variance the LDP variance at the
    merged n plus 248 central noise variances.

    Coverage of value 0 (true count 248; the other values' truth is 0, where clipping the interval at 0
    makes it one-sided) within 0.95 ± 0.01: SE = 0.0015 for 20,000 days; 40,000 simulated days gave
    0.948, 5.2 SE inside (false failure < 1e-6). A variance 1.2x too small (coverage 0.926) or too large
    (0.968) is caught with power > 0.9999.
    """
    oracle, raw, truth = _krr_raw(20_000, 248, [0])
    scale = Fraction(1)
    noisy, _ = central.add_noise(raw, scale, DRBG(new_seed()))
    _, _, low, high, _ = _other_cells(oracle, noisy, scale, np.zeros(noisy.shape[:2], dtype=bool))
    assert abs(_coverage(248 * truth, low, high)[0] - 0.95) <= 0.01


@pytest.mark.slow  # tens of thousands of simulated releases
def test_the_other_cell_chosen_on_independent_selection_counts_is_unbiased_and_covers_at_its_level():
    """The issue's case: 8,000 days of 248 regions of 3 reports (one of each value), k-RR k = 3, local ε = 2,
    central ε = 1: the grid at ε = 0.9 (t = 10/9), selection counts at 0.1 (t = 10, cut-off 39), so each
    region is shown with probability P(Z > 36) = 1.3 % and the rest merged into "other".

    Coverage of each value's interval (true count: the number merged, about 245) within 0.95 ± 0.015:
    SE = 0.0024 for 8,000 days, 6 SE (false failure < 1e-8); 40,000 simulated days gave 0.9493-0.9499.
    The mean error of ``unbiased`` is within 4.5 SE of 0 (SE = its sd / sqrt(days)). Power: choosing the
    regions on the grid's own noise (releases made before selection counts, all of ε on the grid) covers
    0.875 (bias about -1.4 sd); run on data of the same kind below, it fails both checks.
    """
    oracle, raw, truth = _krr_raw(8000, 248, [0, 1, 2])
    noisy, shown, scale = _release(oracle, raw)
    assert scale == Fraction(10, 9)
    unbiased, variance, low, high, other = _other_cells(oracle, noisy, scale, shown)
    assert other.sum() == 8000  # every day merges some regions
    true_counts = (~shown).sum(axis=1)[:, None] * truth
    coverage = _coverage(true_counts, low, high)
    assert np.all(np.abs(coverage - 0.95) <= 0.015), coverage
    error, sd = unbiased - true_counts, np.sqrt(variance)
    assert np.all(np.abs(error.mean(axis=0)) <= 4.5 * sd.mean(axis=0) / math.sqrt(len(error))), error.mean(axis=0)

    same_oracle, same_raw, _ = _krr_raw(8000, 248, [0, 1, 2])
    same_noisy, same_shown, same_scale = _same_noise_release(same_oracle, same_raw)
    same_unbiased, same_variance, same_low, same_high, _ = _other_cells(oracle, same_noisy, same_scale, same_shown)
    same_truth = (~same_shown).sum(axis=1)[:, None] * truth
    assert np.all(_coverage(same_truth, same_low, same_high) < 0.9)  # 0.875: 31 SE below the band
    same_error = (same_unbiased - same_truth).mean(axis=0)
    assert np.all(same_error < -4.5 * np.sqrt(same_variance).mean(axis=0) / math.sqrt(8000))
    assert np.all(_v1_other_cell_coverage(oracle, same_noisy, truth, same_scale) < 0.5)  # 0.42, the figure


def _ss_raw(days: int, regions: int, populated: int, values: list[int]):
    """(oracle, raw grid (days, regions, 21), true counts per populated region): SS, k = 20, local ε = 2; the
    first ``populated`` regions of each day hold one report of each of ``values``, the rest are empty."""
    oracle, source, k = make_oracle("ss", 20, 2.0), DRBG(new_seed()), 20
    reported = oracle.randomize(np.tile(np.asarray(values), days * populated), source)  # (reports, omega)
    region_of = np.repeat(np.arange(days * populated), len(values) * reported.shape[1])
    support = np.zeros((days * populated, k), dtype=np.int64)
    np.add.at(support, (region_of, reported.ravel()), 1)
    raw = np.zeros((days, regions, k + 1), dtype=np.int64)
    raw[:, :populated, :k] = support.reshape(days, populated, k)
    raw[:, :populated, k] = len(values)
    return oracle, raw, np.bincount(values, minlength=k)


@pytest.mark.slow  # tens of thousands of simulated releases
def test_the_other_cell_of_ss_with_many_empty_regions_is_unbiased_and_covers_at_its_level():
    """SS, k = 20, local ε = 2 (Δ = 3), central ε = 1 (grid t = 10/3, selection t = 10), 4,000 days of 249
    regions: 200 empty, 49 of 4 reports (values 0, 0, 1, 2). "other" merges about 246 regions, most empty,
    so its central noise (sd about 200) dominates.

    Coverage of values 0, 1, 2 (true counts 2M, M, M for M populated regions merged) within 0.95 ± 0.017:
    SE = 0.0034 for 4,000 days, 5 SE (false failure < 1e-6); 20,000 simulated days gave 0.9510-0.9514.
    The mean error of ``unbiased`` is within 4.5 SE of 0. Power: a variance 1.3x too small or a bias of half
    an sd gives coverage <= 0.921 and a variance 1.5x too large 0.984, each caught with power > 0.999.
    """
    days, regions, populated = 4000, 249, 49
    oracle, raw, truth = _ss_raw(days, regions, populated, [0, 0, 1, 2])
    noisy, shown, scale = _release(oracle, raw)
    assert central.l1_sensitivity(oracle, 1) == 3 and scale == Fraction(10, 3)
    unbiased, variance, low, high, other = _other_cells(oracle, noisy, scale, shown)
    assert other.sum() == days
    true_counts = (~shown[:, :populated]).sum(axis=1)[:, None] * truth
    coverage = _coverage(true_counts, low, high)[:3]
    assert np.all(np.abs(coverage - 0.95) <= 0.017), coverage
    error, sd = (unbiased - true_counts)[:, :3], np.sqrt(variance[:, :3])
    assert np.all(np.abs(error.mean(axis=0)) <= 4.5 * sd.mean(axis=0) / math.sqrt(days)), error.mean(axis=0)


def test_the_other_cell_of_empty_regions_shows_few_phantom_reports():
    """SS, k = 20, local ε = 2 (Δ = 3: grid t = 10/3 at central ε = 1), 249 empty regions, 2,000 days.

    Its reports are max(noisy n of the merged sum, 0): the merged regions are chosen on independent
    selection counts, so their n noise S is a plain sum of M <= 249 noises, and
    E[max(S, 0)] = E|S|/2 <= sqrt(249 Var Z)/2 = 37.2. Tolerance: the mean over 2,000 days may exceed it
    by 4 SE, SE <= sqrt(249 Var Z)/sqrt(2000) = 1.7. Before: 161 reports a day.
    """
    days, regions = 2000, 249
    oracle = make_oracle("ss", 20, 2.0)
    noisy, shown, scale = _release(oracle, np.zeros((days, regions, 21), dtype=np.int64))
    cells = central.coarsen(noisy, shown)
    processed = central.post_process(oracle, cells.rows, scale, cells.noise_terms)
    phantom = processed.reports[cells.slot == regions]
    bound = math.sqrt(regions * discrete_laplace_variance(scale)) / 2
    assert len(phantom) == days and phantom.mean() <= bound + 4 * 2 * bound / math.sqrt(days), phantom.mean()
    assert (processed.counts[cells.slot == regions].sum(axis=1) == phantom).all()
    before = central.post_process(oracle, noisy.reshape(-1, 21), scale).reports.reshape(days, regions)
    assert np.where(before < V1_THRESHOLD, before, 0).sum(axis=1).mean() > 100
