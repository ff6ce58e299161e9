"""Unit tests for privacy.central: the central-DP release of local-DP support counts.

Pure: no database, no Django. Each function is checked against a computation written
here independently of it (brute force, the papers' formulas, an exact linear map), not
against itself. The random inputs are test data from numpy's generator with fixed seeds;
only the noise draws in the Monte-Carlo check come from the service's samplers.
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations, product
from statistics import NormalDist

import numpy as np
import pytest

from privacy import central
from privacy.csprng import SYSTEM_RANDOM
from privacy.drbg import DRBG
from privacy.ldp import KRR, OLH, OUE, SubsetSelection, norm_sub, olh_hash

# Small domains, so that every possible report can be enumerated.
ORACLES = {
    "krr": KRR(5, 1.0),
    "oue": OUE(5, 1.0),
    "olh": OLH(4, 1.0),  # g = round(e) + 1 = 4
    "ss": SubsetSelection(8, 0.5),  # omega = round(8 / (e^0.5 + 1)) = 3
}


def _every_report(oracle) -> np.ndarray:
    """Every report the oracle can send (for OLH: one seed per possible support set size, the worst included)."""
    k = oracle.k
    if oracle.name == "krr":
        return np.arange(k)
    if oracle.name == "oue":
        return np.array(list(product((0, 1), repeat=k)), dtype=np.uint8)
    if oracle.name == "ss":
        return np.array(list(combinations(range(k), oracle.omega)), dtype=np.int64)
    # OLH: a report (seed, y) supports the values hashing to y under the seed. Search the seeds for
    # every support size from 1 to k; all k values share a bucket for about 1 seed in g^(k-1) = 64.
    reports, sizes = [], set()
    for seed in range(20_000):
        hashed = olh_hash(np.full(k, seed, dtype=np.int64), np.arange(k), oracle.g)
        for y in np.unique(hashed):
            size = int(np.count_nonzero(hashed == y))
            if size not in sizes:
                sizes.add(size)
                reports.append((seed, int(y)))
        if len(sizes) == k:
            return np.array(reports, dtype=np.int64)
    raise AssertionError(f"no seed found for every support size; sizes found: {sorted(sizes)}")


def _row_of(oracle, reports: np.ndarray) -> np.ndarray:
    """The grid row that ``reports`` make: k support counts, plus n when n is released separately."""
    support = oracle.support_counts(reports)
    return np.append(support, len(reports)) if oracle.name != "krr" else support


def _papers_p_q(oracle) -> tuple[float, float]:
    """(p, q) from the papers, written out here: P(report supports v | true v), P(... | true u != v)."""
    e, k = math.exp(oracle.epsilon), oracle.k
    if oracle.name == "krr":  # Wang et al. 2017, Sec. 4.1
        return e / (e + k - 1), 1 / (e + k - 1)
    if oracle.name == "oue":  # Wang et al. 2017, Sec. 4.3
        return 0.5, 1 / (e + 1)
    if oracle.name == "olh":  # Wang et al. 2017, Sec. 4.4
        g = round(e) + 1
        return e / (e + g - 1), 1 / g
    omega = oracle.omega  # Ye and Barg 2018: the true value is in the subset w.p. omega e / (omega e + k - omega)
    p = omega * e / (omega * e + k - omega)
    return p, (p * (omega - 1) + (1 - p) * omega) / (k - 1)


# --- grid layout and sensitivity ----------------------------------------------------------------


@pytest.mark.parametrize("name", ORACLES)
def test_grid_width_has_an_n_column_unless_krr(name):
    oracle = ORACLES[name]
    assert central.grid_width(oracle) == oracle.k + (0 if name == "krr" else 1)


@pytest.mark.parametrize("bound", [1, 3])
@pytest.mark.parametrize("name", ORACLES)
def test_l1_sensitivity_is_the_largest_row_change_one_client_day_can_make(name, bound):
    """Brute force over every possible report: a client-day of ``bound`` worst-case reports moves the row
    by exactly the sensitivity, and no client-day moves it further (L1 is additive over reports, all >= 0)."""
    oracle = ORACLES[name]
    reports = _every_report(oracle)
    worst = max(int(_row_of(oracle, reports[i : i + 1]).sum()) for i in range(len(reports)))
    assert central.l1_sensitivity(oracle, bound) == bound * worst
    expected_worst = {"krr": 1, "oue": 5 + 1, "olh": 4 + 1, "ss": 3 + 1}[name]
    assert worst == expected_worst


def test_noise_scale_is_sensitivity_over_epsilon_exactly():
    assert central.noise_scale(1, 1_000_000) == Fraction(1)
    assert central.noise_scale(6, 500_000) == Fraction(12)
    assert central.noise_scale(1, 300_000) == Fraction(10, 3)  # exact, not 3.333...
    assert central.noise_scale(4, 1) == Fraction(4_000_000)
    assert isinstance(central.noise_scale(3, 700_000), Fraction)


@pytest.mark.parametrize("sensitivity, epsilon_micro", [(1, 500_000), (6, 2_000_000), (4, 100_000)])
def test_the_noise_scale_makes_the_mechanism_epsilon_dp(sensitivity, epsilon_micro):
    """Discrete Laplace pmf ∝ exp(-|x|/t): shifting the input by the sensitivity changes any output's
    probability by at most exp(Δ/t), which must be exp(ε) (CKS 2020, Thm. 7)."""
    scale = central.noise_scale(sensitivity, epsilon_micro)
    outputs = np.arange(-60, 61)
    log_ratios = (np.abs(outputs - sensitivity) - np.abs(outputs)) / float(scale)
    assert log_ratios.max() == pytest.approx(epsilon_micro / 1_000_000, rel=1e-12)


def test_add_noise_replays_from_the_seed():
    raw = np.arange(24, dtype=np.int64).reshape(6, 4)
    seed = bytes(range(32))
    noisy, noise = central.add_noise(raw, Fraction(3, 2), DRBG(seed))
    again, noise_again = central.add_noise(raw, Fraction(3, 2), DRBG(seed))
    assert noisy.shape == noise.shape == raw.shape and noisy.dtype == np.int64
    assert np.array_equal(noisy, raw + noise)
    assert np.array_equal(noise, noise_again) and np.array_equal(noisy, again)
    assert np.any(noise != 0)  # P(all 24 draws are 0) = ((1 - e^-2/3) / (1 + e^-2/3))^24 < 1e-14


def test_release_noise_draws_the_grid_then_the_selection_from_one_stream():
    """The documented order the audit replays: the grid's noise row-major, then one selection noise per
    cell; without selection it is exactly add_noise's draw (older releases replay unchanged)."""
    seed, shape = bytes(range(32)), (6, 4)
    grid, selection = central.release_noise(shape, Fraction(3, 2), Fraction(10), DRBG(seed))
    source = DRBG(seed)
    _, grid_alone = central.add_noise(np.zeros(shape, dtype=np.int64), Fraction(3, 2), source)
    _, selection_after = central.add_noise(np.zeros(6, dtype=np.int64), Fraction(10), source)
    assert np.array_equal(grid, grid_alone) and np.array_equal(selection, selection_after)
    assert selection.shape == (6,) and np.any(selection != 0)  # P(six zeros at t = 10) < 1e-11
    only_grid, none = central.release_noise(shape, Fraction(3, 2), None, DRBG(seed))
    assert none is None and np.array_equal(only_grid, grid)


def test_the_selection_epsilon_is_the_share_floored_and_leaves_the_grid_at_least_one_micro_epsilon():
    assert central.selection_epsilon_micro(1_000_000, Fraction(1, 10)) == 100_000
    assert central.selection_epsilon_micro(333_333, Fraction(1, 10)) == 33_333  # floored: never above the share
    assert central.selection_epsilon_micro(5, Fraction(1, 10)) == 1  # at least 1 µε
    assert central.selection_epsilon_micro(2, Fraction(9, 10)) == 1  # the grid keeps at least 1 µε
    for bad in ((1, Fraction(1, 10)), (10, Fraction(0)), (10, Fraction(1))):
        with pytest.raises(ValueError):
            central.selection_epsilon_micro(*bad)


@pytest.mark.parametrize("scale", [Fraction(1, 3), Fraction(1), Fraction(2), Fraction(10), Fraction(40, 9),
                                   Fraction(10**6)])
@pytest.mark.parametrize("survival", [0.01, 0.001, 0.2])
def test_the_selection_cut_off_is_the_least_that_one_empty_selection_noise_passes_at_the_rate(scale, survival):
    """The closed form is the least tau with P(Z > tau) <= survival for one discrete Laplace Z, the same as
    the exact tail's bisection (survival_threshold with one term)."""
    tau = central.selection_threshold(scale, survival)
    assert tau == central.survival_threshold(1, scale, survival)
    assert central.laplace_sum_survival(1, scale, tau) <= survival
    assert tau == 0 or central.laplace_sum_survival(1, scale, tau - 1) > survival


def test_regions_are_selected_on_their_selection_counts_only():
    selection = np.array([[39, 40, -3], [0, 100, 41]])
    assert central.selection_threshold(Fraction(10), 0.01) == 39  # ε_sel = 0.1, m = 1: t = 10
    assert central.selected_regions(selection, Fraction(10), 0.01).tolist() == [[False, True, False],
                                                                                [False, True, True]]


# --- debiasing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORACLES)
def test_oracles_p_and_q_are_the_papers(name):
    oracle = ORACLES[name]
    assert (oracle.p, oracle.q) == pytest.approx(_papers_p_q(oracle), rel=1e-12)


@pytest.mark.parametrize("name", ORACLES)
def test_debias_inverts_the_expected_support_counts(name):
    """E[C(v)] = c_v p + (n - c_v) q, with p and q written out above: debiasing the expected row gives the
    true counts, so (debias being linear and the noise centred) debiased noisy counts are unbiased."""
    oracle = ORACLES[name]
    p, q = _papers_p_q(oracle)
    rng = np.random.default_rng(7)
    true = rng.integers(0, 400, size=(5, oracle.k)).astype(np.float64)
    n = true.sum(axis=1)
    expected_support = true * p + (n[:, None] - true) * q
    row = np.column_stack([expected_support, n]) if name != "krr" else expected_support
    if name == "krr":
        assert np.allclose(expected_support.sum(axis=1), n)  # k-RR: one value per report, n is the row sum
    assert np.allclose(central.debias(oracle, row), true, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ORACLES)
def test_debias_of_noisy_rows_uses_the_noisy_n(name):
    """On noisy integer rows (n column noised on its own), row by row as the scalar estimator."""
    oracle = ORACLES[name]
    rng = np.random.default_rng(11)
    width = central.grid_width(oracle)
    noisy = rng.integers(-20, 300, size=(7, width))
    n = noisy[:, -1] if name != "krr" else noisy.sum(axis=1)
    by_row = [(noisy[i, : oracle.k] - n[i] * oracle.q) / (oracle.p - oracle.q) for i in range(len(noisy))]
    assert np.allclose(central.debias(oracle, noisy), by_row, rtol=0, atol=1e-9)


# --- the variance of the central noise ------------------------------------------------------------


def _discrete_laplace_variance_by_summing_the_pmf(scale: Fraction) -> float:
    t = float(scale)
    x = np.arange(-4000, 4001, dtype=np.float64)  # the tail beyond 4000 weighs < e^-4000/t for t <= 20
    weights = np.exp(-np.abs(x) / t)
    return float((x * x * weights).sum() / weights.sum())


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(3), Fraction(20)])
@pytest.mark.parametrize("name", ORACLES)
def test_central_variance_is_the_exact_variance_of_the_debiased_noise(name, scale):
    """The debiased error is a linear map L of the independent noise draws Z_j, so its variance is
    Var(Z) * sum_j L[v, j]^2 (the same for every v). L is read off by debiasing unit rows."""
    oracle = ORACLES[name]
    width = central.grid_width(oracle)
    linear_map = central.debias(oracle, np.eye(width))  # row j: the error that Z_j = 1 makes
    exact = _discrete_laplace_variance_by_summing_the_pmf(scale) * (linear_map**2).sum(axis=0)
    assert np.allclose(exact, exact[0])
    assert central.central_variance(oracle, scale) == pytest.approx(exact[0], rel=1e-9)


@pytest.mark.parametrize("name", ["krr", "oue"])
def test_central_variance_matches_a_monte_carlo_of_the_real_sampler(name):
    """80,000 noised rows through debias. The discrete Laplace at scale 2 has kurtosis 6.13, so the sample
    variance of one value's error has a relative standard error of at most sqrt(5.13 / 80000) = 0.8%; the
    tolerance is 3.5%, over 4 standard errors. Dropping the cross-noise term (the q terms) would lower the
    k-RR variance by 10.9% and the OUE one by 6.7%, over 8 standard errors away."""
    oracle = ORACLES[name]
    scale, rows = Fraction(2), 80_000
    raw = np.tile(np.arange(central.grid_width(oracle), dtype=np.int64) * 10 + 50, (rows, 1))
    noisy, _ = central.add_noise(raw, scale, SYSTEM_RANDOM)
    errors = central.debias(oracle, noisy) - central.debias(oracle, raw)
    assert errors.var(axis=0, ddof=1) == pytest.approx(
        np.full(oracle.k, central.central_variance(oracle, scale)), rel=0.035
    )


@pytest.mark.parametrize("name", ORACLES)
def test_the_oracle_variance_of_rows_is_its_variance_of_each_row(name):
    oracle = ORACLES[name]
    rng = np.random.default_rng(5)
    totals = rng.integers(0, 500, size=6).astype(np.float64)
    estimates = rng.normal(totals[:, None] / oracle.k, 40, size=(6, oracle.k))
    expected = [oracle.variance(int(n), row) for n, row in zip(totals, estimates)]
    assert np.allclose(oracle.variance(totals, estimates), expected, rtol=1e-12)
    assert np.allclose(oracle.estimate(estimates, totals), [oracle.estimate(row, n) for n, row in zip(totals, estimates)])


# --- consistency and rounding ---------------------------------------------------------------------


def test_norm_sub_rows_matches_the_scalar_norm_sub_row_by_row():
    rng = np.random.default_rng(3)
    estimates = rng.normal(20, 60, size=(400, 6))
    estimates[::7] = -np.abs(estimates[::7])  # rows with every estimate negative
    estimates[::11, :3] = estimates[::11, 3:]  # rows with ties
    totals = rng.integers(0, 300, size=400).astype(np.float64)
    totals[::13] = 0
    rows = central.norm_sub_rows(estimates, totals)
    expected = np.array([norm_sub(row, n) for row, n in zip(estimates, totals)])
    assert np.allclose(rows, expected, rtol=0, atol=1e-9)
    assert np.all(rows >= 0)
    assert np.allclose(rows.sum(axis=1), totals, rtol=0, atol=1e-8)


def test_norm_sub_rows_worked_example():
    # NDSS 2020 Norm-Sub by hand: delta = (6 - (5 + 3)) / 2 = -1 keeps the top two: [4, 0, 2].
    result = central.norm_sub_rows(np.array([[5.0, -1.0, 3.0], [1.0, 1.0, 1.0]]), np.array([6.0, 0.0]))
    assert result.tolist() == [[4.0, 0.0, 2.0], [0.0, 0.0, 0.0]]


def test_round_rows_preserving_sums_is_largest_remainder_rounding():
    rng = np.random.default_rng(9)
    totals = rng.integers(0, 200, size=300)
    values = central.norm_sub_rows(rng.normal(10, 30, size=(300, 7)), totals.astype(np.float64))
    rounded = central.round_rows_preserving_sums(values, totals)
    assert rounded.dtype == np.int64
    assert np.array_equal(rounded.sum(axis=1), totals)
    assert np.all(rounded >= np.floor(values)) and np.all(rounded <= np.floor(values) + 1)
    remainders = values - np.floor(values)
    for row_remainders, row_values, row_rounded in zip(remainders, values, rounded):
        up = row_rounded > np.floor(row_values)
        if up.any() and (~up).any():  # every value rounded up had a remainder at least as large as any rounded down
            assert row_remainders[up].min() >= row_remainders[~up].max()


def test_round_rows_preserving_sums_worked_examples():
    values = np.array([[0.5, 0.3, 0.2], [2.0, 1.0, 0.0], [1.4, 1.4, 0.2], [0.0, 0.0, 0.0]])
    rounded = central.round_rows_preserving_sums(values, np.array([1, 3, 3, 0]))
    # ties go to the first value (stable ranking)
    assert rounded.tolist() == [[1, 0, 0], [2, 1, 0], [2, 1, 0], [0, 0, 0]]


# --- post-processing, coarsening, intervals ------------------------------------------------------


@pytest.mark.parametrize("name", ORACLES)
def test_post_process_gives_consistent_integer_counts(name):
    oracle = ORACLES[name]
    rng = np.random.default_rng(13)
    noisy = rng.integers(-30, 200, size=(40, central.grid_width(oracle)))
    scale = Fraction(5, 2)
    result = central.post_process(oracle, noisy, scale)
    noisy_n = noisy[:, -1] if name != "krr" else noisy.sum(axis=1)
    assert np.array_equal(result.reports, np.maximum(noisy_n, 0))  # integer noisy n, clipped at 0
    assert np.array_equal(result.counts.sum(axis=1), result.reports)
    assert result.counts.min() >= 0 and result.counts.dtype == np.int64
    assert np.allclose(result.unbiased, central.debias(oracle, noisy))
    expected_variance = (oracle.variance(result.reports, result.unbiased)
                         + central.central_variance(oracle, scale))
    assert np.allclose(result.variance, expected_variance)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
@pytest.mark.parametrize("simultaneous", [False, True])
def test_intervals_are_normal_intervals_clipped_at_zero(confidence, simultaneous):
    unbiased = np.array([[100.0, 3.0, -10.0, 0.0], [50.0, 50.0, 20.0, -1.0]])
    variance = np.array([[25.0, 16.0, 4.0, 1.0], [100.0, 0.0, 9.0, 4.0]])
    alpha = (1 - confidence) / (unbiased.shape[1] if simultaneous else 1)  # Bonferroni over the k values
    z = NormalDist().inv_cdf(1 - alpha / 2)
    low, high = central.intervals(unbiased, variance, confidence, simultaneous)
    assert np.allclose(low, np.maximum(unbiased - z * np.sqrt(variance), 0))
    assert np.allclose(high, np.maximum(unbiased + z * np.sqrt(variance), 0))
    assert np.all(low <= high) and low.min() >= 0
