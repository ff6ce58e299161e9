"""Statistics for auditing privacy claims from a mechanism's observed outputs.

Two uses:

* *Empirical DP lower bounds* (distinguishing experiments): run a mechanism
  many times on neighbouring inputs D and D', reject "the input was D" on a
  fixed set of outputs, count false positives (rejections under D) and false
  negatives (non-rejections under D'), and turn one-sided Clopper-Pearson
  bounds on both rates into an ε that the mechanism must at least have. A
  bound above the claimed ε refutes the claim at confidence ``1 - alpha``.
  The same math serves the DP-SGD canary audits.
* *Frequency checks*: is an observed count consistent with a claimed
  probability (an interval's coverage, an output's probability)? An exact
  binomial acceptance region, and the probability that it rejects when the
  true probability is another one (the check's power).

Pure functions over counts; scipy only for the beta and binomial quantiles.
"""

from __future__ import annotations

import math

from scipy import stats


def _check_counts(successes: int, trials: int) -> None:
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper confidence bound, level ``1 - alpha``, on a binomial probability.

    The largest p with P[Binomial(trials, p) <= successes] >= alpha.
    """
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if successes == trials:
        return 1.0
    # Clopper & Pearson, Biometrika 1934: the bound is a beta quantile.
    return float(stats.beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower confidence bound, level ``1 - alpha``, on a binomial probability.

    The smallest p with P[Binomial(trials, p) >= successes] >= alpha.
    """
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if successes == 0:
        return 0.0
    # Clopper & Pearson, Biometrika 1934: the bound is a beta quantile.
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided exact interval at level ``1 - alpha`` (``alpha / 2`` in each tail)."""
    return (clopper_pearson_lower(successes, trials, alpha / 2),
            clopper_pearson_upper(successes, trials, alpha / 2))


def epsilon_lower_bound(false_positives: int, negatives: int, false_negatives: int, positives: int,
                        delta: float = 0.0, alpha: float = 0.05) -> float:
    """An ε that the audited mechanism has with confidence ``1 - alpha``.

    ``negatives`` runs on D, of which ``false_positives`` landed in the
    rejection set; ``positives`` runs on D', of which ``false_negatives`` did
    not. Every (ε, δ)-DP mechanism has FPR + e^ε FNR >= 1 - δ and
    FNR + e^ε FPR >= 1 - δ for every rejection set, so with upper bounds on
    both rates (each at level ``1 - alpha / 2``, so that both hold together
    with probability >= ``1 - alpha``)
    ε >= max(log((1 - δ - FNR_up) / FPR_up), log((1 - δ - FPR_up) / FNR_up)).
    Returns 0 when the counts show nothing.
    """
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    fpr_up = clopper_pearson_upper(false_positives, negatives, alpha / 2)
    fnr_up = clopper_pearson_upper(false_negatives, positives, alpha / 2)
    # Kairouz et al., ICML 2015, Thm. 2.1; the audit of Jagielski et al., NeurIPS 2020 and Nasr et al., S&P 2021.
    bounds = [math.log((1.0 - delta - first) / second)
              for first, second in ((fnr_up, fpr_up), (fpr_up, fnr_up))
              if 1.0 - delta - first > 0.0 and second > 0.0]
    return max([0.0, *bounds])


def binomial_acceptance_region(trials: int, probability: float, alpha: float) -> tuple[int, int]:
    """``(low, high)``: a count outside [low, high] has probability <= alpha under Binomial(trials, probability).

    Equal tails: P[X < low] <= alpha / 2 and P[X > high] <= alpha / 2, each
    as close to alpha / 2 as the discrete law allows.
    """
    _check_alpha(alpha)
    if trials < 1 or not 0.0 <= probability <= 1.0:
        raise ValueError("need trials >= 1 and a probability in [0, 1]")
    law = stats.binom(trials, probability)
    return int(law.ppf(alpha / 2)), int(law.ppf(1.0 - alpha / 2))


def rejection_probability(trials: int, region: tuple[int, int], probability: float) -> float:
    """P[Binomial(trials, probability) falls outside ``region``]: the check's size or power."""
    low, high = region
    law = stats.binom(trials, probability)
    return float(law.cdf(low - 1) + law.sf(high))
