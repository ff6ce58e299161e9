"""What a batch store is: the one interface the orchestration writes through.

A store keeps the batch record (``telemetry_batch``: batch id, ingest key,
body digest, item count, per-item rejections; never the client id) and the
batch's admitted reports, in one transaction that also holds the ingest fence
(telemetry/rollup.py). Each store is a context manager around that
transaction; leaving it by an exception rolls everything back.

A new storage (reports staged as one row per batch, say) is a new class with
``claim`` and ``commit``; the orchestration does not change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Protocol

# (metric_id, day, region, value, payload): value is the k-RR label index, payload
# the packed report of the other protocols; exactly one of the two is None.
ReportRow = tuple[int, date, str, int | None, bytes | None]
Rejections = list[tuple[int, str]]  # (item index, rejection code), sorted by index


@dataclass(frozen=True)
class BatchHeader:
    """The batch as this request sent it: what its record is claimed with and compared against."""

    batch_id: uuid.UUID
    ingest_key_id: int
    body_digest: str
    item_count: int


@dataclass(frozen=True)
class StoredBatch:
    """The record an earlier request stored under the same batch_id."""

    ingest_key_id: int
    body_digest: str
    item_count: int
    rejections: Rejections


class BatchStore(Protocol):
    def __enter__(self) -> BatchStore: ...

    def __exit__(self, exc_type, exc, traceback) -> bool | None: ...

    def claim(self, rejections: Rejections, *, has_rows: bool) -> StoredBatch | None:
        """Open the transaction, take the ingest fence and claim the batch_id with ``rejections``.

        None: this request holds the claim, and must call :meth:`commit`. Otherwise
        the batch is already stored (a replay, or a duplicate that won the race):
        its record, and nothing was written. ``has_rows``: whether commit may bring
        reports (False lets a store commit at once).
        """

    def commit(self, rows: list[ReportRow], rejections: Rejections) -> StoredBatch | None:
        """Store ``rows`` and the final ``rejections`` (the claim's plus the limits'), and commit.

        None once committed. A store that had to claim again (to record new
        rejections) may find the batch stored meanwhile: then its record, as for claim.
        """
