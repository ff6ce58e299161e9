"""The transparency log in the database: appends, signed tree heads, proofs and the audit.

The tree math is :mod:`privacy.federated.transparency`; this module backs its ``subtree(level, index)``
accessor with the ``LogNode`` table (every complete aligned subtree hash, written once when the
subtree fills up), so a root or a proof reads O(log n) rows. Appends are serialized by one
transaction-scoped advisory lock, so indices are dense and every node is written exactly once.
Every head the server serves is stored (``TreeHead``): ``verify_log`` checks the stored entries
against all of them, which catches truncation as well as edits and reorderings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from deploy.api.db import advisory_xact_lock
from deploy.api.errors import ApiError
from privacy.federated import signing, transparency
from federation.models import AggregateRound, Export, LogEntry, LogNode, TreeHead

LOG_APPEND_LOCK = 0x7E1E_0010  # one append at a time (telemetry holds 0x7E1E_0002, _0003)


def signing_key():
    """The server's tree-head key, from ``LOG_SIGNING_KEY`` (hex seed)."""
    return signing.load_private_key(settings.LOG_SIGNING_KEY)


def size() -> int:
    """Entries in the log: the last index + 1, read from the unique index in O(log n) (indices are dense: appends
    hold the lock; ``audit`` checks it). COUNT(*) would scan the whole table on every append and head."""
    last = LogEntry.objects.order_by("-index").values_list("index", flat=True).first()
    return 0 if last is None else last + 1


def lock() -> None:
    """Take the append lock for the rest of the caller's transaction (the log cannot grow under it)."""
    advisory_xact_lock(LOG_APPEND_LOCK)


def subtree(level: int, index: int) -> bytes:
    row = LogNode.objects.filter(level=level, index=index).values_list("hash", flat=True).first()
    if row is None:
        raise IndexError(f"no complete subtree ({level}, {index})")
    return bytes(row)


def append(entry: bytes, *, export: Export | None = None, aggregate: AggregateRound | None = None) -> int:
    """Append ``entry`` under the log lock, writing its leaf and every subtree it completes; its index.

    Runs inside the caller's transaction: the entry is logged if and only if what it records commits.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("append() must run inside the transaction of what it logs")
    advisory_xact_lock(LOG_APPEND_LOCK)
    index = size()
    leaf = transparency.leaf_hash(entry)
    LogEntry.objects.create(index=index, entry=entry, leaf_hash=leaf, export=export, aggregate=aggregate)
    nodes, level, position, hashed = [LogNode(level=0, index=index, hash=leaf)], 0, index, leaf
    while position % 2 == 1:  # this subtree is the right half of a now complete parent
        hashed = transparency.node_hash(subtree(level, position - 1), hashed)
        level, position = level + 1, position // 2
        nodes.append(LogNode(level=level, index=position, hash=hashed))
    LogNode.objects.bulk_create(nodes)
    return index


def root(tree_size: int) -> bytes:
    return transparency.subtree_hash(subtree, 0, tree_size)


def _checked_size(value, name: str, current: int, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= current:
        raise ApiError("invalid_log_range", f"{name} must be an integer in [{minimum}, {current}] (the log holds "
                       f"{current} entries).", field=name)
    return value


def inclusion_proof(index, tree_size=None) -> dict:
    """The audit path of entry ``index`` in the tree of ``tree_size`` entries (default: all)."""
    current = size()
    tree_size = current if tree_size in (None, "") else _checked_size(tree_size, "size", current, 1)
    index = _checked_size(index, "index", tree_size - 1) if tree_size else _checked_size(index, "index", -1)
    return {"index": index, "tree_size": tree_size, "leaf_hash": subtree(0, index).hex(),
            "audit_path": [node.hex() for node in transparency.inclusion_path(subtree, index, tree_size)]}


def consistency_proof(old, new=None) -> dict:
    current = size()
    new = current if new in (None, "") else _checked_size(new, "new", current)
    old = _checked_size(old, "old", new)
    return {"old_size": old, "new_size": new,
            "proof": [node.hex() for node in transparency.consistency_path(subtree, old, new)]}


def _stored_head(row: TreeHead) -> signing.SignedTreeHead:
    return signing.SignedTreeHead(tree_size=row.tree_size, root_hash=bytes(row.root_hash),
                                  timestamp_ms=row.timestamp_ms, key_id=row.key_id, signature=bytes(row.signature))


@transaction.atomic
def signed_head() -> signing.SignedTreeHead:
    """The signed head of the whole log now. One head per (size, key) is signed and stored; later calls at
    that size serve the stored one, so the table grows with the log, not with the traffic."""
    key = signing_key()
    advisory_xact_lock(LOG_APPEND_LOCK)  # the size and root read here belong to one tree
    tree_size = size()
    stored = TreeHead.objects.filter(tree_size=tree_size, key_id=signing.key_id(key)).first()
    if stored is not None:
        return _stored_head(stored)
    head = signing.sign_tree_head(key, tree_size=tree_size, root_hash=root(tree_size))
    TreeHead.objects.create(tree_size=head.tree_size, root_hash=head.root_hash, timestamp_ms=head.timestamp_ms,
                            key_id=head.key_id, signature=head.signature)
    return head


def stored_heads() -> list[signing.SignedTreeHead]:
    return [_stored_head(row) for row in TreeHead.objects.order_by("tree_size", "key_id")]


def stored_entries() -> Iterator[bytes]:
    """The stored entries in index order, streamed (the audit holds O(log n) of them)."""
    for entry in LogEntry.objects.order_by("index").values_list("entry", flat=True).iterator(chunk_size=2000):
        yield bytes(entry)


def audit(trusted_keys: Iterable | None = None) -> transparency.AuditReport:
    """Check every stored entry against every stored head (trusted: the current key unless given)."""
    keys = list(trusted_keys) if trusted_keys else [signing_key().public_key()]
    report = transparency.audit_log(stored_entries(), stored_heads(), keys)
    indices = list(LogEntry.objects.order_by("index").values_list("index", flat=True))
    if indices != list(range(len(indices))):  # rows renumbered or removed: the order itself was edited
        problems = (*report.problems, "stored indices are not 0..n-1 in order: entries were removed or renumbered")
        report = transparency.AuditReport(report.entries, report.heads_checked, report.verified_size,
                                          report.unsigned_entries, problems)
    return report


@dataclass(frozen=True)
class EntryCheck:
    """A server-side check of one entry with the SDK's pure verifiers: the head's signature, then inclusion."""

    index: int
    entry: bytes
    leaf_hash: bytes
    audit_path: list[bytes]
    head: signing.SignedTreeHead
    head_signature_ok: bool
    included: bool
    export_id: int | None
    aggregate_id: int | None


def check_entry(index: int) -> EntryCheck | None:
    """Verify entry ``index`` against the current signed head (None when the log has no such entry)."""
    head = signed_head()
    row = LogEntry.objects.filter(index=index).first() if 0 <= index < head.tree_size else None
    if row is None:
        return None
    entry, key = bytes(row.entry), signing_key().public_key()
    try:
        signing.verify_tree_head(head, [key])
        signature_ok = True
    except signing.SignatureError:
        signature_ok = False
    leaf = transparency.leaf_hash(entry)  # recomputed from the stored bytes, not read from the row
    path = transparency.inclusion_path(subtree, index, head.tree_size)
    return EntryCheck(index=index, entry=entry, leaf_hash=leaf, audit_path=path, head=head,
                      head_signature_ok=signature_ok,
                      included=transparency.verify_inclusion(leaf, index, head.tree_size, path, head.root_hash),
                      export_id=row.export_id, aggregate_id=row.aggregate_id)
