"""Longitudinal local DP: a permanent memoized report plus an instantaneous step.

A client that reports the same metric day after day must not leak its true
value through the sum of its reports, nor through which of its memoized
reports it sends. The scheme (RAPPOR's permanent + instantaneous randomized
response, Erlingsson, Pihur and Korolova, CCS 2014; memoization with output
perturbation, Ding, Kulkarni and Yekhanin, NeurIPS 2017), for a protocol with
randomizer ``P_x`` at the metric's ``epsilon``:

* **permanent**: the first time a client reports true value ``x`` for a metric
  version it draws ``M_x ~ P_x`` once and keeps it (the memo);
* **instantaneous**: every report is ``M_x`` with probability ``keep`` (λ) and
  otherwise a fresh *null report* ``~ U``: what the protocol's randomizer
  sends for a value outside the domain (uniform over the k labels for k-RR, a
  uniform ω-subset for SS, a uniform seed and uniform y for OLH, every bit
  Bernoulli(q) for OUE). ``U`` does not depend on any true value.

The wire format is the protocol's own, so the server parses and counts as
before. One report of ``x`` supports ``v`` with probability

    p' = λ p + (1 - λ) u   (v = x),    q' = λ q + (1 - λ) u   (v != x)

where ``u`` is the probability that a null report supports a value, and
reports of different clients are independent: Wang et al. 2017, Thm. 2, holds
with (p', q'), and :class:`MemoizedOracle` debiases with them.

Guarantees (proof sketches; tests/privacy/test_longitudinal.py checks each one
against likelihood ratios computed exactly by enumeration):

* **per value** ``epsilon``: any number of reports of one true value are a
  post-processing (the instantaneous step draws nothing from the value) of the
  one ``M_x``, an ``epsilon``-LDP output; so reports of ``x`` vs. as many
  reports of ``x'`` differ by at most ``epsilon``, however many there are.
  More generally two histories with the same pattern of equal values and d
  distinct values differ by at most d·epsilon.
* **per report** :func:`report_epsilon`: one report alone has the channel
  ``Q_x = λ P_x + (1 - λ) U``. Writing ``ρ_x(r) = P_x(r) / U(r)``, every
  protocol here has ``ρ_x(r)`` in {ρ_in, ρ_out} according to whether r supports
  x (for OUE: according to bits x and x' of r), so
  ``max_r Q_x(r)/Q_x'(r) = (λ ρ_in + 1 - λ) / (λ ρ_out + 1 - λ)``, exactly.
* **per change** :func:`change_epsilon`: two histories, of any length, that
  differ in the true value of one report. Draw every memo up front; given all
  memos the reports are independent, and only the changed report's law moves,
  from ``λ[r = M_a] + (1-λ)U(r)`` to ``λ[r = M_b] + (1-λ)U(r)``. The ratio is at
  most ``1 + λ / ((1 - λ) U_min)`` for every value of the memos, hence also
  after averaging over them. It is reached as the histories grow (the other
  reports pin down both memos). ``U_min`` is the smallest null-report
  probability: 1/k (k-RR), 1/C(k, ω) (SS), q^k (OUE), 1/(2^32 g) (OLH), so a
  change is well hidden only for small output spaces; with λ = 1 (no
  instantaneous step) it is not bounded at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from privacy.csprng import bernoulli, uniform_ints
from privacy.ldp.base import FrequencyOracle
from privacy.ldp.olh import SEED_RANGE
from privacy.ldp.selection import PROTOCOLS, make_oracle
from privacy.ldp.ss import sample_others

#: A metric created without ``report_epsilon`` gets this fraction of its ``epsilon``.
DEFAULT_REPORT_EPSILON_FRACTION = 0.5


def null_support(oracle: FrequencyOracle) -> float:
    """u: the probability that a null report supports a given value."""
    if oracle.name == "krr":
        return 1.0 / oracle.k
    if oracle.name == "oue":
        return oracle.q
    if oracle.name == "olh":
        return 1.0 / oracle.g
    if oracle.name == "ss":
        return oracle.omega / oracle.k
    raise ValueError(f"no null report for protocol {oracle.name!r}")


def _log_density_ratios(oracle: FrequencyOracle) -> tuple[float, float]:
    """(log ρ_in, log ρ_out): log P_x(r)/U(r) for an r supporting x and not x', and the same under x'."""
    p, k = oracle.p, oracle.k
    if oracle.name == "krr":
        # P_x(r) = p or q, U(r) = 1/k.
        return math.log(p * k), math.log(oracle.q * k)
    if oracle.name == "oue":
        # P_x(r)/U(r) = f(r_x), f(1) = p/q, f(0) = (1-p)/(1-q): the other bits cancel.
        q = oracle.q
        return math.log(p / q), math.log((1 - p) / (1 - q))
    if oracle.name == "olh":
        # The seed's probability cancels; P(y | seed) = p or (1-p)/(g-1), U(y | seed) = 1/g.
        g = oracle.g
        return math.log(p * g), math.log((1 - p) / (g - 1) * g)
    if oracle.name == "ss":
        # P_x(S) = p / C(k-1, ω-1) if x in S else (1-p) / C(k-1, ω); U(S) = 1 / C(k, ω).
        omega = oracle.omega
        return math.log(p * k / omega), math.log((1 - p) * k / (k - omega))
    raise ValueError(f"unknown protocol {oracle.name!r}")


def log_min_null_probability(oracle: FrequencyOracle, seed_range: int = SEED_RANGE) -> float:
    """log U_min, the least probability of one null report (``seed_range``: OLH's seed space)."""
    k = oracle.k
    if oracle.name == "krr":
        return -math.log(k)
    if oracle.name == "oue":
        return k * math.log(oracle.q)  # q < 1/2: the all-ones report
    if oracle.name == "olh":
        return -math.log(seed_range) - math.log(oracle.g)
    if oracle.name == "ss":
        omega = oracle.omega
        return -(math.lgamma(k + 1) - math.lgamma(omega + 1) - math.lgamma(k - omega + 1))
    raise ValueError(f"unknown protocol {oracle.name!r}")


def _log_add(a: float, b: float) -> float:
    """log(e^a + e^b) without overflow."""
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_mixture(log_value: float, keep: float) -> float:
    """log(λ e^log_value + (1 - λ))."""
    return log_value if keep >= 1.0 else _log_add(math.log(keep) + log_value, math.log1p(-keep))


def report_epsilon(oracle: FrequencyOracle, keep: float) -> float:
    """The exact ε of one report of the composed channel λ P_x + (1 - λ) U."""
    if keep <= 0.0:
        return 0.0
    log_in, log_out = _log_density_ratios(oracle)
    return _log_mixture(log_in, keep) - _log_mixture(log_out, keep)


def keep_probability(oracle: FrequencyOracle, per_report_epsilon: float) -> float:
    """λ whose one-report channel has exactly ``per_report_epsilon`` (<= the oracle's ε)."""
    if not 0.0 < per_report_epsilon <= oracle.epsilon * (1 + 1e-12):
        raise ValueError("the per-report epsilon must be in (0, epsilon]")
    if per_report_epsilon >= oracle.epsilon:
        return 1.0
    rho_in, rho_out = (math.exp(x) for x in _log_density_ratios(oracle))
    ratio = math.exp(per_report_epsilon)
    # Solve λ ρ_in + 1 - λ = e^ε1 (λ ρ_out + 1 - λ) for λ.
    return min(1.0, (ratio - 1.0) / (rho_in - 1.0 - ratio * (rho_out - 1.0)))


def change_epsilon(oracle: FrequencyOracle, keep: float, seed_range: int = SEED_RANGE) -> float:
    """Bound on histories that differ in one report's true value: log(1 + λ / ((1-λ) U_min)); inf at λ = 1."""
    if keep >= 1.0:
        return math.inf
    if keep <= 0.0:
        return 0.0
    log_floor = math.log1p(-keep) + log_min_null_probability(oracle, seed_range)
    return _log_add(0.0, math.log(keep) - log_floor)


@dataclass(frozen=True)
class Guarantees:
    """A metric's local guarantees under the memoized scheme (see the module docstring)."""

    keep: float
    per_value: float
    per_report: float
    per_change: float  # math.inf when not bounded (keep = 1)

    def to_json(self) -> dict[str, Any]:
        """JSON numbers; an unbounded per-change ε is null."""
        return {
            "keep_probability": self.keep,
            "per_value_epsilon": self.per_value,
            "per_report_epsilon": self.per_report,
            "per_change_epsilon": self.per_change if math.isfinite(self.per_change) else None,
        }


def guarantees(protocol: str, k: int, epsilon: float, per_report_epsilon: float) -> Guarantees:
    base = make_oracle(protocol, k, epsilon)
    keep = keep_probability(base, per_report_epsilon)
    return Guarantees(keep, base.epsilon, report_epsilon(base, keep), change_epsilon(base, keep))


def null_reports(oracle: FrequencyOracle, count: int, source=None) -> np.ndarray:
    """``count`` reports of a value outside the domain, in ``oracle``'s report shape."""
    if oracle.name == "krr":
        return uniform_ints(oracle.k, count, source)
    if oracle.name == "oue":
        return bernoulli(oracle.q, count * oracle.k, source).reshape(count, oracle.k).astype(np.uint8)
    if oracle.name == "olh":
        return np.column_stack([uniform_ints(SEED_RANGE, count, source), uniform_ints(oracle.g, count, source)])
    if oracle.name == "ss":
        # A uniform ω-subset of [0, k): the "others" of the out-of-domain value k.
        subsets = sample_others(np.full(count, oracle.k, dtype=np.int64), oracle.k + 1, oracle.omega, source)
        subsets.sort(axis=1)
        return subsets
    raise ValueError(f"no null report for protocol {oracle.name!r}")


def instantaneous(oracle: FrequencyOracle, memoized: np.ndarray, keep: float, source=None) -> np.ndarray:
    """Each memoized report kept with probability ``keep``, else replaced by a fresh null report."""
    memoized = oracle.check_reports(memoized)
    if keep >= 1.0:
        return memoized.copy()
    kept = bernoulli(keep, len(memoized), source)
    fresh = null_reports(oracle, len(memoized), source)
    return np.where(kept if memoized.ndim == 1 else kept[:, None], memoized, fresh)


@dataclass(frozen=True)
class MemoizedOracle(FrequencyOracle):
    """The composed channel λ P_x + (1 - λ) U of ``base``: same reports, support probabilities p', q'.

    ``k`` and ``epsilon`` are the base's; ``epsilon`` stays the per-value ε.
    :meth:`randomize` draws one independent report of the composed channel
    (a fresh memo each time), which is what each client's report looks like to
    the server.
    """

    base: FrequencyOracle | None = None
    keep: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base is None or (self.base.k, self.base.epsilon) != (self.k, self.epsilon):
            raise ValueError("base must be an oracle with the same k and epsilon")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError("keep must be in (0, 1]")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    @cached_property
    def p(self) -> float:
        # Wang et al. 2017 Thm. 2 with the composed channel: p' = λ p + (1 - λ) u.
        return self.keep * self.base.p + (1 - self.keep) * null_support(self.base)

    @cached_property
    def q(self) -> float:
        # q' = λ q + (1 - λ) u.
        return self.keep * self.base.q + (1 - self.keep) * null_support(self.base)

    @property
    def max_support(self) -> int:
        return self.base.max_support

    @property
    def report_epsilon(self) -> float:
        return report_epsilon(self.base, self.keep)

    def randomize(self, true_indices: np.ndarray, source=None) -> np.ndarray:
        return instantaneous(self.base, self.base.randomize(true_indices, source), self.keep, source)

    def to_wire(self, reports: np.ndarray) -> list:
        return self.base.to_wire(reports)

    def parse_wire(self, payload: Any) -> np.ndarray:
        return self.base.parse_wire(payload)

    def check_reports(self, reports: Any) -> np.ndarray:
        return self.base.check_reports(reports)

    @property
    def packed_size(self) -> int:
        return self.base.packed_size

    def _to_storage(self, reports: np.ndarray) -> np.ndarray:
        return self.base._to_storage(reports)

    def _from_storage(self, blob: bytes, count: int) -> np.ndarray:
        return self.base._from_storage(blob, count)

    def support_counts(self, reports: np.ndarray) -> np.ndarray:
        return self.base.support_counts(reports)


def composed_oracle(protocol: str, k: int, epsilon: float, per_report_epsilon: float) -> FrequencyOracle:
    """The server's oracle for a metric: the base oracle when λ = 1, else its :class:`MemoizedOracle`."""
    base = make_oracle(protocol, k, epsilon)
    keep = keep_probability(base, per_report_epsilon)
    if keep >= 1.0:
        return base
    return MemoizedOracle(base.k, base.epsilon, base=base, keep=keep)


def least_variance_protocol(k: int, epsilon: float, per_report_epsilon: float) -> str:
    """``auto`` for a memoized metric: the protocol whose composed channel has the least c_v = 0 variance
    term q'(1-q')/(p'-q')^2 (Wang et al. 2017, Sec. 3), ties to the earlier in PROTOCOLS."""
    variances = {name: float(composed_oracle(name, k, epsilon, per_report_epsilon).variance(1)[0])
                 for name in PROTOCOLS}
    best = min(variances.values())
    return next(name for name in PROTOCOLS if variances[name] <= best * (1 + 1e-9))
