"""Exact integer noise: discrete Laplace and discrete Gaussian samplers.

Central noise on counts is exact integer noise (ARCHITECTURE.md, invariant 3).
The samplers implement Canonne, Kamath and Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020), Algorithms 1-3: the same algorithms that
OpenDP and Tumult Analytics use. They use only integer and rational arithmetic
and uniform integers drawn by rejection from a CSPRNG
(:mod:`privacy.csprng`), so the law of every output is *exactly* the target
distribution: no floating-point number ever decides an outcome, and there is
no modulo bias. Floats appear only in the PMF/variance helpers at the bottom,
which exist for tests and confidence intervals and never touch sampling.

Parameters are exact rationals. ``scale`` / ``sigma_squared`` may be a
:class:`~fractions.Fraction`, an ``int``, a ``str`` such as ``"3/2"`` or
``"0.5"``, or a :class:`~decimal.Decimal`; floats are refused (a float such as
``0.1`` is not the rational the caller means) and so are non-positive values.

Two paths with identical laws:

* scalar (``sample_*``): a direct transcription of the algorithms on Python
  integers of any size;
* vectorized (``*_array``): the same algorithms run on numpy ``int64`` arrays,
  see :func:`discrete_laplace_array` for the argument that it is still exact.
"""

from __future__ import annotations

import math
import numbers
from decimal import Decimal
from fractions import Fraction
from typing import Union

import numpy as np

from privacy.csprng import SYSTEM_RANDOM, RandomSource, randbelow, uniform_ints

RationalLike = Union[Fraction, int, str, Decimal]

__all__ = [
    "RationalLike",
    "sample_bernoulli_exp",
    "sample_discrete_laplace",
    "sample_discrete_gaussian",
    "discrete_laplace_array",
    "discrete_gaussian_array",
    "discrete_laplace_pmf",
    "discrete_gaussian_pmf",
    "discrete_laplace_variance",
    "discrete_gaussian_variance",
]

_INT64_MAX = 2**63 - 1
# Largest numerator/denominator handled by the int64 vectorized path; beyond it
# the vectorized functions fall back to the (equally exact) scalar path.
_VECTOR_LIMIT = 2**31


# --------------------------------------------------------------------------
# parameter parsing
# --------------------------------------------------------------------------


def _to_fraction(value: RationalLike, name: str, *, allow_zero: bool = False) -> Fraction:
    """Parse an exact rational; refuse floats, bools, NaN/inf and bad signs."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"{name} must be an exact rational (Fraction, int, str or Decimal), "
            f"not {type(value).__name__}"
        )
    if isinstance(value, (Fraction, Decimal, str)) or isinstance(value, numbers.Rational):
        try:
            if isinstance(value, numbers.Rational) and not isinstance(value, Fraction):
                value = Fraction(int(value.numerator), int(value.denominator))  # e.g. np.int64
            result = Fraction(value)
        except (ValueError, ZeroDivisionError, OverflowError, TypeError) as exc:
            raise ValueError(f"{name}: cannot parse {value!r} as a rational") from exc
    else:
        raise TypeError(
            f"{name} must be an exact rational (Fraction, int, str or Decimal), "
            f"not {type(value).__name__}"
        )
    if result < 0 or (result == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return result


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
        raise ValueError("size must be a non-negative integer")
    return int(size)


# --------------------------------------------------------------------------
# scalar path: CKS20 Algorithms 1-3 on Python integers
# --------------------------------------------------------------------------


def _bernoulli_rational(num: int, den: int, source: RandomSource) -> bool:
    """Bernoulli(num/den) exactly: a uniform integer in [0, den) is < num."""
    return randbelow(den, source) < num


def sample_bernoulli_exp(gamma: RationalLike, source: RandomSource | None = None) -> bool:
    """One draw of Bernoulli(exp(-gamma)) for a rational ``gamma >= 0``, exactly."""
    source = source or SYSTEM_RANDOM
    gamma = _to_fraction(gamma, "gamma", allow_zero=True)
    num, den = gamma.numerator, gamma.denominator
    if num <= den:
        # CKS20 Alg. 1, gamma in [0,1]: K=1; while Bernoulli(gamma/K): K+=1; return K odd.
        k = 1
        while _bernoulli_rational(num, den * k, source):
            k += 1
        return k % 2 == 1
    # CKS20 Alg. 1, gamma > 1: floor(gamma) Bernoulli(exp(-1)) must all be 1, then Bernoulli(exp(-frac)).
    whole = num // den
    for _ in range(whole):
        if not sample_bernoulli_exp(1, source):
            return False
    return sample_bernoulli_exp(Fraction(num - whole * den, den), source)


def _sample_discrete_laplace_ts(t: int, s: int, source: RandomSource) -> int:
    """CKS20 Alg. 2: one draw with P[x] proportional to exp(-|x| * s / t)."""
    while True:
        # CKS20 Alg. 2: U uniform in [0,t), accepted with probability exp(-U/t).
        u = randbelow(t, source)
        if not sample_bernoulli_exp(Fraction(u, t), source):
            continue
        # CKS20 Alg. 2: V = number of Bernoulli(exp(-1)) successes before the first failure.
        v = 0
        while sample_bernoulli_exp(1, source):
            v += 1
        # CKS20 Alg. 2: X = U + t*V is geometric(1 - exp(-1/t)); Y = floor(X/s).
        y = (u + t * v) // s
        # CKS20 Alg. 2: random sign, rejecting "-0" so that 0 is not counted twice.
        negative = randbelow(2, source) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def sample_discrete_laplace(scale: RationalLike, source: RandomSource | None = None) -> int:
    """One exact draw from the discrete Laplace distribution with rational ``scale`` t.

    ``P[X = x] = tanh(1/(2t)) * exp(-|x|/t)`` for every integer ``x``.
    Adding it to an integer query of L1 sensitivity Δ with ``t = Δ/ε`` is ε-DP.
    """
    scale = _to_fraction(scale, "scale")
    return _sample_discrete_laplace_ts(scale.numerator, scale.denominator, source or SYSTEM_RANDOM)


def _gaussian_t(sigma_squared: Fraction) -> int:
    # floor(sigma) + 1, computed exactly: floor(sqrt(x)) == isqrt(floor(x)) for x >= 0.
    return math.isqrt(sigma_squared.numerator // sigma_squared.denominator) + 1


def sample_discrete_gaussian(sigma_squared: RationalLike, source: RandomSource | None = None) -> int:
    """One exact draw from the discrete Gaussian N_Z(0, sigma_squared).

    ``P[X = x]`` is proportional to ``exp(-x^2 / (2 sigma_squared))``.
    """
    source = source or SYSTEM_RANDOM
    sigma_squared = _to_fraction(sigma_squared, "sigma_squared")
    t = _gaussian_t(sigma_squared)
    while True:
        # CKS20 Alg. 3: Y ~ discrete Laplace with scale t = floor(sigma) + 1.
        y = _sample_discrete_laplace_ts(t, 1, source)
        # CKS20 Alg. 3: accept with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)).
        gamma = (abs(y) - sigma_squared / t) ** 2 / (2 * sigma_squared)
        if sample_bernoulli_exp(gamma, source):
            return y


# --------------------------------------------------------------------------
# vectorized path: the same algorithms, batched over numpy arrays
# --------------------------------------------------------------------------


def _uniform_below(upper: int, size: int, source: RandomSource) -> np.ndarray:
    """``size`` uniform integers in ``[0, upper)`` (int64), by rejection.

    Same method as :func:`privacy.csprng.uniform_ints` (keep the top ``bits``
    bits of a random word, redraw values ``>= upper``: no modulo bias), but it
    reads only as many bytes per draw as ``upper`` needs: one bit per draw
    when ``upper == 2``, a byte/2/4 bytes for up to 8/16/32 bits. Falls back to
    ``uniform_ints`` above 32 bits. The byte source is the bottleneck, so this
    is what makes the vectorized samplers fast.
    """
    if upper == 1:
        return np.zeros(size, dtype=np.int64)
    bits = (upper - 1).bit_length()
    if bits > 32:
        return uniform_ints(upper, size, source)
    if bits == 1:
        # upper == 2: every bit is an independent fair coin.
        raw = np.frombuffer(source.random_bytes((size + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw, count=size).astype(np.int64)
    dtype = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
    width = np.dtype(dtype).itemsize * 8
    shift = dtype(width - bits)
    bound = dtype(upper)
    out = np.empty(size, dtype=np.int64)
    filled = 0
    # Acceptance probability is > 1/2; over-draw a little to finish in ~1 round.
    while filled < size:
        need = size - filled
        draw = need + need // 2 + 16
        words = np.frombuffer(source.random_bytes(draw * (width // 8)), dtype=dtype) >> shift
        accepted = words[words < bound][:need]
        out[filled : filled + accepted.size] = accepted
        filled += accepted.size
    return out


def _bernoulli_exp_le1(num: np.ndarray, den: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 1 for gamma_i = num_i / den in [0, 1] (bool array).

    Every element runs its own Alg. 1 loop; in round K all still-running
    elements draw their Bernoulli(gamma_i / K) at once, as ``uniform [0, den*K) <
    num_i``. Elements that draw 0 stop with result ``K odd``.
    """
    n = num.size
    result = np.empty(n, dtype=bool)
    active = np.arange(n)
    anum = num
    k = 1
    while active.size:
        upper = den * k
        if upper <= 2**63:
            cont = _uniform_below(upper, active.size, source) < anum
        else:  # only reachable after ~20 rounds for den < 2**31: practically never.
            cont = np.fromiter(
                (randbelow(upper, source) < int(v) for v in anum), dtype=bool, count=active.size
            )
        result[active[~cont]] = k % 2 == 1
        active = active[cont]
        anum = anum[cont]
        k += 1
    return result


def _bernoulli_exp1(size: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 1 for gamma = 1: ``size`` draws of Bernoulli(exp(-1))."""
    result = np.empty(size, dtype=bool)
    active = np.arange(size)
    k = 2  # round K=1 draws Bernoulli(1/1) = 1 for everyone: skip it.
    while active.size:
        cont = _uniform_below(k, active.size, source) == 0  # Bernoulli(1/K)
        result[active[~cont]] = k % 2 == 1
        active = active[cont]
        k += 1
    return result


def _bernoulli_exp_array(num: np.ndarray, den: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 1 for any gamma_i = num_i / den >= 0 (bool array)."""
    whole = num // den
    frac = num - whole * den
    alive = np.ones(num.size, dtype=bool)
    # CKS20 Alg. 1, gamma > 1: floor(gamma_i) Bernoulli(exp(-1)) draws must all be 1.
    idx = np.flatnonzero(whole > 0)
    left = whole[idx]
    while idx.size:
        ok = _bernoulli_exp1(idx.size, source)
        alive[idx[~ok]] = False
        left = left - 1
        keep = ok & (left > 0)
        idx, left = idx[keep], left[keep]
    # ... then one Bernoulli(exp(-(gamma_i - floor(gamma_i)))).
    idx = np.flatnonzero(alive)
    alive[idx] = _bernoulli_exp_le1(frac[idx], den, source)
    return alive


def _geometric_exp1(size: int, source: RandomSource) -> np.ndarray:
    """Number of Bernoulli(exp(-1)) successes before the first failure (int64)."""
    v = np.zeros(size, dtype=np.int64)
    active = np.arange(size)
    while active.size:
        ok = _bernoulli_exp1(active.size, source)
        active = active[ok]
        v[active] += 1
    return v


def _discrete_laplace_array_ts(t: int, s: int, size: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 2, P[x] proportional to exp(-|x| s/t); needs t, s < 2**31."""
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    limit = (2**62) // t  # t*V + U stays below 2**63 while V <= limit
    while pending.size:
        m = pending.size
        # CKS20 Alg. 2: U uniform in [0,t) accepted w.p. exp(-U/t); redraw the rejected ones.
        u = np.zeros(m, dtype=np.int64)
        if t > 1:
            need = np.arange(m)
            while need.size:
                cand = _uniform_below(t, need.size, source)
                acc = _bernoulli_exp_le1(cand, t, source)
                u[need[acc]] = cand[acc]
                need = need[~acc]
        # CKS20 Alg. 2: V geometric from Bernoulli(exp(-1)); X = U + t*V; Y = floor(X/s).
        v = _geometric_exp1(m, source)
        if int(v.max(initial=0)) > limit:  # probability < exp(-2**31): exact big-int fallback
            y = np.array([(int(a) + t * int(b)) // s for a, b in zip(u, v)], dtype=object)
            if any(abs(val) > _INT64_MAX for val in y):
                raise OverflowError("discrete Laplace draw does not fit in int64")
            y = y.astype(np.int64)
        else:
            y = (u + t * v) // s
        # CKS20 Alg. 2: random sign; (negative, 0) is rejected and the element restarts.
        negative = _uniform_below(2, m, source) == 1
        restart = negative & (y == 0)
        done = ~restart
        out[pending[done]] = np.where(negative, -y, y)[done]
        pending = pending[restart]
    return out


def discrete_laplace_array(
    scale: RationalLike, size: int, source: RandomSource | None = None
) -> np.ndarray:
    """``size`` i.i.d. exact discrete Laplace draws with rational ``scale`` (int64 array).

    Method: CKS20 Algorithm 2 (with Algorithm 1 for every Bernoulli(exp(-γ))),
    run for all elements at once. Write ``scale = t/s`` in lowest terms. Each
    element executes exactly the scalar algorithm:

    1. ``U`` uniform in ``[0, t)``, kept with probability ``exp(-U/t)``
       (Alg. 1 with ``γ = U/t ≤ 1``), else redrawn;
    2. ``V`` = number of Bernoulli(exp(-1)) successes before the first failure;
    3. ``Y = floor((U + t V) / s)``, a fair sign bit ``B``; restart if
       ``B = 1`` and ``Y = 0``, else output ``(1 - 2B) Y``.

    Every random choice is a comparison of an integer drawn uniformly (by
    rejection, no modulo bias) from the CSPRNG with an integer threshold, i.e.
    an exact rational Bernoulli. Batching changes only the *order* in which
    bytes are consumed, not what each element computes: in every round of a
    rejection loop, each still-pending element receives fresh independent
    uniform integers from the same ranges as in the scalar loop, and elements
    that finish keep their result. Elements therefore stay independent, each
    with exactly the law of the scalar algorithm, which CKS20 (Prop. 5 / Alg. 2)
    prove to be ``P[x] = tanh(1/(2t')) exp(-|x|/t')`` with ``t' = t/s``.
    Integer overflow cannot silently occur: intermediate values are checked
    and an exact big-integer fallback handles the astronomically rare cases.
    Scales whose numerator or denominator exceeds 2**31 use the scalar path.

    Cost: 3-9 bytes of randomness per draw depending on the scale (uniform
    integers read only the bits they need); millions of draws per second
    (see ``tests/benchmarks/bench_noise.py``).
    """
    scale = _to_fraction(scale, "scale")
    size = _check_size(size)
    source = source or SYSTEM_RANDOM
    t, s = scale.numerator, scale.denominator
    if t >= _VECTOR_LIMIT or s >= _VECTOR_LIMIT:
        return np.fromiter(
            (_sample_discrete_laplace_ts(t, s, source) for _ in range(size)),
            dtype=np.int64,
            count=size,
        )
    return _discrete_laplace_array_ts(t, s, size, source)


def discrete_gaussian_array(
    sigma_squared: RationalLike, size: int, source: RandomSource | None = None
) -> np.ndarray:
    """``size`` i.i.d. exact discrete Gaussian draws N_Z(0, sigma_squared) (int64 array).

    CKS20 Algorithm 3 batched like :func:`discrete_laplace_array`: candidates
    ``Y`` from the vectorized discrete Laplace with integer scale
    ``t = floor(σ) + 1``, each accepted with probability
    ``exp(-γ)``, ``γ = (|Y| - σ²/t)² / (2σ²) = (|Y| q t - p)² / (2 p q t²)``
    for ``σ² = p/q`` — an exact rational, tested by vectorized Alg. 1 (with
    the ``γ > 1`` decomposition). Rejected elements redraw. When the integers
    would not fit in int64 (huge ``σ²`` or denominators) that batch's tests
    run on Python integers instead; the law is the same either way.
    """
    sigma_squared = _to_fraction(sigma_squared, "sigma_squared")
    size = _check_size(size)
    source = source or SYSTEM_RANDOM
    p, q = sigma_squared.numerator, sigma_squared.denominator
    t = _gaussian_t(sigma_squared)
    if t >= _VECTOR_LIMIT:
        return np.fromiter(
            (sample_discrete_gaussian(sigma_squared, source) for _ in range(size)),
            dtype=np.int64,
            count=size,
        )
    den = 2 * p * q * t * t
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        m = pending.size
        # CKS20 Alg. 3: Y ~ discrete Laplace with scale t.
        y = _discrete_laplace_array_ts(t, 1, m, source)
        abs_y = np.abs(y)
        biggest = max(int(abs_y.max(initial=0)), 1) * q * t + p
        if biggest * biggest <= _INT64_MAX and den <= _INT64_MAX:
            num = (abs_y * (q * t) - p) ** 2
            accept = _bernoulli_exp_array(num, den, source)
        else:
            # CKS20 Alg. 3 acceptance on Python integers (exact, slower).
            accept = np.fromiter(
                (
                    sample_bernoulli_exp(Fraction((int(a) * q * t - p) ** 2, den), source)
                    for a in abs_y
                ),
                dtype=bool,
                count=m,
            )
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


# --------------------------------------------------------------------------
# float helpers (tests, confidence intervals): never used for sampling
# --------------------------------------------------------------------------


def discrete_laplace_pmf(x, scale: RationalLike):
    """``P[X = x] = tanh(1/(2t)) exp(-|x|/t)`` as float (scalar or array)."""
    t = _to_fraction(scale, "scale")
    a = 1.0 / float(t)
    xs = np.abs(np.asarray(x, dtype=np.float64))
    pmf = math.tanh(a / 2.0) * np.exp(-a * xs)
    return float(pmf) if np.ndim(pmf) == 0 else pmf


def discrete_laplace_variance(scale: RationalLike) -> float:
    """Variance ``2 e^{-1/t} / (1 - e^{-1/t})^2`` of the discrete Laplace with scale t."""
    t = _to_fraction(scale, "scale")
    a = 1.0 / float(t)
    return 2.0 * math.exp(-a) / math.expm1(-a) ** 2


def _gaussian_normalizer(sigma2: float) -> float:
    if sigma2 >= 1.0:
        # Poisson summation: sum_y exp(-y^2/2s2) = sqrt(2 pi s2) * sum_k exp(-2 pi^2 s2 k^2).
        tail = sum(2.0 * math.exp(-2.0 * math.pi**2 * sigma2 * k * k) for k in (1, 2, 3))
        return math.sqrt(2.0 * math.pi * sigma2) * (1.0 + tail)
    bound = int(40.0 * math.sqrt(sigma2)) + 2
    ys = np.arange(-bound, bound + 1, dtype=np.float64)
    return float(np.exp(-(ys**2) / (2.0 * sigma2)).sum())


def discrete_gaussian_pmf(x, sigma_squared: RationalLike):
    """``P[X = x] = exp(-x^2/(2σ²)) / Σ_y exp(-y^2/(2σ²))`` as float (scalar or array)."""
    s2 = float(_to_fraction(sigma_squared, "sigma_squared"))
    xs = np.asarray(x, dtype=np.float64)
    pmf = np.exp(-(xs**2) / (2.0 * s2)) / _gaussian_normalizer(s2)
    return float(pmf) if np.ndim(pmf) == 0 else pmf


def discrete_gaussian_variance(sigma_squared: RationalLike) -> float:
    """Variance of N_Z(0, σ²) (slightly below σ²; equal to it up to ~e^{-2π²σ²})."""
    s2 = float(_to_fraction(sigma_squared, "sigma_squared"))
    if s2 >= 1.0:
        # Poisson summation of sum_y y^2 exp(-y^2/2s2), divided by the normalizer.
        ks = range(-3, 4)
        num = sum((1.0 - 4.0 * math.pi**2 * s2 * k * k) * math.exp(-2.0 * math.pi**2 * s2 * k * k) for k in ks)
        den = sum(math.exp(-2.0 * math.pi**2 * s2 * k * k) for k in ks)
        return s2 * num / den
    bound = int(40.0 * math.sqrt(s2)) + 2
    ys = np.arange(-bound, bound + 1, dtype=np.float64)
    w = np.exp(-(ys**2) / (2.0 * s2))
    return float((ys**2 * w).sum() / w.sum())
