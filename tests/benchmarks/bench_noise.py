"""Benchmark: exact discrete Laplace samples/s, ours vs OpenDP, in one run.

Not collected by pytest (the name does not match ``test_*.py``). Run:

    python tests/benchmarks/bench_noise.py [--scale 10] [--samples 1000000] [--repeat 3]

Both sides draw ``samples`` discrete Laplace values of the same scale with OS
randomness: ours via ``privacy.noise.discrete_laplace_array`` (os.urandom,
and also through the auditable ChaCha20 DRBG), OpenDP via
``make_laplace`` over ``vector_domain(atom_domain(T="i64"))`` with
``l1_distance`` (its exact CKS20 discrete Laplace for integers), applied to a
zero vector, so the output *is* the noise. OpenDP's time includes converting
the Python list in and out, as any caller of its Python package pays. Best
of ``repeat`` runs each. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from privacy.drbg import DRBG, new_seed  # noqa: E402
from privacy.noise import discrete_laplace_array, discrete_laplace_variance  # noqa: E402


def best_rate(fn, samples: int, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return samples / best, np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="10", help="discrete Laplace scale (exact rational, e.g. 10 or 3/2)")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scale = Fraction(args.scale)
    n = args.samples

    ours, ours_out = best_rate(lambda: discrete_laplace_array(scale, n), n, args.repeat)
    ours_drbg, _ = best_rate(lambda: discrete_laplace_array(scale, n, DRBG(new_seed())), n, args.repeat)
    ours_90k, _ = best_rate(lambda: discrete_laplace_array(scale, 90_000), 90_000, args.repeat)

    from importlib.metadata import version

    import opendp.prelude as dp

    dp.enable_features("contrib")
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=float(scale)
    )
    zeros = [0] * n
    theirs, theirs_out = best_rate(lambda: meas(zeros), n, args.repeat)

    result = {
        "benchmark": "discrete_laplace_samples_per_s",
        "scale": str(scale),
        "samples": n,
        "repeat": args.repeat,
        "ours_urandom": round(ours),
        "ours_drbg_chacha20": round(ours_drbg),
        "ours_urandom_90k_draws": round(ours_90k),
        "opendp": round(theirs),
        "opendp_version": version("opendp"),
        "speedup_vs_opendp": round(ours / theirs, 2),
        "at_least_as_fast": ours >= theirs,
        "variance_expected": round(discrete_laplace_variance(scale), 3),
        "variance_ours": round(float(ours_out.var()), 3),
        "variance_opendp": round(float(theirs_out.var()), 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
