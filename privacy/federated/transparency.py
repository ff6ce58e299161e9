"""The transparency log: an RFC 6962 / RFC 9162 Merkle tree over the accepted entries.

Leaf hash ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left || right)``, and the Merkle
Tree Hash (MTH) of ``n`` leaves splits at ``k``, the largest power of two below ``n`` (RFC 9162
§2.1.1), so trees of any size (not only powers of two) have one root.

**Where hashes come from.** The proof algorithms read the tree through one accessor,
``subtree(level, index) -> hash``: the hash of the *complete* subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``. Every MTH the RFC algorithms need is either such an
aligned complete subtree or splits into one plus a smaller right part, so a store that keeps the
complete subtree hashes (written once, when the subtree fills up) answers any root or proof
without rehashing the log. :class:`MerkleLog` keeps them in memory; a database table keyed by
``(level, index)`` can back the same accessor.

**Costs** (n leaves, ``log`` = ⌈log2 n⌉):

* storage: 2n - 1 hashes at most (n leaves, and one per completed internal subtree);
* append: one leaf hash plus, amortized, one node hash (a subtree completes at each level it fills);
* ``root(size)``: at most ``log`` node hashes (one per 1-bit of ``size``, joining its complete subtrees);
* ``inclusion_proof``/``consistency_proof``: ``log`` (or ``log`` + 1) accessor reads plus at most
  ``log`` node hashes: at most one sibling is an incomplete subtree, recomputed from its complete parts;
* ``verify_inclusion``: ``log`` node hashes; ``verify_consistency``: at most 2 ``log`` + 2.

:func:`audit_log` recomputes the roots of stored entries against signed tree heads, in one pass
with O(log n) memory, and reports edits, reorderings and truncations.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from privacy.federated.signing import SignatureError, SignedTreeHead, trusted_key_set, verify_tree_head

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

SubtreeAccessor = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    # RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    # RFC 9162 §2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """k: the largest power of two strictly below ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


# --- computing roots and proofs over stored subtree hashes -------------------------------------------


def subtree_hash(subtree: SubtreeAccessor, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range the RFC recursion produces (``start`` a multiple of the power of two
    at or above ``end - start``); complete ranges are one accessor read."""
    size = end - start
    if size == 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return subtree(level, start >> level)
    k = _split(size)
    # RFC 9162 §2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return node_hash(subtree(k.bit_length() - 1, start // k), subtree_hash(subtree, start + k, end))


def inclusion_path(subtree: SubtreeAccessor, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]), leaf end first (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    siblings_from_top = []
    start, end = 0, size
    while end - start > 1:
        # RFC 9162 §2.1.3.1: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k,
        # else PATH(m - k, D[k:n]) : MTH(D[0:k])
        middle = start + _split(end - start)
        if index < middle:
            siblings_from_top.append(subtree_hash(subtree, middle, end))
            end = middle
        else:
            siblings_from_top.append(subtree_hash(subtree, start, middle))
            start = middle
    return siblings_from_top[::-1]


def consistency_path(subtree: SubtreeAccessor, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1); empty when ``old_size`` is 0 or ``new_size``."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    nodes_from_top = []
    m, start, end, whole_old_tree = old_size, 0, new_size, True
    while m != end - start:  # m: the old tree's leaves within [start, end)
        # RFC 9162 §2.1.4.1: SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if m <= k,
        # else SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
        k = _split(end - start)
        if m <= k:
            nodes_from_top.append(subtree_hash(subtree, start + k, end))
            end = start + k
        else:
            nodes_from_top.append(subtree_hash(subtree, start, start + k))
            start, m, whole_old_tree = start + k, m - k, False
    if not whole_old_tree:
        # RFC 9162 §2.1.4.1: SUBPROOF(m, D[m], false) = {MTH(D[m])}
        nodes_from_top.append(subtree_hash(subtree, start, end))
    return nodes_from_top[::-1]


# --- verifying proofs (what a client does, with only the proof and the signed roots) ---------------


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with ``root``.

    RFC 9162 §2.1.3.2. False (never an exception) for any malformed input.
    """
    if not (_is_hash(leaf) and _is_hash(root) and _is_proof(proof) and _is_int(index) and _is_int(size)):
        return False
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """Whether ``proof`` shows the tree (``new_size``, ``new_root``) extends the tree (``old_size``, ``old_root``).

    RFC 9162 §2.1.4.2, plus the trivial cases: equal sizes need equal roots and an empty proof; from
    the empty tree the old root must be SHA-256 of the empty string and the proof empty. False (never
    an exception) for any malformed input.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_proof(proof) and _is_int(old_size)
            and _is_int(new_size)):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and hmac.compare_digest(old_root, new_root)
    if old_size == 0:
        return not proof and hmac.compare_digest(old_root, EMPTY_ROOT)
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)


def _is_hash(value) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_BYTES


def _is_proof(proof) -> bool:
    return isinstance(proof, (list, tuple)) and len(proof) <= 2 * 64 and all(_is_hash(node) for node in proof)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the in-memory log -----------------------------------------------------------------------------


class MerkleLog:
    """An append-only log of leaf hashes that caches every complete aligned subtree hash.

    Level ``h`` holds, packed 32 bytes each, the hashes of the complete subtrees of ``2**h`` leaves,
    in order; level 0 holds the leaf hashes. An append adds the leaf and, each time a level's count
    becomes even, the parent of its last two (amortized one node hash per append).
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()):
        self._levels: list[bytearray] = [bytearray()]
        for leaf in leaf_hashes:
            self.append_leaf_hash(leaf)

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_BYTES

    def append(self, entry: bytes) -> int:
        """Log ``entry`` (its bytes); return its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, leaf: bytes) -> int:
        if not _is_hash(leaf):
            raise ValueError(f"a leaf hash is {HASH_BYTES} bytes")
        index = len(self)
        self._levels[0] += leaf
        level, hashed = 0, leaf
        while len(self._levels[level]) % (2 * HASH_BYTES) == 0:  # this level's last subtree just got its pair
            left = bytes(self._levels[level][-2 * HASH_BYTES:-HASH_BYTES])
            hashed = node_hash(left, hashed)
            level += 1
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += hashed
        return index

    def subtree(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``."""
        offset = index * HASH_BYTES
        stored = self._levels[level][offset:offset + HASH_BYTES]
        if len(stored) != HASH_BYTES or index < 0:
            raise IndexError(f"no complete subtree ({level}, {index}) in a log of {len(self)}")
        return bytes(stored)

    def leaf_hash(self, index: int) -> bytes:
        return self.subtree(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all)."""
        return subtree_hash(self.subtree, 0, self._size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_path(self.subtree, index, self._size(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_path(self.subtree, old_size, self._size(new_size))

    def _size(self, size: int | None) -> int:
        if size is None:
            return len(self)
        if not _is_int(size) or not 0 <= size <= len(self):
            raise ValueError(f"tree size {size} is not within the log's {len(self)} entries")
        return size


# --- auditing stored entries against signed heads --------------------------------------------------


class _Frontier:
    """The right edge of a growing tree: its complete subtrees, largest first. O(log n) memory."""

    def __init__(self):
        self._edge: list[tuple[int, bytes]] = []  # (leaf count, hash)

    def append(self, leaf: bytes) -> None:
        count, hashed = 1, leaf
        while self._edge and self._edge[-1][0] == count:
            left_count, left = self._edge.pop()
            count, hashed = count + left_count, node_hash(left, hashed)
        self._edge.append((count, hashed))

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        # RFC 9162 §2.1.1: the split at the largest power of two nests the edge subtrees to the right
        hashed = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            hashed = node_hash(left, hashed)
        return hashed


@dataclass(frozen=True)
class AuditReport:
    entries: int  # stored entries read
    heads_checked: int  # signed heads with a valid signature
    verified_size: int  # the largest signed tree size the stored entries reproduce
    unsigned_entries: int  # stored entries after the largest valid signed head (no head covers them yet)
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def audit_log(entries: Iterable[bytes], signed_heads: Iterable[SignedTreeHead], trusted_keys: Iterable) -> AuditReport:
    """Check the stored ``entries`` (in log order) against every signed tree head.

    Each head must carry a valid signature by a trusted key, and the MTH of the first
    ``tree_size`` entries must equal its ``root_hash``. Any edit, reordering, insertion or removal
    of an entry inside a signed prefix changes that root; a log shorter than a signed head was
    truncated. Only the entries after the newest head are unprotected (reported as
    ``unsigned_entries``). A log with entries but no valid head at all fails: nothing vouches for it.
    One pass, O(n) hashes, O(log n) memory, so ``entries`` may be a database cursor.

    Whoever can rewrite the database can also delete the newest heads stored there and truncate back
    to an older one; pass the heads held elsewhere too (those clients and monitors were served) to
    catch that.
    """
    trusted = trusted_key_set(trusted_keys)
    problems: list[str] = []
    heads = []
    for head in signed_heads:
        try:
            verify_tree_head(head, trusted)
        except SignatureError as exc:
            problems.append(f"tree head of size {head.tree_size}: {exc}")
        else:
            heads.append(head)
    heads.sort(key=lambda head: head.tree_size)

    frontier, count, next_head, verified_size = _Frontier(), 0, 0, 0

    def check_heads_at(size: int) -> None:
        nonlocal next_head, verified_size
        while next_head < len(heads) and heads[next_head].tree_size == size:
            if hmac.compare_digest(frontier.root(), heads[next_head].root_hash):
                verified_size = size
            else:
                problems.append(f"the first {size} entries do not match their signed head: an entry among indices "
                                f"{verified_size}..{size - 1} was edited, reordered, inserted or removed")
            next_head += 1

    check_heads_at(0)
    for entry in entries:
        frontier.append(leaf_hash(entry))
        count += 1
        check_heads_at(count)
    for head in heads[next_head:]:
        problems.append(f"the log holds {count} entries but a head signed {head.tree_size}: truncated")
    if count and not heads:
        problems.append(f"no valid signed tree head covers the {count} stored entries")
    signed_size = heads[-1].tree_size if heads else 0
    return AuditReport(entries=count, heads_checked=len(heads), verified_size=verified_size,
                       unsigned_entries=max(0, count - signed_size), problems=tuple(problems))
