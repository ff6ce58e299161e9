"""An export's DP proof turned into a mechanism event and its ε: the one computation the SDK and the server share.

Framework-free (no Django import): the SDK (``telemetry/sdk/federation.py``) computes the ε it
claims with exactly the code the server (``federation/exports.py``) checks it with, so an honest
proof always matches. A proof is one mechanism or several noised ``parts`` of one export, composed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from accounting.accountants import PLDAccountant
from accounting.events import ComposedEvent, DiscreteLaplaceEvent, GaussianEvent, MechanismEvent
from privacy.epsilon import MICRO_PER_EPSILON, from_micro

MECHANISMS = ("gaussian", "laplace")
# Below σ/Δ = 0.3 a Gaussian's ε is in the tens and its PLD needs gigabytes; above ε = 100 a Laplace
# part protects nothing. Such proofs are refused (invalid_epsilon) before any accounting runs.
MIN_NOISE_MULTIPLIER = Fraction(3, 10)
MAX_PART_EPSILON = 100
MAX_PARTS = 16  # each part is one more PLD to compose on the server: a proof may not ask for unbounded work


class ProofError(ValueError):
    """A proof that describes no valid mechanism; ``code`` and ``field`` are the API's."""

    def __init__(self, code: str, message: str, field: str):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


@dataclass(frozen=True)
class NoisedPart:
    """One noised part of an export: the mechanism, its noise scale (σ or b), sensitivity Δ and clip norm C."""

    mechanism: str
    noise_scale: Fraction
    sensitivity: Fraction
    clip_norm: Fraction

    def event(self, where: str = "proof") -> MechanismEvent:
        if self.mechanism not in MECHANISMS:
            raise ProofError("proof_mismatch", f"{where}.mechanism must be one of {list(MECHANISMS)}.",
                             f"{where}.mechanism")
        for name in ("noise_scale", "sensitivity", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ProofError("proof_mismatch", f"{where}.{name} must be a positive number.", f"{where}.{name}")
        if self.sensitivity < self.clip_norm:  # clipping bounds one contribution's norm: Δ ≥ C
            raise ProofError("proof_mismatch", f"{where}.sensitivity is below its clip_norm: the noise does not "
                             "cover one clipped contribution.", f"{where}.sensitivity")
        if self.mechanism == "gaussian":
            if self.noise_scale / self.sensitivity < MIN_NOISE_MULTIPLIER:
                raise ProofError("invalid_epsilon", f"{where}: noise_scale / sensitivity is below "
                                 f"{float(MIN_NOISE_MULTIPLIER)}: too little noise to account.", f"{where}.noise_scale")
            return GaussianEvent(noise_multiplier=float(self.noise_scale / self.sensitivity))
        # Laplace mechanism with scale b = Δ1/ε is ε-DP (Dwork & Roth 2014, Thm. 3.6); ε rounded up to the µε grid.
        epsilon_micro = -(-self.sensitivity * MICRO_PER_EPSILON // self.noise_scale)
        if epsilon_micro > MAX_PART_EPSILON * MICRO_PER_EPSILON:
            raise ProofError("invalid_epsilon", f"{where}: sensitivity / noise_scale is over {MAX_PART_EPSILON}.",
                             f"{where}.noise_scale")
        return DiscreteLaplaceEvent(epsilon=from_micro(int(epsilon_micro)))


def proof_epsilon_micro(parts: list[NoisedPart], delta: Decimal, *, listed: bool = True) -> tuple[MechanismEvent, int]:
    """(the composed event of ``parts``, its ε at ``delta`` in µε): pure Σε when δ = 0 and every part is pure,
    else the PLD ε(δ) of the composition (rounded up to the µε grid by the accountant). ``listed``: the proof
    holds ``parts`` (errors name ``proof.parts[n]``) rather than one mechanism at its top level."""
    if not parts:
        raise ProofError("proof_mismatch", "proof.parts must be a non-empty list.", "proof.parts")
    if len(parts) > MAX_PARTS:
        raise ProofError("proof_mismatch", f"proof.parts holds {len(parts)} parts; at most {MAX_PARTS}.", "proof.parts")
    events = [part.event(f"proof.parts[{n}]" if listed else "proof") for n, part in enumerate(parts)]
    event = events[0] if len(events) == 1 else ComposedEvent(parts=tuple(events))
    if event.pure_epsilon_micro is not None and delta == 0:
        return event, event.pure_epsilon_micro
    if delta == 0:
        raise ProofError("invalid_delta", "A Gaussian proof needs a positive delta.", "proof.delta")
    return event, PLDAccountant(delta).spent_micro([event])
