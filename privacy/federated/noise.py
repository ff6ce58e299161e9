"""L2 clipping and continuous Gaussian / Laplace noise from a CSPRNG, for the parameters an export shares.

Every draw comes from a :class:`privacy.csprng.RandomSource` (``os.urandom`` by default, invariant 2):
8 bytes per uniform, 53 bits used. Caveat: these are floating-point samplers, so, like every
textbook implementation, they carry the floating-point artefacts Mironov (2012) describes; the
exact integer samplers of :mod:`privacy.noise` are what the central counts use.
"""

from __future__ import annotations

import math

import numpy as np

from privacy.csprng import SYSTEM_RANDOM, RandomSource

_MANTISSA = 2.0 ** -53


def uniform_open(size: int, source: RandomSource | None = None) -> np.ndarray:
    """``size`` uniforms in the open interval (0, 1): (k + 1/2) / 2^53 for k uniform on 53 bits."""
    raw = np.frombuffer((source or SYSTEM_RANDOM).random_bytes(8 * size), dtype="<u8")
    return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * _MANTISSA


def gaussian(size: int, sigma: float, source: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of N(0, sigma²)."""
    pairs = (size + 1) // 2
    u = uniform_open(2 * pairs, source)
    # Box-Muller transform (Box & Muller 1958): two uniforms give two independent standard normals.
    radius = np.sqrt(-2.0 * np.log(u[:pairs]))
    angle = 2.0 * math.pi * u[pairs:]
    return sigma * np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]


def laplace(size: int, scale: float, source: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of Laplace(0, scale)."""
    centred = uniform_open(size, source) - 0.5
    # Inverse CDF of the Laplace distribution: -b·sgn(u)·ln(1 - 2|u|) for u uniform on (-1/2, 1/2).
    return -scale * np.sign(centred) * np.log1p(-2.0 * np.abs(centred))


def clip_l2(vector: np.ndarray, bound: float) -> np.ndarray:
    """``vector`` scaled down to L2 norm ``bound`` if longer (Abadi et al. 2016, per-example clipping)."""
    norm = float(np.sqrt(np.dot(vector, vector)))
    return vector if norm <= bound else vector * (bound / norm)
