"""Roll raw reports up into ObservedCounts, behind a watermark.

PostgreSQL hands out report ids before transactions commit, and commits them
out of order, so "every id <= max(id) is committed" is false while batches are
in flight. The ingest fence makes it true at one instant: every ingest
transaction holds a *shared* advisory lock, and the roll-up takes the same lock
*exclusively* for the moment it reads ``max(id)``. Ingests never wait on each
other; they pause only for that read.

On SQLite, every writing transaction is IMMEDIATE (settings), so a writer
reading ``max(id)`` already excludes all other writers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from deploy.api.db import advisory_xact_lock
from telemetry.catalog import catalog
from telemetry.models import ObservedCounts, RollupWatermark

INGEST_FENCE_LOCK = 0x7E1E_0001
ROLLUP_LOCK = 0x7E1E_0002
_CHUNK_IDS = 2_000_000


def hold_ingest_fence_shared() -> None:
    """Called first in every ingest transaction."""
    advisory_xact_lock(INGEST_FENCE_LOCK, shared=True)


def _max_report_id(cursor) -> int:
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM telemetry_report")
    return cursor.fetchone()[0]


def committed_high_water() -> int:
    """An id such that every report with a smaller or equal id is committed."""
    with transaction.atomic(), connection.cursor() as cursor:
        advisory_xact_lock(INGEST_FENCE_LOCK)
        return _max_report_id(cursor)


def _aggregate_range(cursor, low: int, high: int) -> dict[tuple, tuple[int, np.ndarray]]:
    """(metric_id, day, region) -> (reports, support counts) for ids in (low, high]."""
    totals: dict[tuple, list] = {}

    def add(key, reports: int, support: np.ndarray) -> None:
        entry = totals.setdefault(key, [0, np.zeros(support.size, dtype=np.int64)])
        entry[0] += reports
        entry[1] += support

    cursor.execute(
        "SELECT metric_id, day, region, value, COUNT(*) FROM telemetry_report"
        " WHERE id > %s AND id <= %s AND value IS NOT NULL GROUP BY metric_id, day, region, value",
        [low, high],
    )
    krr_counts: dict[tuple, dict[int, int]] = defaultdict(dict)
    for metric_id, day, region, value, count in cursor.fetchall():
        krr_counts[(metric_id, day, region)][value] = count
    for key, by_value in krr_counts.items():
        support = np.zeros(catalog.by_id(key[0]).k, dtype=np.int64)
        support[list(by_value)] = list(by_value.values())
        add(key, int(support.sum()), support)

    cursor.execute(
        "SELECT metric_id, day, region, payload FROM telemetry_report"
        " WHERE id > %s AND id <= %s AND payload IS NOT NULL",
        [low, high],
    )
    payloads: dict[tuple, list[bytes]] = defaultdict(list)
    for metric_id, day, region, payload in cursor.fetchall():
        payloads[(metric_id, day, region)].append(bytes(payload))
    for key, packed in payloads.items():
        oracle = catalog.by_id(key[0]).oracle
        add(key, len(packed), oracle.support_counts(oracle.unpack(packed)))
    return {key: (reports, support) for key, (reports, support) in totals.items()}


def _merge(increments: dict[tuple, tuple[int, np.ndarray]]) -> None:
    if not increments:
        return
    metric_ids = {key[0] for key in increments}
    days = {key[1] for key in increments}
    existing = {
        (row.metric_id, row.day, row.region): row
        for row in ObservedCounts.objects.filter(metric_id__in=metric_ids, day__in=days)
    }
    merged = []
    for (metric_id, day, region), (reports, support) in increments.items():
        row = existing.get((metric_id, day, region))
        if row is not None:
            reports += row.reports
            support = support + np.frombuffer(row.support, dtype="<i8")
        merged.append(ObservedCounts(metric_id=metric_id, day=day, region=region, reports=reports,
                                     support=support.astype("<i8").tobytes()))
    ObservedCounts.objects.bulk_create(
        merged, update_conflicts=True, unique_fields=["metric", "day", "region"], update_fields=["reports", "support"]
    )


def advance_rollup() -> int:
    """Fold every committed report into ObservedCounts; returns the new watermark."""
    high = committed_high_water()
    with transaction.atomic(), connection.cursor() as cursor:
        advisory_xact_lock(ROLLUP_LOCK)
        watermark, _ = RollupWatermark.objects.select_for_update().get_or_create(pk=1)
        low = watermark.report_id
        if high <= low:
            return low
        for chunk_low in range(low, high, _CHUNK_IDS):
            _merge(_aggregate_range(cursor, chunk_low, min(chunk_low + _CHUNK_IDS, high)))
        watermark.report_id, watermark.advanced_at = high, timezone.now()
        watermark.save()
    return high
