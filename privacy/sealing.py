"""Seal a release's noise seed for the audit trail (AES-256-GCM, ``cryptography``).

The associated data binds a sealed seed to its release id, so a sealed seed
cannot be moved onto another release.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def parse_key(hex_key: str) -> bytes:
    key = bytes.fromhex(hex_key.strip())
    if len(key) != 32:
        raise ValueError("the audit key must be 32 bytes, written as 64 hex digits")
    return key


def seal(key: bytes, seed: bytes, associated_data: bytes) -> bytes:
    """nonce || ciphertext-with-tag; the nonce is random (NIST SP 800-38D, Sec. 8.2.2)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, seed, associated_data)


def unseal(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The seed; raises ``cryptography.exceptions.InvalidTag`` if the key or binding is wrong."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
