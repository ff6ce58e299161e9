"""DP-SGD's privacy accounting: its event, ε by PLD (reported) and RDP (cross-check), σ for a target.

Framework-free (no Django, no torch). A training run of T steps of DP-SGD with Poisson
sampling at rate q and noise multiplier σ is one mechanism event,
:class:`~accounting.events.PoissonSampledGaussianEvent` (Abadi et al. 2016), charged to the
ledger like any other spend. ε at δ is dp_accounting's PLD figure, the one the ledger uses
(:func:`accounting.accountants.pld_epsilon`, cached per (q, σ, T, δ) so a progress poll
does not recompute a PLD); RDP (Mironov 2017; Mironov, Talwar & Zhang 2019) is the looser
cross-check a model card shows beside it.
"""

from __future__ import annotations

import functools

from accounting.accountants import pld_epsilon
from accounting.events import PoissonSampledGaussianEvent

__all__ = ["dpsgd_event", "dpsgd_epsilon", "rdp_epsilon", "calibrate_noise_multiplier", "PLD_INTERVAL",
           "MIN_NOISE_MULTIPLIER"]

# The PLD discretization of the ledger's accountant (accounting.accountants.PLDAccountant's default):
# calibration uses the same one, so the σ it finds meets the target by the figure the ledger reports.
PLD_INTERVAL = 1e-4


def dpsgd_event(noise_multiplier: float, sampling_probability: float, steps: int) -> PoissonSampledGaussianEvent:
    """The mechanism a DP-SGD run with Poisson sampling is: T self-composed Poisson-sampled Gaussians."""
    return PoissonSampledGaussianEvent(noise_multiplier, sampling_probability, steps)


def dpsgd_epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float) -> float:
    """ε(δ) of the run by dp_accounting's PLD accountant (cached per arguments)."""
    return pld_epsilon([dpsgd_event(noise_multiplier, sampling_probability, steps)], delta,
                       value_discretization_interval=PLD_INTERVAL)


@functools.lru_cache(maxsize=1024)
def rdp_epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float) -> float:
    """ε(δ) of the same run by dp_accounting's RDP accountant: an upper bound, looser than PLD's."""
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dpsgd_event(noise_multiplier, sampling_probability, steps).to_dp_event())
    return float(accountant.get_epsilon(delta))


# Below this σ a PLD of many steps is slow (seconds to minutes) and DP-SGD's guarantee is weak:
# a target that needs less noise is refused rather than searched for.
MIN_NOISE_MULTIPLIER = 0.3


def calibrate_noise_multiplier(
    target_epsilon: float, delta: float, sampling_probability: float, steps: int, *, tolerance: float = 1e-3
) -> float:
    """The smallest σ (within ``tolerance``) whose PLD ε(δ) for (q, T) is at most ``target_epsilon``.

    dp_accounting's ``calibrate_dp_mechanism`` (Brent's method over σ, each point a fresh PLD
    accountant with the ledger's discretization), which returns a σ on the private side of
    the root, so :func:`dpsgd_epsilon` of the result is ≤ the target. The bracket is found
    here by doubling or halving σ from 1, so no slow PLD at a tiny σ is ever computed.
    """
    if not target_epsilon > 0:
        raise ValueError("target_epsilon must be > 0")
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    def meets_target(sigma: float) -> bool:
        return dpsgd_epsilon(sigma, sampling_probability, steps, delta) <= target_epsilon

    low, high = 0.5, 1.0
    while not meets_target(high):
        low, high = high, 2 * high
    while meets_target(low):
        if low <= MIN_NOISE_MULTIPLIER:
            raise ValueError(f"target ε {target_epsilon} needs σ < {MIN_NOISE_MULTIPLIER}: give σ directly")
        low, high = max(low / 2, MIN_NOISE_MULTIPLIER), low

    def fresh_accountant():
        return pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_INTERVAL)

    def event_of(sigma: float):
        return dpsgd_event(sigma, sampling_probability, steps).to_dp_event()

    bracket = dp_accounting.ExplicitBracketInterval(low, high)
    return float(dp_accounting.calibrate_dp_mechanism(
        fresh_accountant, event_of, target_epsilon, delta, bracket_interval=bracket, tol=tolerance
    ))
