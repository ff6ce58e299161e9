"""The store for callers that already hold a transaction, and for SQLite: Django's ORM in ``atomic()``.

The batch becomes a savepoint of the caller's transaction (the test suite's
per-test transaction, a management command's). Serving on PostgreSQL uses
``LibpqStore`` instead. On SQLite the transaction is IMMEDIATE (settings), so
batches are serialized and the counters need no row locks.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from telemetry.ingest.store import BatchHeader, Claim, Rejections, Staged, StoredBatch
from telemetry.limits import CounterPlan
from telemetry.models import Batch, ClientCounter, StagedReports


class OrmStore:
    """A :class:`~telemetry.ingest.store.BatchStore` through the ORM."""

    def __init__(self, header: BatchHeader) -> None:
        self._header = header
        self._atomic = transaction.atomic()

    def __enter__(self) -> OrmStore:
        self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool | None:
        return self._atomic.__exit__(exc_type, exc, traceback)

    def store_if_within_bounds(self, rejections: Rejections, counters: CounterPlan, staged: Staged,
                               increments: dict[int, int], bounds: dict[int, int]) -> Claim | None:
        """No one-step path here: every batch is decided item by item (``claim``, then ``commit``)."""
        return None

    def claim(self, rejections: Rejections, counters: CounterPlan | None) -> Claim:
        header = self._header
        # A concurrent duplicate waits on the primary key, fails its insert, then reads the winner's row.
        batch, created = Batch.objects.get_or_create(
            batch_id=header.batch_id,
            defaults={"ingest_key_id": header.ingest_key_id, "body_digest": header.body_digest,
                      "item_count": header.item_count, "rejections": rejections},
        )
        if not created:
            return Claim(StoredBatch(batch.ingest_key_id, batch.body_digest, batch.item_count,
                                     [tuple(r) for r in batch.rejections]))
        if counters is None:
            return Claim()
        keys = sorted(counters.days)
        ClientCounter.objects.bulk_create([ClientCounter(key=key, day=counters.days[key]) for key in keys],
                                          ignore_conflicts=True)
        locked = ClientCounter.objects.select_for_update().filter(key__in=keys).order_by("key")
        return Claim(counts=dict(locked.values_list("key", "count")))

    def commit(self, staged: Staged, increments: dict[int, int], counters: CounterPlan | None) -> None:
        for key, added in sorted(increments.items()):
            ClientCounter.objects.filter(key=key).update(count=F("count") + added)
        StagedReports.objects.bulk_create(StagedReports(metric_id=metric_id, payload=payload)
                                          for metric_id, payload in staged)
