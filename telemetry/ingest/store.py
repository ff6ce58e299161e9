"""What a batch store is: the one interface the orchestration writes through.

A store keeps, in one transaction, the batch record (``telemetry_batch``: batch
id, ingest key, body digest, item count, per-item rejections; never the client
id), the batch's admitted reports staged per metric (``telemetry_stagedreports``)
and the client's limit counters (``telemetry_clientcounter``). Each store is a
context manager around that transaction; leaving it by an exception rolls
everything back, counters included.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from telemetry.limits import CounterPlan

Rejections = list[tuple[int, str]]  # (item index, rejection code), sorted by index
Staged = list[tuple[int, bytes]]  # (metric id, packed reports of this batch: telemetry.staging)


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


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: the earlier record (a replay), or this request's locked counters."""

    stored: StoredBatch | None = None
    counts: dict[int, int] = field(default_factory=dict)


class BatchStore(Protocol):
    def __enter__(self) -> BatchStore: ...

    def __exit__(self, exc_type, exc, traceback) -> bool | None: ...

    def store_if_within_bounds(self, rejections: Rejections, counters: CounterPlan, staged: Staged,
                               increments: dict[int, int], bounds: dict[int, int]) -> Claim | None:
        """The usual case in one step: claim the batch_id and, if this request holds the claim, stage
        every report and add ``increments`` to the counters, and commit, provided no counter passes its
        bound. The Claim (a replay's record, or empty once committed), or None when nothing was written
        (a bound would be passed, or the store has no one-step path): then ``claim`` and ``commit``."""

    def claim(self, rejections: Rejections, counters: CounterPlan | None) -> Claim:
        """Open the transaction and claim the batch_id with its ``rejections``.

        If the batch is stored already (a replay, or a duplicate that won the race) the
        claim holds its record and nothing was written. Otherwise this request holds the
        claim; then, with ``counters``, those counter rows are locked and their counts
        read, and :meth:`commit` must follow. Without ``counters`` (no report to store)
        the claim is committed at once.
        """

    def commit(self, staged: Staged, increments: dict[int, int], counters: CounterPlan | None) -> None:
        """Stage the admitted reports, add ``increments`` to the counters, and commit."""
