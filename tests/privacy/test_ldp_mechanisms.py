"""Client-side distributions of the LDP frequency oracles.

Each statistical test draws N = 200,000 reports from the real CSPRNG and
rejects at p < 1e-4: a correct mechanism fails with probability 1e-4 per
test, and the power checks below show the same test rejects the spec's
binary RR and an off-by-one "others" draw.
"""

import hashlib
import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from privacy.ldp import KRR, OLH, OUE, PROTOCOLS, SubsetSelection, make_oracle, olh_hash

N = 200_000
ALPHA = 1e-4


def chi2_pvalue(observed, probabilities):
    """Goodness-of-fit p-value of category counts against probabilities."""
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(probabilities, dtype=float) * observed.sum()
    return stats.chisquare(observed, expected).pvalue


class CounterSource:
    """Deterministic RandomSource (SHAKE-256 of a seed and a counter), for reproducibility tests."""

    def __init__(self, seed: bytes):
        self.seed = seed
        self.counter = 0

    def random_bytes(self, count: int) -> bytes:
        self.counter += 1
        return hashlib.shake_256(self.seed + self.counter.to_bytes(8, "big")).digest(count)


def test_krr_probabilities_match_the_service_constants():
    oracle = KRR(20, 2.0)
    assert oracle.p == pytest.approx(math.exp(2) / (math.exp(2) + 19))  # ~0.28
    assert oracle.q == pytest.approx(1 / (math.exp(2) + 19))  # ~0.038
    assert oracle.p / oracle.q == pytest.approx(math.exp(2))
    assert oracle.p + (oracle.k - 1) * oracle.q == pytest.approx(1.0)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_is_epsilon_ldp_at_its_worst_output(name):
    # For each oracle, the largest ratio P[output | x] / P[output | x'] over outputs is e^eps.
    oracle = make_oracle(name, 20, 1.5)
    p, q = oracle.p, oracle.q
    if name == "oue":  # bits independent: worst output has the x bit 1, the x' bit 0
        ratio = (p * (1 - q)) / (q * (1 - p))
    elif name == "olh":  # g-ary RR on the hashed value
        ratio = p / (1 / (math.exp(oracle.epsilon) + oracle.g - 1))
    elif name == "ss":  # a set with x, without x'
        w, k = oracle.omega, oracle.k
        ratio = (p / math.comb(k - 1, w - 1)) / ((1 - p) / math.comb(k - 1, w))
    else:
        ratio = p / q
    assert ratio == pytest.approx(math.exp(oracle.epsilon))


@pytest.mark.parametrize("true_value", [0, 7, 19])
def test_krr_full_output_distribution(true_value):
    # Fixed true value at both edges and inside: catches a skip-the-true-value
    # off-by-one, which shows up first at the domain edges.
    oracle = KRR(20, 2.0)
    reports = oracle.randomize(np.full(N, true_value))
    observed = np.bincount(reports, minlength=20)
    correct = np.full(20, oracle.q)
    correct[true_value] = oracle.p
    assert chi2_pvalue(observed, correct) > ALPHA

    # Power: the same test rejects the spec's binary RR (p = e^eps/(e^eps+1)) ...
    binary_p = math.exp(2) / (math.exp(2) + 1)
    binary = np.full(20, (1 - binary_p) / 19)
    binary[true_value] = binary_p
    assert chi2_pvalue(observed, binary) < ALPHA
    # ... and an "other" drawn from all k values, the true one included.
    off_by_one = np.full(20, (1 - oracle.p) / 20)
    off_by_one[true_value] += oracle.p
    assert chi2_pvalue(observed, off_by_one) < ALPHA


def test_krr_with_mixed_true_values_matches_the_mixture():
    oracle = KRR(5, 1.0)
    true = np.repeat(np.arange(5), N // 5)
    reports = oracle.randomize(true)
    for value in range(5):
        observed = np.bincount(reports[true == value], minlength=5)
        expected = np.full(5, oracle.q)
        expected[value] = oracle.p
        assert chi2_pvalue(observed, expected) > ALPHA


def test_oue_bits_have_support_probabilities_p_and_q():
    oracle = OUE(20, 2.0)
    reports = oracle.randomize(np.full(N, 7))
    ones = reports.sum(axis=0, dtype=np.int64)
    probability = np.full(20, oracle.q)
    probability[7] = oracle.p
    # Independent bits: sum over bits of squared binomial z-scores is chi-square with k dof.
    z2 = (ones - N * probability) ** 2 / (N * probability * (1 - probability))
    assert stats.chi2.sf(z2.sum(), df=20) > ALPHA


def test_oue_other_bits_are_independent():
    # The number of ones among the k-1 other bits must be Binomial(k-1, q).
    oracle = OUE(20, 2.0)
    reports = oracle.randomize(np.full(N, 3))
    ones = np.delete(reports, 3, axis=1).sum(axis=1)
    pmf = stats.binom.pmf(np.arange(20), 19, oracle.q)
    observed = np.bincount(ones, minlength=20).astype(float)
    cells = 7  # pool the tail, where expected counts fall below 5
    pooled_obs = np.append(observed[:cells], observed[cells:].sum())
    pooled_pmf = np.append(pmf[:cells], pmf[cells:].sum())
    assert chi2_pvalue(pooled_obs, pooled_pmf) > ALPHA


def test_olh_perturbation_of_the_hashed_value_is_g_ary_rr():
    oracle = OLH(20, 2.0)
    reports = oracle.randomize(np.full(N, 5))
    hashed = olh_hash(reports[:, 0], np.full(N, 5), oracle.g)
    shift = (reports[:, 1] - hashed) % oracle.g  # 0: kept; others uniform
    expected = np.full(oracle.g, 1 / (math.exp(2) + oracle.g - 1))
    expected[0] = oracle.p
    assert chi2_pvalue(np.bincount(shift, minlength=oracle.g), expected) > ALPHA


def test_olh_support_probabilities_are_p_and_one_over_g():
    oracle = OLH(20, 2.0)
    reports = oracle.randomize(np.full(N, 5))
    counts = oracle.support_counts(reports)
    probability = np.full(20, oracle.q)
    probability[5] = oracle.p
    # Hash values of distinct inputs are close to independent, so the summed
    # squared z-scores are close to chi-square with k dof.
    z2 = (counts - N * probability) ** 2 / (N * probability * (1 - probability))
    assert stats.chi2.sf(z2.sum(), df=20) > ALPHA


def test_olh_seeds_are_uniform_32_bit():
    reports = OLH(20, 2.0).randomize(np.zeros(N, dtype=np.int64))
    assert chi2_pvalue(np.bincount(reports[:, 0] >> 24, minlength=256), np.full(256, 1 / 256)) > ALPHA
    assert chi2_pvalue(np.bincount(reports[:, 0] & 0xFF, minlength=256), np.full(256, 1 / 256)) > ALPHA


def splitmix64_reference(seed: int, value: int, g: int) -> int:
    """The documented hash in plain Python integers."""
    mask = 2**64 - 1
    z = ((seed << 32) + value + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) % g


def test_olh_hash_matches_the_documented_splitmix64():
    seeds = np.array([0, 1, 2**32 - 1, 123456789, 3141592653])
    values = np.array([0, 19, 65535, 7, 1])
    for g in (2, 8, 1000):
        expected = [splitmix64_reference(int(s), int(v), g) for s, v in zip(seeds, values)]
        assert olh_hash(seeds, values, g).tolist() == expected


@pytest.mark.parametrize("epsilon", [1.5, 2.0, 4.0])  # g = 5, 8, 56: odd, power of two, even
def test_olh_support_counts_match_the_reference_hash(epsilon):
    oracle = OLH(12, epsilon)
    reports = oracle.randomize(np.arange(3000) % 12)
    expected = np.zeros(12, dtype=np.int64)
    for seed, y in reports.tolist():
        for value in range(12):
            expected[value] += splitmix64_reference(seed, value, oracle.g) == y
    assert oracle.g == {1.5: 5, 2.0: 8, 4.0: 56}[epsilon]
    assert oracle.support_counts(reports).tolist() == expected.tolist()


def test_ss_full_output_distribution_over_subsets():
    # Every 2-subset of 20 values is a category: those holding the true value
    # have probability p / C(19, 1), the others (1 - p) / C(19, 2).
    oracle = SubsetSelection(20, 2.0)
    assert oracle.omega == 2
    reports = oracle.randomize(np.full(N, 11))
    assert np.all(reports[:, 0] < reports[:, 1])
    subsets = list(combinations(range(20), 2))
    index = {subset: i for i, subset in enumerate(subsets)}
    observed = np.bincount([index[(a, b)] for a, b in reports.tolist()], minlength=len(subsets))
    expected = [oracle.p / 19 if 11 in s else (1 - oracle.p) / math.comb(19, 2) for s in subsets]
    assert chi2_pvalue(observed, expected) > ALPHA


def test_ss_support_probabilities_with_a_larger_subset():
    oracle = SubsetSelection(40, 1.0)  # omega = 11
    assert oracle.omega == round(40 / (math.e + 1))
    reports = oracle.randomize(np.full(N, 0))
    counts = oracle.support_counts(reports)
    assert counts.sum() == N * oracle.omega
    # Binomial test per value, Bonferroni over the k values.
    probability = np.full(40, oracle.q)
    probability[0] = oracle.p
    z = (counts - N * probability) / np.sqrt(N * probability * (1 - probability))
    assert np.all(2 * stats.norm.sf(np.abs(z)) > ALPHA / 40)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_randomize_draws_only_from_the_given_source(name):
    oracle = make_oracle(name, 20, 2.0)
    true = np.arange(200) % 20
    first = oracle.randomize(true, CounterSource(b"seed"))
    again = oracle.randomize(true, CounterSource(b"seed"))
    other = oracle.randomize(true, CounterSource(b"other"))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", PROTOCOLS)
@pytest.mark.parametrize("bad", [np.array([0, 20]), np.array([-1]), np.array([0.5]), np.zeros((2, 2), dtype=int)])
def test_randomize_rejects_values_outside_the_domain(name, bad):
    with pytest.raises(ValueError):
        make_oracle(name, 20, 2.0).randomize(bad)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_randomize_of_nothing_is_an_empty_batch(name):
    oracle = make_oracle(name, 20, 2.0)
    reports = oracle.randomize(np.array([], dtype=np.int64))
    assert len(reports) == 0
    assert oracle.support_counts(reports).tolist() == [0] * 20
