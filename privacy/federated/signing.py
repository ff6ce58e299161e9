"""Ed25519 signatures over canonical JSON, contributor pseudonyms, and the log's signed tree heads.

Everything signed is ``canonical_bytes(obj)`` (RFC 8785): a signature covers the JSON value, not
one spelling of it, and any edit of the value (a field, a digit, a key) breaks it. Signatures are
Ed25519 (RFC 8032) through the ``cryptography`` package, 64 raw bytes.

Keys load from raw 32 bytes, 64 hex characters, base64 of the 32 raw bytes, or PEM (PKCS#8 private,
SubjectPublicKeyInfo public); see :func:`load_private_key` and :func:`load_public_key`.

**Key ids and pseudonyms.** ``key_id(public_key)`` is the lowercase SHA-256 hex digest of the raw
32-byte public key. A contributor's pseudonym is its key id (:func:`contributor_pseudonym`): stable,
unlinkable to anything but the key, and checkable by anyone holding the key.

**Signed tree heads.** The transparency log's server signs ``(tree_size, root_hash, timestamp_ms,
key_id)`` with its own Ed25519 key (:func:`sign_tree_head`). The signed object also carries
``kind = "privtel.transparency.tree_head.v1"``, so a tree head signature can never be replayed as
the signature of some other object with the same fields.

**Key rotation.** Each head names the key that signed it (``key_id``) and a verifier holds a *set*
of trusted public keys (:func:`verify_tree_head`), so rotating is:

1. generate the new key; publish its public key to verifiers next to the current one (the trusted
   set now holds both);
2. switch the server's signing key to the new one; every head from now on carries the new key id;
3. heads signed before stay verifiable with the old public key, and a consistency proof from the
   last old-key head to the first new-key head shows the log was only appended to across the switch;
4. keep old public keys in the trusted set while anyone needs to check old heads (public keys are
   not secret). Drop a key from the set only when it is compromised: heads it signed are then
   untrusted, and the server signs a fresh head over the same tree with the new key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privacy.federated.canonical import canonical_bytes

KEY_BYTES = 32
SIGNATURE_BYTES = 64
HASH_BYTES = 32
TREE_HEAD_KIND = "privtel.transparency.tree_head.v1"


class KeyFormatError(ValueError):
    """The key material is not an Ed25519 key in a supported encoding."""


class SignatureError(ValueError):
    """A signature does not verify: forged, over other bytes, by another key, or by an untrusted key."""


class TreeHeadFormatError(ValueError):
    """A serialized tree head is malformed."""


# --- keys ------------------------------------------------------------------------------------------


def load_private_key(material) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, raw 32 bytes, hex, base64 or PEM (PKCS#8, unencrypted)."""
    if isinstance(material, Ed25519PrivateKey):
        return material
    raw = _raw_or_pem(material)
    if isinstance(raw, bytes):
        return Ed25519PrivateKey.from_private_bytes(raw)
    try:
        key = serialization.load_pem_private_key(raw.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"PEM holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(material) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object (a private key gives its public half), raw 32 bytes, hex, base64
    or PEM (SubjectPublicKeyInfo)."""
    if isinstance(material, Ed25519PublicKey):
        return material
    if isinstance(material, Ed25519PrivateKey):
        return material.public_key()
    raw = _raw_or_pem(material)
    if isinstance(raw, bytes):
        try:
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise KeyFormatError(f"not an Ed25519 public key: {exc}") from None
    try:
        key = serialization.load_pem_public_key(raw.encode())
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(f"PEM holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _raw_or_pem(material) -> bytes | str:
    """The raw 32 key bytes, or the PEM text to parse. Hex is tried before base64: 32 bytes are 64 hex characters
    but 43-44 base64 characters, so the two never collide."""
    if isinstance(material, (bytes, bytearray, memoryview)):
        material = bytes(material)
        if len(material) == KEY_BYTES:
            return material
        try:
            material = material.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(f"raw key must be {KEY_BYTES} bytes, got {len(material)}") from None
    if not isinstance(material, str):
        raise KeyFormatError(f"{type(material).__name__} is not key material")
    text = material.strip()
    if text.startswith("-----BEGIN"):
        return text
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                               validate=True)
    except binascii.Error:
        raise KeyFormatError("key is neither hex, base64 nor PEM") from None
    if len(raw) != KEY_BYTES:
        raise KeyFormatError(f"key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def public_key_bytes(public_key) -> bytes:
    """The raw 32-byte encoding of a public key (RFC 8032 §5.1.5)."""
    return load_public_key(public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    """SHA-256 of the raw 32-byte public key, lowercase hex: the id a tree head names its signing key by."""
    return hashlib.sha256(public_key_bytes(public_key)).hexdigest()


def contributor_pseudonym(public_key) -> str:
    """A contributor's pseudonym: SHA-256 of its raw 32-byte Ed25519 public key, lowercase hex (its key id)."""
    return key_id(public_key)


# --- signatures ------------------------------------------------------------------------------------


def sign(private_key, obj) -> bytes:
    """The 64-byte Ed25519 signature over ``canonical_bytes(obj)``."""
    return load_private_key(private_key).sign(canonical_bytes(obj))


def verify(public_key, obj, signature: bytes) -> None:
    """Check an Ed25519 signature over ``canonical_bytes(obj)``; raise :class:`SignatureError` if it does not hold."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"a signature is {SIGNATURE_BYTES} bytes")
    try:
        load_public_key(public_key).verify(bytes(signature), canonical_bytes(obj))
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


# --- signed tree heads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedTreeHead:
    """A transparency log's tree head (RFC 6962 §3.5, in JSON) signed by the log server's key ``key_id``."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes

    def signed_payload(self) -> dict:
        """The JSON object whose canonical bytes the signature covers."""
        return tree_head_payload(self.tree_size, self.root_hash, self.timestamp_ms, self.key_id)

    def to_json(self) -> dict:
        return self.signed_payload() | {"signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data) -> SignedTreeHead:
        """Parse :meth:`to_json` output; raise :class:`TreeHeadFormatError` on anything malformed."""
        if not isinstance(data, dict) or data.get("kind") != TREE_HEAD_KIND:
            raise TreeHeadFormatError(f"not a {TREE_HEAD_KIND} object")
        tree_size, timestamp_ms = data.get("tree_size"), data.get("timestamp_ms")
        if not _is_count(tree_size) or not _is_count(timestamp_ms):
            raise TreeHeadFormatError("tree_size and timestamp_ms must be non-negative integers")
        return cls(tree_size=tree_size, root_hash=_hex_field(data, "root_hash", HASH_BYTES), timestamp_ms=timestamp_ms,
                   key_id=_hex_field(data, "key_id", HASH_BYTES).hex(),
                   signature=_hex_field(data, "signature", SIGNATURE_BYTES))


def tree_head_payload(tree_size: int, root_hash: bytes, timestamp_ms: int, signer_key_id: str) -> dict:
    if not _is_count(tree_size) or not _is_count(timestamp_ms):
        raise ValueError("tree_size and timestamp_ms must be non-negative integers")
    if not isinstance(root_hash, bytes) or len(root_hash) != HASH_BYTES:
        raise ValueError(f"root_hash must be {HASH_BYTES} bytes")
    return {"kind": TREE_HEAD_KIND, "tree_size": tree_size, "root_hash": root_hash.hex(),
            "timestamp_ms": timestamp_ms, "key_id": signer_key_id}


def sign_tree_head(private_key, *, tree_size: int, root_hash: bytes, timestamp_ms: int | None = None) -> SignedTreeHead:
    """Sign the head of a tree of ``tree_size`` leaves with root ``root_hash``; ``timestamp_ms`` defaults to now."""
    key = load_private_key(private_key)
    timestamp_ms = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    signer = key_id(key)
    signature = sign(key, tree_head_payload(tree_size, root_hash, timestamp_ms, signer))
    return SignedTreeHead(tree_size, root_hash, timestamp_ms, signer, signature)


def trusted_key_set(keys: Iterable) -> dict[str, Ed25519PublicKey]:
    """``{key_id: public key}`` for public key materials (anything :func:`load_public_key` reads)."""
    loaded = [load_public_key(material) for material in keys]
    return {key_id(key): key for key in loaded}


def verify_tree_head(head: SignedTreeHead, trusted_keys: Iterable) -> None:
    """Check that a trusted key signed ``head``; raise :class:`SignatureError` if not.

    ``trusted_keys``: public key materials (or the output of :func:`trusted_key_set`): every key the
    log has signed with that the verifier still trusts, so heads from before a rotation still verify.
    """
    trusted = trusted_keys if isinstance(trusted_keys, dict) else trusted_key_set(trusted_keys)
    key = trusted.get(head.key_id)
    if key is None:
        raise SignatureError(f"tree head signed by untrusted key {head.key_id}")
    verify(key, head.signed_payload(), head.signature)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hex_field(data: dict, name: str, length: int) -> bytes:
    value = data.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != length:
        raise TreeHeadFormatError(f"{name} must be {2 * length} hex characters")
    return raw
