"""DP-SGD accounting (accounting/calibration.py): the event, ε by PLD and RDP against dp_accounting
computed independently here, and σ calibration for a target ε. Pure: no database."""

from __future__ import annotations

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from accounting.calibration import (
    MIN_NOISE_MULTIPLIER,
    PLD_INTERVAL,
    calibrate_noise_multiplier,
    dpsgd_epsilon,
    dpsgd_event,
    rdp_epsilon,
)
from accounting.events import PoissonSampledGaussianEvent, event_from_json, event_to_json

pytestmark = pytest.mark.slow  # dp-accounting's calibration searches: seconds each

# (q, σ, T, δ): the digits run of tests/privacy/test_dpsgd.py, and an MNIST-like run
RUNS = [(64 / 1437, 1.0, 44, 1e-5), (256 / 60000, 1.1, 2340, 1e-5)]


def _independent_dp_event(q, sigma, steps):
    return dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)


def test_the_event_is_the_poisson_sampled_gaussian_and_round_trips():
    event = dpsgd_event(1.1, 0.01, 500)
    assert event == PoissonSampledGaussianEvent(noise_multiplier=1.1, sampling_probability=0.01, steps=500)
    assert event_from_json(event_to_json(event)) == event
    assert event.to_dp_event() == _independent_dp_event(0.01, 1.1, 500)


@pytest.mark.parametrize("q, sigma, steps, delta", RUNS)
def test_a_runs_epsilon_equals_dp_accountings(q, sigma, steps, delta):
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_INTERVAL)
    accountant.compose(_independent_dp_event(q, sigma, steps))
    assert dpsgd_epsilon(sigma, q, steps, delta) == pytest.approx(accountant.get_epsilon(delta), rel=1e-12)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(_independent_dp_event(q, sigma, steps))
    assert rdp_epsilon(sigma, q, steps, delta) == pytest.approx(rdp.get_epsilon(delta), rel=1e-12)
    # RDP is the looser bound (PLD is near-tight), both in a plausible range for these runs
    assert 0.5 < dpsgd_epsilon(sigma, q, steps, delta) < rdp_epsilon(sigma, q, steps, delta) < 5


def test_the_digits_run_spends_a_moderate_epsilon():
    assert dpsgd_epsilon(1.0, 64 / 1437, 44, 1e-5) == pytest.approx(2.29, abs=0.01)


def test_calibration_finds_the_smallest_sigma_within_the_target():
    """Tolerance 1e-3 in σ: ε(σ) ≤ target, and ε(σ − 2e-3), just below the returned σ, exceeds it."""
    q, steps, delta, target = 0.05, 60, 1e-5, 1.0
    sigma = calibrate_noise_multiplier(target, delta, q, steps, tolerance=1e-3)
    assert dpsgd_epsilon(sigma, q, steps, delta) <= target
    assert dpsgd_epsilon(sigma, q, steps, delta) == pytest.approx(target, abs=5e-3)
    assert dpsgd_epsilon(sigma - 2e-3, q, steps, delta) > target


@pytest.mark.parametrize("arguments, message", [
    ((0.0, 1e-5, 0.05, 10), "target_epsilon"),
    ((1.0, 1.0, 0.05, 10), "delta"),
    ((500.0, 1e-5, 0.05, 1), f"σ < {MIN_NOISE_MULTIPLIER}"),
])
def test_calibration_refuses_impossible_targets(arguments, message):
    with pytest.raises(ValueError, match=message):
        calibrate_noise_multiplier(*arguments)
