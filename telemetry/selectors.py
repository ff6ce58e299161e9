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


@dataclass
class CountRows:
    """Raw counts per (day, region) as parallel columns: row i is (days[i], regions[i])."""

    days: list[date]
    regions: list[str]
    reports: np.ndarray  # (n,) int64
    support: np.ndarray  # (n, k) int64

    @classmethod
    def from_blobs(cls, k: int, rows: list[tuple]) -> "CountRows":
        """From (day, region, reports, support bytes) rows; one numpy conversion for all blobs."""
        support = np.frombuffer(b"".join(bytes(row[3]) for row in rows), dtype="<i8").reshape(len(rows), k)
        return cls([_as_date(row[0]) for row in rows], [row[1] for row in rows],
                   np.array([row[2] for row in rows], dtype=np.int64), support.astype(np.int64))


def observed_rows(spec: MetricSpec, start: date, end: date) -> CountRows:
    """Rolled-up counts of each (day, region) with days in [start, end]."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT day, region, reports, support FROM telemetry_observedcounts"
            " WHERE metric_id = %s AND day >= %s AND day <= %s",
            [spec.id, start, end],
        )
        return CountRows.from_blobs(spec.k, cursor.fetchall())


def recounted_rows(spec: MetricSpec, start: date, end: date, up_to_report_id: int) -> CountRows:
    """The same counts as :func:`observed_rows`, recounted from the raw reports with id <= the watermark."""
    base = " FROM telemetry_report WHERE metric_id = %s AND day >= %s AND day <= %s AND id <= %s"
    params = [spec.id, start, end, up_to_report_id]
    totals: dict[tuple, tuple[int, np.ndarray]] = {}
    with connection.cursor() as cursor:
        if spec.protocol == "krr":
            cursor.execute("SELECT day, region, value, COUNT(*)" + base + " GROUP BY day, region, value", params)
            for day, region, value, count in cursor.fetchall():
                reports, support = totals.setdefault((_as_date(day), region), (0, np.zeros(spec.k, dtype=np.int64)))
                support[value] = count
                totals[(_as_date(day), region)] = (reports + count, support)
        else:
            cursor.execute("SELECT day, region, payload" + base, params)
            payloads: dict[tuple, list[bytes]] = {}
            for day, region, payload in cursor.fetchall():
                payloads.setdefault((_as_date(day), region), []).append(bytes(payload))
            oracle = spec.oracle
            totals = {key: (len(p), oracle.support_counts(oracle.unpack(p))) for key, p in payloads.items()}
    return CountRows([d for d, _ in totals], [r for _, r in totals],
                     np.array([n for n, _ in totals.values()], dtype=np.int64),
                     np.array([s for _, s in totals.values()], dtype=np.int64).reshape(len(totals), spec.k))


def observed_counts(spec: MetricSpec, start: date, end: date, group_by: tuple[str, ...] = ()) -> list[ObservedCell]:
    """Rolled-up raw counts for days in [start, end], summed over what is not grouped by.

    Only cells that have reports are returned; central DP builds its own
    data-independent grid (telemetry.queries).
    """
    cells: dict[tuple, ObservedCell] = {}
    rows = observed_rows(spec, start, end)
    for day, region, reports, support in zip(rows.days, rows.regions, rows.reports.tolist(), rows.support):
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
    return Release.objects.filter(query_key=query_key).order_by("-created_at").defer("sealed_seed").first()
