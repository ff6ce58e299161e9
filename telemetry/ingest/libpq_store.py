"""The serving store: a batch's transaction as one query straight on libpq, under Django's connection.

``BEGIN; <fence + claim>; COPY ... FROM STDIN; COMMIT`` goes out at once. The
server runs up to the COPY and waits there; the claim's answer comes back
(round trip 1), the limits are asked (Redis), then the rows follow and the
server copies them and commits (round trip 2): the 200 leaves after the commit
is flushed. A replay, or limits that reject items, end the COPY with an error
instead, which rolls back everything, claim included; the batch is then
answered from the stored record, or claimed again with its final rejections.

Used when Django's connection is idle in autocommit: every request, unless the
caller holds a transaction (then ``OrmStore``).
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from deploy.api.db import COPY_IN, OK, TUPLES, LibpqSession, advisory_xact_lock_call
from telemetry.ingest.store import BatchHeader, Rejections, ReportRow, StoredBatch
from telemetry.rollup import INGEST_FENCE_LOCK

# The ingest fence of telemetry/rollup.py (hold_ingest_fence_shared), taken in the
# same statement that claims the batch_id, before any report id is drawn. The
# statement is sent as literals (the simple query protocol carries no parameters);
# every one is made here, not taken from the request: ints, a UUID, a hex digest,
# an ISO time, and the rejections JSON, escaped by libpq.
_CLAIM_SQL = (
    "WITH fence AS (SELECT " + advisory_xact_lock_call(INGEST_FENCE_LOCK, shared=True) + ")"
    " INSERT INTO telemetry_batch (batch_id, ingest_key_id, body_digest, item_count, rejections, received_at)"
    " SELECT '%s'::uuid, %d, '%s', %d, %s::jsonb, '%s'::timestamptz FROM fence"
    " ON CONFLICT (batch_id) DO NOTHING RETURNING true"
)
_COPY_SQL = "COPY telemetry_report (metric_id, day, region, value, payload) FROM STDIN"
_STORED_SQL = (
    "SELECT ingest_key_id, body_digest, item_count, rejections::text FROM telemetry_batch WHERE batch_id = '%s'::uuid"
)


def claim_statement(header: BatchHeader, rejections_literal: str, received_at: datetime) -> str:
    """The one statement that takes the ingest fence and claims the batch_id: it returns a row if it did."""
    return _CLAIM_SQL % (header.batch_id, int(header.ingest_key_id), header.body_digest, header.item_count,
                         rejections_literal, received_at.isoformat())


_COPY_LINES: dict[tuple, str] = {}  # a k-RR row's COPY line, by row: few distinct rows repeat all day


def _copy_text(rows: list[ReportRow]) -> bytes:
    """The rows in COPY's text format (ints, ISO dates, country codes and hex bytea: nothing to escape)."""
    lines = []
    cache = _COPY_LINES
    for row in rows:
        line = cache.get(row) if row[4] is None else None
        if line is None:
            metric_id, day, region, value, payload = row
            if payload is None:
                line = f"{metric_id}\t{day.isoformat()}\t{region}\t{value}\t\\N\n"
                if len(cache) >= 20_000:
                    cache.clear()
                cache[row] = line
            else:
                line = f"{metric_id}\t{day.isoformat()}\t{region}\t\\N\t\\\\x{payload.hex()}\n"
        lines.append(line)
    return "".join(lines).encode()


class LibpqStore:
    """A :class:`~telemetry.ingest.store.BatchStore` on libpq; two round trips per batch.

    Whatever fails, the connection is left idle (rolled back) or closed, never
    inside a transaction.
    """

    usable = staticmethod(LibpqSession.usable)

    def __init__(self, db, header: BatchHeader) -> None:
        self._session = LibpqSession(db)
        self._header = header
        self._claimed_rejections: Rejections | None = None
        self._in_copy = False  # the server waits in the COPY for this batch's rows

    def __enter__(self) -> LibpqStore:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._session.abort()

    def claim(self, rejections: Rejections, *, has_rows: bool) -> StoredBatch | None:
        return None if self._begin(rejections, copy=has_rows) else self._stored()

    def commit(self, rows: list[ReportRow], rejections: Rejections) -> StoredBatch | None:
        if rejections != self._claimed_rejections:  # the record must carry the limits' rejections: claim again
            self._session.abort()
            if not self._begin(rejections, copy=bool(rows)):
                return self._stored()
        if self._in_copy:
            self._session.require_commit(self._session.copy(_copy_text(rows), OK, OK))
            self._in_copy = False
        elif rows:
            raise ValueError("rows for a batch claimed without rows")
        return None

    def _begin(self, rejections: Rejections, *, copy: bool) -> bool:
        """Send the transaction; True when this request claimed the batch_id.

        With ``copy``, the server is left waiting for the rows; without, the
        transaction is already committed.
        """
        claim = claim_statement(self._header, self._session.literal(orjson.dumps(rejections)),
                                datetime.now(timezone.utc))
        if copy:
            results = self._session.send(f"BEGIN; {claim}; {_COPY_SQL}; COMMIT", OK, TUPLES, COPY_IN)
        else:
            results = self._session.send(f"BEGIN; {claim}; COMMIT", OK, TUPLES, OK, reads=2)
            self._session.require_commit(results)
        self._claimed_rejections, self._in_copy = rejections, copy
        return results[1].ntuples == 1

    def _stored(self) -> StoredBatch:
        """The record of a batch this request did not claim (its own transaction rolled back first)."""
        self._session.abort()
        self._in_copy = False
        result = self._session.execute(_STORED_SQL % self._header.batch_id, TUPLES)[0]
        if not result.ntuples:
            raise RuntimeError(f"batch {self._header.batch_id} conflicted but is not stored")
        key_id, digest, item_count, rejections = (result.get_value(0, i).decode() for i in range(4))
        return StoredBatch(int(key_id), digest, int(item_count), [tuple(r) for r in orjson.loads(rejections)])
