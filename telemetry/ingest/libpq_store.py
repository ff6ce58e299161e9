"""The serving store: a batch's transaction as two queries straight on libpq, under Django's connection.

Round trip 1: ``BEGIN; <claim>; <make the counters>; <lock and read the counters>``:
the claim's answer and the client's counts come back, the transaction stays open.
The orchestration decides the items; round trip 2: ``<add to the counters>;
<stage the reports>; COMMIT``. The 200 leaves after the commit is flushed. A
replay ends the transaction at once and is answered from the stored record.
A batch with nothing to store commits in round trip 1.

Used when Django's connection is idle in autocommit: every request, unless the
caller holds a transaction (then ``OrmStore``).
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from django.db import DatabaseError

from deploy.api.db import OK, TUPLES, LibpqSession
from telemetry.ingest.store import BatchHeader, Claim, Rejections, Staged, StoredBatch
from telemetry.limits import CounterPlan

# Statements are sent as literals (the simple query protocol carries no parameters);
# every one is made here, not taken from the request: ints, a UUID, hex digests, ISO dates
# and times, hex payloads, and the rejections JSON, escaped by libpq.
_CLAIM_SQL = (
    "INSERT INTO telemetry_batch (batch_id, ingest_key_id, body_digest, item_count, rejections, received_at)"
    " VALUES ('%s'::uuid, %d, '%s', %d, %s::jsonb, '%s'::timestamptz)"
    " ON CONFLICT (batch_id) DO NOTHING RETURNING true"
)
_STORED_SQL = (
    "SELECT ingest_key_id, body_digest, item_count, rejections::text FROM telemetry_batch WHERE batch_id = '%s'::uuid"
)


def claim_statement(header: BatchHeader, rejections_literal: str, received_at: datetime) -> str:
    """The one statement that claims the batch_id: it returns a row if it did."""
    return _CLAIM_SQL % (header.batch_id, int(header.ingest_key_id), header.body_digest, header.item_count,
                         rejections_literal, received_at.isoformat())


def _counter_statements(counters: CounterPlan) -> str:
    """Make the batch's counters (0 if new) and lock them, in key order so that batches never deadlock."""
    keys = sorted(counters.days)
    values = ", ".join(f"({int(key)}, '{counters.days[key].isoformat()}', 0)" for key in keys)
    listed = ", ".join(str(int(key)) for key in keys)
    return (f"INSERT INTO telemetry_clientcounter (key, day, count) VALUES {values} ON CONFLICT (key) DO NOTHING; "
            f"SELECT key, count FROM telemetry_clientcounter WHERE key IN ({listed}) ORDER BY key FOR UPDATE")


def _commit_statements(staged: Staged, increments: dict[int, int]) -> str:
    statements = []
    if increments:
        values = ", ".join(f"({int(key)}, {int(added)})" for key, added in sorted(increments.items()))
        statements.append("UPDATE telemetry_clientcounter AS c SET count = c.count + v.added"
                          f" FROM (VALUES {values}) AS v(key, added) WHERE c.key = v.key")
    if staged:
        values = ", ".join(f"({int(metric_id)}, '\\x{payload.hex()}'::bytea)" for metric_id, payload in staged)
        statements.append(f"INSERT INTO telemetry_stagedreports (metric_id, payload) VALUES {values}")
    return "; ".join([*statements, "COMMIT"])


class LibpqStore:
    """A :class:`~telemetry.ingest.store.BatchStore` on libpq; two round trips per batch.

    Whatever fails, the connection is left idle (rolled back) or closed, never
    inside a transaction.
    """

    usable = staticmethod(LibpqSession.usable)

    def __init__(self, db, header: BatchHeader) -> None:
        self._session = LibpqSession(db)
        self._header = header
        self._open = False  # a claimed transaction waits for commit()

    def __enter__(self) -> LibpqStore:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._session.abort()

    def claim(self, rejections: Rejections, counters: CounterPlan | None) -> Claim:
        try:
            results = self._send_claim(rejections, counters)
        except DatabaseError:
            # A connection kept from before a database restart fails on first use; nothing was
            # written by a transaction that never reached the server, so try once on a new one.
            if not self._session.reconnect_if_broken():
                raise
            results = self._send_claim(rejections, counters)
        if results[1].ntuples != 1:
            return Claim(self._stored())
        self._open = counters is not None
        if not self._open:
            return Claim()
        counts = results[3]
        return Claim(counts={int(counts.get_value(row, 0)): int(counts.get_value(row, 1))
                             for row in range(counts.ntuples)})

    def _send_claim(self, rejections: Rejections, counters: CounterPlan | None) -> list:
        claim = claim_statement(self._header, self._session.literal(orjson.dumps(rejections)),
                                datetime.now(timezone.utc))
        if counters is None:
            results = self._session.send(f"BEGIN; {claim}; COMMIT", OK, TUPLES, OK)
            self._session.require_commit(results)
            return results
        return self._session.send(f"BEGIN; {claim}; {_counter_statements(counters)}", OK, TUPLES, OK, TUPLES)

    def commit(self, staged: Staged, increments: dict[int, int], counters: CounterPlan | None) -> None:
        if not self._open:
            return
        statements = _commit_statements(staged, increments)
        expected = [OK] * statements.count(";") + [OK]
        self._session.require_commit(self._session.send(statements, *expected))
        self._open = False

    def _stored(self) -> StoredBatch:
        """The record of a batch this request did not claim (its own transaction rolled back first)."""
        self._session.abort()
        result = self._session.execute(_STORED_SQL % self._header.batch_id, TUPLES)[0]
        if not result.ntuples:
            raise RuntimeError(f"batch {self._header.batch_id} conflicted but is not stored")
        key_id, digest, item_count, rejections = (result.get_value(0, i).decode() for i in range(4))
        return StoredBatch(int(key_id), digest, int(item_count), [tuple(r) for r in orjson.loads(rejections)])
