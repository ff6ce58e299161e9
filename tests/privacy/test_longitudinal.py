"""The longitudinal scheme's stated bounds against likelihood ratios computed exactly.

Each protocol's randomizer P_x and null report U are written out here from the
protocols' definitions (not from privacy.ldp.longitudinal), on domains small
enough to enumerate every output: k-RR k = 3, OUE k = 3 (8 bit vectors),
SS k = 4 with ω = 2 (6 subsets), and OLH k = 3 with the real hash restricted
to 3 seeds (24 outputs; privacy never depends on the hash). A history of true
values then has the exact law

    P_h(r_1..r_n) = Π_{distinct x in h} Σ_o P_x(o) Π_{s: h_s = x} (λ[r_s = o] + (1-λ) U(r_s))

(memos of distinct values are independent), computed with one einsum over all
output tuples; the tests compare max log P_h / P_h' with the stated figures.
"""

from __future__ import annotations

import itertools
import math
import string

import numpy as np
import pytest

from privacy.ldp import make_oracle, olh_hash
from privacy.ldp.longitudinal import (
    MemoizedOracle,
    change_epsilon,
    composed_oracle,
    guarantees,
    instantaneous,
    keep_probability,
    null_reports,
    null_support,
    report_epsilon,
)

OLH_SEEDS = 3


def exact_channel(protocol: str, k: int, epsilon: float):
    """(oracle, outputs, P[x, r], U[r], supports[r, v]) written out from the protocol definitions."""
    oracle = make_oracle(protocol, k, epsilon)
    e = math.exp(epsilon)
    if protocol == "krr":
        outputs = list(range(k))
        p, q = e / (e + k - 1), 1 / (e + k - 1)
        P = np.array([[p if r == x else q for r in outputs] for x in range(k)])
        U = np.full(k, 1 / k)
        supports = np.array([[r == v for v in range(k)] for r in outputs])
    elif protocol == "oue":
        outputs = list(itertools.product((0, 1), repeat=k))
        q = 1 / (e + 1)

        def bit(b, prob):
            return prob if b else 1 - prob

        P = np.array([[math.prod(bit(r[j], 0.5 if j == x else q) for j in range(k)) for r in outputs]
                      for x in range(k)])
        U = np.array([math.prod(bit(b, q) for b in r) for r in outputs])
        supports = np.array([[r[v] == 1 for v in range(k)] for r in outputs])
    elif protocol == "olh":
        g = round(e) + 1
        outputs = [(s, y) for s in range(OLH_SEEDS) for y in range(g)]
        hashed = {(s, v): int(olh_hash(np.array([s]), np.array([v]), g)[0]) for s in range(OLH_SEEDS) for v in range(k)}
        pg, qg = e / (e + g - 1), 1 / (e + g - 1)
        P = np.array([[(pg if hashed[s, x] == y else qg) / OLH_SEEDS for s, y in outputs] for x in range(k)])
        U = np.full(len(outputs), 1 / (OLH_SEEDS * g))
        supports = np.array([[hashed[s, v] == y for v in range(k)] for s, y in outputs])
    elif protocol == "ss":
        omega = max(1, round(k / (e + 1)))
        outputs = list(itertools.combinations(range(k), omega))
        p = omega * e / (omega * e + k - omega)
        P = np.array([[p / math.comb(k - 1, omega - 1) if x in r else (1 - p) / math.comb(k - 1, omega)
                       for r in outputs] for x in range(k)])
        U = np.full(len(outputs), 1 / math.comb(k, omega))
        supports = np.array([[v in r for v in range(k)] for r in outputs])
    assert np.allclose(P.sum(axis=1), 1) and math.isclose(U.sum(), 1)
    return oracle, outputs, P, U, supports


SMALL = {"krr": (3, 1.0), "oue": (3, 1.0), "olh": (3, 2.0), "ss": (4, 0.5)}


@pytest.fixture(params=sorted(SMALL), scope="module")
def channel(request):
    return exact_channel(request.param, *SMALL[request.param])


def history_law(P, U, keep: float, history: tuple[int, ...]) -> np.ndarray:
    """P_h over all output tuples, shape (|O|,) * len(history)."""
    step = keep * np.eye(len(U)) + (1 - keep) * U[:, None]  # step[r, o] = λ[r = o] + (1-λ) U(r)
    report_axes, operands, specs = string.ascii_lowercase[: len(history)], [], []
    for group, value in enumerate(sorted(set(history))):
        memo_axis = string.ascii_uppercase[group]
        operands.append(P[value])
        specs.append(memo_axis)
        for position, held in enumerate(history):
            if held == value:
                operands.append(step)
                specs.append(report_axes[position] + memo_axis)
    return np.einsum(",".join(specs) + "->" + report_axes, *operands)


def max_log_ratio(P, U, keep, first, second) -> float:
    """The privacy loss between two histories: max over outputs, both directions."""
    a, b = history_law(P, U, keep, first), history_law(P, U, keep, second)
    assert math.isclose(a.sum(), 1) and math.isclose(b.sum(), 1)
    possible = (a > 0) | (b > 0)  # outputs impossible under both (λ = 1) carry no loss
    with np.errstate(divide="ignore"):
        return float(np.max(np.abs(np.log(a[possible]) - np.log(b[possible]))))


def keeps_for(oracle):
    return [keep_probability(oracle, oracle.epsilon * f) for f in (0.25, 0.5, 0.9)]


def test_single_report_epsilon_is_exact(channel):
    oracle, _, P, U, _ = channel
    for keep in keeps_for(oracle) + [1.0]:
        worst = max(max_log_ratio(P, U, keep, (x,), (y,)) for x in range(oracle.k) for y in range(oracle.k))
        assert worst == pytest.approx(report_epsilon(oracle, keep), rel=1e-9)
    assert report_epsilon(oracle, 1.0) == pytest.approx(oracle.epsilon, rel=1e-12)


def test_keep_probability_inverts_the_per_report_epsilon(channel):
    oracle = channel[0]
    for fraction in (0.1, 0.5, 0.99):
        keep = keep_probability(oracle, fraction * oracle.epsilon)
        assert 0 < keep < 1
        assert report_epsilon(oracle, keep) == pytest.approx(fraction * oracle.epsilon, rel=1e-9)
    assert keep_probability(oracle, oracle.epsilon) == 1.0
    with pytest.raises(ValueError):
        keep_probability(oracle, 1.01 * oracle.epsilon)


def test_repeated_reports_of_one_value_stay_within_epsilon(channel):
    oracle, _, P, U, _ = channel
    for keep in keeps_for(oracle) + [1.0]:
        losses = [max_log_ratio(P, U, keep, (0,) * n, (1,) * n) for n in (1, 2, 3)]
        assert max(losses) <= oracle.epsilon * (1 + 1e-12)
        assert losses[0] < losses[1] < losses[2] or keep == 1.0  # repeats leak more, never more than ε


def test_one_change_stays_within_the_change_bound(channel):
    oracle, _, P, U, _ = channel
    pairs = [((0, 0), (0, 1)), ((0, 0, 0), (0, 0, 1)), ((0, 1, 0), (0, 1, 1)), ((1, 0, 0), (2, 0, 0))]
    for keep in keeps_for(oracle):
        bound = change_epsilon(oracle, keep, seed_range=OLH_SEEDS)
        for first, second in pairs:
            assert max_log_ratio(P, U, keep, first, second) <= bound * (1 + 1e-12)


def test_the_change_bound_is_approached_by_long_histories():
    """k-RR k = 3: (0,0,0,1,1,1,0) vs (...,1) pins both memos; the loss nears log(1 + λ k/(1-λ))."""
    oracle, _, P, U, _ = exact_channel("krr", 3, 1.0)
    keep = keep_probability(oracle, 0.5)
    bound = change_epsilon(oracle, keep)
    assert bound == pytest.approx(math.log(1 + keep * 3 / (1 - keep)))
    loss = max_log_ratio(P, U, keep, (0, 0, 0, 1, 1, 1, 0), (0, 0, 0, 1, 1, 1, 1))
    assert 0.8 * bound < loss <= bound


def test_pure_memoization_leaks_a_change_beyond_epsilon():
    """The issue's figure: with λ = 1, k-RR k = 20, ε = 2, "day 2 equals day 1" has log-ratio 3.06 > ε."""
    oracle = make_oracle("krr", 20, 2.0)
    p, q = oracle.p, oracle.q
    same_under_change = q * (2 * p + 18 * q)  # P[M_v = M_v'] for independent memos of v and v'
    assert -math.log(same_under_change) == pytest.approx(3.06, abs=0.01)
    assert math.isinf(change_epsilon(oracle, 1.0))


def test_composed_support_probabilities_are_exact(channel):
    oracle, _, P, U, supports = channel
    for keep in keeps_for(oracle):
        composed = MemoizedOracle(oracle.k, oracle.epsilon, base=oracle, keep=keep)
        law = keep * P + (1 - keep) * U  # one report of each true value
        support = law @ supports  # [x, v]: P[a report of x supports v]
        others = ~np.eye(oracle.k, dtype=bool)
        assert np.allclose(U @ supports, null_support(oracle))
        assert np.allclose(np.diag(support), composed.p)
        # OLH's q = 1/g is an average over random hashes, which a 3-seed family only approximates;
        # the composition p' - q' = λ (p - q) is exact for every hash family.
        base_q = (P @ supports)[others] if oracle.name == "olh" else oracle.q
        assert np.allclose(support[others], keep * base_q + (1 - keep) * null_support(oracle))
        if oracle.name != "olh":
            assert np.allclose(support[others], composed.q)


@pytest.mark.parametrize("protocol", ["krr", "oue", "olh", "ss"])
def test_null_reports_and_instantaneous_step_have_the_stated_law(protocol):
    """200k draws; each support frequency within 5 binomial SDs (a false alarm ~ 1e-6 per check)."""
    oracle = make_oracle(protocol, 6, 1.0)
    draws = 200_000
    nulls = oracle.support_counts(null_reports(oracle, draws)) / draws
    u = null_support(oracle)
    assert np.all(np.abs(nulls - u) < 5 * math.sqrt(u * (1 - u) / draws))
    keep = keep_probability(oracle, 0.5)
    memo = oracle.randomize(np.array([2]))
    reports = instantaneous(oracle, np.repeat(memo, draws, axis=0), keep)
    frequencies = oracle.support_counts(reports) / draws
    memo_support = oracle.support_counts(memo)
    expected = keep * memo_support + (1 - keep) * u
    assert np.all(np.abs(frequencies - expected) < 5 * np.sqrt(expected * (1 - expected) / draws) + 1e-12)
    kept = np.all(reports.reshape(draws, -1) == memo.reshape(1, -1), axis=1).mean()
    assert abs(kept - keep) < 5 * math.sqrt(keep * (1 - keep) / draws) + (1 - keep) * 0.5


@pytest.mark.parametrize("protocol", ["krr", "oue", "olh", "ss"])
def test_composed_oracle_debiases_without_bias(protocol):
    """60k clients, one composed report each: every estimate within 4.5 SDs of the truth
    (Wang et al. Thm. 2 variance with p', q'; 8 values, false alarm ~ 5e-5)."""
    oracle = composed_oracle(protocol, 8, 2.0, 1.0)
    assert isinstance(oracle, MemoizedOracle)
    truth = np.repeat(np.arange(8), [20_000, 15_000, 10_000, 6_000, 4_000, 3_000, 2_000, 0])
    counts = np.bincount(truth, minlength=8)
    estimate = oracle.estimate(oracle.support_counts(oracle.randomize(truth)), len(truth))
    sd = np.sqrt(oracle.variance(len(truth), counts))
    assert np.all(np.abs(estimate - counts) < 4.5 * sd)


def test_a_wrong_channel_is_caught_by_the_same_check():
    """Debiasing composed reports with the base (p, q) misses by far more than 4.5 SDs: the check has power."""
    composed = composed_oracle("krr", 8, 2.0, 1.0)
    counts = np.array([20_000, 15_000, 10_000, 6_000, 4_000, 3_000, 2_000, 0])
    truth = np.repeat(np.arange(8), counts)
    support = composed.support_counts(composed.randomize(truth))
    wrong = composed.base.estimate(support, len(truth))
    sd = np.sqrt(composed.base.variance(len(truth), counts))
    assert np.max(np.abs(wrong - counts) / sd) > 4.5


def test_guarantees_for_the_service_default():
    g = guarantees("ss", 20, 2.0, 1.0)
    assert (g.per_value, g.per_report) == (2.0, pytest.approx(1.0))
    assert 0 < g.keep < 1 and math.isfinite(g.per_change)
    legacy = guarantees("ss", 20, 2.0, 2.0)
    assert legacy.keep == 1.0 and legacy.to_json()["per_change_epsilon"] is None
    assert composed_oracle("ss", 20, 2.0, 2.0) == make_oracle("ss", 20, 2.0)
