"""Benchmark: aggregation strategies (federation/aggregation.py), against the spec's Rust figures.

Not collected by pytest (the name does not match ``test_*.py``). Run:

    python tests/benchmarks/bench_aggregation.py [--repeat 7] [--loops 50]

Every figure is microseconds per call, the best of ``repeat`` runs of ``loops`` calls.
``aggregate`` times are the whole call on prebuilt ``Contribution`` objects: stacking
them, the rule, and the per-coordinate confidences; ``fedavg_100x1000_weights_only_us``
is the weighted mean alone and ``confidences_100x1000_us`` the confidences alone, since
the spec's Rust FedAvg figure [365 us] is for averaging. The z-score filter [spec: 12 us
for 50 contributions, dimension not stated] is timed on a stacked matrix at dimensions
100 and 1000. Robust rules run on 50 contributions of dimension 1000: honest ones
(``mu + N(0, I)``), and for the spectral filter also a round with 30% "a little is enough"
attackers, where it removes vectors step by step. ``load_average`` is the machine's
1-minute load when the run ends (other tenants on a shared machine slow every figure).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from federation.aggregation import (  # noqa: E402
    Contribution,
    CoordinateMedian,
    FedAvg,
    MultiKrum,
    NormBounding,
    SpectralFilter,
    TrimmedMean,
    ZScoreNormFilter,
    agreement,
)


def best_us(fn, repeat: int, loops: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return round(best * 1e6, 1)


def honest_matrix(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, dim) + rng.normal(0.0, 1.0, (count, dim))


def as_contributions(matrix: np.ndarray, rng: np.random.Generator) -> list[Contribution]:
    counts = rng.integers(1, 1000, len(matrix))
    return [
        Contribution(vector=row, trajectory_count=int(c), quality=1.0, contributor=f"c{i}")
        for i, (row, c) in enumerate(zip(matrix, counts))
    ]


def little_is_enough_round(rng: np.random.Generator) -> np.ndarray:
    honest = honest_matrix(rng, 35, 1000)
    attacker = honest.mean(axis=0) - 0.772 * honest.std(axis=0)  # z for n = 50, f = 15 (Baruch et al. 2019)
    return np.vstack([honest, np.tile(attacker, (15, 1))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--loops", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    timed = lambda fn: best_us(fn, args.repeat, args.loops)  # noqa: E731

    big = honest_matrix(rng, 100, 1000)
    big_batch = as_contributions(big, rng)
    shares = np.array([c.trajectory_count for c in big_batch], dtype=np.float64)
    shares /= shares.sum()
    fedavg_weights = shares @ big

    round_50 = honest_matrix(rng, 50, 1000)
    batch_50 = as_contributions(round_50, rng)
    attacked_batch = as_contributions(little_is_enough_round(rng), rng)
    zscore = ZScoreNormFilter()
    robust = {
        "median": CoordinateMedian(),
        "trimmed_mean": TrimmedMean(beta=0.3),
        "norm_bounding": NormBounding(),
        "multi_krum": MultiKrum(byzantine_fraction=0.3),
        "spectral": SpectralFilter(max_fraction=0.3),
    }

    result = {
        "benchmark": "aggregation_us",
        "fedavg_100x1000_us": timed(lambda: FedAvg().aggregate(big_batch)),
        "fedavg_100x1000_target_us": 365,
        "fedavg_100x1000_weights_only_us": timed(lambda: shares @ big),
        "confidences_100x1000_us": timed(lambda: agreement(big, fedavg_weights)),
        "zscore_filter_50x100_us": timed(lambda: zscore.keep(round_50[:, :100])),
        "zscore_filter_50x1000_us": timed(lambda: zscore.keep(round_50)),
        "zscore_filter_target_us": 12,
        **{f"{name}_50x1000_us": timed(lambda rule=rule: rule.aggregate(batch_50)) for name, rule in robust.items()},
        "spectral_50x1000_little_is_enough_30pct_us": timed(lambda: robust["spectral"].aggregate(attacked_batch)),
        "spectral_removed_in_attacked_round": len(robust["spectral"].aggregate(attacked_batch).dropped),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
