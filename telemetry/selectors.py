"""Reads. Internal: analysts only ever see central-DP answers (telemetry.queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from django.db import connection

from privacy.ldp import confidence_intervals, norm_sub
from telemetry.catalog import MetricSpec
from telemetry.models import IngestKey, Metric, Release

GROUP_FIELDS = ("day", "region")


@dataclass
class ObservedCell:
    """Raw observed counts of one output cell: n reports and per-value support counts."""

    day: date | None
    region: str | None
    reports: int
    support: np.ndarray


@dataclass
class EstimatedCell:
    day: date | None
    region: str | None
    reports: int
    estimates: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _cell_key(day: date, region: str, group_by: tuple[str, ...]) -> tuple:
    return (day if "day" in group_by else None, region if "region" in group_by else None)


def _as_date(day) -> date:
    return date.fromisoformat(day) if isinstance(day, str) else day  # SQLite returns text from raw SQL


def observed_rows(spec: MetricSpec, start: date, end: date) -> list[tuple[date, str, int, np.ndarray]]:
    """Rolled-up (day, region, reports, support counts) for days in [start, end]."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT day, region, reports, support FROM telemetry_observedcounts"
            " WHERE metric_id = %s AND day >= %s AND day <= %s",
            [spec.id, start, end],
        )
        return [(_as_date(d), r, n, np.frombuffer(bytes(s), dtype="<i8")) for d, r, n, s in cursor.fetchall()]


def recounted_rows(spec: MetricSpec, start: date, end: date, up_to_report_id: int) -> list[tuple]:
    """The same rows as :func:`observed_rows`, recounted from the raw reports with id <= the watermark."""
    base = " FROM telemetry_report WHERE metric_id = %s AND day >= %s AND day <= %s AND id <= %s"
    params = [spec.id, start, end, up_to_report_id]
    with connection.cursor() as cursor:
        if spec.protocol == "krr":
            cursor.execute("SELECT day, region, value, COUNT(*)" + base + " GROUP BY day, region, value", params)
            grouped: dict[tuple, np.ndarray] = {}
            for day, region, value, count in cursor.fetchall():
                grouped.setdefault((_as_date(day), region), np.zeros(spec.k, dtype=np.int64))[value] = count
            return [(d, r, int(s.sum()), s) for (d, r), s in grouped.items()]
        cursor.execute("SELECT day, region, payload" + base, params)
        payloads: dict[tuple, list[bytes]] = {}
        for day, region, payload in cursor.fetchall():
            payloads.setdefault((_as_date(day), region), []).append(bytes(payload))
    oracle = spec.oracle
    return [(d, r, len(p), oracle.support_counts(oracle.unpack(p))) for (d, r), p in payloads.items()]


def observed_counts(spec: MetricSpec, start: date, end: date, group_by: tuple[str, ...] = ()) -> list[ObservedCell]:
    """Rolled-up raw counts for days in [start, end], summed over what is not grouped by.

    Only cells that have reports are returned; central DP builds its own
    data-independent grid (telemetry.queries).
    """
    cells: dict[tuple, ObservedCell] = {}
    for day, region, reports, support in observed_rows(spec, start, end):
        key = _cell_key(day, region, group_by)
        cell = cells.get(key)
        if cell is None:
            cells[key] = ObservedCell(key[0], key[1], reports, support.astype(np.int64))
        else:
            cell.reports += reports
            cell.support += support
    return sorted(cells.values(), key=lambda c: (c.day or date.min, c.region or ""))


def ldp_estimates(
    spec: MetricSpec,
    start: date,
    end: date,
    group_by: tuple[str, ...] = (),
    *,
    consistent: bool = True,
    confidence: float = 0.95,
    simultaneous: bool = False,
) -> list[EstimatedCell]:
    """Debiased per-value counts with intervals from the estimator's variance.

    ``consistent`` applies Norm-Sub (non-negative, summing to n); the intervals
    come from the unbiased estimator's variance either way.
    """
    oracle = spec.oracle
    cells = []
    for cell in observed_counts(spec, start, end, group_by):
        raw = oracle.estimate(cell.support, cell.reports)
        variance = oracle.variance(cell.reports, raw)
        low, high = confidence_intervals(raw, variance, confidence=confidence, simultaneous=simultaneous)
        estimates = norm_sub(raw, cell.reports) if consistent else raw
        cells.append(EstimatedCell(cell.day, cell.region, cell.reports, estimates, low, high))
    return cells


def current_metrics():
    """The highest version of every metric, by name."""
    latest = {}
    for metric in Metric.objects.order_by("name", "-version"):
        latest.setdefault(metric.name, metric)
    return list(latest.values())


def active_ingest_key(key_hash: str) -> IngestKey | None:
    return IngestKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True).first()


def latest_release(query_key: str) -> Release | None:
    return Release.objects.filter(query_key=query_key).order_by("-created_at").first()
