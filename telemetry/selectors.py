"""Reads. Internal: analysts only ever see central-DP answers (telemetry.queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from django.db import connection

from privacy.ldp import confidence_intervals, norm_sub
from telemetry.catalog import MetricSpec
from telemetry.models import IngestKey, Metric

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


def observed_counts(spec: MetricSpec, start: date, end: date, group_by: tuple[str, ...] = ()) -> list[ObservedCell]:
    """Rolled-up raw counts for days in [start, end], summed over what is not grouped by.

    Only cells that have reports are returned; a caller that needs a fixed
    grid (central DP must noise empty cells too) expands it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT day, region, reports, support FROM telemetry_observedcounts"
            " WHERE metric_id = %s AND day >= %s AND day <= %s",
            [spec.id, start, end],
        )
        rows = cursor.fetchall()
    cells: dict[tuple, ObservedCell] = {}
    for day, region, reports, support in rows:
        if isinstance(day, str):  # SQLite hands dates back as text from raw SQL
            day = date.fromisoformat(day)
        key = _cell_key(day, region, group_by)
        counts = np.frombuffer(bytes(support), dtype="<i8")
        cell = cells.get(key)
        if cell is None:
            cells[key] = ObservedCell(key[0], key[1], reports, counts.astype(np.int64))
        else:
            cell.reports += reports
            cell.support += counts
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
