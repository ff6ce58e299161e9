"""The store for callers that already hold a transaction, and for SQLite: Django's ORM in ``atomic()``.

The batch becomes a savepoint of the caller's transaction (the test suite's
per-test transaction, a management command's). Serving on PostgreSQL uses
``LibpqStore`` instead.
"""

from __future__ import annotations

from django.db import transaction

from telemetry.ingest.store import BatchHeader, Rejections, ReportRow, StoredBatch
from telemetry.models import Batch, Report
from telemetry.rollup import hold_ingest_fence_shared


class OrmStore:
    """A :class:`~telemetry.ingest.store.BatchStore` through the ORM."""

    def __init__(self, header: BatchHeader) -> None:
        self._header = header
        self._atomic = transaction.atomic()
        self._claimed_rejections: Rejections | None = None

    def __enter__(self) -> OrmStore:
        self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool | None:
        return self._atomic.__exit__(exc_type, exc, traceback)

    def claim(self, rejections: Rejections, *, has_rows: bool) -> StoredBatch | None:
        hold_ingest_fence_shared()
        header = self._header
        # A concurrent duplicate waits on the primary key, fails its insert, then reads the winner's row.
        batch, created = Batch.objects.get_or_create(
            batch_id=header.batch_id,
            defaults={"ingest_key_id": header.ingest_key_id, "body_digest": header.body_digest,
                      "item_count": header.item_count, "rejections": rejections},
        )
        if created:
            self._claimed_rejections = rejections
            return None
        return StoredBatch(batch.ingest_key_id, batch.body_digest, batch.item_count,
                           [tuple(r) for r in batch.rejections])

    def commit(self, rows: list[ReportRow], rejections: Rejections) -> StoredBatch | None:
        if rejections != self._claimed_rejections:
            Batch.objects.filter(batch_id=self._header.batch_id).update(rejections=rejections)
        if rows:
            Report.objects.bulk_create(
                Report(metric_id=m, day=d, region=r, value=v, payload=p) for m, d, r, v, p in rows
            )
        return None
