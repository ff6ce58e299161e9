"""Chi-square goodness-of-fit of the browser SDK's randomized reports against each protocol's distribution.

Each function turns n wire reports of one true value ``v`` into (statistic, degrees of freedom, p-value),
using privacy/ldp for the parameters, so the JS output is judged against the server's own p and q:

* k-RR: the reported index: P(v) = p, P(u) = q for u != v; df = k - 1.
* OUE: the k bits are independent, bit v ~ Bernoulli(p), every other ~ Bernoulli(q); the sum of the k
  squared standardized bit counts is chi-square with df = k (n p (1-p) >= 2000 here, so the normal
  approximation of each binomial is close).
* OLH: d = (y - H(seed, v)) mod g, with H the server's hash: P(d = 0) = p, each other d (1-p)/(g-1);
  df = g - 1. The seeds' top 4 bits are uniform over 16 cells; df = 15.
* SS: the whole subset S: P(S) = p / C(k-1, ω-1) when v is in S, (1-p) / C(k-1, ω) when not; df = C(k, ω) - 1.

A test rejects at p-value < 1e-4 (so a correct SDK fails a given test once in 10,000 runs);
``tests/frontend/sdk/test_browser_sdk.py`` shows the same statistic rejects a generator whose ε is 10%
off, so the test has power at n = 20,000.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
from scipy.stats import chi2

from privacy.ldp import OLH, olh_hash

REJECT_BELOW = 1e-4


def pearson(observed, probabilities) -> tuple[float, int, float]:
    observed = np.asarray(observed, dtype=float)
    expected = observed.sum() * np.asarray(probabilities, dtype=float)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(observed) - 1
    return statistic, df, float(chi2.sf(statistic, df))


def krr_probabilities(k: int, v: int, p: float, q: float) -> np.ndarray:
    probabilities = np.full(k, q)
    probabilities[v] = p
    return probabilities


def krr_fit(indices, k: int, v: int, p: float, q: float) -> tuple[float, int, float]:
    return pearson(np.bincount(np.asarray(indices), minlength=k), krr_probabilities(k, v, p, q))


def bits_fit(ones, n: int, v: int, p: float, q: float) -> tuple[float, int, float]:
    """Independent binomial bit counts: sum of squared z-scores, chi-square with k degrees of freedom."""
    ones = np.asarray(ones, dtype=float)
    rates = np.full(len(ones), q)
    rates[v] = p
    statistic = float(((ones - n * rates) ** 2 / (n * rates * (1 - rates))).sum())
    return statistic, len(ones), float(chi2.sf(statistic, len(ones)))


def oue_fit(payloads: list[str], v: int, p: float, q: float) -> tuple[float, int, float]:
    bits = np.array([list(map(int, payload)) for payload in payloads])
    return bits_fit(bits.sum(axis=0), len(payloads), v, p, q)


def olh_offset_probabilities(g: int, p: float) -> np.ndarray:
    probabilities = np.full(g, (1 - p) / (g - 1))
    probabilities[0] = p
    return probabilities


def olh_fit(reports, oracle: OLH, v: int) -> tuple[tuple[float, int, float], tuple[float, int, float]]:
    """(offset fit, seed fit)."""
    reports = np.asarray(reports, dtype=np.int64)
    hashed = olh_hash(reports[:, 0], np.full(len(reports), v), oracle.g)
    offsets = (reports[:, 1] - hashed) % oracle.g
    offset_fit = pearson(np.bincount(offsets, minlength=oracle.g), olh_offset_probabilities(oracle.g, oracle.p))
    seed_fit = pearson(np.bincount(reports[:, 0] >> 28, minlength=16), np.full(16, 1 / 16))
    return offset_fit, seed_fit


def ss_subsets(k: int, omega: int) -> dict[tuple[int, ...], int]:
    return {subset: i for i, subset in enumerate(combinations(range(k), omega))}


def ss_probabilities(k: int, omega: int, v: int, p: float) -> np.ndarray:
    inside, outside = p / comb(k - 1, omega - 1), (1 - p) / comb(k - 1, omega)
    return np.array([inside if v in subset else outside for subset in ss_subsets(k, omega)])


def ss_fit(reports, k: int, omega: int, v: int, p: float) -> tuple[float, int, float]:
    index = ss_subsets(k, omega)
    observed = np.bincount([index[tuple(report)] for report in reports], minlength=len(index))
    return pearson(observed, ss_probabilities(k, omega, v, p))
