"""Ed25519 over canonical JSON, key loading, pseudonyms, signed tree heads and key rotation. Pure."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privacy.federated.canonical import canonical_bytes, loads
from privacy.federated.signing import (
    TREE_HEAD_KIND,
    KeyFormatError,
    SignatureError,
    SignedTreeHead,
    TreeHeadFormatError,
    contributor_pseudonym,
    key_id,
    load_private_key,
    load_public_key,
    public_key_bytes,
    sign,
    sign_tree_head,
    verify,
    verify_tree_head,
)

EXPORT = {"manifest": {"contributor": "c1", "segments": ["weights"], "epsilon": 0.5},
          "weights": [0.25, -1.5, 3e-7], "note": "naïve €"}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


# --- key loading -----------------------------------------------------------------------------------


def test_private_key_loads_from_every_encoding(key):
    raw = raw_private(key)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    encodings = [key, raw, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("="), pem, pem.decode(), f"  {raw.hex()}\n"]
    expected = public_key_bytes(key)
    for material in encodings:
        assert public_key_bytes(load_private_key(material)) == expected, material


def test_public_key_loads_from_every_encoding(key):
    public = key.public_key()
    raw = public_key_bytes(public)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for material in [public, key, raw, raw.hex(), base64.b64encode(raw), base64.b64encode(raw).decode(), pem,
                     pem.decode()]:
        assert public_key_bytes(load_public_key(material)) == raw, material


@pytest.mark.parametrize("material", [b"\x00" * 31, "ab" * 31, "ab" * 33, "not a key at all!", 42, None,
                                      base64.b64encode(b"\x01" * 48).decode(),
                                      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"])
def test_malformed_private_key_material_is_refused(material):
    with pytest.raises(KeyFormatError):
        load_private_key(material)


def test_a_pem_key_of_another_algorithm_is_refused():
    other = ec.generate_private_key(ec.SECP256R1())
    private_pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    public_pem = other.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyFormatError, match="not an Ed25519"):
        load_private_key(private_pem)
    with pytest.raises(KeyFormatError, match="not an Ed25519"):
        load_public_key(public_pem)


def test_pseudonym_and_key_id_are_sha256_of_the_raw_public_key(key):
    expected = hashlib.sha256(public_key_bytes(key)).hexdigest()
    assert contributor_pseudonym(key.public_key()) == key_id(key) == expected
    assert contributor_pseudonym(public_key_bytes(key).hex()) == expected
    assert contributor_pseudonym(Ed25519PrivateKey.generate().public_key()) != expected


# --- signatures over canonical JSON -----------------------------------------------------------------


def test_signature_covers_the_value_not_its_spelling(key):
    signature = sign(key, EXPORT)
    assert len(signature) == 64
    verify(key.public_key(), EXPORT, signature)
    respelled = json.loads(json.dumps(EXPORT, indent=4, ensure_ascii=True, sort_keys=False))
    verify(key.public_key(), dict(reversed(list(respelled.items()))), signature)
    # the signature is exactly Ed25519 over the canonical bytes
    key.public_key().verify(signature, canonical_bytes(EXPORT))


def test_forged_signatures_are_rejected(key):
    signature = sign(key, EXPORT)
    forgeries = [bytes(64), b"\xff" * 64, signature[:-1], signature + b"\x00", signature[::-1], "0" * 128, None]
    forgeries += [signature[:i] + bytes([signature[i] ^ 1]) + signature[i + 1:] for i in range(0, 64, 7)]
    for forged in forgeries:
        with pytest.raises(SignatureError):
            verify(key.public_key(), EXPORT, forged)


def test_edited_canonical_bytes_are_rejected(key):
    signature = sign(key, EXPORT)
    signed = canonical_bytes(EXPORT)
    edits = [signed.replace(b"0.5", b"0.6"), signed.replace(b"0.25", b"0.26"), signed.replace(b'"c1"', b'"c2"'),
             signed.replace(b"-1.5", b"1.5"), signed.replace(b"3e-7", b"3e-8"),
             signed.replace(b'"weights"]', b'"weights","priors"]'), signed[:-1] + b',"extra":1}']
    for edited in edits:
        assert edited != signed
        with pytest.raises(SignatureError):
            verify(key.public_key(), loads(edited), signature)


def test_a_signature_by_another_key_is_rejected(key):
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError):
        verify(other.public_key(), EXPORT, sign(key, EXPORT))


# --- signed tree heads -----------------------------------------------------------------------------


ROOT = hashlib.sha256(b"some root").digest()


def test_tree_head_round_trips_through_json_and_verifies(key):
    head = sign_tree_head(key, tree_size=12, root_hash=ROOT, timestamp_ms=1_700_000_000_000)
    assert head.key_id == key_id(key)
    wire = json.loads(json.dumps(head.to_json()))
    assert wire["kind"] == TREE_HEAD_KIND and wire["root_hash"] == ROOT.hex() and wire["tree_size"] == 12
    parsed = SignedTreeHead.from_json(wire)
    assert parsed == head
    verify_tree_head(parsed, [key.public_key()])


@pytest.mark.parametrize(("field", "value"), [("tree_size", 13), ("tree_size", 11), ("timestamp_ms", 1_700_000_000_001),
                                              ("root_hash", hashlib.sha256(b"other").digest())])
def test_editing_any_signed_field_of_a_head_breaks_it(key, field, value):
    head = sign_tree_head(key, tree_size=12, root_hash=ROOT, timestamp_ms=1_700_000_000_000)
    edited = SignedTreeHead(**{**head.__dict__, field: value})
    with pytest.raises(SignatureError):
        verify_tree_head(edited, [key.public_key()])


def test_a_head_signature_is_not_a_signature_over_the_bare_fields(key):
    """Domain separation: ``kind`` is signed, so a signature over the same fields without it does not verify."""
    bare = {"tree_size": 5, "root_hash": ROOT.hex(), "timestamp_ms": 1, "key_id": key_id(key)}
    forged = SignedTreeHead(5, ROOT, 1, key_id(key), sign(key, bare))
    with pytest.raises(SignatureError):
        verify_tree_head(forged, [key.public_key()])


def test_key_rotation(key):
    old, new = key, Ed25519PrivateKey.generate()
    old_head = sign_tree_head(old, tree_size=10, root_hash=ROOT, timestamp_ms=1)
    new_head = sign_tree_head(new, tree_size=20, root_hash=ROOT, timestamp_ms=2)
    assert old_head.key_id != new_head.key_id
    both = [old.public_key(), new.public_key()]
    verify_tree_head(old_head, both)  # heads from before the rotation still verify
    verify_tree_head(new_head, both)
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_tree_head(old_head, [new.public_key()])  # once the old key is dropped, its heads are untrusted
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_tree_head(new_head, [old.public_key()])
    # a head signed by the old key but claiming the new key id does not verify either
    relabelled = SignedTreeHead(10, ROOT, 1, new_head.key_id, old_head.signature)
    with pytest.raises(SignatureError):
        verify_tree_head(relabelled, both)
    attacker = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="untrusted key"):
        verify_tree_head(sign_tree_head(attacker, tree_size=10, root_hash=ROOT), both)


@pytest.mark.parametrize("edit", [
    {"kind": "something.else"}, {"tree_size": -1}, {"tree_size": True}, {"tree_size": "12"}, {"timestamp_ms": 1.5},
    {"root_hash": "ab" * 31}, {"root_hash": "zz" * 32}, {"signature": "00" * 63}, {"key_id": None},
])
def test_malformed_heads_are_refused(key, edit):
    wire = sign_tree_head(key, tree_size=12, root_hash=ROOT).to_json() | edit
    with pytest.raises(TreeHeadFormatError):
        SignedTreeHead.from_json(wire)


def test_tree_head_inputs_are_validated(key):
    with pytest.raises(ValueError):
        sign_tree_head(key, tree_size=-1, root_hash=ROOT)
    with pytest.raises(ValueError):
        sign_tree_head(key, tree_size=1, root_hash=ROOT[:31])
