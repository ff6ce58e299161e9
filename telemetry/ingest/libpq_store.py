"""The serving store: a batch's transaction straight on libpq, under Django's connection.

The usual batch fits its client's bounds, so it is tried first in ONE round trip
(:meth:`LibpqStore.store_if_within_bounds`): one statement that claims the batch, adds
every item to the counters and stages every report, all conditional on the claim, and
fails (division by zero, on purpose) if a counter would pass its bound, which rolls it
all back. The statement is its own transaction (PostgreSQL's implicit transaction,
committed before the server answers: :meth:`LibpqSession.commit_prepared`), prepared
once per connection and sent with its parameters (the payloads as binary bytea), so
the server neither parses nor plans SQL text for a batch. Only then are the items decided
one by one (``claim`` and ``commit``, two round trips): round trip 1 claims, makes
and locks the counters and reads them; round trip 2 adds the admitted increments,
stages the admitted reports and commits. The 200 leaves after the commit is flushed.
A replay is answered from the stored record.

Used when Django's connection is idle in autocommit: every request, unless the
caller holds a transaction (then ``OrmStore``).
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import orjson
import psycopg
from django.db import DatabaseError, DataError

from deploy.api.db import OK, TUPLES, LibpqSession
from telemetry.ingest.store import BatchHeader, Claim, Rejections, Staged, StoredBatch
from telemetry.limits import CounterPlan

# The item-by-item path (claim, then commit) sends its statements as literals (the simple query
# protocol carries no parameters); every one is made here, not taken from the request: ints, a UUID, hex digests, ISO dates
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


# The usual batch, as one prepared statement: claim; if claimed, add the increments to the counters (made
# if new, in key order so that batches never deadlock) and stage the reports; fail if a counter then
# passes its bound. It returns whether the batch was claimed. Parameters: the batch record ($1-$6), the
# counters' keys, days, increments and bounds ($7-$10), the staged metrics and payloads ($11, $12).
_WITHIN_BOUNDS = b"telemetry_ingest_within_bounds_v1"
_WITHIN_BOUNDS_SQL = (
    "WITH claim AS (INSERT INTO telemetry_batch"
    " (batch_id, ingest_key_id, body_digest, item_count, rejections, received_at)"
    " VALUES ($1::uuid, $2::bigint, $3::varchar, $4::smallint, $5::jsonb, $6::timestamptz)"
    " ON CONFLICT (batch_id) DO NOTHING RETURNING true),"
    " wanted (key, day, added, bound) AS (SELECT * FROM unnest($7::bigint[], $8::date[], $9::int[], $10::int[])),"
    " counted AS (INSERT INTO telemetry_clientcounter (key, day, count)"
    " SELECT key, day, added FROM wanted, claim ORDER BY key"
    " ON CONFLICT (key) DO UPDATE SET count = telemetry_clientcounter.count + excluded.count"
    " RETURNING key, count),"
    " staged AS (INSERT INTO telemetry_stagedreports (metric_id, payload)"
    " SELECT metric_id, payload FROM unnest($11::bigint[], $12::bytea[]) AS s(metric_id, payload), claim)"
    " SELECT (SELECT count(*) FROM claim),"
    # over a bound: divide by zero, which fails the statement and so rolls its whole transaction back
    " 1 / (SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END"
    "      FROM counted JOIN wanted USING (key) WHERE counted.count > wanted.bound)"
)
_TEXT, _BINARY = 0, 1
_WITHIN_BOUNDS_FORMATS = [_TEXT] * 11 + [_BINARY]
_BYTEA_OID = 17


def _array(values) -> bytes:
    """A PostgreSQL array literal of ints or dates, in the text format."""
    return ("{" + ",".join(map(str, values)) + "}").encode()


def _bytea_array(values: list[bytes]) -> bytes:
    """A one-dimensional bytea[] in PostgreSQL's binary format: the payloads travel as they are."""
    head = struct.pack(">iiIii", 1, 0, _BYTEA_OID, len(values), 1)
    return head + b"".join(struct.pack(">i", len(value)) + value for value in values)


def _within_bounds_params(header: BatchHeader, rejections: Rejections, counters: CounterPlan, staged: Staged,
                          increments: dict[int, int], bounds: dict[int, int], received_at: datetime) -> list[bytes]:
    keys = sorted(increments)
    return [str(header.batch_id).encode(), b"%d" % header.ingest_key_id, header.body_digest.encode(),
            b"%d" % header.item_count, orjson.dumps(rejections), received_at.isoformat().encode(),
            _array(keys), _array(counters.days[key] for key in keys), _array(increments[key] for key in keys),
            _array(bounds[key] for key in keys), _array(metric_id for metric_id, _ in staged),
            _bytea_array([payload for _, payload in staged])]


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

    def store_if_within_bounds(self, rejections: Rejections, counters: CounterPlan, staged: Staged,
                               increments: dict[int, int], bounds: dict[int, int]) -> Claim | None:
        """Claim and store the whole batch in one round trip if it fits its bounds: the Claim (a replay's
        record, or empty once committed), or None when a bound would be passed (nothing written)."""
        params = _within_bounds_params(self._header, rejections, counters, staged, increments, bounds,
                                       datetime.now(timezone.utc))
        try:
            result = self._reconnecting(
                lambda: self._session.commit_prepared(_WITHIN_BOUNDS, _WITHIN_BOUNDS_SQL, params, _WITHIN_BOUNDS_FORMATS))
        except DataError as error:
            if not isinstance(error.__cause__, psycopg.errors.DivisionByZero):
                raise
            self._session.abort()
            return None
        if result.get_value(0, 0) != b"1":
            return Claim(self._stored())
        return Claim()

    def _reconnecting(self, send):
        """``send()``; if it fails on a connection kept from before a database restart, once more on a new
        connection (nothing was written by a transaction that never reached the server)."""
        try:
            return send()
        except DatabaseError:
            if not self._session.reconnect_if_broken():
                raise
            return send()

    def claim(self, rejections: Rejections, counters: CounterPlan | None) -> Claim:
        results = self._reconnecting(lambda: self._send_claim(rejections, counters))
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
