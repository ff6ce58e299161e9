"""privacy.auditing against an independent computation: binomial tail sums term by term.

Every expected value here comes from summing binomial probabilities with ``math.comb`` and
``math.fsum``, never from scipy, which the module uses.
"""

import math
import pytest

from privacy.auditing import (
    binomial_acceptance_region,
    clopper_pearson,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_lower_bound,
    rejection_probability,
)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) <= k] (fsum keeps the sum exact to a rounding of its terms)."""
    return math.fsum(binomial_pmf(j, n, p) for j in range(k + 1))


def binomial_pmf(j: int, n: int, p: float) -> float:
    return math.comb(n, j) * p**j * (1 - p) ** (n - j)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (9, 10), (17, 60), (1, 200)])
@pytest.mark.parametrize("alpha", [0.05, 1e-3])
def test_the_upper_bound_leaves_exactly_alpha_below_the_observed_count(k, n, alpha):
    # Clopper-Pearson: the upper bound u solves P[Binomial(n, u) <= k] = alpha.
    upper = clopper_pearson_upper(k, n, alpha)
    assert binomial_cdf(k, n, upper) == pytest.approx(alpha, rel=1e-8)
    assert binomial_cdf(k, n, upper * (1 - 1e-6)) > alpha  # the largest such p


@pytest.mark.parametrize("k, n", [(1, 10), (3, 10), (10, 10), (17, 60), (199, 200)])
@pytest.mark.parametrize("alpha", [0.05, 1e-3])
def test_the_lower_bound_leaves_exactly_alpha_above_the_observed_count(k, n, alpha):
    # ... and the lower bound l solves P[Binomial(n, l) >= k] = alpha.
    lower = clopper_pearson_lower(k, n, alpha)
    assert 1 - binomial_cdf(k - 1, n, lower) == pytest.approx(alpha, rel=1e-8)


def test_bounds_at_the_edges_and_the_closed_form_at_zero():
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    # k = 0: (1 - u)^n = alpha, so u = 1 - alpha^(1/n).
    assert clopper_pearson_upper(0, 50, 0.01) == pytest.approx(1 - 0.01 ** (1 / 50), rel=1e-12)
    low, high = clopper_pearson(0, 50, 0.02)
    assert low == 0.0 and high == pytest.approx(1 - 0.01 ** (1 / 50), rel=1e-12)


@pytest.mark.parametrize("bad", [(-1, 10), (11, 10), (0, 0)])
def test_counts_must_be_possible(bad):
    with pytest.raises(ValueError):
        clopper_pearson_upper(*bad, 0.05)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_alpha_must_be_a_probability(alpha):
    with pytest.raises(ValueError):
        clopper_pearson_lower(3, 10, alpha)


@pytest.mark.parametrize("p", [0.02, 0.13, 0.5, 0.77, 0.98])
def test_the_upper_bound_covers_with_at_least_its_level(p):
    # Exact coverage over all outcomes of n = 40 trials: P[u(K) >= p] >= 1 - alpha.
    n, alpha = 40, 0.05
    coverage = sum(binomial_pmf(k, n, p) for k in range(n + 1) if clopper_pearson_upper(k, n, alpha) >= p)
    assert coverage >= 1 - alpha - 1e-12


def test_epsilon_lower_bound_worked_example():
    # No false positives or negatives in 100 + 100 runs: both rate bounds are 1 - (alpha/2)^(1/100).
    rate = 1 - 0.025 ** (1 / 100)
    assert epsilon_lower_bound(0, 100, 0, 100, alpha=0.05) == pytest.approx(math.log((1 - rate) / rate))
    # With delta, the larger of the two one-sided forms.
    fpr = clopper_pearson_upper(5, 1000, 0.025)
    fnr = clopper_pearson_upper(300, 1000, 0.025)
    expected = max(math.log((1 - 1e-3 - fnr) / fpr), math.log((1 - 1e-3 - fpr) / fnr))
    assert epsilon_lower_bound(5, 1000, 300, 1000, delta=1e-3) == pytest.approx(expected)
    # A coin flip distinguishes nothing.
    assert epsilon_lower_bound(500, 1000, 500, 1000) == 0.0


def test_epsilon_lower_bound_is_symmetric_in_its_two_error_kinds():
    assert epsilon_lower_bound(30, 500, 200, 400) == epsilon_lower_bound(200, 400, 30, 500)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_epsilon_lower_bound_exceeds_the_truth_with_probability_at_most_alpha(epsilon):
    # Randomized response on one bit is a tight epsilon-DP mechanism: FPR = FNR = 1 / (1 + e^eps).
    # Exact probability, over every outcome of 60 + 60 runs, that the audit claims more than epsilon.
    n, alpha = 60, 0.05
    rate = 1 / (1 + math.exp(epsilon))
    pmf = [binomial_pmf(j, n, rate) for j in range(n + 1)]
    too_high = sum(pmf[fp] * pmf[fn] for fp in range(n + 1) for fn in range(n + 1)
                   if epsilon_lower_bound(fp, n, fn, n, alpha=alpha) > epsilon)
    assert too_high <= alpha


def test_epsilon_lower_bound_rejects_bad_delta():
    with pytest.raises(ValueError):
        epsilon_lower_bound(1, 10, 1, 10, delta=1.0)


@pytest.mark.parametrize("n, p, alpha", [(50, 0.5, 0.05), (400, 0.95, 1e-3), (1000, 0.03, 1e-4)])
def test_acceptance_region_has_tails_of_at_most_half_alpha_each_and_is_the_tightest(n, p, alpha):
    low, high = binomial_acceptance_region(n, p, alpha)
    below = binomial_cdf(low - 1, n, p) if low > 0 else 0.0
    above = 1 - binomial_cdf(high, n, p)
    assert below <= alpha / 2 and above <= alpha / 2
    # One step narrower on either side would put more than alpha / 2 in that tail.
    assert binomial_cdf(low, n, p) > alpha / 2
    assert 1 - binomial_cdf(high - 1, n, p) > alpha / 2
    assert rejection_probability(n, (low, high), p) == pytest.approx(below + above, rel=1e-6, abs=1e-12)


def test_rejection_probability_is_the_power_against_another_probability():
    region = binomial_acceptance_region(200, 0.5, 0.01)
    expected = binomial_cdf(region[0] - 1, 200, 0.6) + 1 - binomial_cdf(region[1], 200, 0.6)
    assert rejection_probability(200, region, 0.6) == pytest.approx(expected, rel=1e-9)
