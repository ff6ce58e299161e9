"""Mechanism events: what a release did, described by its parameters only.

Framework-free (no Django import). Following Google's ``dp_accounting``, an
event is immutable and says nothing about privacy by itself; accountants
(:mod:`accounting.accountants`) turn a sequence of events into ε. Every
privacy spend of the service, a query, an export or a training job, is one
event charged to the one ledger (:func:`accounting.services.ledger.charge`),
which stores it as JSON (:func:`event_to_json` / :func:`event_from_json`).

A new mechanism is one class here: a frozen dataclass with a ``kind``, its
``to_dp_event()``, and ``pure_epsilon_micro`` (its ε if it is pure ε-DP,
else None), registered with :func:`mechanism_event`. Several mechanisms run by
one spend (a query's grid and its region selection) are one
:class:`ComposedEvent` of their events.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from privacy.epsilon import MICRO_PER_EPSILON, from_micro, to_micro

if TYPE_CHECKING:  # dp_accounting takes ~2 s to import: load it on first accounting use only
    import dp_accounting

__all__ = [
    "MechanismEvent",
    "DiscreteLaplaceEvent",
    "GaussianEvent",
    "PoissonSampledGaussianEvent",
    "ComposedEvent",
    "mechanism_event",
    "event_to_json",
    "event_from_json",
]


class MechanismEvent(Protocol):
    kind: ClassVar[str]

    @property
    def pure_epsilon_micro(self) -> int | None:
        """ε of a pure ε-DP mechanism in µε; None when the mechanism has no pure ε (Gaussian)."""

    def to_dp_event(self) -> dp_accounting.DpEvent: ...


_EVENT_KINDS: dict[str, type] = {}


def mechanism_event(cls):
    """Register an event class under its ``kind`` so the ledger can read it back."""
    if cls.kind in _EVENT_KINDS:
        raise ValueError(f"event kind {cls.kind!r} registered twice")
    _EVENT_KINDS[cls.kind] = cls
    return cls


def _positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int")


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a positive finite number")
    return float(value)


@mechanism_event
@dataclasses.dataclass(frozen=True)
class DiscreteLaplaceEvent:
    """Discrete Laplace noise of scale Δ/ε on integer counts with L1 sensitivity Δ (pure ε-DP).

    ``epsilon`` is normalized to an exact Decimal on the 1e-6 grid; ``sensitivity`` Δ
    only sets :attr:`scale`, the accounting depends on ε alone.
    """

    kind: ClassVar[str] = "discrete_laplace"
    epsilon: Decimal
    sensitivity: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", from_micro(to_micro(self.epsilon)))
        _positive_int(self.sensitivity, "sensitivity")

    @property
    def pure_epsilon_micro(self) -> int:
        return to_micro(self.epsilon)

    @property
    def scale(self) -> Fraction:
        # Laplace mechanism: scale b = Δ1/ε gives ε-DP (Dwork & Roth 2014, Thm. 3.6; CKS 2020, Thm. 7 discrete).
        return Fraction(self.sensitivity * MICRO_PER_EPSILON, to_micro(self.epsilon))

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """``DiscreteLaplaceDpEvent(noise_parameter=ε, sensitivity=1)``: privacy loss ±ε.

        That two-point PLD dominates every pure ε-DP mechanism, so it is exact for a
        scalar count and sound for a vector of counts with L1 sensitivity Δ at scale
        Δ/ε however a client's contribution is spread over cells. (``LaplaceDpEvent``
        is the continuous Laplace, whose PLD is better: it would under-report ε.)
        """
        from dp_accounting.dp_event import DiscreteLaplaceDpEvent

        return DiscreteLaplaceDpEvent(noise_parameter=float(self.epsilon), sensitivity=1)


@mechanism_event
@dataclasses.dataclass(frozen=True)
class GaussianEvent:
    """One Gaussian mechanism with noise σ = ``noise_multiplier`` × (L2 sensitivity); approximate DP only."""

    kind: ClassVar[str] = "gaussian"
    noise_multiplier: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", _positive_float(self.noise_multiplier, "noise_multiplier"))

    @property
    def pure_epsilon_micro(self) -> None:
        return None

    def to_dp_event(self) -> dp_accounting.DpEvent:
        from dp_accounting.dp_event import GaussianDpEvent

        return GaussianDpEvent(self.noise_multiplier)


@mechanism_event
@dataclasses.dataclass(frozen=True)
class PoissonSampledGaussianEvent:
    """DP-SGD: ``steps`` rounds of the Gaussian mechanism on a Poisson sample of rate q.

    Abadi et al. 2016; its PLD is composed by dp_accounting as
    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``.
    """

    kind: ClassVar[str] = "poisson_sampled_gaussian"
    noise_multiplier: float
    sampling_probability: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", _positive_float(self.noise_multiplier, "noise_multiplier"))
        q = _positive_float(self.sampling_probability, "sampling_probability")
        if q > 1:
            raise ValueError("sampling_probability must be in (0, 1]")
        object.__setattr__(self, "sampling_probability", q)
        _positive_int(self.steps, "steps")

    @property
    def pure_epsilon_micro(self) -> None:
        return None

    def to_dp_event(self) -> dp_accounting.DpEvent:
        from dp_accounting.dp_event import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

        sampled = PoissonSampledDpEvent(self.sampling_probability, GaussianDpEvent(self.noise_multiplier))
        return SelfComposedDpEvent(sampled, self.steps)


@mechanism_event
@dataclasses.dataclass(frozen=True)
class ComposedEvent:
    """Several mechanisms run on the same data by one spend, charged as one event.

    ``parts`` are events (or their JSON, read back with :func:`event_from_json`).
    Pure ε is Σ ε_i when every part is pure (basic composition, Dwork & Roth 2014,
    Thm. 3.16); the PLD accountant composes the parts' own PLDs (``ComposedDpEvent``).
    """

    kind: ClassVar[str] = "composed"
    parts: tuple

    def __post_init__(self) -> None:
        if isinstance(self.parts, (str, bytes, dict)) or not hasattr(self.parts, "__iter__"):
            raise ValueError("parts must be a sequence of events")
        parts = tuple(event_from_json(part) if isinstance(part, dict) else part for part in self.parts)
        if not parts or not all(type(part) in _EVENT_KINDS.values() for part in parts):
            raise ValueError("parts must be one or more registered mechanism events")
        object.__setattr__(self, "parts", parts)

    @property
    def pure_epsilon_micro(self) -> int | None:
        epsilons = [part.pure_epsilon_micro for part in self.parts]
        return None if None in epsilons else sum(epsilons)

    def to_dp_event(self) -> dp_accounting.DpEvent:
        from dp_accounting.dp_event import ComposedDpEvent

        return ComposedDpEvent([part.to_dp_event() for part in self.parts])

    def json_fields(self) -> dict[str, Any]:
        """Its parameters as JSON: each part's own JSON, kind included."""
        return {"parts": [event_to_json(part) for part in self.parts]}


def event_to_json(event: MechanismEvent) -> dict[str, Any]:
    """The event's kind and parameters; exact Decimals as strings (read back exactly)."""
    if hasattr(event, "json_fields"):
        return {"kind": event.kind, **event.json_fields()}
    fields = {name: str(value) if isinstance(value, Decimal) else value
              for name, value in dataclasses.asdict(event).items()}
    return {"kind": event.kind, **fields}


def event_from_json(data: dict[str, Any]) -> MechanismEvent:
    """The event a ledger row stores; ValueError for an unknown kind or bad parameters."""
    fields = dict(data)
    cls = _EVENT_KINDS.get(fields.pop("kind", None))
    if cls is None:
        raise ValueError(f"unknown mechanism event kind {data.get('kind')!r}")
    return cls(**fields)


def event_sort_key(event: MechanismEvent) -> tuple:
    """A total order on events of any kinds (for canonical, cacheable compositions)."""
    return (event.kind, tuple(dataclasses.astuple(event)))
