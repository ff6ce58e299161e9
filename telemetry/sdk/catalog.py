"""Metric definitions as the server's catalog describes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from privacy.ldp import PROTOCOLS


@dataclass(frozen=True)
class Metric:
    """One current metric version from ``GET /api/v1/metrics``."""

    name: str
    version: int
    domain: tuple[str, ...]
    epsilon: float
    protocol: str
    contribution_bound: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"metric {self.name!r}: unknown protocol {self.protocol!r}")
        if len(self.domain) < 2 or len(set(self.domain)) != len(self.domain):
            raise ValueError(f"metric {self.name!r}: domain needs >= 2 distinct labels")
        if not self.epsilon > 0 or self.contribution_bound < 1:
            raise ValueError(f"metric {self.name!r}: epsilon and contribution_bound must be positive")
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(self.domain)})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Metric":
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            domain=tuple(data["domain"]),
            epsilon=float(data["epsilon"]),
            protocol=str(data["protocol"]),
            contribution_bound=int(data["contribution_bound"]),
        )

    def index_of(self, label: Any) -> int:
        """The domain index of a true label; ValueError when it is not in the domain."""
        try:
            return self._index[label]
        except (KeyError, TypeError):
            raise ValueError(f"{label!r} is not in the domain of metric {self.name!r}") from None


def parse_catalog(metrics: Iterable[Metric | dict[str, Any]] | dict[str, Any]) -> dict[str, Metric]:
    """Metrics by name, from a server response body, a list of dicts or Metric objects."""
    if isinstance(metrics, dict):
        metrics = metrics["metrics"]
    parsed = [m if isinstance(m, Metric) else Metric.from_json(m) for m in metrics]
    return {metric.name: metric for metric in parsed}
