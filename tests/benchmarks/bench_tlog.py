"""Benchmark: the transparency log at 10^6 entries (append, roots, inclusion and consistency proofs, audit).

Not collected by pytest (the name does not match ``test_*.py``). Run:

    python tests/benchmarks/bench_tlog.py [--entries 1000000] [--proofs 2000]

Entries are 200-byte canonical-JSON-sized records. Appending one costs a leaf hash and, amortized,
one node hash (complete subtree hashes are cached as the log grows). Roots and proofs are then read
from that cache: each proof costs O(log n) cached reads plus at most O(log n) node hashes for the one
incomplete subtree on its path. Per-proof times are means over ``proofs`` random (index, tree size)
or (old size, new size) pairs, sizes drawn up to the full log; ``*_hashes`` are the SHA-256 node
hashes computed (counted on a separate pass, so the timings carry no counting overhead); ``*_nodes``
are the hashes a proof carries. ``audit`` recomputes every root from the raw entries in one pass, as
``verify_log`` will. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from privacy.federated import transparency  # noqa: E402
from privacy.federated.signing import sign_tree_head, verify_tree_head  # noqa: E402
from privacy.federated.transparency import MerkleLog, audit_log, verify_consistency, verify_inclusion  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def count_node_hashes(fn) -> int:
    count = 0
    real = transparency.node_hash

    def counting(left, right):
        nonlocal count
        count += 1
        return real(left, right)

    transparency.node_hash = counting
    try:
        fn()
    finally:
        transparency.node_hash = real
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    args = parser.parse_args()
    n, rng = args.entries, random.Random(6962)
    entries = [(b"%08d" % index) + os.urandom(96).hex()[:192].encode() for index in range(n)]

    log = MerkleLog()
    _, append_s = timed(lambda: [log.append(entry) for entry in entries])
    root, root_s = timed(log.root)
    sizes = [rng.randint(1, n) for _ in range(args.proofs)]
    roots = {size: log.root(size) for size in sizes}
    _, prefix_roots_s = timed(lambda: [log.root(size) for size in sizes])

    inclusion_cases = [(rng.randrange(size), size) for size in sizes]
    inclusion_proofs, inclusion_s = timed(lambda: [log.inclusion_proof(index, size) for index, size in inclusion_cases])
    claims = [(log.leaf_hash(index), index, size, proof, roots[size])
              for (index, size), proof in zip(inclusion_cases, inclusion_proofs, strict=True)]
    verified, inclusion_verify_s = timed(lambda: [verify_inclusion(*claim) for claim in claims])
    assert all(verified)
    inclusion_hashes = [count_node_hashes(lambda i=index, s=size: log.inclusion_proof(i, s))
                        for index, size in inclusion_cases[:200]]

    consistency_cases = [(rng.randint(1, size), size) for size in sizes]
    for old_size, _ in consistency_cases:
        roots.setdefault(old_size, log.root(old_size))
    consistency_proofs, consistency_s = timed(
        lambda: [log.consistency_proof(old, new) for old, new in consistency_cases])
    claims = [(old, new, roots[old], roots[new], proof)
              for (old, new), proof in zip(consistency_cases, consistency_proofs, strict=True)]
    verified, consistency_verify_s = timed(lambda: [verify_consistency(*claim) for claim in claims])
    assert all(verified)
    consistency_hashes = [count_node_hashes(lambda o=old, s=new: log.consistency_proof(o, s))
                          for old, new in consistency_cases[:200]]

    key = Ed25519PrivateKey.generate()
    head = sign_tree_head(key, tree_size=n, root_hash=root)
    _, head_verify_s = timed(lambda: verify_tree_head(head, [key.public_key()]))
    report, audit_s = timed(lambda: audit_log(entries, [head], [key.public_key()]))
    assert report.ok and report.verified_size == n

    per = args.proofs
    result = {
        "benchmark": "transparency_log",
        "entries": n,
        "append_per_s": round(n / append_s),
        "root_full_us": round(root_s * 1e6, 1),
        "root_random_size_us": round(prefix_roots_s / per * 1e6, 1),
        "inclusion_proof_us": round(inclusion_s / per * 1e6, 1),
        "inclusion_verify_us": round(inclusion_verify_s / per * 1e6, 1),
        "inclusion_proof_nodes_mean": round(statistics.mean(map(len, inclusion_proofs)), 2),
        "inclusion_proof_nodes_max": max(map(len, inclusion_proofs)),
        "inclusion_proof_hashes_mean": round(statistics.mean(inclusion_hashes), 2),
        "inclusion_proof_hashes_max": max(inclusion_hashes),
        "consistency_proof_us": round(consistency_s / per * 1e6, 1),
        "consistency_verify_us": round(consistency_verify_s / per * 1e6, 1),
        "consistency_proof_nodes_mean": round(statistics.mean(map(len, consistency_proofs)), 2),
        "consistency_proof_nodes_max": max(map(len, consistency_proofs)),
        "consistency_proof_hashes_mean": round(statistics.mean(consistency_hashes), 2),
        "consistency_proof_hashes_max": max(consistency_hashes),
        "tree_head_verify_us": round(head_verify_s * 1e6, 1),
        "audit_entries_per_s": round(n / audit_s),
        "proofs_sampled": per,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
