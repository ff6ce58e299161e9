"""The canary audit: an empirical lower bound on a DP-SGD run's ε from one training run (no Django).

The one-run audit of Steinke, Nasr & Jagielski 2023 ("Privacy Auditing with One (1) Training
Run", NeurIPS 2023):

1. m canaries are drawn: out-of-distribution inputs (independent ±1 pixels, far from the data
   and from one another) with random labels, which only memorization can fit. Each is included in the training set independently with
   probability 1/2 (:func:`make_canaries`).
2. After training, each canary is scored by minus its loss (:func:`canary_scores`): a member
   should have a lower loss.
3. The auditor guesses "in" for the ``k`` highest scores and "out" for the ``k`` lowest, a
   count fixed before looking at the scores (``guess_fraction``), and abstains on the rest.
4. If the run is (ε, δ)-DP, the number of correct guesses is (up to a δ term) dominated by
   Binomial(r, e^ε/(1+e^ε)) (their Theorem 3); :func:`one_run_epsilon_lower_bound` returns the
   largest ε that this test rejects at the given confidence.

The bound is a floor, not an estimate: DP-SGD's analysis is tight for its worst case, and a
one-run audit with input-space canaries sits well below it. What it catches is a run that
is far less private than claimed (noise off, a bug in clipping or accounting).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn

__all__ = ["AUDIT_METHOD", "CanarySet", "audit", "canary_scores", "load_canaries", "make_canaries",
           "one_run_epsilon_lower_bound", "save_canaries", "with_included"]

AUDIT_METHOD = "one-run (Steinke, Nasr & Jagielski 2023)"
DEFAULT_CONFIDENCE = 0.95
DEFAULT_GUESS_FRACTION = 0.25  # guesses on each side: "in" for the top quarter, "out" for the bottom quarter


@dataclasses.dataclass(frozen=True)
class CanarySet:
    """m canaries (float32 features, int64 labels) and which of them were put in the training set."""

    features: np.ndarray
    labels: np.ndarray
    included: np.ndarray  # bool, shape (m,)

    def __len__(self) -> int:
        return self.labels.shape[0]


def make_canaries(count: int, input_shape: tuple[int, ...], num_classes: int,
                  rng: np.random.Generator) -> CanarySet:
    """``count`` inputs of independent ±1 entries with uniform labels, each included with probability 1/2."""
    if count < 1:
        raise ValueError("an audit needs at least one canary")
    features = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(count, *input_shape))
    labels = rng.integers(0, num_classes, count).astype(np.int64)
    # Steinke et al. 2023, Section 3: independent inclusion with probability 1/2 makes the guesses a binomial test.
    included = rng.random(count) < 0.5
    return CanarySet(features=features, labels=labels, included=included)


def save_canaries(canaries: CanarySet, path: str | Path) -> None:
    """Written to a temporary name and renamed: a resumed run must train on the very same canaries."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as stream:
        np.savez(stream, features=canaries.features, labels=canaries.labels, included=canaries.included)
    os.replace(partial, path)


def load_canaries(path: str | Path) -> CanarySet:
    with np.load(path, allow_pickle=False) as archive:
        return CanarySet(features=archive["features"], labels=archive["labels"], included=archive["included"])


def with_included(features: np.ndarray, labels: np.ndarray, canaries: CanarySet) -> tuple[np.ndarray, np.ndarray]:
    """The training set with the included canaries appended."""
    return (np.concatenate([features, canaries.features[canaries.included]]),
            np.concatenate([labels, canaries.labels[canaries.included]]))


@torch.no_grad()
def canary_scores(model: nn.Module, canaries: CanarySet) -> np.ndarray:
    """Minus each canary's cross-entropy loss under the trained model (higher: more likely a member)."""
    model.eval()
    device = next(model.parameters()).device
    features = torch.from_numpy(canaries.features).to(device)
    labels = torch.from_numpy(canaries.labels).to(device)
    losses = nn.functional.cross_entropy(model(features), labels, reduction="none")
    return -losses.double().cpu().numpy()


def _p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[≥ ``correct`` right out of ``guesses``] for an (ε, δ)-DP run with m canaries (an upper bound)."""
    # Steinke, Nasr & Jagielski 2023, Theorem 3: Binomial(r, e^ε/(1+e^ε)) tail plus 2m·δ·max_i P[v-i ≤ B < v]/i.
    right = 1.0 / (1.0 + math.exp(-epsilon))
    law = stats.binom(guesses, right)
    tail = float(law.sf(correct - 1))
    if delta == 0 or correct == 0:
        return min(1.0, tail)
    windows = np.cumsum(law.pmf(np.arange(correct - 1, -1, -1)))  # P[v-i <= B < v] for i = 1..v
    worst = float((windows / np.arange(1, correct + 1)).max())
    return min(1.0, tail + 2 * m * delta * worst)


def one_run_epsilon_lower_bound(m: int, guesses: int, correct: int, delta: float,
                                confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The largest ε that ``correct`` of ``guesses`` right refutes at ``confidence`` (0 when none is)."""
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct <= guesses <= m, got {correct}, {guesses}, {m}")
    if not 0 <= delta < 1 or not 0 < confidence < 1:
        raise ValueError("need delta in [0, 1) and confidence in (0, 1)")
    alpha = 1.0 - confidence
    if guesses == 0 or _p_value(m, guesses, correct, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 1.0
    while _p_value(m, guesses, correct, high, delta) < alpha:  # the p-value grows with ε
        low, high = high, 2 * high
    for _ in range(40):  # bisection: p(low) < alpha <= p(high)
        middle = (low + high) / 2
        low, high = (middle, high) if _p_value(m, guesses, correct, middle, delta) < alpha else (low, middle)
    return low


def audit(scores: np.ndarray, included: np.ndarray, delta: float, *, confidence: float = DEFAULT_CONFIDENCE,
          guess_fraction: float = DEFAULT_GUESS_FRACTION) -> dict:
    """Guess "in" for the top and "out" for the bottom ``guess_fraction`` of the scores; bound ε from the result."""
    m = scores.shape[0]
    if included.shape != (m,) or m == 0:
        raise ValueError("one inclusion bit per score, and at least one canary")
    k = max(1, int(m * guess_fraction)) if m > 1 else 0
    order = np.argsort(-scores, kind="stable")
    correct = int(included[order[:k]].sum() + (~included[order[m - k:]]).sum()) if k else 0
    return {
        "method": AUDIT_METHOD,
        "canaries": m,
        "guesses": 2 * k,
        "correct_guesses": correct,
        "epsilon_lower_bound": one_run_epsilon_lower_bound(m, 2 * k, correct, delta, confidence),
        "confidence": confidence,
    }
