"""Drive a simulated population of distinct clients through the real SDK.

For demos and load tests: every simulated user is its own
:class:`TelemetryClient` with a fresh client_id and no state_dir, randomizes
through the LDP oracle (CSPRNG) and posts over HTTP. Each worker thread reuses
one keep-alive connection for all its users, and the catalog is fetched once.
The users' TRUE values are test data drawn with numpy's generator; they are
not privacy noise.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Mapping, Sequence

import numpy as np

from .catalog import Metric
from .client import TelemetryClient
from .errors import TelemetryError
from .transport import HttpTransport


def simulate_population(
    base_url: str,
    api_key: str,
    distribution: Mapping[Any, float],
    metric: str,
    n_users: int,
    day: date | str,
    region: str | None = None,
    workers: int = 8,
    *,
    seed: int | None = None,
) -> dict[str, Any]:
    """Have ``n_users`` distinct clients each report one value of ``metric``.

    ``distribution`` maps labels to integer counts summing to ``n_users`` (used
    exactly) or to relative weights (counts drawn from a multinomial).

    Returns ``{"users", "accepted", "rejected", "errors", "true_counts"}``:
    reports the server accepted or rejected, users whose batch failed
    outright, and how many users held each true label.
    """
    with TelemetryClient(base_url, api_key) as bootstrap:
        spec = bootstrap.metric(metric)
    for label in distribution:
        spec.index_of(label)
    rng = np.random.default_rng(seed)
    labels = list(distribution)
    counts = _user_counts(distribution, labels, n_users, rng)
    values = np.repeat(np.arange(len(labels)), counts)
    rng.shuffle(values)
    chunks = [[labels[i] for i in chunk] for chunk in np.array_split(values, workers)]

    def run(chunk: Sequence[Any]) -> Counter:
        return _run_users(base_url, api_key, spec, chunk, day, region)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        tally = sum(pool.map(run, chunks), Counter())
    return {
        "users": n_users,
        "accepted": tally["accepted"],
        "rejected": tally["rejected"],
        "errors": tally["errors"],
        "true_counts": {label: int(count) for label, count in zip(labels, counts)},
    }


def _user_counts(
    distribution: Mapping[Any, float], labels: list, n_users: int, rng: np.random.Generator
) -> np.ndarray:
    weights = np.array([distribution[label] for label in labels], dtype=float)
    exact = all(isinstance(distribution[label], (int, np.integer)) for label in labels)
    if exact and weights.sum() == n_users:
        return weights.astype(np.int64)
    if (weights < 0).any() or not weights.sum() > 0:
        raise ValueError("distribution weights must be non-negative with a positive sum")
    return rng.multinomial(n_users, weights / weights.sum())


def _run_users(
    base_url: str, api_key: str, spec: Metric, labels: Sequence[Any], day: date | str, region: str | None
) -> Counter:
    tally: Counter = Counter()
    transport = HttpTransport(base_url, api_key)
    try:
        for label in labels:
            client = TelemetryClient(base_url, api_key, catalog=[spec], transport=transport)
            client.record(spec.name, label, day=day, region=region)
            try:
                responses = client.flush()
            except TelemetryError:
                tally["errors"] += 1
                continue
            for response in responses:
                tally["accepted"] += response["accepted"]
                tally["rejected"] += response["rejected"]
    finally:
        transport.close()
    return tally
