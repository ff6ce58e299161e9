"""``audit_log``: stored entries checked against signed tree heads. Edits, reorderings, insertions,
removals and truncations inside a signed prefix are caught, and so are forged or untrusted heads. Pure."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privacy.federated.canonical import canonical_bytes
from privacy.federated.signing import SignedTreeHead, sign_tree_head
from privacy.federated.transparency import MerkleLog, audit_log, verify_consistency

SERVER_KEY = Ed25519PrivateKey.generate()
ENTRIES = [canonical_bytes({"kind": "export", "index": index, "pseudonym": f"{index:064x}"}) for index in range(40)]
HEAD_SIZES = (0, 1, 7, 16, 25, 40)


def signed_heads(entries=ENTRIES, sizes=HEAD_SIZES, key=SERVER_KEY) -> list[SignedTreeHead]:
    merkle_log = MerkleLog()
    for entry in entries:
        merkle_log.append(entry)
    return [sign_tree_head(key, tree_size=size, root_hash=merkle_log.root(size), timestamp_ms=1_000 + size)
            for size in sizes]


HEADS = signed_heads()
TRUSTED = [SERVER_KEY.public_key()]


def test_an_intact_log_passes():
    report = audit_log(ENTRIES, HEADS, TRUSTED)
    assert report.ok, report.problems
    assert (report.entries, report.heads_checked, report.verified_size, report.unsigned_entries) == (40, 6, 40, 0)
    assert audit_log(iter(ENTRIES), reversed(HEADS), TRUSTED).ok  # streamed entries, heads in any order


def test_entries_after_the_newest_head_are_reported_unsigned_but_pass():
    report = audit_log(ENTRIES + [b"later"], HEADS, TRUSTED)
    assert report.ok and report.unsigned_entries == 1 and report.verified_size == 40


@pytest.mark.parametrize("index", range(40))
def test_any_edited_entry_is_caught_and_located_between_heads(index):
    edited = list(ENTRIES)
    edited[index] = edited[index].replace(b'"kind":"export"', b'"kind":"exporT"')
    report = audit_log(edited, HEADS, TRUSTED)
    assert not report.ok
    first_bad = min(size for size in HEAD_SIZES if size > index)
    last_good = max(size for size in HEAD_SIZES if size <= index)
    assert report.verified_size == last_good
    assert f"indices {last_good}..{first_bad - 1}" in report.problems[0]


@pytest.mark.parametrize(("first", "second"), [(0, 1), (3, 30), (38, 39), (16, 17)])
def test_reordered_entries_are_caught(first, second):
    reordered = list(ENTRIES)
    reordered[first], reordered[second] = reordered[second], reordered[first]
    assert not audit_log(reordered, HEADS, TRUSTED).ok


@pytest.mark.parametrize("kept", [0, 1, 15, 24, 39])
def test_truncation_is_caught(kept):
    """The spec's hash chain had no signed head, so cutting its tail went unseen. Here a head vouches for the size."""
    report = audit_log(ENTRIES[:kept], HEADS, TRUSTED)
    assert not report.ok
    assert any("truncated" in problem for problem in report.problems)
    assert report.verified_size == max(size for size in HEAD_SIZES if size <= kept)


def test_truncating_and_refilling_to_the_same_length_is_caught():
    refilled = ENTRIES[:30] + [canonical_bytes({"kind": "export", "index": i, "forged": True}) for i in range(30, 40)]
    report = audit_log(refilled, HEADS, TRUSTED)
    assert not report.ok and report.verified_size == 25


@pytest.mark.parametrize("change", ["insert", "delete", "duplicate"])
def test_insertions_and_deletions_are_caught(change):
    changed = list(ENTRIES)
    if change == "insert":
        changed.insert(10, b"smuggled")
    elif change == "delete":
        del changed[10]
    else:
        changed.insert(10, changed[10])
    assert not audit_log(changed, HEADS, TRUSTED).ok


def test_forged_and_untrusted_heads_are_problems():
    attacker = Ed25519PrivateKey.generate()
    truncated = ENTRIES[:20]
    forged = signed_heads(truncated, (20,), key=attacker)  # heads re-signed for the truncated log by another key
    report = audit_log(truncated, forged, TRUSTED)
    assert not report.ok and report.heads_checked == 0
    assert any("untrusted key" in problem for problem in report.problems)
    assert any("no valid signed tree head" in problem for problem in report.problems)
    tampered = SignedTreeHead(**{**HEADS[-1].__dict__, "tree_size": 20, "root_hash": forged[0].root_hash})
    report = audit_log(truncated, HEADS[:4] + [tampered], TRUSTED)
    assert not report.ok and any("does not verify" in problem for problem in report.problems)


def test_a_log_with_entries_and_no_head_fails_and_an_empty_log_passes():
    assert not audit_log(ENTRIES, [], TRUSTED).ok
    assert audit_log([], [], TRUSTED).ok
    assert audit_log([], HEADS[:1], TRUSTED).ok  # the size-0 head: the empty tree's root


def test_heads_across_a_key_rotation():
    new_key = Ed25519PrivateKey.generate()
    old_heads = signed_heads(sizes=(16, 25))
    new_heads = signed_heads(sizes=(40,), key=new_key)
    both = [SERVER_KEY.public_key(), new_key.public_key()]
    assert audit_log(ENTRIES, old_heads + new_heads, both).ok
    # the consistency proof bridges the last old-key head and the first new-key head
    merkle_log = MerkleLog()
    for entry in ENTRIES:
        merkle_log.append(entry)
    assert verify_consistency(25, 40, old_heads[-1].root_hash, new_heads[0].root_hash,
                              merkle_log.consistency_proof(25, 40))
    report = audit_log(ENTRIES, old_heads + new_heads, [new_key.public_key()])  # old key dropped
    assert not report.ok and report.heads_checked == 1
