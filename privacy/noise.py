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

from privacy.csprng import SYSTEM_RANDOM, RandomSource, randbelow

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


# One uniform word is rejected (and redrawn) with probability below 2**-_SLACK_BITS.
_SLACK_BITS = 8
# At most this many rounds of Alg. 1 are decided by one word: later rounds are rarely
# reached, so deciding them up front would cost more comparisons than it saves words.
_ROUNDS_PER_WORD = 6


def _word_dtype(bound: int) -> np.dtype:
    """Little-endian unsigned words with room for ``bound`` and the slack (callers keep bound <= 2**56)."""
    return np.dtype("<u4") if bound <= 2 ** (32 - _SLACK_BITS) else np.dtype("<u8")


def _uniform_words(bound: int, size: int, source: RandomSource) -> tuple[np.ndarray, int]:
    """(X, q): ``size`` words uniform on ``[0, q*bound)``, with ``q = floor((2**w - 1) / bound)``.

    Rejection sampling on w-bit words from the source: words ``>= q*bound``
    (probability ``< bound / 2**w <= 2**-8``) are redrawn, so there is no modulo
    bias. Then ``X < q*a`` has probability exactly ``a / bound`` for every integer
    ``0 <= a <= bound``, and ``X // q`` is uniform on ``[0, bound)``.
    """
    dtype = _word_dtype(bound)
    q = (2 ** (8 * dtype.itemsize) - 1) // bound
    words = np.frombuffer(source.random_bytes(size * dtype.itemsize), dtype=dtype)
    rejected = np.flatnonzero(words >= q * bound)
    if rejected.size:
        words = words.copy()
        words[rejected] = _uniform_words(bound, rejected.size, source)[0]
    return words, q


def _fair_bits(size: int, source: RandomSource) -> np.ndarray:
    """``size`` independent fair coins (bool): every bit of the source is one."""
    raw = np.frombuffer(source.random_bytes((size + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=size).astype(bool)


def _block_end(den: int, first: int) -> tuple[int, int]:
    """(last, bound): the rounds ``first..last`` that one word decides and
    ``bound = den**(last-first+1) * first*(first+1)*...*last``, which fits the word with slack."""
    cap = 2 ** (8 * _word_dtype(den * first).itemsize - _SLACK_BITS)
    last, bound = first, den * first
    while last - first + 1 < _ROUNDS_PER_WORD and bound * den * (last + 1) <= cap:
        last += 1
        bound *= den * last
    return last, bound


def _continue_thresholds(num, den: int, first: int, last: int, q: int):
    """For rounds j = first..last, T_j = q*num^(j-first+1)*den^(last-j)*(j+1)*...*last.

    With X uniform on [0, q*bound) (:func:`_block_end`), P[X < T_j] = prod_{k=first..j} (num/den)/k:
    the chance that Alg. 1 continues through rounds first..j (CKS20 Alg. 1: round k is Bernoulli(γ/k)).
    T_j <= q*bound whenever num <= den, and T_{j+1} = T_j * γ/(j+1) <= T_j.
    """
    power = 1
    for j in range(first, last + 1):
        power = power * num
        yield power * (q * den ** (last - j) * math.prod(range(j + 1, last + 1)))


def _rounds_continued(num: int, den: int, first: int, source: RandomSource) -> int:
    """CKS20 Alg. 1 from round ``first`` on Python integers: how many Bernoulli(γ/k) succeed in a row."""
    k = first
    while _bernoulli_rational(num, den * k, source):
        k += 1
    return k - first


def _alg1_block(num, den: int, first: int, size: int, source: RandomSource):
    """Rounds ``first..last`` of CKS20 Alg. 1 for γ = num/den, one uniform word X per element.

    The element continues through round j iff X < T_j (:func:`_continue_thresholds`).
    Returns (odd: it continued through an odd number of these rounds,
    going: it continued through all of them, last + 1: the next round).
    """
    if den * first > 2 ** (64 - _SLACK_BITS):  # astronomically late round or huge den: exact Python integers
        counts = np.fromiter((_rounds_continued(int(n), den, first, source) for n in np.broadcast_to(num, size)),
                             dtype=np.int64, count=size)
        return counts % 2 == 1, np.zeros(size, dtype=bool), first
    last, bound = _block_end(den, first)
    x, q = _uniform_words(bound, size, source)
    num = num if isinstance(num, int) else num.astype(x.dtype)  # 0 <= num <= den: every threshold fits the word
    odd = np.zeros(size, dtype=bool)
    for threshold in _continue_thresholds(num, den, first, last, q):
        going = x < threshold
        odd ^= going
    return odd, going, last + 1


def _bernoulli_exp_le1(num, den: int, size: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 1 for γ_i = num_i / den in [0, 1]: ``size`` draws of Bernoulli(exp(-γ_i)).

    ``num`` is an int (one γ for all) or an integer array, ``0 <= num_i <= den``.
    Alg. 1 draws Bernoulli(γ/k) for k = 1, 2, ... until round K fails and returns
    [K odd]; its output depends on K alone, and P[K > j] = γ^j / j!. Here one
    uniform word decides a block of rounds (:func:`_alg1_block`): the events
    "continues through round j" have probabilities prod_{k<=j} γ/k and are nested
    (the thresholds shrink with j), exactly as the rounds of Alg. 1. Elements still
    going after a block run the next block on a fresh word. So P[K > j] = γ^j / j!
    for every j, and each output is Bernoulli(exp(-γ_i)) exactly, independently.
    """
    odd, going, first = _alg1_block(num, den, 1, size, source)
    pending = np.flatnonzero(going)
    while pending.size:
        still_num = num if isinstance(num, int) else num[pending]
        more, going, first = _alg1_block(still_num, den, first, pending.size, source)
        odd[pending] ^= more
        pending = pending[going]
    return ~odd  # K - 1 = rounds continued; K odd iff that is even


def _bernoulli_exp_array(num: np.ndarray, den: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 1 for any gamma_i = num_i / den >= 0 (bool array)."""
    whole = num // den
    frac = num - whole * den
    alive = np.ones(num.size, dtype=bool)
    # CKS20 Alg. 1, gamma > 1: floor(gamma_i) Bernoulli(exp(-1)) draws must all be 1.
    idx = np.flatnonzero(whole > 0)
    left = whole[idx]
    while idx.size:
        ok = _bernoulli_exp_le1(1, 1, idx.size, source)
        alive[idx[~ok]] = False
        left = left - 1
        keep = ok & (left > 0)
        idx, left = idx[keep], left[keep]
    # ... then one Bernoulli(exp(-(gamma_i - floor(gamma_i)))).
    idx = np.flatnonzero(alive)
    alive[idx] = _bernoulli_exp_le1(frac[idx], den, idx.size, source)
    return alive


def _truncated_geometric(t: int, size: int, source: RandomSource) -> np.ndarray:
    """``size`` draws of CKS20 Alg. 2's U: uniform on [0, t), kept with probability exp(-U/t) (int64).

    Candidates are i.i.d. and each is kept or dropped independently, so the kept
    ones, in order, are i.i.d. with P[U = u] proportional to exp(-u/t); a batch
    holds ~1.6x the candidates needed (at least 1 - 1/e of them are kept).
    """
    kept = [np.zeros(0, dtype=np.int64)]
    while size:
        words, q = _uniform_words(t, size * 8 // 5 + 16, source)
        candidates = words // words.dtype.type(q)
        batch = candidates[np.flatnonzero(_bernoulli_exp_le1(candidates, t, candidates.size, source))[:size]]
        kept.append(batch)
        size -= batch.size
    return np.concatenate(kept).astype(np.int64)


def _geometric_exp1(size: int, source: RandomSource) -> np.ndarray:
    """``size`` draws of CKS20 Alg. 2's V: Bernoulli(exp(-1)) successes before the first failure (int64).

    The runs are read off one sequential stream of i.i.d. Bernoulli(exp(-1))
    trials, drawn in batches of ~1.6x the expected need: V_i is the number of
    successes between failures i-1 and i. A run still open at the end of a batch
    carries on into the next one, so the runs are exactly the i.i.d. geometric
    counts of the scalar loop.
    """
    runs, carry = [np.zeros(0, dtype=np.int64)], 0
    while size:
        trials = _bernoulli_exp_le1(1, 1, size * 8 // 5 + 16, source)
        failures = np.flatnonzero(~trials)[:size]
        if failures.size:
            batch = np.diff(failures, prepend=-1) - 1
            batch[0] += carry
            runs.append(batch)
            size -= failures.size
            carry = trials.size - 1 - int(failures[-1])
        else:
            carry += trials.size
    return np.concatenate(runs)


def _laplace_candidates(t: int, s: int, size: int, source: RandomSource) -> tuple[np.ndarray, np.ndarray]:
    """One pass of CKS20 Alg. 2 for ``size`` elements: (signed draws, which of them Alg. 2 rejects)."""
    u = _truncated_geometric(t, size, source)
    v = _geometric_exp1(size, source)
    if int(v.max(initial=0)) > (2**62) // t:  # t*V + U could pass 2**63 (probability < exp(-2**31)): Python ints
        y = np.array([(int(a) + t * int(b)) // s for a, b in zip(u, v)], dtype=object)
        if any(abs(val) > _INT64_MAX for val in y):
            raise OverflowError("discrete Laplace draw does not fit in int64")
        y = y.astype(np.int64)
    else:
        # CKS20 Alg. 2: X = U + t*V is geometric(1 - exp(-1/t)); Y = floor(X/s).
        y = (u + t * v) // s
    # CKS20 Alg. 2: random sign; (negative, 0) is rejected, so that 0 is not counted twice.
    negative = _fair_bits(size, source)
    sign = negative.astype(np.int64)
    return (y ^ -sign) + sign, negative & (y == 0)  # two's complement: -y == (y ^ -1) + 1


def _discrete_laplace_array_ts(t: int, s: int, size: int, source: RandomSource) -> np.ndarray:
    """Vectorized CKS20 Alg. 2, P[x] proportional to exp(-|x| s/t); needs t, s < 2**31."""
    out, rejected = _laplace_candidates(t, s, size, source)
    redo = np.flatnonzero(rejected)
    while redo.size:  # Alg. 2 restarts a rejected element from scratch
        out[redo], rejected = _laplace_candidates(t, s, redo.size, source)
        redo = redo[rejected]
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
    an exact rational Bernoulli. Batching changes only how bytes are consumed,
    not the law of what each element computes:

    * Alg. 1 is decided a block of rounds at a time, one uniform word per
      element and block (:func:`_bernoulli_exp_le1`); its rounds' joint law,
      hence its output's, is exactly that of one Bernoulli(γ/k) per round;
    * ``U``: candidates are i.i.d. and kept independently, so the kept ones,
      taken in order, are i.i.d. with the law of step 1;
    * ``V``: the runs of successes are read off one sequential stream of
      i.i.d. Bernoulli(exp(-1)) trials, a run carrying on across batches;
    * rejected elements (step 3) restart from scratch with fresh randomness.

    Elements therefore stay independent, each with exactly the law of the
    scalar algorithm, which CKS20 (Prop. 5 / Alg. 2) prove to be
    ``P[x] = tanh(1/(2t')) exp(-|x|/t')`` with ``t' = t/s``.
    Integer overflow cannot silently occur: intermediate values are checked
    and an exact big-integer fallback handles the astronomically rare cases.
    Scales whose numerator or denominator exceeds 2**31 use the scalar path.

    Cost: about 20 bytes of randomness per draw at scale 100 (mostly 32-bit
    words); millions of draws per second (see ``tests/benchmarks/bench_noise.py``).
    The byte consumption is a deterministic function of the bytes read, so a
    seeded :class:`privacy.drbg.DRBG` replays a release's noise exactly.
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
