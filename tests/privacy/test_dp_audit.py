"""Empirical DP audits of k-RR and the discrete Laplace mechanism: distinguishing experiments.

Jagielski et al. (NeurIPS 2020) and Nasr et al. (S&P 2021): run the mechanism RUNS times on each
of two neighbouring inputs D and D', guess "D'" on a rejection set of outputs fixed before the runs,
and bound the false-positive and false-negative rates from above with one-sided Clopper-Pearson
bounds (privacy.auditing.epsilon_lower_bound). The bound is a lower bound on the mechanism's true
ε with confidence 1 - ALPHA, so for a correct mechanism it exceeds the claimed ε with probability
at most ALPHA = 1e-6: the test cannot fail by chance in practice.

Each rejection set is the one on which the likelihood ratio is largest, so the audit is tight: for
the real mechanism the bound lands just under the claimed ε (within the CP slack of about
5 standard errors at RUNS = 10^6), and every test also runs a deliberately weakened mechanism,
whose bound must come out above the claimed ε. That is the audit's power, shown, not assumed.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from privacy.auditing import epsilon_lower_bound
from privacy.ldp import KRR
from privacy.noise import discrete_laplace_array, discrete_laplace_pmf

RUNS = 1_000_000
ALPHA = 1e-6


def krr_audit(epsilon: float, k: int, claimed_epsilon: float) -> float:
    """Lower bound on the ε of KRR(k, epsilon), audited as a claim of ``claimed_epsilon``.

    D is the true value 1, D' the true value 0; the rejection set "the report is 0" has
    FPR = q and FNR = 1 - p, so the tight bound is log(p / q) = ε.
    """
    mechanism = KRR(k, epsilon)
    negatives = mechanism.randomize(np.full(RUNS, 1))
    positives = mechanism.randomize(np.full(RUNS, 0))
    false_positives = int(np.count_nonzero(negatives == 0))
    false_negatives = int(np.count_nonzero(positives != 0))
    bound = epsilon_lower_bound(false_positives, RUNS, false_negatives, RUNS, alpha=ALPHA)
    # The slack of the bound is small against the gap to a weakened mechanism: report it on failure.
    print(f"k-RR k={k} eps={epsilon}: lower bound {bound:.4f} vs claimed {claimed_epsilon}")
    return bound


@pytest.mark.parametrize("k, epsilon", [(20, 2.0), (3, 0.5)])
def test_krr_audit_stays_below_the_claimed_epsilon(k, epsilon):
    bound = krr_audit(epsilon, k, epsilon)
    assert bound <= epsilon
    # Tight: the same experiment sees most of ε (the CP slack at 10^6 runs is about 0.03 here).
    assert bound >= 0.95 * epsilon


@pytest.mark.parametrize("k, epsilon", [(20, 2.0), (3, 0.5)])
@pytest.mark.parametrize("factor", [2.0, 1.1])
def test_krr_audit_catches_p_computed_for_a_larger_epsilon(k, epsilon, factor):
    # k-RR with p (and so q) computed for factor x ε, claimed as ε-LDP. The bound's expected
    # value is about factor x ε minus the slack, so even 1.1 x ε sits several slacks above ε.
    assert krr_audit(factor * epsilon, k, epsilon) > epsilon


def laplace_audit(scale: Fraction, sensitivity: int, claimed_epsilon: float) -> float:
    """Lower bound on the ε of count + discrete Laplace(scale) for counts ``sensitivity`` apart.

    D is the count 0, D' the count Δ = ``sensitivity``; the rejection set "output >= Δ" has
    FPR = P[Z >= Δ] and FNR = P[Z < 0] = P[Z >= 1], and P[Z >= 0] / P[Z >= Δ] = e^(Δ / scale),
    so the tight bound is Δ / scale, the mechanism's ε (Dwork & Roth 2014, Thm. 3.6; CKS 2020).
    """
    negatives = 0 + discrete_laplace_array(scale, RUNS)
    positives = sensitivity + discrete_laplace_array(scale, RUNS)
    false_positives = int(np.count_nonzero(negatives >= sensitivity))
    false_negatives = int(np.count_nonzero(positives < sensitivity))
    bound = epsilon_lower_bound(false_positives, RUNS, false_negatives, RUNS, alpha=ALPHA)
    print(f"discrete Laplace scale={scale} delta={sensitivity}: lower bound {bound:.4f} vs claimed {claimed_epsilon}")
    return bound


CENTRAL_CASES = [(1.0, 1), (0.5, 2)]  # (ε, Δ): scale Δ/ε = 1 and 4


@pytest.mark.parametrize("epsilon, sensitivity", CENTRAL_CASES)
def test_discrete_laplace_audit_stays_below_the_claimed_epsilon(epsilon, sensitivity):
    scale = Fraction(sensitivity) / Fraction(epsilon)
    bound = laplace_audit(scale, sensitivity, epsilon)
    assert bound <= epsilon
    assert bound >= 0.9 * epsilon


@pytest.mark.parametrize("epsilon, sensitivity", CENTRAL_CASES)
@pytest.mark.parametrize("shrink", [Fraction(2), Fraction(11, 10)])
def test_discrete_laplace_audit_catches_a_scale_too_small(epsilon, sensitivity, shrink):
    # Scale divided by 2 (e.g. the sensitivity forgotten for m = 2) or by 1.1: true ε is
    # shrink x ε, and the bound comes out above the claimed ε.
    scale = Fraction(sensitivity) / Fraction(epsilon) / shrink
    assert laplace_audit(scale, sensitivity, epsilon) > epsilon


def test_the_rejection_sets_are_the_tight_ones():
    # The exact rates behind the experiments, from the mechanisms' own probabilities: the audits
    # above can reach ε only because these ratios equal e^ε.
    k, epsilon = 20, 2.0
    p, q = KRR(k, epsilon).p, KRR(k, epsilon).q
    assert math.log((1 - (1 - p)) / q) == pytest.approx(epsilon)
    for epsilon, sensitivity in CENTRAL_CASES:
        scale = Fraction(sensitivity) / Fraction(epsilon)
        support = np.arange(-2000, 2001)
        pmf = discrete_laplace_pmf(support, scale)

        def tail(j):  # P[Z >= j], summed from the PMF
            return float(pmf[support >= j].sum())

        false_positive_rate, false_negative_rate = tail(sensitivity), float(pmf[support < 0].sum())
        assert math.log((1 - false_negative_rate) / false_positive_rate) == pytest.approx(epsilon)
