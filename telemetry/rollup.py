"""The roll-up: fold staged reports into counts, then delete them (aggregate, then discard).

One roll-up is one transaction and one epoch: it deletes every committed
staged row (``DELETE ... RETURNING``: rows committed after it started stay for
the next one, so no watermark or fence is needed), folds their reports per
(metric, day, region) (:func:`telemetry.staging.fold`), appends what it added
as ``CountDelta`` rows of a new ``RollupEpoch``, and adds it to
``ObservedCounts``. Queries read ``ObservedCounts`` and the latest epoch in one
snapshot, never waiting for a roll-up. It runs periodically (Celery beat,
``ROLLUP_INTERVAL_S``), and makes an epoch on every run, with or without new
reports, so that the data version analysts see changes with time only.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import date

import numpy as np
from django.db import connection, transaction

from deploy.api.db import advisory_xact_lock, fetch_binary, is_postgresql
from telemetry import staging
from telemetry.catalog import catalog
from telemetry.models import CountDelta, ObservedCounts, RollupEpoch

ROLLUP_LOCK = 0x7E1E_0002
Increments = dict[tuple[int, date, str], tuple[int, np.ndarray]]  # (metric, day, region) -> (reports, support)

_TAKE_STAGED = "DELETE FROM telemetry_stagedreports RETURNING metric_id, payload"


def _take_staged() -> dict[int, bytes]:
    """Delete every committed staged row; the concatenated payloads of each metric."""
    if is_postgresql():
        rows = fetch_binary(_TAKE_STAGED, [])
    else:
        with connection.cursor() as cursor:
            cursor.execute(_TAKE_STAGED)
            rows = cursor.fetchall()
    payloads: dict[int, list[bytes]] = defaultdict(list)
    for metric_id, payload in rows:
        payloads[metric_id].append(payload)
    return {metric_id: b"".join(parts) for metric_id, parts in payloads.items()}


def _fold_all(payloads: dict[int, bytes]) -> Increments:
    increments: Increments = {}
    for metric_id, payload in payloads.items():
        for (day, region), cell in staging.fold(catalog.by_id(metric_id), payload).items():
            increments[(metric_id, day, region)] = cell
    return increments


def _support_bytes(support: np.ndarray) -> bytes:
    return np.asarray(support, dtype="<i8").tobytes()


def _add_to_totals(increments: Increments) -> None:
    """ObservedCounts += increments (one read of the rows concerned, one upsert)."""
    existing = {
        (row.metric_id, row.day, row.region): row
        for row in ObservedCounts.objects.filter(metric_id__in={key[0] for key in increments},
                                                 day__in={key[1] for key in increments})
    }
    merged = []
    for (metric_id, day, region), (reports, support) in increments.items():
        row = existing.get((metric_id, day, region))
        if row is not None:
            reports += row.reports
            support = support + np.frombuffer(row.support, dtype="<i8")
        merged.append(ObservedCounts(metric_id=metric_id, day=day, region=region, reports=reports,
                                     support=_support_bytes(support)))
    ObservedCounts.objects.bulk_create(
        merged, update_conflicts=True, unique_fields=["metric", "day", "region"], update_fields=["reports", "support"]
    )


def advance_rollup() -> RollupEpoch:
    """Fold every committed staged report into the counts as a new epoch, and delete it."""
    with transaction.atomic():
        advisory_xact_lock(ROLLUP_LOCK)  # one roll-up at a time
        increments = _fold_all(_take_staged())
        epoch = RollupEpoch.objects.create(token=secrets.token_urlsafe(16))
        CountDelta.objects.bulk_create(
            CountDelta(epoch=epoch.id, metric_id=metric_id, day=day, region=region, reports=reports,
                       support=_support_bytes(support))
            for (metric_id, day, region), (reports, support) in increments.items()
        )
        if increments:
            _add_to_totals(increments)
    return epoch
