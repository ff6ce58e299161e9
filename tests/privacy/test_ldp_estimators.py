"""Server-side estimation: unbiasedness, exact variance, intervals, Norm-Sub, selection.

The simulation runs T = 2000 independent trials of n = 1000 reports of a fixed,
skewed population for each protocol (the real CSPRNG, vectorized over trials).
"""

import math

import numpy as np
import pytest
from scipy import stats

from privacy.auditing import binomial_acceptance_region, rejection_probability
from privacy.ldp import (
    PROTOCOLS,
    SubsetSelection,
    choose_protocol,
    confidence_intervals,
    make_oracle,
    norm_sub,
)

K, EPSILON = 20, 2.0
TRIALS, N = 2000, 1000
# Skewed population of n = 1000: a heavy value (where the c_v variance term
# matters most), a tail, and zeros (where only the n q(1-q)/(p-q)^2 term is left).
TRUE_COUNTS = np.array([400, 200, 120, 80, 60, 40, 30, 25, 20, 10, 8, 5, 2, 0, 0, 0, 0, 0, 0, 0])


@pytest.fixture(scope="module", params=PROTOCOLS)
def simulation(request):
    """(oracle, estimates of shape (TRIALS, K)) for one protocol."""
    assert TRUE_COUNTS.sum() == N
    oracle = make_oracle(request.param, K, EPSILON)
    population = np.repeat(np.arange(K), TRUE_COUNTS)
    reports = oracle.randomize(np.tile(population, TRIALS))
    estimates = np.array(
        [oracle.estimate(oracle.support_counts(reports[t * N : (t + 1) * N]), N) for t in range(TRIALS)]
    )
    return oracle, estimates


def test_estimates_are_unbiased(simulation):
    # Mean of T estimates within 4 standard errors (exact variance / T) of the
    # truth for every value: 80 checks at 4 sigma fail together w.p. ~0.5%.
    oracle, estimates = simulation
    standard_error = np.sqrt(oracle.variance(N, TRUE_COUNTS) / TRIALS)
    assert np.all(np.abs(estimates.mean(axis=0) - TRUE_COUNTS) < 4 * standard_error)


def test_empirical_variance_matches_the_exact_formula(simulation):
    # (T-1) s^2 / sigma^2 is ~ chi-square with T-1 dof (the estimates are sums of
    # 1000 Bernoullis, close to normal); two-sided bounds at 1e-5 per value
    # allow a relative error of about +-14% at T = 2000. Dropping the c_v term
    # misses the heavy value's variance by 55% (oue) to 180% (krr).
    oracle, estimates = simulation
    ratio = estimates.var(axis=0, ddof=1) / oracle.variance(N, TRUE_COUNTS)
    low = stats.chi2.ppf(5e-6, TRIALS - 1) / (TRIALS - 1)
    high = stats.chi2.isf(5e-6, TRIALS - 1) / (TRIALS - 1)
    assert np.all((low < ratio) & (ratio < high)), ratio
    without_counts = oracle.variance(N)
    assert np.allclose(without_counts, oracle.variance(N, np.zeros(K)))
    assert without_counts[0] * high < oracle.variance(N, TRUE_COUNTS)[0]


# --- coverage of the 95 % intervals, with the power to see a variance off by 1.2x ------------------
#
# N = COVERAGE_DRAWS x K = 6000 intervals per protocol, all independent, so the number that cover
# is Binomial(N, c), with c the intervals' true coverage. The check accepts when that number lies
# in the exact two-sided acceptance region of Binomial(N, 0.95) at COVERAGE_FALSE_ALARM = 1e-3.
# If the variance were s times the truth, the intervals would be sqrt(s) times too wide and cover
# with c = P(|Z| < 1.96 sqrt(s)): 0.9682 for s = 1.2, 0.9264 for s = 1/1.2. The test computes the
# check's power against both (exact binomial tails) and requires >= 0.99; it comes out >= 0.9999.
#
# The population is TRUE_COUNTS x 100 (n = 10^5), where the normal approximation with plugged-in
# variances is accurate: exact coverages (convolving the two binomials, summed over every outcome)
# are 0.9500-0.9504 for the four protocols, against 0.952-0.956 at n = 1000, where clipping the
# plugged-in counts at 0 widens the intervals of the empty values. At 0.9504 the false-alarm rate
# is still below 2e-3.
#
# Test data: one value's support count is exactly Binomial(c_v, p) + Binomial(n - c_v, q) (each
# report supports v independently with probability p or q; Wang et al. 2017, Sec. 3), drawn from a
# fixed-seed numpy generator, since it is test input, not privacy noise. test_ldp_mechanisms checks
# that randomize() meets p and q; the code under test here is estimate, variance and the intervals.

COVERAGE_SCALE, COVERAGE_DRAWS = 100, 300
COVERAGE_FALSE_ALARM = 1e-3
COVERAGE_LEVEL = 0.95


def coverage_is_nominal(covered: int, total: int) -> bool:
    low, high = binomial_acceptance_region(total, COVERAGE_LEVEL, COVERAGE_FALSE_ALARM)
    return low <= covered <= high


def coverage_if_variance_scaled(scale: float) -> float:
    """True coverage of nominal 95 % normal intervals built from scale x the true variance."""
    z = stats.norm.ppf(0.5 + COVERAGE_LEVEL / 2)
    return 2 * stats.norm.cdf(z * math.sqrt(scale)) - 1


def test_the_coverage_check_has_power_099_against_a_variance_off_by_1_2():
    total = COVERAGE_DRAWS * K
    region = binomial_acceptance_region(total, COVERAGE_LEVEL, COVERAGE_FALSE_ALARM)
    assert rejection_probability(total, region, COVERAGE_LEVEL) <= COVERAGE_FALSE_ALARM
    assert rejection_probability(total, region, 0.9504) <= 2e-3  # the worst exact coverage above
    assert coverage_if_variance_scaled(1.2) == pytest.approx(0.9682, abs=1e-4)
    assert coverage_if_variance_scaled(1 / 1.2) == pytest.approx(0.9264, abs=1e-4)
    for scale in (1.2, 1 / 1.2):
        assert rejection_probability(total, region, coverage_if_variance_scaled(scale)) >= 0.99


@pytest.mark.parametrize("name", PROTOCOLS)
def test_95_percent_intervals_cover_the_truth_95_percent_of_the_time(name):
    oracle = make_oracle(name, K, EPSILON)
    truth = TRUE_COUNTS * COVERAGE_SCALE
    n = int(truth.sum())
    rng = np.random.default_rng([20_250_808, PROTOCOLS.index(name)])
    shape = (COVERAGE_DRAWS, K)
    support = rng.binomial(truth, oracle.p, shape) + rng.binomial(n - truth, oracle.q, shape)
    estimates = np.array([oracle.estimate(row, n) for row in support])
    variances = np.array([oracle.variance(n, row) for row in estimates])

    def covered(variance_factor: float) -> int:
        low, high = confidence_intervals(estimates, variance_factor * variances, COVERAGE_LEVEL)
        return int(np.count_nonzero((low <= truth) & (truth <= high)))

    assert coverage_is_nominal(covered(1.0), estimates.size), covered(1.0) / estimates.size
    # The same check on the same data rejects a variance 1.2x too large and 1.2x too small.
    assert not coverage_is_nominal(covered(1.2), estimates.size), covered(1.2) / estimates.size
    assert not coverage_is_nominal(covered(1 / 1.2), estimates.size), covered(1 / 1.2) / estimates.size


def test_simultaneous_intervals_cover_all_values_at_once(simulation):
    # Bonferroni is conservative: all k intervals hold in >= 95% of trials, less
    # 3 Monte Carlo standard errors (sqrt(.95 * .05 / 2000) ~ 0.5%).
    oracle, estimates = simulation
    variances = np.array([oracle.variance(N, row) for row in estimates])
    low, high = confidence_intervals(estimates, variances, 0.95, simultaneous=True)
    all_cover = np.mean(np.all((low <= TRUE_COUNTS) & (TRUE_COUNTS <= high), axis=1))
    assert all_cover >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / TRIALS), all_cover


def test_norm_sub_is_consistent_and_lowers_error(simulation):
    oracle, estimates = simulation
    consistent = np.array([norm_sub(row, N) for row in estimates])
    assert np.all(consistent >= 0)
    assert np.allclose(consistent.sum(axis=1), N)
    # 13 of 20 values are small or zero, so clipping the noise there must pay
    # off across 2000 trials; with these margins the test cannot fail by chance.
    raw_mse = np.mean((estimates - TRUE_COUNTS) ** 2)
    assert np.mean((consistent - TRUE_COUNTS) ** 2) < 0.8 * raw_mse


def test_norm_sub_lowers_error_on_a_sparse_distribution():
    oracle = make_oracle("oue", 100, 1.0)
    truth = np.zeros(100, dtype=np.int64)
    truth[[3, 17, 42, 80, 99]] = [2000, 1000, 1000, 500, 500]
    population = np.repeat(np.arange(100), truth)
    raw, consistent = [], []
    for _ in range(20):
        estimates = oracle.estimate(oracle.support_counts(oracle.randomize(population)), truth.sum())
        raw.append(estimates)
        consistent.append(norm_sub(estimates, truth.sum()))
    raw_mse = np.mean((np.array(raw) - truth) ** 2)
    consistent_mse = np.mean((np.array(consistent) - truth) ** 2)
    # 95 of 100 values are zero: Norm-Sub removes most of their noise. The
    # expected MSE ratio is far below 1/2; the margin covers 20 trials' noise.
    assert consistent_mse < 0.5 * raw_mse


def test_norm_sub_worked_example():
    # Sorted [5, 3, -1]: delta = (6 - 8) / 2 = -1 keeps two values positive.
    assert norm_sub(np.array([5.0, -1.0, 3.0]), 6).tolist() == [4.0, 0.0, 2.0]


@pytest.mark.parametrize(
    "estimates, n, expected",
    [
        ([0.0, 0.0, 0.0, 0.0], 8, [2.0, 2.0, 2.0, 2.0]),  # nothing known: uniform
        ([-5.0, -1.0, -3.0], 3, [0.0, 2.5, 0.5]),  # all negative: delta = 3.5
        ([1.0, 2.0, 3.0], 6, [1.0, 2.0, 3.0]),  # already consistent
        ([10.0, 0.0], 0, [0.0, 0.0]),  # no reports
        ([7.5], 3, [3.0]),  # one value
    ],
)
def test_norm_sub_edge_cases(estimates, n, expected):
    assert np.allclose(norm_sub(np.array(estimates), n), expected)


@pytest.mark.parametrize("estimates, n", [([np.nan, 1.0], 5), ([1.0], -1), ([], 5), ([[1.0]], 1)])
def test_norm_sub_rejects_bad_input(estimates, n):
    with pytest.raises(ValueError):
        norm_sub(np.array(estimates), n)


def test_confidence_interval_widths():
    estimates, variances = np.array([10.0, 20.0]), np.array([4.0, 9.0])
    low, high = confidence_intervals(estimates, variances, 0.95)
    z = stats.norm.ppf(0.975)
    assert np.allclose(high - estimates, z * np.sqrt(variances))
    assert np.allclose(estimates - low, z * np.sqrt(variances))
    low, high = confidence_intervals(estimates, variances, 0.9, simultaneous=True)
    assert np.allclose(high - estimates, stats.norm.ppf(1 - 0.1 / 4) * np.sqrt(variances))
    # Rows are separate releases: Bonferroni over the k = 2 values of each, not over all 6.
    stacked_low, _ = confidence_intervals(np.tile(estimates, (3, 1)), np.tile(variances, (3, 1)), 0.9, True)
    assert np.allclose(stacked_low, np.tile(low, (3, 1)))


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_confidence_must_be_a_probability(confidence):
    with pytest.raises(ValueError):
        confidence_intervals(np.zeros(2), np.ones(2), confidence)


def per_report_variance(name, k, epsilon):
    return make_oracle(name, k, epsilon).variance(1)[0]


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("k", [2, 3, 5, 8, 12, 20, 30, 50, 100, 300])
def test_krr_beats_unary_and_hashing_exactly_below_3_e_eps_plus_2(k, epsilon):
    krr_better = per_report_variance("krr", k, epsilon) < min(
        per_report_variance("oue", k, epsilon), per_report_variance("olh", k, epsilon)
    )
    assert krr_better == (k < 3 * math.exp(epsilon) + 2)
    variances = {name: per_report_variance(name, k, epsilon) for name in PROTOCOLS}
    assert variances[choose_protocol(k, epsilon)] == pytest.approx(min(variances.values()))


def test_subset_selection_wins_at_the_service_defaults():
    assert K < 3 * math.exp(EPSILON) + 2
    assert per_report_variance("ss", K, EPSILON) < per_report_variance("krr", K, EPSILON)
    assert choose_protocol(K, EPSILON) == "ss"
    assert make_oracle("auto", K, EPSILON).name == "ss"


def test_a_one_element_subset_is_krr_and_the_tie_goes_to_krr():
    assert SubsetSelection(5, 3.0).omega == 1
    assert per_report_variance("ss", 5, 3.0) == pytest.approx(per_report_variance("krr", 5, 3.0))
    assert choose_protocol(5, 3.0) == "krr"


def test_estimate_and_variance_check_shapes():
    oracle = make_oracle("krr", K, EPSILON)
    with pytest.raises(ValueError):
        oracle.estimate(np.zeros(K - 1), 10)
    with pytest.raises(ValueError):
        oracle.variance(10, np.zeros(K + 1))
    # Plugged-in estimates are clipped to [0, n].
    assert np.allclose(oracle.variance(10, np.full(K, -5.0)), oracle.variance(10))
    assert np.allclose(oracle.variance(10, np.full(K, 50.0)), oracle.variance(10, np.full(K, 10.0)))
