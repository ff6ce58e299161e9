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

from privacy.auditing import binomial_acceptance_region, epsilon_lower_bound
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


# --- epsilon-LDP of what randomize() outputs ----------------------------------------------------
#
# For inputs v and v' = V, V_PRIME, each protocol has an event of its output, decidable from the
# report alone, whose probability under v is e^eps times that under v' (a union of worst-case
# outputs: its ratio is the mechanism's largest). worst_event(oracle, reports, a, b) says
# which reports fall in the event built for (a, b); claimed_rates gives the two probabilities the
# oracle's p and q (and omega, g) claim for it.

V, V_PRIME = 3, 11
LDP_EPSILON = 1.5


def worst_event(oracle, reports: np.ndarray, a: int, b: int) -> np.ndarray:
    """Reports that point to a rather than b (one bool per report)."""
    if oracle.name == "krr":  # the report is a
        return reports == a
    if oracle.name == "oue":  # a's bit set, b's clear
        return (reports[:, a] == 1) & (reports[:, b] == 0)
    if oracle.name == "olh":  # y is a's hash and not b's
        seeds, y = reports[:, 0], reports[:, 1]
        hash_a, hash_b = (olh_hash(seeds, np.full(len(y), value), oracle.g) for value in (a, b))
        return (y == hash_a) & (y != hash_b)
    return (reports == a).any(axis=1) & ~(reports == b).any(axis=1)  # ss: the set holds a, not b


def claimed_rates(oracle) -> tuple[float, float]:
    """(P[event | a], P[event | b]) from the oracle's claimed parameters."""
    p, q, k = oracle.p, oracle.q, oracle.k
    if oracle.name == "krr":
        return p, q
    if oracle.name == "oue":
        return p * (1 - q), q * (1 - p)
    if oracle.name == "olh":  # no hash collision of a and b (probability 1 - 1/g), then g-ary RR
        distinct = 1 - 1 / oracle.g
        return distinct * p, distinct * (1 - p) / (oracle.g - 1)
    w = oracle.omega  # ss: under a, a kept and b not among the w - 1 others; under b, b dropped and a drawn
    return p * (k - w) / (k - 1), (1 - p) * w / (k - 1)


def weakened(oracle):
    """The same protocol with a wrong p: the one for 2 eps (for OUE, symmetric unary encoding's p)."""
    e, k = math.exp(2 * oracle.epsilon), oracle.k
    if oracle.name == "krr":
        wrong_p = e / (e + k - 1)
    elif oracle.name == "oue":
        wrong_p = math.exp(oracle.epsilon) / (math.exp(oracle.epsilon) + 1)
    elif oracle.name == "olh":
        wrong_p = e / (e + oracle.g - 1)
    else:
        wrong_p = oracle.omega * e / (oracle.omega * e + k - oracle.omega)
    cls = type(f"Weak{type(oracle).__name__}", (type(oracle),), {"p": property(lambda self: wrong_p)})
    return cls(k, oracle.epsilon)


def ldp_verdicts(claimed, mechanism) -> tuple[bool, bool, float]:
    """(frequencies match the claims, CP lower bound <= claimed eps, that bound) for both directions.

    N reports each from v and v' through ``mechanism.randomize``. The event for (v, v') and the one
    for (v', v) are counted in both samples: four frequencies, each checked against its claimed
    probability with an exact binomial acceptance region at ALPHA / 4 (Bonferroni: a correct
    mechanism fails any of them with probability <= ALPHA). The distinguishing experiment on each
    event gives a Clopper-Pearson lower bound on eps (privacy.auditing, level 1 - ALPHA): a correct
    mechanism exceeds its eps with probability <= ALPHA.
    """
    samples = {v: mechanism.randomize(np.full(N, v)) for v in (V, V_PRIME)}
    rate_a, rate_b = claimed_rates(claimed)
    frequencies_match, bounds = True, []
    for a, b in ((V, V_PRIME), (V_PRIME, V)):
        hits_a = int(np.count_nonzero(worst_event(claimed, samples[a], a, b)))
        hits_b = int(np.count_nonzero(worst_event(claimed, samples[b], a, b)))
        for hits, rate in ((hits_a, rate_a), (hits_b, rate_b)):
            low, high = binomial_acceptance_region(N, rate, ALPHA / 4)
            frequencies_match &= low <= hits <= high
        # Guess "a" on the event: false positives are hits under b, false negatives misses under a.
        bounds.append(epsilon_lower_bound(hits_b, N, N - hits_a, N, alpha=ALPHA / 2))
    return frequencies_match, max(bounds) <= claimed.epsilon, max(bounds)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocols_outputs_are_epsilon_ldp_at_its_worst_event(name):
    oracle = make_oracle(name, 20, LDP_EPSILON)
    rate_a, rate_b = claimed_rates(oracle)
    assert rate_a / rate_b == pytest.approx(math.exp(LDP_EPSILON))  # the claims are tight at eps
    frequencies_match, within_epsilon, bound = ldp_verdicts(oracle, oracle)
    assert frequencies_match
    assert within_epsilon, bound
    # The event is the worst one: the real outputs show most of eps (CP slack at N = 2e5 ~ 0.1).
    assert bound > LDP_EPSILON - 0.2, bound


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_mechanism_with_the_wrong_p_fails_both_checks(name):
    # Power: the same checks on a mechanism whose randomize() uses a wrong p. Its event ratio is
    # e^(2 eps) (OUE: e^(2 eps) too), so the frequencies miss their claims by many standard
    # errors and the lower bound lands near 2 eps, far above eps.
    oracle = make_oracle(name, 20, LDP_EPSILON)
    frequencies_match, within_epsilon, bound = ldp_verdicts(oracle, weakened(oracle))
    assert not frequencies_match
    assert not within_epsilon, bound
    assert bound > 1.5 * LDP_EPSILON, bound


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
