"""Beta priors and their version-aware merge: the spec's ImportMerger, shared by the SDK and the server.

Pure Python, no Django. A prior imported from another format version keeps only a share of its
evidence (``version_dampening``), so older learning still helps, with reduced weight.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass


class InvalidPrior(ValueError):
    """A prior or a decay that cannot be merged; ``code`` is the stable API error code."""

    code = "invalid_prior"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(alpha, beta) Thompson-sampling prior: alpha - 1 successes, beta - 1 failures on a uniform base."""

    alpha: float
    beta: float

    def __post_init__(self):
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1.0):
                raise InvalidPrior(f"{name} must be a finite number >= 1 (evidence on Beta(1, 1)), not {value!r}")

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def evidence(self) -> float:
        """Pseudo-observations behind the prior: alpha + beta - 2."""
        return self.alpha + self.beta - 2.0

    def dampen(self, factor: float) -> BetaPrior:
        """Keep a share ``factor`` of the evidence: shrink towards Beta(1, 1), the mean moves towards 1/2."""
        return BetaPrior(1.0 + (self.alpha - 1.0) * factor, 1.0 + (self.beta - 1.0) * factor)

    def merge(self, other: BetaPrior) -> BetaPrior:
        """Pool the evidence of two priors on the same uniform base."""
        return BetaPrior(self.alpha + other.alpha - 1.0, self.beta + other.beta - 1.0)


def version_dampening(imported_version: int, local_version: int, decay: float = 0.5) -> float:
    """Share of imported evidence kept: ``decay ** |local_version - imported_version|``.

    1 for the same version; 0.5 per version of difference by default (the spec's reference
    dampens any cross-version import by 0.5; each further version halves it again).
    """
    if not 0.0 < decay <= 1.0:
        raise InvalidPrior("decay must be in (0, 1]")
    return decay ** abs(int(local_version) - int(imported_version))


def merge_priors(
    local: Mapping[Hashable, BetaPrior],
    imported: Mapping[Hashable, BetaPrior],
    imported_version: int,
    local_version: int,
    decay: float = 0.5,
) -> dict[Hashable, BetaPrior]:
    """Merge imported Beta priors into local ones, keyed by (bucket, arm) or any key.

    Each imported prior is first dampened by ``version_dampening``: its evidence
    (alpha - 1, beta - 1) is multiplied by ``decay ** version gap``, so learning from other
    versions still helps, with reduced weight. A key present on both sides pools the
    evidence (``alpha = alpha_local + alpha_imported' - 1``, likewise beta); a key only
    imported enters dampened; a key only local is unchanged. Returns a new dict.
    """
    factor = version_dampening(imported_version, local_version, decay)
    merged = dict(local)
    for key, prior in imported.items():
        dampened = prior.dampen(factor)
        merged[key] = merged[key].merge(dampened) if key in merged else dampened
    return merged
