"""Metric definitions as the server's catalog describes them, and what ingest accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

from privacy.ldp import PROTOCOLS
from privacy.ldp.longitudinal import Guarantees, guarantees


@dataclass(frozen=True)
class Metric:
    """One current metric version from ``GET /api/v1/metrics``.

    ``report_epsilon`` is the ε of one report alone; a server that does not
    send it (older than the longitudinal scheme) means ``epsilon``: every
    report is the memo. The guarantees are computed here from the definition,
    never read from the server.
    """

    name: str
    version: int
    domain: tuple[str, ...]
    epsilon: float
    protocol: str
    contribution_bound: int
    report_epsilon: float | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"metric {self.name!r}: unknown protocol {self.protocol!r}")
        if len(self.domain) < 2 or len(set(self.domain)) != len(self.domain):
            raise ValueError(f"metric {self.name!r}: domain needs >= 2 distinct labels")
        if not self.epsilon > 0 or self.contribution_bound < 1:
            raise ValueError(f"metric {self.name!r}: epsilon and contribution_bound must be positive")
        if self.report_epsilon is None:
            object.__setattr__(self, "report_epsilon", self.epsilon)
        if not 0 < self.report_epsilon <= self.epsilon:
            raise ValueError(f"metric {self.name!r}: report_epsilon must be in (0, epsilon]")
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(self.domain)})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Metric":
        report_epsilon = data.get("report_epsilon")
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            domain=tuple(data["domain"]),
            epsilon=float(data["epsilon"]),
            protocol=str(data["protocol"]),
            contribution_bound=int(data["contribution_bound"]),
            report_epsilon=None if report_epsilon is None else float(report_epsilon),
        )

    @cached_property
    def guarantees(self) -> Guarantees:
        """Keep probability and per-value, per-report and per-change ε (privacy.ldp.longitudinal)."""
        return guarantees(self.protocol, len(self.domain), self.epsilon, self.report_epsilon)

    def index_of(self, label: Any) -> int:
        """The domain index of a true label; ValueError when it is not in the domain."""
        try:
            return self._index[label]
        except (KeyError, TypeError):
            raise ValueError(f"{label!r} is not in the domain of metric {self.name!r}") from None


@dataclass(frozen=True)
class Catalog:
    """The metrics by name, and what the server's ingest accepts (None: not told, not checked)."""

    metrics: dict[str, Metric]
    regions: frozenset[str] | None = None
    report_max_age_days: int | None = None


def parse_catalog(metrics: Iterable[Metric | dict[str, Any]] | dict[str, Any]) -> Catalog:
    """A catalog from a server response body, a list of dicts or Metric objects."""
    regions = max_age = None
    if isinstance(metrics, dict):
        if metrics.get("regions") is not None:
            regions = frozenset(str(code) for code in metrics["regions"])
        if metrics.get("report_max_age_days") is not None:
            max_age = int(metrics["report_max_age_days"])
        metrics = metrics["metrics"]
    parsed = [m if isinstance(m, Metric) else Metric.from_json(m) for m in metrics]
    return Catalog({metric.name: metric for metric in parsed}, regions, max_age)
