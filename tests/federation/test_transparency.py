"""The RFC 6962 / RFC 9162 Merkle log: reference vectors, every proof for sizes 1..64 against a naive
implementation written straight from the RFC's recursive definitions, tampering, and proof costs. Pure."""

from __future__ import annotations

import hashlib
import random

import pytest

from privacy.federated import transparency
from privacy.federated.transparency import (
    EMPTY_ROOT,
    MerkleLog,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference tree (RFC 6962 reference implementation test data).
CT_ENTRIES = [bytes.fromhex(text) for text in
              ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {  # (index, size) -> path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (0, 1): [],
}
CT_CONSISTENCY = {  # (old size, new size) -> proof
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (3, 8): ["0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
             "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (1, 1): [],
}


# --- a naive reference, straight from RFC 9162 §2.1 ------------------------------------------------


def naive_split(n: int) -> int:
    k = 1
    while 2 * k < n:
        k *= 2
    return k


def naive_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = naive_split(len(leaves))
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = naive_split(len(leaves))
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_mth(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    if m == len(leaves):
        return [] if complete else [naive_mth(leaves)]
    k = naive_split(len(leaves))
    if m <= k:
        return naive_subproof(m, leaves[:k], complete) + [naive_mth(leaves[k:])]
    return naive_subproof(m - k, leaves[k:], False) + [naive_mth(leaves[:k])]


def naive_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    return [] if m == 0 else naive_subproof(m, leaves, True)


MAX_SIZE = 64
LEAVES = [hashlib.sha256(b"\x00" + f"entry {i}".encode()).digest() for i in range(MAX_SIZE)]
NAIVE_ROOTS = [naive_mth(LEAVES[:size]) for size in range(MAX_SIZE + 1)]


@pytest.fixture(scope="module")
def log() -> MerkleLog:
    merkle_log = MerkleLog()
    for index in range(MAX_SIZE):
        assert merkle_log.append(f"entry {index}".encode()) == index
    return merkle_log


def flip_bit(value: bytes, bit: int = 0) -> bytes:
    return value[:bit // 8] + bytes([value[bit // 8] ^ (1 << bit % 8)]) + value[bit // 8 + 1:]


# --- reference vectors -----------------------------------------------------------------------------


def test_empty_tree_hash_is_sha256_of_the_empty_string():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleLog().root() == EMPTY_ROOT


def test_certificate_transparency_reference_vectors():
    ct_log = MerkleLog()
    for size, entry in enumerate(CT_ENTRIES, start=1):
        ct_log.append(entry)
        assert ct_log.root().hex() == CT_ROOTS[size - 1]
    for (index, size), path in CT_INCLUSION.items():
        assert [node.hex() for node in ct_log.inclusion_proof(index, size)] == path
        assert verify_inclusion(leaf_hash(CT_ENTRIES[index]), index, size, [bytes.fromhex(h) for h in path],
                                bytes.fromhex(CT_ROOTS[size - 1]))
    for (old_size, new_size), proof in CT_CONSISTENCY.items():
        assert [node.hex() for node in ct_log.consistency_proof(old_size, new_size)] == proof
        assert verify_consistency(old_size, new_size, bytes.fromhex(CT_ROOTS[old_size - 1]),
                                  bytes.fromhex(CT_ROOTS[new_size - 1]), [bytes.fromhex(h) for h in proof])


# --- every size, index and old size up to 64 against the naive reference ---------------------------


def test_roots_match_the_naive_tree_hash_at_every_size(log):
    assert [log.root(size) for size in range(MAX_SIZE + 1)] == NAIVE_ROOTS
    assert [log.leaf_hash(index) for index in range(MAX_SIZE)] == LEAVES
    rebuilt = MerkleLog(LEAVES)  # from stored leaf hashes
    assert rebuilt.root() == NAIVE_ROOTS[-1] and len(rebuilt) == MAX_SIZE


def test_every_inclusion_proof_matches_the_reference_and_verifies_only_where_it_should(log):
    proofs = {(index, size): log.inclusion_proof(index, size)
              for size in range(1, MAX_SIZE + 1) for index in range(size)}
    for (index, size), proof in proofs.items():
        assert proof == naive_path(index, LEAVES[:size]), (index, size)
        root = NAIVE_ROOTS[size]
        assert verify_inclusion(LEAVES[index], index, size, proof, root)
        # the same proof for another index of the same tree: only ever the right one
        for other in range(size):
            if other != index:
                assert not verify_inclusion(LEAVES[index], other, size, proof, root), (index, other, size)
                assert not verify_inclusion(LEAVES[other], other, size, proof, root), (index, other, size)
        # against the (real) root of any other tree size: verifies exactly when it is that tree's proof
        for other_size in range(index + 1, MAX_SIZE + 1):
            if other_size != size:
                expected = proofs[(index, other_size)] == proof
                assert verify_inclusion(LEAVES[index], index, other_size, proof, NAIVE_ROOTS[other_size]) == expected


def test_tampered_inclusion_proofs_and_wrong_roots_fail(log):
    for size in range(1, MAX_SIZE + 1):
        root = NAIVE_ROOTS[size]
        for index in range(size):
            leaf, proof = LEAVES[index], log.inclusion_proof(index, size)
            tampered = [proof[:i] + [flip_bit(node, 8 * i + 3)] + proof[i + 1:] for i, node in enumerate(proof)]
            tampered += [proof + [root], proof + [EMPTY_ROOT], [root] + proof, proof + [leaf]]
            if proof:
                tampered += [proof[:-1], proof[1:]]
            if len(proof) > 1:
                tampered.append(proof[::-1])
            for bad in tampered:
                assert not verify_inclusion(leaf, index, size, bad, root), (index, size)
            assert not verify_inclusion(flip_bit(leaf), index, size, proof, root)
            # a path longer than the tree is deep never verifies, even against the root that the longer path yields
            extra = LEAVES[(index + 1) % MAX_SIZE]
            for longer_root in (transparency.node_hash(extra, root), transparency.node_hash(root, extra)):
                assert not verify_inclusion(leaf, index, size, proof + [extra], longer_root)
            assert not verify_inclusion(leaf, index, size, proof, flip_bit(root, 255))
            assert not verify_inclusion(leaf, index, size, proof, EMPTY_ROOT)


def test_every_consistency_proof_matches_the_reference_and_verifies_only_where_it_should(log):
    for new_size in range(0, MAX_SIZE + 1):
        proofs = {old_size: log.consistency_proof(old_size, new_size) for old_size in range(new_size + 1)}
        for old_size, proof in proofs.items():
            assert proof == naive_proof(old_size, LEAVES[:new_size]), (old_size, new_size)
            assert verify_consistency(old_size, new_size, NAIVE_ROOTS[old_size], NAIVE_ROOTS[new_size], proof)
            for other_old in range(new_size + 1):
                if other_old != old_size:
                    expected = proofs[other_old] == proof
                    assert verify_consistency(other_old, new_size, NAIVE_ROOTS[other_old], NAIVE_ROOTS[new_size],
                                              proof) == expected, (old_size, other_old, new_size)


def test_tampered_consistency_proofs_and_wrong_roots_fail(log):
    for new_size in range(1, MAX_SIZE + 1):
        new_root = NAIVE_ROOTS[new_size]
        for old_size in range(1, new_size):
            old_root, proof = NAIVE_ROOTS[old_size], log.consistency_proof(old_size, new_size)
            tampered = [proof[:i] + [flip_bit(node, 8 * i + 5)] + proof[i + 1:] for i, node in enumerate(proof)]
            tampered += [proof[:-1], proof[1:], proof + [old_root], [proof[0]] + proof, [], proof + [EMPTY_ROOT]]
            for bad in tampered:
                assert not verify_consistency(old_size, new_size, old_root, new_root, bad), (old_size, new_size)
            assert not verify_consistency(old_size, new_size, flip_bit(old_root), new_root, proof)
            # a proof longer than needed never verifies, even against the roots the extra element yields
            extra = LEAVES[0]
            assert not verify_consistency(old_size, new_size, transparency.node_hash(extra, old_root),
                                          transparency.node_hash(extra, new_root), proof + [extra])
            # a proof cut short does not verify against any root of the log (the path would stop at an inner node)
            for other_root in NAIVE_ROOTS:
                assert not verify_consistency(old_size, new_size, old_root, other_root, proof[:-1])
            assert not verify_consistency(old_size, new_size, old_root, flip_bit(new_root), proof)
            assert not verify_consistency(old_size, new_size, new_root, old_root, proof)  # swapped roots
            assert not verify_consistency(new_size, old_size, new_root, old_root, proof)  # time travel
            # a forked tree: the new tree edits one old entry; no proof from the genuine tree links them
            forked = LEAVES[:new_size]
            forked[random.Random(new_size * 100 + old_size).randrange(old_size)] = EMPTY_ROOT
            forked_root = naive_mth(forked)
            assert not verify_consistency(old_size, new_size, old_root, forked_root, proof)
            assert not verify_consistency(old_size, new_size, old_root, forked_root, naive_proof(old_size, forked))


def test_trivial_and_malformed_consistency_claims():
    root = NAIVE_ROOTS[5]
    assert verify_consistency(5, 5, root, root, [])
    assert not verify_consistency(5, 5, root, NAIVE_ROOTS[4], [])
    assert not verify_consistency(5, 5, root, root, [root])
    assert verify_consistency(0, 5, EMPTY_ROOT, root, [])
    assert not verify_consistency(0, 5, root, root, [])  # the empty tree has one root
    assert not verify_consistency(0, 5, EMPTY_ROOT, root, [EMPTY_ROOT])
    assert not verify_consistency(3, 5, NAIVE_ROOTS[3], root, [])
    assert not verify_consistency(-1, 5, EMPTY_ROOT, root, [])
    assert not verify_consistency(True, 5, NAIVE_ROOTS[1], root, naive_proof(1, LEAVES[:5]))
    assert not verify_consistency(3, 5, NAIVE_ROOTS[3][:31], root, naive_proof(3, LEAVES[:5]))
    assert not verify_consistency(3, 5, NAIVE_ROOTS[3], root, [b"short"] + naive_proof(3, LEAVES[:5])[1:])
    assert not verify_consistency(3, 5, NAIVE_ROOTS[3], root, "not a list")


def test_malformed_inclusion_claims():
    proof = naive_path(2, LEAVES[:5])
    assert verify_inclusion(LEAVES[2], 2, 5, proof, NAIVE_ROOTS[5])
    for index, size in [(-1, 5), (5, 5), (2, 0), (0, 0)]:
        assert not verify_inclusion(LEAVES[2], index, size, proof, NAIVE_ROOTS[5])
    assert not verify_inclusion(LEAVES[2][:16], 2, 5, proof, NAIVE_ROOTS[5])
    assert not verify_inclusion(LEAVES[2], 2, 5, [node[:31] for node in proof], NAIVE_ROOTS[5])
    assert not verify_inclusion(LEAVES[2], 2.0, 5, proof, NAIVE_ROOTS[5])


def test_log_refuses_sizes_beyond_its_entries(log):
    for call in (lambda: log.root(MAX_SIZE + 1), lambda: log.inclusion_proof(MAX_SIZE, MAX_SIZE),
                 lambda: log.inclusion_proof(3, 2), lambda: log.consistency_proof(5, 4),
                 lambda: log.consistency_proof(1, MAX_SIZE + 1), lambda: log.root(-1)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        MerkleLog().append_leaf_hash(b"short")


# --- cost: proofs are O(log n) hashes, with no rehashing of the log ---------------------------------


def test_proofs_at_scale_use_logarithmically_many_hashes_and_reads(monkeypatch):
    rng = random.Random(6962)
    size = 70_001  # not a power of two: the right edge is incomplete at many levels
    big = MerkleLog(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size))
    depth = (size - 1).bit_length()  # 17
    hashes, reads = 0, 0
    real_node_hash, real_subtree = transparency.node_hash, big.subtree

    def counting_node_hash(left, right):
        nonlocal hashes
        hashes += 1
        return real_node_hash(left, right)

    def counting_subtree(level, index):
        nonlocal reads
        reads += 1
        return real_subtree(level, index)

    monkeypatch.setattr(transparency, "node_hash", counting_node_hash)
    monkeypatch.setattr(big, "subtree", counting_subtree)
    root = big.root()
    assert hashes <= depth and reads <= depth
    for _ in range(200):
        tree_size = rng.choice([size, rng.randint(1, size)])
        index = rng.randrange(tree_size)
        hashes = reads = 0
        proof = big.inclusion_proof(index, tree_size)
        assert len(proof) <= depth and hashes <= depth and reads <= 2 * depth, (index, tree_size, hashes, reads)
        old_size = rng.randint(1, tree_size)
        hashes = reads = 0
        consistency = big.consistency_proof(old_size, tree_size)
        assert len(consistency) <= depth + 1 and hashes <= depth and reads <= 2 * depth + 1
        tree_root = big.root(tree_size)
        assert verify_inclusion(big.leaf_hash(index), index, tree_size, proof, tree_root)
        assert verify_consistency(old_size, tree_size, big.root(old_size), tree_root, consistency)
    assert big.root() == root
    monkeypatch.undo()
    # spot-check the cached log against the naive tree hash on an awkward prefix
    leaves = [big.leaf_hash(i) for i in range(1_000)]
    assert big.root(999) == naive_mth(leaves[:999])
    assert big.inclusion_proof(500, 999) == naive_path(500, leaves[:999])
    assert big.consistency_proof(333, 999) == naive_proof(333, leaves[:999])


def test_append_costs_amortized_one_node_hash(monkeypatch):
    hashes = 0
    real_node_hash = transparency.node_hash

    def counting_node_hash(left, right):
        nonlocal hashes
        hashes += 1
        return real_node_hash(left, right)

    monkeypatch.setattr(transparency, "node_hash", counting_node_hash)
    merkle_log = MerkleLog()
    for index in range(4096 + 7):
        merkle_log.append(index.to_bytes(4, "big"))
    assert hashes == 4096 + 7 - bin(4096 + 7).count("1")  # n - popcount(n) internal nodes completed
