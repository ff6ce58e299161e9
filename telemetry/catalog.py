"""An in-process, read-only view of the metric catalog for the hot paths.

Metric versions are immutable once they have reports, so caching them is safe;
a name that is not in the cache triggers one reload (at most once a second),
which is how a new metric or version becomes visible to every worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from privacy.ldp import FrequencyOracle
from privacy.ldp.longitudinal import composed_oracle

from telemetry.models import Metric

_RELOAD_INTERVAL_S = 1.0
_MAX_AGE_S = 30.0


def partition_scope(metric_id: int) -> str:
    """The ledger scope of a metric version: its partitions are its data-days, each with a lifetime cap."""
    return f"metric:{metric_id}"


@dataclass(frozen=True)
class MetricSpec:
    id: int
    name: str
    version: int
    domain: tuple[str, ...]
    epsilon: float
    report_epsilon: float
    protocol: str
    contribution_bound: int
    label_index: dict[str, int] = field(hash=False, compare=False)
    oracle: FrequencyOracle = field(hash=False, compare=False)

    @property
    def k(self) -> int:
        return len(self.domain)

    @classmethod
    def from_model(cls, metric: Metric) -> "MetricSpec":
        domain = tuple(metric.domain)
        return cls(
            id=metric.id,
            name=metric.name,
            version=metric.version,
            domain=domain,
            epsilon=metric.epsilon,
            report_epsilon=metric.report_epsilon,
            protocol=metric.protocol,
            contribution_bound=metric.contribution_bound,
            label_index={label: i for i, label in enumerate(domain)},
            # The channel clients' reports went through: memo, then the instantaneous step (p', q').
            oracle=composed_oracle(metric.protocol, len(domain), metric.epsilon, metric.report_epsilon),
        )


class MetricCatalog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, MetricSpec]] = {}
        self._by_id: dict[int, MetricSpec] = {}
        self._loaded_at = 0.0
        self._generation = 0

    def _reload(self) -> None:
        versions: dict[str, dict[int, MetricSpec]] = {}
        for metric in Metric.objects.all():
            versions.setdefault(metric.name, {})[metric.version] = MetricSpec.from_model(metric)
        self._by_id = {spec.id: spec for by_version in versions.values() for spec in by_version.values()}
        self._versions, self._loaded_at = versions, time.monotonic()
        self._generation += 1

    def _maybe_reload(self, force: bool) -> None:
        age = time.monotonic() - self._loaded_at
        if age > _MAX_AGE_S or (force and age > _RELOAD_INTERVAL_S):
            with self._lock:
                self._reload()

    def lookup(self, name: str, version: int | None = None) -> MetricSpec | None:
        """The given version of ``name``, or its current (highest) version."""
        self._maybe_reload(force=False)
        versions = self._versions.get(name)
        if versions is None or (version is not None and version not in versions):
            self._maybe_reload(force=True)
            versions = self._versions.get(name)
        if versions is None:
            return None
        return versions.get(version) if version is not None else versions[max(versions)]

    def generation(self) -> int:
        """Which load of the catalog is current (reloading first if it is stale): anything derived from
        lookups, such as ingest's checked reports, holds while this is unchanged."""
        self._maybe_reload(force=False)
        return self._generation

    def by_id(self, metric_id: int) -> MetricSpec:
        self._maybe_reload(force=metric_id not in self._by_id)
        return self._by_id[metric_id]

    def invalidate(self) -> None:
        self._loaded_at = 0.0


catalog = MetricCatalog()
