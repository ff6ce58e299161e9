"""Ingest a batch of client-randomized reports (``POST /api/v1/reports``).

validate the envelope (400, nothing written) -> validate each item (per-item
rejection codes) -> one transaction: take the shared ingest fence and claim the
batch_id (a replay or a concurrent duplicate stops here and gets the stored
answer) -> contribution limits (one atomic Redis call) -> store the reports ->
commit -> per-item status.

The storage is insert-only: no shared counter row is touched, so concurrent
batches never serialize on each other (ARCHITECTURE.md, Flows/Ingest).

This is the hot path (tests/benchmarks/bench_ingest.py). Serving on PostgreSQL,
a batch costs one Redis call and two PostgreSQL round trips (``LibpqStore``).

Modules: ``validation`` (parse and check, no writes), ``orchestration`` (the
one path through limits and a store), ``store`` (the store interface),
``libpq_store`` and ``orm_store`` (its two implementations), ``result`` (the answer).
"""

from telemetry.ingest.orchestration import ingest_batch
from telemetry.ingest.result import REJECTION_MESSAGES, IngestResult

__all__ = ["REJECTION_MESSAGES", "IngestResult", "ingest_batch"]
