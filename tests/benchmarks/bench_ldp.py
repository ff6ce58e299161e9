"""Throughput of the LDP frequency oracles against pure-ldp, as one JSON line.

    python tests/benchmarks/bench_ldp.py [--reports 1000000] [--baseline-reports 50000]

Encodes and aggregates the same synthetic data (k = 20, epsilon = 2) with
privacy.ldp (vectorized, CSPRNG) and with pure-ldp (one report per Python call,
Mersenne Twister). pure-ldp runs on the first --baseline-reports of the same
data: at one Python call per report its rate does not depend on the count, and
10**6 reports would take minutes. pure-ldp has no subset selection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from privacy.ldp import PROTOCOLS, make_oracle  # noqa: E402

K, EPSILON = 20, 2.0
AGGREGATION_TARGET = 10_000_000


def best_seconds(action, repeats=3):
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - start)
    return min(timings), result


def ours(name, true):
    oracle = make_oracle(name, K, EPSILON)
    encode_s, reports = best_seconds(lambda: oracle.randomize(true))
    aggregate_s, _ = best_seconds(lambda: oracle.estimate(oracle.support_counts(reports), len(true)))
    payloads = oracle.to_wire(reports[:100_000])
    parse_s, _ = best_seconds(lambda: [oracle.parse_wire(item) for item in payloads])
    return {
        "encode_per_s": len(true) / encode_s,
        "aggregate_per_s": len(true) / aggregate_s,
        "parse_wire_per_s": len(payloads) / parse_s,
    }


def import_pure_ldp_oracles():
    """Registers ``pure_ldp.frequency_oracles`` without running its ``__init__``.

    That ``__init__`` star-imports every oracle, RAPPOR's statsmodels and
    scikit-learn included; the three oracles compared here need neither.
    """
    import importlib.util
    import types

    import pure_ldp

    package = types.ModuleType("pure_ldp.frequency_oracles")
    package.__path__ = [str(Path(pure_ldp.__file__).parent / "frequency_oracles")]
    sys.modules.setdefault("pure_ldp.frequency_oracles", package)
    assert importlib.util.find_spec("pure_ldp.frequency_oracles.direct_encoding") is not None


class _XxhashAcceptingStr:
    """pure-ldp's local hashing hashes ``str``; xxhash >= 3 takes only bytes."""

    @staticmethod
    def xxh32(data, seed=0):
        import xxhash

        return xxhash.xxh32(data.encode() if isinstance(data, str) else data, seed=seed)


def pure_ldp_pair(name):
    import_pure_ldp_oracles()
    from pure_ldp.frequency_oracles.direct_encoding import DEClient, DEServer
    from pure_ldp.frequency_oracles.local_hashing import LHClient, LHServer
    from pure_ldp.frequency_oracles.unary_encoding import UEClient, UEServer

    identity = lambda value: value  # noqa: E731 (pure-ldp maps 1-based items by default)
    if name == "krr":
        return DEClient(EPSILON, K, index_mapper=identity), DEServer(EPSILON, K, index_mapper=identity)
    if name == "oue":
        return (
            UEClient(EPSILON, K, use_oue=True, index_mapper=identity),
            UEServer(EPSILON, K, use_oue=True, index_mapper=identity),
        )
    if name == "olh":
        from pure_ldp.frequency_oracles.local_hashing import lh_client, lh_server

        lh_client.xxhash = lh_server.xxhash = _XxhashAcceptingStr
        return (
            LHClient(EPSILON, K, use_olh=True, index_mapper=identity),
            LHServer(EPSILON, K, use_olh=True, index_mapper=identity),
        )
    return None


def baseline(name, true):
    pair = pure_ldp_pair(name)
    if pair is None:
        return {}
    client, server = pair
    values = true.tolist()
    start = time.perf_counter()
    reports = [client.privatise(value) for value in values]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    server.aggregate_all(reports)
    server.estimate_all(range(K), suppress_warnings=True)
    aggregate_s = time.perf_counter() - start
    return {"pure_ldp_encode_per_s": len(values) / encode_s, "pure_ldp_aggregate_per_s": len(values) / aggregate_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--baseline-reports", type=int, default=50_000)
    args = parser.parse_args()
    # Synthetic true data only (not privacy randomness): a Zipf-like population.
    weights = 1.0 / np.arange(1, K + 1)
    true = np.random.default_rng(2017).choice(K, size=args.reports, p=weights / weights.sum())

    figures = {}
    for name in PROTOCOLS:
        row = ours(name, true) | baseline(name, true[: args.baseline_reports])
        for stage in ("encode", "aggregate"):
            if f"pure_ldp_{stage}_per_s" in row:
                row[f"{stage}_speedup"] = row[f"{stage}_per_s"] / row[f"pure_ldp_{stage}_per_s"]
        figures[name] = {key: round(value, 1) for key, value in row.items()}
    print(
        json.dumps(
            {
                "benchmark": "ldp_frequency_oracles",
                "k": K,
                "epsilon": EPSILON,
                "reports": args.reports,
                "pure_ldp_reports": args.baseline_reports,
                "aggregate_target_per_s": AGGREGATION_TARGET,
                "krr_meets_aggregate_target": figures["krr"]["aggregate_per_s"] >= AGGREGATION_TARGET,
                "below_aggregate_target": sorted(name for name, f in figures.items()
                                                if f["aggregate_per_s"] < AGGREGATION_TARGET),
                "protocols": figures,
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
