"""A query as the service understands it: canonical (what is paid for) and presentation (free)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

from django.conf import settings

from accounting.events import ComposedEvent, DiscreteLaplaceEvent
from accounting.selectors import utc_today
from deploy.api.errors import ApiError
from deploy.api.parsing import object_body, parse_epsilon_micro
from privacy import central
from privacy.epsilon import from_micro, to_micro
from telemetry.catalog import MetricSpec, catalog

QUERY_FIELDS = frozenset({"metric", "version", "start", "end", "group_by", "epsilon", "confidence", "simultaneous", "fresh"})
GROUP_FIELDS = ("day", "region")


def days_between(start: date, end: date) -> list[date]:
    """Every day of the closed window [start, end]."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass(frozen=True)
class CanonicalQuery:
    """What a release answers and is paid for; identical queries share one release."""

    metric: str
    version: int
    start: date
    end: date
    group_by: tuple[str, ...]
    epsilon_micro: int

    def as_json(self) -> dict:
        return {
            "metric": self.metric,
            "version": self.version,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "group_by": list(self.group_by),
            "epsilon": float(from_micro(self.epsilon_micro)),
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    def days(self) -> list[date]:
        return days_between(self.start, self.end)

    @property
    def selects_regions(self) -> bool:
        """Whether the release decides which regions to show (on selection counts of their own)."""
        return "region" in self.group_by

    def mechanism(self, spec: MetricSpec) -> DiscreteLaplaceEvent | ComposedEvent:
        """The mechanism event of this query: what is charged, and what sets its noise scales.

        Discrete Laplace on the grid at the query's ε with the metric's L1 sensitivity Δ. A query
        grouped by region is two mechanisms on the same data, one composed event: the grid at
        ε_main = ε - ε_sel (sensitivity Δ), then each cell's report count at ε_sel, the
        SELECTION_EPSILON_SHARE of ε (sensitivity m: one client-day adds at most m reports).
        """
        grid_sensitivity = central.l1_sensitivity(spec.oracle, spec.contribution_bound)
        if not self.selects_regions:
            return DiscreteLaplaceEvent(from_micro(self.epsilon_micro), grid_sensitivity)
        share = Fraction(settings.PRIVACY["SELECTION_EPSILON_SHARE"])
        selection_micro = central.selection_epsilon_micro(self.epsilon_micro, share)
        return ComposedEvent((DiscreteLaplaceEvent(from_micro(self.epsilon_micro - selection_micro), grid_sensitivity),
                              DiscreteLaplaceEvent(from_micro(selection_micro), spec.contribution_bound)))


def grid_and_selection(event: DiscreteLaplaceEvent | ComposedEvent) -> tuple[DiscreteLaplaceEvent,
                                                                              DiscreteLaplaceEvent | None]:
    """(the grid's event, the selection counts' event or None) of a query's :meth:`CanonicalQuery.mechanism`."""
    return tuple(event.parts) if isinstance(event, ComposedEvent) else (event, None)


@dataclass(frozen=True)
class Presentation:
    """How to show a release: post-processing choices that cost nothing."""

    confidence: float = 0.95
    simultaneous: bool = False


@dataclass(frozen=True)
class QueryRequest:
    query: CanonicalQuery
    spec: MetricSpec
    presentation: Presentation
    fresh: bool  # pay for a new release even if this query was answered before


_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _parse_date(value, field: str) -> date:
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ApiError("invalid_date", f"{field} must be a date written YYYY-MM-DD.", field=field)


def _parse_group_by(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(set(value)) != len(value) \
            or not set(value) <= set(GROUP_FIELDS):
        raise ApiError("invalid_group_by", 'group_by must be a list of distinct fields from ["day", "region"].')
    return tuple(f for f in GROUP_FIELDS if f in value)


def _parse_presentation(data: dict) -> Presentation:
    confidence = data.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ApiError("invalid_confidence", "confidence must be a number in [0.5, 1).")
    simultaneous = data.get("simultaneous", False)
    if not isinstance(simultaneous, bool):
        raise ApiError("invalid_simultaneous", "simultaneous must be true or false.")
    return Presentation(float(confidence), simultaneous)


def _parse_metric(data: dict) -> MetricSpec:
    name, version = data.get("metric"), data.get("version")
    if not isinstance(name, str):
        raise ApiError("unknown_metric", "metric must name a metric.", field="metric")
    if version is not None and (type(version) is not int or version < 1):
        raise ApiError("invalid_version", "version, if given, must be a positive integer.", field="version")
    spec = catalog.lookup(name, version)
    if spec is None:
        if version is not None and catalog.lookup(name) is not None:
            raise ApiError("unknown_metric_version", f"Metric {name!r} has no version {version}.")
        raise ApiError("unknown_metric", f"No metric {name!r}.")
    return spec


def _parse_window(data: dict) -> tuple[date, date]:
    start, end = _parse_date(data.get("start"), "start"), _parse_date(data.get("end"), "end")
    if end < start:
        raise ApiError("invalid_window", "end must not be before start.")
    if end > utc_today():
        raise ApiError("end_in_future", "end must not be after today (UTC).")
    max_days = settings.PRIVACY["MAX_QUERY_DAYS"]
    if (end - start).days + 1 > max_days:
        raise ApiError("window_too_long", f"A query covers at most {max_days} days.")
    return start, end


def _parse_epsilon(data: dict) -> int:
    epsilon_micro = parse_epsilon_micro(data.get("epsilon", settings.PRIVACY["DEFAULT_QUERY_EPSILON"]))
    if epsilon_micro > to_micro(settings.PRIVACY["MAX_QUERY_EPSILON"]):
        raise ApiError("invalid_epsilon", f"epsilon must be at most {settings.PRIVACY['MAX_QUERY_EPSILON']}.",
                       field="epsilon")
    return epsilon_micro


def parse_query_request(data) -> QueryRequest:
    """The query of a request body, or ApiError with the first problem found."""
    data = object_body(data)
    if unknown := data.keys() - QUERY_FIELDS:
        raise ApiError("unknown_field", f"Unknown fields {sorted(unknown)}.")
    spec = _parse_metric(data)
    start, end = _parse_window(data)
    epsilon_micro = _parse_epsilon(data)
    fresh = data.get("fresh", False)
    if not isinstance(fresh, bool):
        raise ApiError("invalid_fresh", "fresh must be true or false.")
    query = CanonicalQuery(spec.name, spec.version, start, end, _parse_group_by(data.get("group_by")), epsilon_micro)
    if query.selects_regions and epsilon_micro < 2:
        raise ApiError("invalid_epsilon", "A query grouped by region splits its epsilon between the counts and the "
                       "region selection: it needs at least 0.000002.", field="epsilon")
    return QueryRequest(query, spec, _parse_presentation(data), fresh)


def query_of_release(release, spec: MetricSpec) -> CanonicalQuery:
    """The canonical query a stored release answered."""
    stored = release.query
    return CanonicalQuery(spec.name, spec.version, date.fromisoformat(stored["start"]),
                          date.fromisoformat(stored["end"]), tuple(stored["group_by"]), release.epsilon_micro)
