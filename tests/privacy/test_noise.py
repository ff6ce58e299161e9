"""Statistical and API tests for the exact samplers in privacy.noise.

Goodness of fit: chi-square against the exact PMF, tail bins merged so every
expected count is >= 5 (the usual validity condition of the chi-square
approximation). Threshold p > 1e-4: the samplers are exact, so under the null
hypothesis each p-value is uniform and a test fails spuriously with probability
1e-4; over the ~15 goodness-of-fit tests here that is ~1.5e-3 per run, so the
suite does not flake. A real defect does not hide behind that threshold: with
10^6 draws, a 1% relative error in a bin expecting 10^4 counts is already a 1-sigma
shift per bin, and errors in the tail decay or in the value at 0 (the classic
bugs) add up over dozens of bins to p-values many orders of magnitude below 1e-4.

Moment checks compare the sample variance with the exact value within 6
standard errors, SE = sqrt((mu4 - var^2) / n) computed from the exact PMF
(false failure probability ~2e-9 by the CLT).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from privacy import noise
from privacy.csprng import SYSTEM_RANDOM
from privacy.noise import (
    discrete_gaussian_array,
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    discrete_laplace_array,
    discrete_laplace_pmf,
    discrete_laplace_variance,
    sample_bernoulli_exp,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)

P_THRESHOLD = 1e-4
N_VECTOR = 1_000_000
N_SCALAR = 20_000


def _support(pmf, tiny: float = 1e-22) -> int:
    """Smallest M with pmf(M) < tiny (the PMFs here are symmetric, decreasing in |x|)."""
    m = 1
    while pmf(m) >= tiny:
        m *= 2
    return m


def chi_square_pvalue(samples: np.ndarray, pmf) -> float:
    """Chi-square p-value of integer samples against a symmetric unimodal PMF."""
    n = samples.size
    big = _support(pmf)
    xs = np.arange(-big, big + 1)
    expected = n * np.asarray(pmf(xs), dtype=np.float64)
    expected *= n / expected.sum()  # renormalize the float PMF over its (numerically full) support
    # Interior bins: every x with expected >= 5; then grow the tails inwards until >= 5 too.
    inner = int(np.max(np.abs(xs[expected >= 5])))
    while inner > 0 and expected[xs > inner].sum() < 5:
        inner -= 1
    lo_tail = expected[xs < -inner].sum()
    hi_tail = expected[xs > inner].sum()
    centre = expected[np.abs(xs) <= inner]
    exp_bins = np.concatenate([[lo_tail], centre, [hi_tail]])
    counts = np.bincount(np.clip(samples, -inner - 1, inner + 1) + inner + 1, minlength=2 * inner + 3)
    obs_bins = counts.astype(np.float64)
    keep = exp_bins > 0
    if not keep[0] or not keep[-1]:  # tails with no mass at all (tiny scales): must be empty
        assert obs_bins[~keep].sum() == 0
    assert np.all(exp_bins[keep] >= 5)
    assert keep.sum() >= 3, "need at least 3 bins for a meaningful test"
    return float(stats.chisquare(obs_bins[keep], exp_bins[keep]).pvalue)


def assert_variance(samples: np.ndarray, pmf, variance: float) -> None:
    big = _support(pmf)
    xs = np.arange(-big, big + 1, dtype=np.float64)
    p = np.asarray(pmf(xs))
    p = p / p.sum()
    mu4 = float((xs**4 * p).sum())
    n = samples.size
    se_var = np.sqrt((mu4 - variance**2) / n)
    se_mean = np.sqrt(variance / n)
    x = samples.astype(np.float64)
    assert abs(x.mean()) <= 6 * se_mean
    assert abs(x.var() - variance) <= 6 * se_var, (x.var(), variance, se_var)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "value, expected",
    [
        (Fraction(3, 2), Fraction(3, 2)),
        (2, Fraction(2)),
        ("3/2", Fraction(3, 2)),
        ("0.5", Fraction(1, 2)),
        (Decimal("1.5"), Fraction(3, 2)),
        (np.int64(7), Fraction(7)),
    ],
)
def test_scale_accepts_exact_rationals(value, expected):
    assert noise._to_fraction(value, "scale") == expected
    assert isinstance(sample_discrete_laplace(value), int)
    assert discrete_laplace_array(value, 3).dtype == np.int64


@pytest.mark.parametrize("bad", [0, -1, "0", "-3/2", Decimal("-0.1"), Fraction(0)])
def test_non_positive_scale_rejected(bad):
    with pytest.raises(ValueError):
        sample_discrete_laplace(bad)
    with pytest.raises(ValueError):
        discrete_laplace_array(bad, 10)
    with pytest.raises(ValueError):
        sample_discrete_gaussian(bad)
    with pytest.raises(ValueError):
        discrete_gaussian_array(bad, 10)


@pytest.mark.parametrize("bad", [1.5, True, None, [1]])
def test_inexact_scale_types_rejected(bad):
    with pytest.raises(TypeError):
        sample_discrete_laplace(bad)


@pytest.mark.parametrize("bad", ["abc", "1/0", Decimal("NaN"), Decimal("Infinity")])
def test_unparseable_scale_rejected(bad):
    with pytest.raises(ValueError):
        discrete_laplace_array(bad, 1)


def test_size_validation_and_empty():
    assert discrete_laplace_array(1, 0).shape == (0,)
    assert discrete_gaussian_array(1, 0).shape == (0,)
    with pytest.raises(ValueError):
        discrete_laplace_array(1, -1)


# ---------------------------------------------------------------- Bernoulli(exp(-gamma))


@pytest.mark.parametrize("gamma", [Fraction(1, 3), 1, Fraction(5, 2), "7/3"])
def test_bernoulli_exp_scalar(gamma):
    n = N_SCALAR
    hits = sum(sample_bernoulli_exp(gamma) for _ in range(n))
    p = float(np.exp(-float(Fraction(gamma))))
    assert stats.binomtest(hits, n, p).pvalue > P_THRESHOLD


def test_bernoulli_exp_zero_is_certain():
    assert all(sample_bernoulli_exp(0) for _ in range(1000))


def test_bernoulli_exp_vectorized_mixed_gammas():
    # gamma_i = num_i / 6 for a spread of values on both sides of 1 (Alg. 1 both branches).
    nums = np.array([0, 1, 3, 6, 7, 13, 20], dtype=np.int64)
    reps = 200_000
    draws = noise._bernoulli_exp_array(np.repeat(nums, reps), 6, SYSTEM_RANDOM).reshape(len(nums), reps)
    for num, row in zip(nums, draws):
        p = float(np.exp(-num / 6))
        assert stats.binomtest(int(row.sum()), reps, p).pvalue > P_THRESHOLD


@pytest.mark.parametrize("num, den, first", [(0, 100, 1), (37, 100, 1), (99, 100, 1), (1, 1, 1), (1, 1, 7),
                                              (5, 6, 3), (2**30, 2**31 - 1, 1), (3, 2**40, 2)])
def test_block_thresholds_give_the_exact_continuation_probabilities(num, den, first):
    """One word decides rounds first..last of Alg. 1: P[X < T_j] must be prod_{k=first..j} (num/den)/k exactly."""
    last, bound = noise._block_end(den, first)
    assert last >= first and bound <= 2**56
    q = (2**64 - 1) // bound
    thresholds = list(noise._continue_thresholds(num, den, first, last, q))
    assert len(thresholds) == last - first + 1
    for j, threshold in zip(range(first, last + 1), thresholds):
        expected = np.prod([Fraction(num, den * k) for k in range(first, j + 1)])
        assert Fraction(threshold, q * bound) == expected, (j, threshold)
    assert thresholds == sorted(thresholds, reverse=True)  # nested events, like the rounds


def test_bernoulli_exp_le1_huge_denominator_uses_exact_python_integers():
    # den * round > 2**56: rounds are drawn one by one on Python integers (CKS20 Alg. 1 as written).
    reps = N_SCALAR
    draws = noise._bernoulli_exp_le1(np.full(reps, 2**56, dtype=np.int64), 2**57, reps, SYSTEM_RANDOM)
    assert stats.binomtest(int(draws.sum()), reps, float(np.exp(-0.5))).pvalue > P_THRESHOLD


def test_geometric_runs_carry_across_batches():
    """V of CKS20 Alg. 2: P[V = v] = (1 - e^-1) e^-v. Many small calls make runs straddle batches."""
    samples = np.concatenate([noise._geometric_exp1(n, SYSTEM_RANDOM) for _ in range(6) for n in range(1, 600)])
    pmf = lambda v: (1 - np.exp(-1.0)) * np.exp(-np.asarray(v, dtype=np.float64))  # noqa: E731
    top = 12  # expected count of the merged tail {V >= 12} is ~ n e^-12 >= 5
    counts = np.bincount(np.minimum(samples, top), minlength=top + 1)
    expected = samples.size * np.append(pmf(np.arange(top)), np.exp(-float(top)))
    assert stats.chisquare(counts, expected).pvalue > P_THRESHOLD


# ---------------------------------------------------------------- discrete Laplace


# 1000000/123457: one round per 32-bit word and a floor division; 33554433/16777216: 64-bit words (t > 2**24).
LAPLACE_SCALES = ["1/2", 1, "3/2", 10, 100, "1000000/123457", "33554433/16777216"]


@pytest.mark.parametrize("scale", LAPLACE_SCALES)
def test_discrete_laplace_vectorized_fits_pmf(scale):
    samples = discrete_laplace_array(scale, N_VECTOR)
    assert samples.dtype == np.int64 and samples.shape == (N_VECTOR,)
    pvalue = chi_square_pvalue(samples, lambda x: discrete_laplace_pmf(x, scale))
    assert pvalue > P_THRESHOLD
    assert_variance(samples, lambda x: discrete_laplace_pmf(x, scale), discrete_laplace_variance(scale))


@pytest.mark.parametrize("scale", ["1/2", "3/2", 10])
def test_discrete_laplace_scalar_fits_pmf(scale):
    samples = np.array([sample_discrete_laplace(scale) for _ in range(N_SCALAR)])
    assert chi_square_pvalue(samples, lambda x: discrete_laplace_pmf(x, scale)) > P_THRESHOLD
    assert_variance(samples, lambda x: discrete_laplace_pmf(x, scale), discrete_laplace_variance(scale))


def test_discrete_laplace_tiny_scale_is_almost_surely_zero():
    # P[X != 0] = 2 e^-100 / (1 + e^-100) ~ 7e-44.
    assert not discrete_laplace_array("1/100", 100_000).any()


def test_discrete_laplace_huge_denominator_uses_exact_scalar_fallback():
    scale = Fraction(2**33 + 1, 2**32)  # ~2, beyond the int64 vectorized limits
    samples = discrete_laplace_array(scale, 4000)
    assert samples.dtype == np.int64
    assert chi_square_pvalue(samples, lambda x: discrete_laplace_pmf(x, scale)) > P_THRESHOLD


def test_discrete_laplace_variance_formula():
    # 2 e^{-1/t} / (1 - e^{-1/t})^2, and ~2t^2 for large t.
    assert discrete_laplace_variance(1) == pytest.approx(2 * np.e**-1 / (1 - np.e**-1) ** 2, rel=1e-15)
    assert discrete_laplace_variance(1000) == pytest.approx(2 * 1000**2, rel=1e-6)
    xs = np.arange(-5000, 5001)
    p = discrete_laplace_pmf(xs, "3/2")
    assert p.sum() == pytest.approx(1, rel=1e-12)
    assert (xs**2 * p).sum() == pytest.approx(discrete_laplace_variance("3/2"), rel=1e-12)


# ---------------------------------------------------------------- discrete Gaussian


GAUSS_SIGMA2 = ["1/2", 2, 100, "12345/7"]


@pytest.mark.parametrize("sigma2", GAUSS_SIGMA2)
def test_discrete_gaussian_vectorized_fits_pmf(sigma2):
    samples = discrete_gaussian_array(sigma2, N_VECTOR)
    assert samples.dtype == np.int64
    pmf = lambda x: discrete_gaussian_pmf(x, sigma2)  # noqa: E731
    assert chi_square_pvalue(samples, pmf) > P_THRESHOLD
    assert_variance(samples, pmf, discrete_gaussian_variance(sigma2))


@pytest.mark.parametrize("sigma2", ["1/2", 5])
def test_discrete_gaussian_scalar_fits_pmf(sigma2):
    samples = np.array([sample_discrete_gaussian(sigma2) for _ in range(N_SCALAR)])
    pmf = lambda x: discrete_gaussian_pmf(x, sigma2)  # noqa: E731
    assert chi_square_pvalue(samples, pmf) > P_THRESHOLD
    assert_variance(samples, pmf, discrete_gaussian_variance(sigma2))


def test_discrete_gaussian_helpers():
    for s2 in ["1/2", 2, 100]:
        xs = np.arange(-2000, 2001)
        p = discrete_gaussian_pmf(xs, s2)
        assert p.sum() == pytest.approx(1, rel=1e-12)
        assert (xs**2 * p).sum() == pytest.approx(discrete_gaussian_variance(s2), rel=1e-10)
    assert discrete_gaussian_variance(100) == pytest.approx(100, rel=1e-12)
    assert discrete_gaussian_variance("1/2") < 0.5


# ---------------------------------------------------------------- randomness source


class CountingSource:
    """Records that every random byte comes from the given source."""

    def __init__(self):
        self.calls = 0

    def random_bytes(self, count):
        self.calls += 1
        return SYSTEM_RANDOM.random_bytes(count)


def test_all_randomness_comes_from_the_source():
    src = CountingSource()
    sample_discrete_laplace(3, src)
    discrete_laplace_array(3, 100, src)
    sample_discrete_gaussian(3, src)
    discrete_gaussian_array(3, 100, src)
    assert src.calls > 0


def test_no_forbidden_generators_in_module():
    import inspect

    text = inspect.getsource(noise)
    assert "import random" not in text
    assert "np.random" not in text and "default_rng" not in text
