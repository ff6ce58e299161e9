"""Ingest a batch of client-randomized reports (``POST /api/v1/reports``).

validate the envelope (400, nothing written) -> validate each item (per-item
rejection codes) -> one transaction: claim the batch_id (a replay or a
concurrent duplicate stops here and gets the stored answer) and lock the
client's limit counters -> decide the items -> stage the admitted reports per
metric and add to the counters -> commit -> per-item status.

Only the client's own counter rows are locked, so batches of different clients
never serialize on each other (docs/architecture.md, "Ingest").

This is the hot path (tests/benchmarks/bench_ingest.py). Serving on PostgreSQL,
a batch costs two PostgreSQL round trips (``LibpqStore``) and no Redis call.

Modules: ``validation`` (parse and check, no writes), ``orchestration`` (the
one path through limits and a store), ``store`` (the store interface),
``libpq_store`` and ``orm_store`` (its two implementations), ``result`` (the answer).
"""

from telemetry.ingest.orchestration import ingest_batch
from telemetry.ingest.result import REJECTION_MESSAGES, IngestResult

__all__ = ["REJECTION_MESSAGES", "IngestResult", "ingest_batch"]
