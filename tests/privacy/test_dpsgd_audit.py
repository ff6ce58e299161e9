"""The canary audit (Steinke, Nasr & Jagielski 2023): the bound's arithmetic, its validity, and its power.

The end-to-end pair trains an MLP on digits with 200 sign-vector canaries twice, with the
same seed: once with σ calibrated to the claimed ε = 1 (the bound must stay below 1), once
with the noise off (the run memorizes its canaries and the bound must exceed 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from accounting.calibration import calibrate_noise_multiplier
from privacy.dpsgd import audit
from privacy.dpsgd.datasets import load_digits
from privacy.dpsgd.engine import DPSGDConfig
from privacy.dpsgd.runs import TrainingRun

pytestmark = pytest.mark.slow  # training runs and simulated audits

torch.set_num_threads(1)


def test_all_guesses_right_give_the_closed_form_bound_without_delta():
    # δ = 0: p(ε) = q^r with q = e^ε/(1+e^ε), so the bound solves q^r = 1 - confidence.
    right = 0.05 ** (1 / 40)
    expected = math.log(right / (1 - right))
    assert audit.one_run_epsilon_lower_bound(100, 40, 40, 0.0, 0.95) == pytest.approx(expected, abs=1e-6)


def test_chance_level_guesses_bound_nothing_and_delta_only_lowers_the_bound():
    assert audit.one_run_epsilon_lower_bound(200, 100, 50, 1e-5) == 0.0
    assert audit.one_run_epsilon_lower_bound(200, 0, 0, 1e-5) == 0.0
    without = audit.one_run_epsilon_lower_bound(200, 100, 95, 0.0)
    assert 0 < audit.one_run_epsilon_lower_bound(200, 100, 95, 1e-3) < without
    with pytest.raises(ValueError):
        audit.one_run_epsilon_lower_bound(10, 20, 5, 0.0)


def test_the_bound_exceeds_the_true_epsilon_of_randomized_response_rarely():
    # Each canary's guess is right with probability e^ε/(1+e^ε): ε-DP randomized response, the extremal
    # case of Theorem 3. At 95% confidence at most 5% of 200 audits may exceed ε; the binomial's 99.9%
    # quantile is 21 (10.5%). An audit that ignored the abstentions or the tail would exceed it often.
    rng = np.random.default_rng(11)
    epsilon, m = 1.0, 200
    exceeded = 0
    for _ in range(200):
        included = rng.random(m) < 0.5
        right = rng.random(m) < 1 / (1 + math.exp(-epsilon))
        scores = np.where(included == right, 1.0, -1.0) + rng.normal(0, 0.1, m)  # a guess per canary
        exceeded += audit.audit(scores, included, 0.0)["epsilon_lower_bound"] > epsilon
    assert exceeded <= 21


def test_canaries_are_included_with_probability_one_half_and_appended():
    canaries = audit.make_canaries(2000, (1, 8, 8), 10, np.random.default_rng(0))
    # 2000 fair coins: |included - 1000| <= 4.4 standard deviations (≈ 98) fails with probability 1e-5.
    assert abs(int(canaries.included.sum()) - 1000) <= 98
    features, labels = audit.with_included(np.zeros((5, 1, 8, 8), np.float32), np.zeros(5, np.int64), canaries)
    assert features.shape == (5 + canaries.included.sum(), 1, 8, 8) and labels.shape == (features.shape[0],)
    assert set(np.unique(canaries.features)) == {-1.0, 1.0} and set(canaries.labels) <= set(range(10))


CLAIMED_EPSILON, DELTA = 1.0, 1e-5


def _audited_run(noise_multiplier: float, canaries, digits, q, steps) -> float:
    features, labels = audit.with_included(digits.features, digits.labels, canaries)
    run = TrainingRun(model_name="mlp", features=features, labels=labels, num_classes=10,
                      config=DPSGDConfig(clip_norm=1.0, noise_multiplier=noise_multiplier, sampling_probability=q),
                      learning_rate=4.0, seed=1, device="cpu")
    for _ in range(steps):
        run.step()
    scores = audit.canary_scores(run.trainer.model, canaries)
    return audit.audit(scores, canaries.included, DELTA)["epsilon_lower_bound"]


@pytest.mark.slow
def test_the_bound_stays_below_the_claim_with_noise_and_exceeds_it_without():
    # About 15 s on one thread. 200 canaries, 60 epochs at an expected batch of 64: the noiseless run gets
    # ~96 of 100 guesses right (bound ≈ 2.3); the private one is at chance (bound 0).
    digits = load_digits()
    canaries = audit.make_canaries(200, digits.input_shape, 10, np.random.default_rng(3))
    n = len(digits) + int(canaries.included.sum())
    q, steps = 64 / n, 60 * round(n / 64)
    sigma = calibrate_noise_multiplier(CLAIMED_EPSILON, DELTA, q, steps)
    assert _audited_run(sigma, canaries, digits, q, steps) <= CLAIMED_EPSILON
    assert _audited_run(0.0, canaries, digits, q, steps) > CLAIMED_EPSILON
