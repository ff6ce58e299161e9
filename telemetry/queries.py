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
import orjson
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


def build_grid(spec: MetricSpec, query: CanonicalQuery, regions: tuple[str, ...],
               rows: selectors.CountRows) -> np.ndarray:
    """Raw counts on the full grid, (days x regions) rows by width columns, zeros included.

    Regions outside the configured axis (after a configuration change) count
    as "" so nothing is dropped.
    """
    days, region_list = grid_axes(query, regions)
    day_index = {d: i for i, d in enumerate(days)}
    region_index = {r: i for i, r in enumerate(region_list)}
    d = [day_index[day] for day in rows.days] if "day" in query.group_by else [0] * len(rows.days)
    r = [region_index.get(region, region_index.get("")) for region in rows.regions] \
        if "region" in query.group_by else [0] * len(rows.regions)
    cell = np.array(d, dtype=np.int64) * len(region_list) + np.array(r, dtype=np.int64)
    grid = np.zeros((len(days) * len(region_list), central.grid_width(spec.oracle)), dtype=np.int64)
    np.add.at(grid[:, : spec.k], cell, rows.support)
    if central.counts_n_separately(spec.oracle):
        np.add.at(grid[:, spec.k], cell, rows.reports)
    return grid


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
                    fresh: bool) -> tuple[Release, dict | None]:
    """(release, response parts) of a new paid release, or (release, None) for the one a
    concurrent identical query just made (then cached)."""
    with transaction.atomic():
        if not fresh:
            _lock_query(query)
            if (released := selectors.latest_release(query.key)) is not None:
                return released, None
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
        data = render(release, spec, presentation)
        release.released_digest = released_digest(data)
        release.save(force_insert=True)
        budget_services.record(charge, release)
    privacy = _privacy_json(release, charge.remaining_after, budget_selectors.resets_at(charge.budget_day),
                            charge.policy.delta, cached=False)
    return release, {"data": data, "privacy": privacy}


# --- post-processing and rendering --------------------------------------------------


def _cell(day: str | None, region: str | None, reports, counts: np.ndarray, low: np.ndarray,
          high: np.ndarray) -> dict:
    cell = {}
    if day is not None:
        cell["day"] = day
    if region is not None:
        cell["region"] = region
    cell.update(reports=reports, counts=counts, ci_low=low, ci_high=high)
    return cell


def render(release: Release, spec: MetricSpec, presentation: Presentation) -> list[dict]:
    """The released data: post-processing of the stored noisy counts, deterministic.

    Cells are columnar: ``counts``, ``ci_low`` and ``ci_high`` list one entry per
    value of the metric's domain, in its order. Regions whose noisy total is below
    COARSEN_THRESHOLD are summed into one "other" cell per day.
    """
    query = CanonicalQuery(spec.name, spec.version, date.fromisoformat(release.query["start"]),
                           date.fromisoformat(release.query["end"]), tuple(release.query["group_by"]),
                           release.epsilon_micro)
    days, regions = grid_axes(query, tuple(release.regions))
    noisy = np.frombuffer(bytes(release.noisy_counts), dtype="<i8").reshape(len(days) * len(regions), -1)
    processed = central.post_process(spec.oracle, noisy, Fraction(release.noise_scale))
    shape = (len(days), len(regions))
    reports, counts = processed.reports.reshape(shape), processed.counts.reshape(*shape, spec.k)
    unbiased, variance = processed.unbiased.reshape(*shape, spec.k), processed.variance.reshape(*shape, spec.k)
    small = central.coarsen_mask(reports, settings.PRIVACY["COARSEN_THRESHOLD"]) if "region" in query.group_by \
        else np.zeros(shape, dtype=bool)
    conf, simultaneous = presentation.confidence, presentation.simultaneous
    low, high = central.intervals(unbiased, variance, conf, simultaneous)
    day_labels = [day.isoformat() if day else None for day in days]
    region_labels = [None if r is None else (r or UNKNOWN_REGION) for r in regions]
    columns = reports, counts, np.round(low, 2), np.round(high, 2)
    merged = small[..., None]  # "other": sums of the small regions' post-processed values
    other_low, other_high = central.intervals(np.where(merged, unbiased, 0).sum(1), np.where(merged, variance, 0).sum(1),
                                              conf, simultaneous)
    others = (np.where(small, reports, 0).sum(1), np.where(merged, counts, 0).sum(1),
              np.round(other_low, 2), np.round(other_high, 2))
    data = []
    for d in range(len(days)):
        for r in np.flatnonzero(~small[d]).tolist():
            data.append(_cell(day_labels[d], region_labels[r], *(column[d, r] for column in columns)))
        if small[d].any():
            data.append(_cell(day_labels[d], OTHER_REGION, *(column[d] for column in others)))
    return data


def dumps(response) -> bytes:
    """JSON of a query response; its cells hold numpy rows, which orjson writes directly."""
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def released_digest(data: list[dict]) -> str:
    """SHA-256 of the released data as serialized: the audit compares a replay against it."""
    return hashlib.sha256(dumps(data)).hexdigest()


def _privacy_json(release: Release, remaining, resets_at, delta, cached: bool) -> dict:
    return {
        "epsilon": float(from_micro(release.epsilon_micro)),
        "delta": float(delta),
        "differential_privacy": True,
        "ldp_corrected": True,
        "budget_remaining": float(remaining),
        "resets_at": resets_at.isoformat(),
        "cached": cached,
    }


def _cached_response(release: Release, spec: MetricSpec, user, presentation: Presentation) -> dict:
    status = budget_selectors.budget_status(user)
    entry = release.ledger_entries.only("delta").first()
    privacy = _privacy_json(release, status["remaining"], status["resets_at"], entry.delta if entry else 0,
                            cached=True)
    return {"data": render(release, spec, presentation), "privacy": privacy}


def run_query(*, user, data) -> dict:
    query, spec, presentation, fresh = parse_query(data)
    release = None if fresh else selectors.latest_release(query.key)
    parts = None
    if release is None:
        advance_rollup()
        release, parts = _create_release(user, spec, query, presentation, fresh)
    if parts is None:
        parts = _cached_response(release, spec, user, presentation)
    return {
        **parts,
        "values": list(spec.domain),
        "release": {"id": str(release.id), "created_at": release.created_at.isoformat(),
                    "data_as_of_report_id": release.watermark, "query": release.query},
    }
