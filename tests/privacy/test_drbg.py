"""Tests for the auditable DRBG (privacy.drbg)."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.drbg import DRBG, MAX_BYTES, SEED_BYTES, new_seed
from privacy.noise import (
    discrete_gaussian_array,
    discrete_laplace_array,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)

# RFC 8439, Appendix A.1, ChaCha20 block function test vector #1:
# all-zero key, all-zero nonce, block counter 0.
RFC8439_ZERO_KEY_BLOCK0 = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
)


def _release(source) -> tuple:
    """A fixed call pattern like a query release: vectors, then scalars."""
    return (
        discrete_laplace_array("3/2", 5_000, source).tolist(),
        discrete_gaussian_array(7, 1_000, source).tolist(),
        [sample_discrete_laplace(10, source) for _ in range(50)],
        [sample_discrete_gaussian("1/2", source) for _ in range(50)],
    )


def test_new_seed_is_fresh_32_bytes():
    seeds = {new_seed() for _ in range(100)}
    assert len(seeds) == 100
    assert all(isinstance(s, bytes) and len(s) == SEED_BYTES == 32 for s in seeds)


def test_known_answer_is_plain_chacha20():
    assert DRBG(bytes(32)).random_bytes(64) == RFC8439_ZERO_KEY_BLOCK0


def test_stream_position_carries_across_calls():
    seed = new_seed()
    whole = DRBG(seed).random_bytes(1000)
    drbg = DRBG(seed)
    parts = b"".join(drbg.random_bytes(n) for n in (0, 1, 63, 64, 65, 7, 800))
    assert parts == whole
    assert drbg.position == 1000


def test_same_seed_same_samples():
    seed = new_seed()
    assert _release(DRBG(seed)) == _release(DRBG(seed))


def test_different_seed_different_samples():
    assert _release(DRBG(new_seed())) != _release(DRBG(new_seed()))


def test_call_pattern_reproducibility():
    seed = new_seed()
    a = DRBG(seed)
    first = discrete_laplace_array(10, 1000, a)
    second = discrete_laplace_array(10, 1000, a)
    # Replaying the same sequence of calls replays the same noise, call by call.
    b = DRBG(seed)
    assert np.array_equal(discrete_laplace_array(10, 1000, b), first)
    assert np.array_equal(discrete_laplace_array(10, 1000, b), second)
    assert a.position == b.position
    # A different call pattern consumes the stream differently.
    c = DRBG(seed)
    assert not np.array_equal(discrete_laplace_array(10, 2000, c)[1000:], second)


def test_seed_validation_and_secret_repr():
    with pytest.raises(ValueError):
        DRBG(b"short")
    with pytest.raises(TypeError):
        DRBG("0" * 32)
    seed = new_seed()
    text = repr(DRBG(seed))
    assert seed.hex() not in text and "secret" in text
    with pytest.raises(ValueError):
        DRBG(seed).random_bytes(-1)


def test_output_limit():
    drbg = DRBG(new_seed())
    drbg._position = MAX_BYTES - 10  # noqa: SLF001 - simulate a long-lived generator
    drbg.random_bytes(10)
    with pytest.raises(OverflowError):
        drbg.random_bytes(1)


def test_output_looks_uniform():
    data = np.frombuffer(DRBG(new_seed()).random_bytes(1 << 20), dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    expected = data.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    from scipy import stats

    assert stats.chi2.sf(chi2, 255) > 1e-4
