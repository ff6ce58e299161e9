"""The allocation-free paths of federation/aggregation.py compute what the plain numpy formulas compute.

``agreement`` sorts a private copy in place and ``ZScoreNormFilter`` spells out ``np.std``; both are compared with
the textbook expressions on seeded random rounds (test data, not privacy noise), exactly: the same floating-point
operations in the same order give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from federation.aggregation import (
    AGREEMENT_SDS,
    IQR_PER_SD,
    Contribution,
    FedAvg,
    ZScoreNormFilter,
    agreement,
)


def _reference_agreement(matrix, weights):
    count = len(matrix)
    ordered = np.sort(matrix, axis=0)
    spread = ordered[-(-3 * (count - 1) // 4)] - ordered[(count - 1) // 4]
    tolerance = AGREEMENT_SDS / IQR_PER_SD * spread + 1e-9 * np.maximum(1.0, np.abs(weights))
    return np.count_nonzero(np.abs(matrix - weights) <= tolerance, axis=0) / count


def _reference_keep(matrix, threshold=2.0):
    rows = np.arange(len(matrix))
    if len(matrix) < 3:
        return rows
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    spread = norms.std()
    if spread < 1e-10:
        return rows
    return rows[np.abs(norms - norms.mean()) / spread <= threshold]


@pytest.mark.parametrize("seed", range(5))
def test_fedavg_confidences_equal_the_textbook_agreement(seed):
    rng = np.random.default_rng(seed)
    count, dim = int(rng.integers(2, 60)), int(rng.integers(1, 300))
    matrix = rng.normal(0, 1, dim) + rng.normal(0, 1, (count, dim)) * rng.choice([1.0, 10.0], (count, 1))
    matrix[0] = matrix[1]  # ties
    batch = [Contribution(vector=row, trajectory_count=int(rng.integers(1, 50)), quality=1.0, contributor=f"c{i}")
             for i, row in enumerate(matrix)]
    result = FedAvg().aggregate(batch)
    assert np.array_equal(result.confidences, _reference_agreement(matrix, result.weights))
    assert np.array_equal(agreement(matrix, result.weights), result.confidences)
    assert np.array_equal(np.stack([c.vector for c in batch]), matrix)  # the contributions are untouched


@pytest.mark.parametrize("seed", range(10))
def test_the_zscore_filter_keeps_what_np_std_would(seed):
    rng = np.random.default_rng(100 + seed)
    matrix = rng.normal(0, 1, (int(rng.integers(1, 60)), 100))
    matrix[: len(matrix) // 5] *= rng.uniform(1, 10)
    assert np.array_equal(ZScoreNormFilter().keep(matrix), _reference_keep(matrix))
    same = np.ones((5, 3))
    assert np.array_equal(ZScoreNormFilter().keep(same), np.arange(5))
