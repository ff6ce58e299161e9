"""Central-DP queries: the only way analysts see data.

canonicalize -> released-answer cache (free) -> roll-up -> one transaction:
reserve budget (locks) -> raw counts on a data-independent grid -> exact
discrete Laplace from a fresh DRBG seed -> Release row with the sealed seed ->
ledger row. Then post-processing of the noisy counts only: debias, Norm-Sub,
round, coarsen small regions into "other", intervals.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from accounting import selectors as budget_selectors
from accounting import services as budget_services
from accounting.accountants import from_micro, to_micro
from privacy import central
from privacy.drbg import DRBG, new_seed
from privacy.sealing import parse_key, seal
from telemetry import selectors
from telemetry.catalog import MetricSpec, catalog
from telemetry.errors import ApiError
from telemetry.models import Release, RollupWatermark
from telemetry.regions import region_axis
from telemetry.rollup import ROLLUP_LOCK, advance_rollup

QUERY_FIELDS = frozenset({"metric", "version", "start", "end", "group_by", "epsilon", "confidence", "simultaneous", "fresh"})
UNKNOWN_REGION, OTHER_REGION = "unknown", "other"


@dataclass(frozen=True)
class CanonicalQuery:
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
            "epsilon": str(from_micro(self.epsilon_micro)),
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


@dataclass(frozen=True)
class Presentation:
    """How to show a release: post-processing choices that cost nothing."""

    confidence: float = 0.95
    simultaneous: bool = False


_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _parse_date(value, field: str) -> date:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise ApiError("invalid_date", f"{field} must be a date written YYYY-MM-DD.", field=field)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError("invalid_date", f"{field} must be a date written YYYY-MM-DD.", field=field)


def _parse_group_by(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(set(value)) != len(value) \
            or not set(value) <= set(selectors.GROUP_FIELDS):
        raise ApiError("invalid_group_by", 'group_by must be a list of distinct fields from ["day", "region"].')
    return tuple(f for f in selectors.GROUP_FIELDS if f in value)


def _parse_presentation(data: dict) -> Presentation:
    confidence = data.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ApiError("invalid_confidence", "confidence must be a number in [0.5, 1).")
    simultaneous = data.get("simultaneous", False)
    if not isinstance(simultaneous, bool):
        raise ApiError("invalid_simultaneous", "simultaneous must be true or false.")
    return Presentation(float(confidence), simultaneous)


def parse_query(data) -> tuple[CanonicalQuery, MetricSpec, Presentation, bool]:
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    if unknown := data.keys() - QUERY_FIELDS:
        raise ApiError("unknown_field", f"Unknown fields {sorted(unknown)}.")
    name, version = data.get("metric"), data.get("version")
    if not isinstance(name, str) or (version is not None and (type(version) is not int or version < 1)):
        raise ApiError("unknown_metric", "metric must name a metric (and version, if given, an integer).")
    spec = catalog.lookup(name, version)
    if spec is None:
        raise ApiError("unknown_metric", f"No metric {name!r}" + (f" version {version}." if version else "."))
    start, end = _parse_date(data.get("start"), "start"), _parse_date(data.get("end"), "end")
    if end < start:
        raise ApiError("invalid_window", "end must not be before start.")
    if end > budget_selectors.utc_today():
        raise ApiError("end_in_future", "end must not be after today (UTC).")
    max_days = settings.PRIVACY["MAX_QUERY_DAYS"]
    if (end - start).days + 1 > max_days:
        raise ApiError("window_too_long", f"A query covers at most {max_days} days.")
    epsilon_micro = budget_services.parse_epsilon_micro(data.get("epsilon", settings.PRIVACY["DEFAULT_QUERY_EPSILON"]))
    if epsilon_micro > to_micro(settings.PRIVACY["MAX_QUERY_EPSILON"]):
        raise ApiError("invalid_epsilon", f"epsilon must be at most {settings.PRIVACY['MAX_QUERY_EPSILON']}.")
    fresh = data.get("fresh", False)
    if not isinstance(fresh, bool):
        raise ApiError("invalid_fresh", "fresh must be true or false.")
    query = CanonicalQuery(spec.name, spec.version, start, end, _parse_group_by(data.get("group_by")), epsilon_micro)
    return query, spec, _parse_presentation(data), fresh


# --- the grid -------------------------------------------------------------------


def grid_axes(query: CanonicalQuery, regions: tuple[str, ...]) -> tuple[list, list]:
    days = query.days() if "day" in query.group_by else [None]
    return days, (list(regions) if "region" in query.group_by else [None])


def build_grid(spec: MetricSpec, query: CanonicalQuery, regions: tuple[str, ...], rows) -> np.ndarray:
    """Raw counts on the full grid (days x regions x width), zeros included.

    Regions outside the configured axis (after a configuration change) count
    as "" so nothing is dropped.
    """
    days, region_list = grid_axes(query, regions)
    day_index = {d: i for i, d in enumerate(days)}
    region_index = {r: i for i, r in enumerate(region_list)}
    grid = np.zeros((len(days), len(region_list), central.grid_width(spec.oracle)), dtype=np.int64)
    for day, region, reports, support in rows:
        d = day_index[day] if "day" in query.group_by else 0
        r = region_index.get(region, region_index.get("")) if "region" in query.group_by else 0
        grid[d, r, : spec.k] += support
        if central.counts_n_separately(spec.oracle):
            grid[d, r, spec.k] += reports
    return grid.reshape(len(days) * len(region_list), -1)


# --- release ------------------------------------------------------------------------


def _hold_rollup_shared() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ROLLUP_LOCK])


def _lock_query(query: CanonicalQuery) -> None:
    """Identical non-fresh queries wait for each other, so only the first one pays."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(query.key[:15], 16)])


def _create_release(user, spec: MetricSpec, query: CanonicalQuery, presentation: Presentation,
                    fresh: bool) -> tuple[Release, bool]:
    """(release, cached): a new paid release, or the one a concurrent identical query just made."""
    with transaction.atomic():
        if not fresh:
            _lock_query(query)
            if (released := selectors.latest_release(query.key)) is not None:
                return released, True
        charge = budget_services.reserve(
            user=user, metric_id=spec.id, data_start=query.start, data_end=query.end,
            epsilon_micro=query.epsilon_micro,
        )
        _hold_rollup_shared()  # the roll-up cannot move between reading its watermark and its counts
        watermark = RollupWatermark.objects.filter(pk=1).values_list("report_id", flat=True).first() or 0
        regions = region_axis()
        raw = build_grid(spec, query, regions, selectors.observed_rows(spec, query.start, query.end))
        sensitivity = central.l1_sensitivity(spec.oracle, spec.contribution_bound)
        scale = central.noise_scale(sensitivity, query.epsilon_micro)
        seed = new_seed()
        noisy, _ = central.add_noise(raw, scale, DRBG(seed))
        release = Release(
            analyst=user, metric_id=spec.id, query=query.as_json(), query_key=query.key,
            epsilon_micro=query.epsilon_micro, sensitivity=sensitivity, noise_scale=str(scale),
            regions=list(regions), watermark=watermark, noisy_counts=noisy.astype("<i8").tobytes(),
            confidence=presentation.confidence, simultaneous=presentation.simultaneous,
        )
        release.sealed_seed = seal(parse_key(settings.AUDIT_KEY), seed, release.id.bytes)
        release.released_data = render(release, spec, presentation)
        release.save(force_insert=True)
        budget_services.record(charge, release)
    return release, False


# --- post-processing and rendering --------------------------------------------------


def _cell_json(spec, day, region, reports, counts, low, high) -> dict:
    cell = {}
    if day is not None:
        cell["day"] = day.isoformat()
    if region is not None:
        cell["region"] = region or UNKNOWN_REGION
    cell["reports"] = int(reports)
    cell["values"] = [
        {"value": label, "count": c, "ci_low": round(lo, 2), "ci_high": round(hi, 2)}
        for label, c, lo, hi in zip(spec.domain, counts.tolist(), low.tolist(), high.tolist())
    ]
    return cell


def render(release: Release, spec: MetricSpec, presentation: Presentation) -> list[dict]:
    """The released data: post-processing of the stored noisy counts, deterministic."""
    query = CanonicalQuery(spec.name, spec.version, date.fromisoformat(release.query["start"]),
                           date.fromisoformat(release.query["end"]), tuple(release.query["group_by"]),
                           release.epsilon_micro)
    days, regions = grid_axes(query, tuple(release.regions))
    noisy = np.frombuffer(bytes(release.noisy_counts), dtype="<i8").reshape(len(days) * len(regions), -1)
    processed = central.post_process(spec.oracle, noisy, Fraction(release.noise_scale))
    shape = (len(days), len(regions))
    reports, counts = processed.reports.reshape(shape), processed.counts.reshape(*shape, spec.k)
    unbiased, variance = processed.unbiased.reshape(*shape, spec.k), processed.variance.reshape(*shape, spec.k)
    coarsened = "region" in query.group_by
    small = central.coarsen_mask(reports, settings.PRIVACY["COARSEN_THRESHOLD"]) if coarsened \
        else np.zeros(shape, dtype=bool)
    data = []
    for d, day in enumerate(days):
        for r in np.flatnonzero(~small[d]):
            low, high = central.intervals(unbiased[d, r], variance[d, r], presentation.confidence,
                                          presentation.simultaneous)
            data.append(_cell_json(spec, day, regions[r], reports[d, r], counts[d, r], low, high))
        if small[d].any():  # "other": sums of the small regions' post-processed values
            merged = small[d]
            low, high = central.intervals(unbiased[d, merged].sum(0), variance[d, merged].sum(0),
                                          presentation.confidence, presentation.simultaneous)
            data.append(_cell_json(spec, day, OTHER_REGION, reports[d, merged].sum(), counts[d, merged].sum(0),
                                   low, high))
    return data


def _privacy_json(release: Release, user, cached: bool) -> dict:
    status = budget_selectors.budget_status(user)
    entry = release.ledger_entries.first()
    return {
        "epsilon": float(from_micro(release.epsilon_micro)),
        "delta": float(entry.delta) if entry else 0.0,
        "differential_privacy": True,
        "ldp_corrected": True,
        "budget_remaining": float(status["remaining"]),
        "resets_at": status["resets_at"].isoformat(),
        "cached": cached,
    }


def run_query(*, user, data) -> dict:
    query, spec, presentation, fresh = parse_query(data)
    release = None if fresh else selectors.latest_release(query.key)
    cached = release is not None
    if not cached:
        advance_rollup()
        release, cached = _create_release(user, spec, query, presentation, fresh)
    data = render(release, spec, presentation) if cached else release.released_data
    return {
        "data": data,
        "privacy": _privacy_json(release, user, cached),
        "release": {"id": str(release.id), "created_at": release.created_at.isoformat(),
                    "data_as_of_report_id": release.watermark, "query": release.query},
    }
