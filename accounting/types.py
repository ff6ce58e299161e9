"""Value types of the ledger: who spends, on what, for what (no Django import)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from accounting.accountants import Accountant, PLDAccountant, PureDPAccountant


@dataclass(frozen=True)
class EffectivePolicy:
    """The daily budget that applies to a spender, and how its spends compose."""

    daily_epsilon_micro: int
    composition: str  # "pure" or "approximate"
    delta: Decimal  # 0 for pure
    source: str  # "analyst", "group:<name>" or "default"

    def accountant(self) -> Accountant:
        return PLDAccountant(self.delta) if self.composition == "approximate" else PureDPAccountant()


@dataclass(frozen=True)
class Spender:
    """Whoever a charge is billed to: ``user:<id>`` (an analyst, an admin, a training job's
    owner) or ``contributor:<id>``. ``policy`` is their daily budget, None when they have
    none (their spends are capped by partitions only)."""

    key: str
    policy: EffectivePolicy | None


@dataclass(frozen=True, order=True)
class Partition:
    """One part of what carries a lifetime cap: ``Partition("metric:7", "2026-11-30")``,
    ``Partition("dataset:3")``. Caps are set per scope."""

    scope: str
    key: str = ""


@dataclass(frozen=True)
class Subject:
    """What a charge paid for: ``Subject("release", "<uuid>")``, an export, a training job."""

    kind: str
    id: str
