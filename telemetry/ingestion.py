"""Ingest a batch of client-randomized reports.

validate the envelope (400, nothing written) -> validate each item (per-item
rejection codes) -> one transaction: take the shared ingest fence and claim the
batch_id (a replay or a concurrent duplicate stops here and gets the stored
answer) -> contribution limits (one atomic Redis call) -> COPY the reports ->
commit -> per-item status.

The storage is insert-only: no shared counter row is touched, so concurrent
batches never serialize on each other (ARCHITECTURE.md, Flows/Ingest).

Claiming the batch_id before the limits means a retry racing its first attempt
waits on the first attempt's row and answers as it did, without ever being
counted against the limits (a refund is only needed if the transaction fails).

This is the hot path (tests/benchmarks/bench_ingest.py). Serving on PostgreSQL,
a batch costs one Redis call and two PostgreSQL round trips (``_LibpqBatch``).
"""

from __future__ import annotations

import hashlib
import select
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import numpy as np
import orjson
import psycopg
from psycopg import pq
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from privacy.ldp import PayloadError
from telemetry.catalog import MetricSpec, catalog
from deploy.api.errors import ApiError
from telemetry.limits import ACCEPTED, DAILY_LIMIT, Contribution, get_limiter
from telemetry.models import Batch, Report
from telemetry.regions import accepted_regions
from telemetry.rollup import INGEST_FENCE_LOCK, hold_ingest_fence_shared

MAX_CLIENT_ID_LENGTH = 256
_ENVELOPE_FIELDS = frozenset({"batch_id", "client_id", "reports"})
_ITEM_FIELDS = frozenset({"metric", "version", "value", "payload", "day", "region"})

REJECTION_MESSAGES = {
    "missing_field": "The report lacks a required field (metric, day, and value or payload).",
    "unknown_field": "The report has a field this API does not define.",
    "unknown_metric": "No metric has this name.",
    "unknown_metric_version": "The metric has no such version.",
    "value_out_of_domain": "The value is not a label of the metric's domain.",
    "unexpected_field": "This metric's protocol takes 'value' for k-RR and 'payload' otherwise, not both.",
    "invalid_payload": "The payload is not a valid encoding for the metric's protocol.",
    "invalid_payload_length": "The payload has the wrong length for the metric's protocol.",
    "invalid_day": "day must be a UTC date written YYYY-MM-DD.",
    "day_in_future": "day is after today (UTC).",
    "day_too_old": "day is older than the server accepts.",
    "invalid_region": "region must be an ISO 3166-1 alpha-2 country code this server accepts (PRIVACY_REGIONS).",
    "daily_limit_exceeded": "This client has reached its daily number of reports.",
    "contribution_bound_exceeded": "This client has reached the metric's reports for that day.",
}


class _Rejected(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


@lru_cache(maxsize=256)
def _accepted_items_json(count: int) -> bytes:
    return orjson.dumps([{"index": i, "status": "accepted"} for i in range(count)])


@dataclass
class IngestResult:
    batch_id: uuid.UUID
    item_count: int
    rejections: list[tuple[int, str]] = field(default_factory=list)
    replayed: bool = False

    def as_response(self) -> dict:
        rejected = dict(self.rejections)
        items = [
            {"index": i, "status": "rejected", "code": rejected[i], "message": REJECTION_MESSAGES[rejected[i]]}
            if i in rejected
            else {"index": i, "status": "accepted"}
            for i in range(self.item_count)
        ]
        return {
            "batch_id": str(self.batch_id),
            "accepted": self.item_count - len(rejected),
            "rejected": len(rejected),
            "items": items,
        }

    def to_json(self) -> bytes:
        """``orjson.dumps(self.as_response())``, without building the all-accepted item list each time."""
        if self.rejections:
            return orjson.dumps(self.as_response())
        return b'{"batch_id":"%s","accepted":%d,"rejected":0,"items":%s}' % (
            str(self.batch_id).encode(), self.item_count, _accepted_items_json(self.item_count))


@dataclass
class _Envelope:
    batch_id: uuid.UUID
    client_id: str
    reports: list[dict]
    digest: str


def _parse_envelope(body: bytes) -> _Envelope:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError("malformed_json", "The body is not valid JSON.")
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    if missing := _ENVELOPE_FIELDS - data.keys():
        raise ApiError("missing_field", f"The body lacks {sorted(missing)}.")
    if unknown := data.keys() - _ENVELOPE_FIELDS:
        raise ApiError("unknown_field", f"The body has unknown fields {sorted(unknown)}.")
    try:
        batch_id = uuid.UUID(data["batch_id"])
    except (TypeError, ValueError, AttributeError):
        raise ApiError("invalid_batch_id", "batch_id must be a UUID string.")
    client_id = data["client_id"]
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
        raise ApiError("invalid_client_id", f"client_id must be a string of 1 to {MAX_CLIENT_ID_LENGTH} characters.")
    reports = data["reports"]
    if not isinstance(reports, list) or not reports:
        raise ApiError("invalid_reports", "reports must be a non-empty list.")
    max_batch = settings.PRIVACY["MAX_BATCH_SIZE"]
    if len(reports) > max_batch:
        raise ApiError("batch_too_large", f"A batch holds at most {max_batch} reports.", http_status=413)
    if not all(type(item) is dict for item in reports):
        raise ApiError("invalid_reports", "Every report must be a JSON object.")
    # The digest leaves client_id out, so the stored batch record says nothing about who sent it.
    digest = hashlib.sha256(orjson.dumps([str(batch_id), reports], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return _Envelope(batch_id, client_id, reports, digest)


def _check_day(raw, today: date, oldest: date) -> date | str:
    """The report's day, or the rejection code. Only YYYY-MM-DD: not the other ISO 8601 forms."""
    if not (type(raw) is str and len(raw) == 10 and raw[4] == "-" and raw[7] == "-" and raw.isascii()
            and raw[:4].isdigit() and raw[5:7].isdigit() and raw[8:].isdigit()):
        return "invalid_day"
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return "invalid_day"
    if day > today:
        return "day_in_future"
    if day < oldest:
        return "day_too_old"
    return day


def _lookup_metric(item: dict) -> MetricSpec:
    name, version = item.get("metric"), item.get("version")
    if not isinstance(name, str):
        raise _Rejected("missing_field" if name is None else "unknown_metric")
    if version is not None and (type(version) is not int or version < 1):
        raise _Rejected("unknown_metric_version")
    spec = catalog.lookup(name, version)
    if spec is None:
        raise _Rejected("unknown_metric" if catalog.lookup(name) is None else "unknown_metric_version")
    return spec


@dataclass
class _Validated:
    """The items that passed validation ("candidates"), ready for the limits and storage."""

    rejections: list[tuple[int, str]]
    indexes: list[int]  # the batch index of each candidate
    rows: list[tuple]  # (metric_id, day, region, value, payload) of each candidate
    groups: list[Contribution]  # the distinct (day, metric) pairs, in first-seen order
    item_groups: list[int]  # each candidate's group


def _validate_items(reports: list[dict], today: date, oldest: date) -> _Validated:
    """Per-item checks, in this order: fields, metric, day, region, value or payload.

    One pass with per-batch caches (metric by (name, version), day by its text);
    payloads are parsed per item and packed per metric in one vectorized call.
    """
    rejections: list[tuple[int, str]] = []
    indexes: list[int] = []
    rows: list[tuple] = []
    item_groups: list[int] = []
    groups: list[Contribution] = []
    group_of: dict[tuple[int, date], int] = {}
    specs: dict[tuple, MetricSpec] = {}
    days: dict[str, date | str] = {}
    payloads: dict[int, tuple[MetricSpec, list[int], list[np.ndarray]]] = {}
    known_fields = _ITEM_FIELDS.issuperset
    regions = accepted_regions()
    for index, item in enumerate(reports):
        try:
            if not known_fields(item):
                raise _Rejected("unknown_field")
            if "day" not in item:
                raise _Rejected("missing_field")
            name, version = item.get("metric"), item.get("version")
            if version is None:  # the common case: the current version, cached by name
                spec = specs.get(name) if type(name) is str else None
                if spec is None:
                    spec = specs[name] = _lookup_metric(item)
            else:
                spec = specs.get((name, version)) if type(name) is str and type(version) is int else None
                if spec is None:
                    spec = specs[(name, version)] = _lookup_metric(item)
            raw_day = item["day"]
            day = days.get(raw_day) if type(raw_day) is str else None
            if day is None:
                day = _check_day(raw_day, today, oldest)
                if type(raw_day) is str:
                    days[raw_day] = day
            if type(day) is str:
                raise _Rejected(day)
            region = item.get("region") or ""
            if region and (type(region) is not str or region not in regions):
                raise _Rejected("invalid_region")
            if spec.protocol == "krr":
                if "payload" in item:
                    raise _Rejected("unexpected_field")
                if "value" not in item:
                    raise _Rejected("missing_field")
                value = item["value"]
                value_index = spec.label_index.get(value) if type(value) is str else None
                if value_index is None:
                    raise _Rejected("value_out_of_domain")
            else:
                if "value" in item:
                    raise _Rejected("unexpected_field")
                if "payload" not in item:
                    raise _Rejected("missing_field")
                try:
                    parsed = spec.oracle.parse_wire(item["payload"])
                except PayloadError as error:
                    raise _Rejected(error.code)
                value_index = None
                pending = payloads.get(spec.id)
                if pending is None:
                    pending = payloads[spec.id] = (spec, [], [])
                pending[1].append(len(rows))
                pending[2].append(parsed)
        except _Rejected as rejected:
            rejections.append((index, rejected.code))
            continue
        group = group_of.get((spec.id, day))
        if group is None:
            group = group_of[(spec.id, day)] = len(groups)
            groups.append(Contribution(day, spec.id, spec.contribution_bound))
        indexes.append(index)
        rows.append((spec.id, day, region, value_index, None))
        item_groups.append(group)
    for spec, positions, parsed in payloads.values():
        for position, packed in zip(positions, spec.oracle.pack(np.stack(parsed))):
            rows[position] = rows[position][:4] + (packed,)
    return _Validated(rejections, indexes, rows, groups, item_groups)


# --------------------------------------------------------------------------- storage

# The ingest fence of telemetry/rollup.py (hold_ingest_fence_shared), taken in
# the same statement that claims the batch_id, before any report id is drawn.
_CLAIM_SQL = (
    "WITH fence AS (SELECT pg_advisory_xact_lock_shared(%s))"
    " INSERT INTO telemetry_batch (batch_id, ingest_key_id, body_digest, item_count, rejections, received_at)"
    " SELECT %s, %s, %s, %s, %s::jsonb, %s FROM fence"
    " ON CONFLICT (batch_id) DO NOTHING RETURNING true"
)
_STORED_SQL = (
    "SELECT ingest_key_id, body_digest, item_count, rejections::text FROM telemetry_batch WHERE batch_id = %s"
)
_SET_REJECTIONS_SQL = "UPDATE telemetry_batch SET rejections = %s::jsonb WHERE batch_id = %s"
_COPY_SQL = "COPY telemetry_report (metric_id, day, region, value, payload) FROM STDIN"


def _stored_answer(envelope: _Envelope, ingest_key_id: int, stored) -> IngestResult:
    if stored is None:
        raise RuntimeError(f"batch {envelope.batch_id} conflicted but is not stored")
    key_id, digest, item_count, rejections = stored
    if key_id != ingest_key_id or digest != envelope.digest:
        raise ApiError("batch_id_conflict", "This batch_id was already used for a different batch.", http_status=409)
    if isinstance(rejections, str):
        rejections = orjson.loads(rejections)
    return IngestResult(envelope.batch_id, item_count, [tuple(r) for r in rejections], replayed=True)


_COPY_LINES: dict[tuple, str] = {}  # a k-RR row's COPY line, by row: few distinct rows repeat all day


def _copy_text(rows: list[tuple]) -> bytes:
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


class _AtomicStore:
    """Inside Django's transaction.atomic(): psycopg cursors on PostgreSQL, the ORM elsewhere.

    The path for callers that already hold a transaction (the test suite's
    per-test transaction, say): the batch becomes a savepoint of theirs.
    """

    def __init__(self) -> None:
        self._atomic = transaction.atomic()
        self._cursor = None

    def __enter__(self) -> "_AtomicStore":
        self._atomic.__enter__()
        if connection.vendor == "postgresql":
            self._cursor = psycopg.Cursor(connection.connection)  # server-side binding
        return self

    def __exit__(self, *exc_info) -> bool | None:
        return self._atomic.__exit__(*exc_info)

    def claim(self, envelope: _Envelope, ingest_key_id: int, rejections: list) -> IngestResult | None:
        if self._cursor is None:
            hold_ingest_fence_shared()
            batch = Batch.objects.filter(batch_id=envelope.batch_id).first()
            if batch is not None:
                return _stored_answer(envelope, ingest_key_id,
                                      (batch.ingest_key_id, batch.body_digest, batch.item_count, batch.rejections))
            Batch.objects.create(batch_id=envelope.batch_id, ingest_key_id=ingest_key_id,
                                 body_digest=envelope.digest, item_count=len(envelope.reports), rejections=rejections)
            return None
        params = [INGEST_FENCE_LOCK, envelope.batch_id, ingest_key_id, envelope.digest, len(envelope.reports),
                  orjson.dumps(rejections).decode(), datetime.now(timezone.utc)]
        with connection.wrap_database_errors:
            self._cursor.execute(_CLAIM_SQL, params)
            if self._cursor.fetchone() is not None:
                return None
            self._cursor.execute(_STORED_SQL, [envelope.batch_id])
            return _stored_answer(envelope, ingest_key_id, self._cursor.fetchone())

    def set_rejections(self, envelope: _Envelope, rejections: list) -> None:
        if self._cursor is None:
            Batch.objects.filter(batch_id=envelope.batch_id).update(rejections=rejections)
            return
        with connection.wrap_database_errors:
            self._cursor.execute(_SET_REJECTIONS_SQL, [orjson.dumps(rejections).decode(), envelope.batch_id])

    def insert_reports(self, rows: list[tuple]) -> None:
        if self._cursor is None:
            Report.objects.bulk_create(
                Report(metric_id=m, day=d, region=r, value=v, payload=p) for m, d, r, v, p in rows
            )
            return
        with connection.wrap_database_errors, self._cursor.copy(_COPY_SQL) as copy:
            copy.write(_copy_text(rows))


# The libpq path sends the whole transaction as one simple query. Parameters
# are literals, every one made here and not taken from the request: ints, a
# UUID, a hex digest, an ISO time, and the rejections JSON, escaped by libpq.
_LIBPQ_BEGIN_CLAIM = (
    "BEGIN; WITH fence AS (SELECT pg_advisory_xact_lock_shared(%d))"
    " INSERT INTO telemetry_batch (batch_id, ingest_key_id, body_digest, item_count, rejections, received_at)"
    " SELECT '%s'::uuid, %d, '%s', %d, %s::jsonb, '%s'::timestamptz FROM fence"
    " ON CONFLICT (batch_id) DO NOTHING RETURNING true; "
)
_LIBPQ_COPY_COMMIT = _COPY_SQL + "; COMMIT"
_LIBPQ_STORED = (
    "SELECT ingest_key_id, body_digest, item_count, rejections::text FROM telemetry_batch WHERE batch_id = '%s'::uuid"
)
_IDLE, _ACTIVE = pq.TransactionStatus.IDLE, pq.TransactionStatus.ACTIVE
_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)
_ERRORS = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.NONFATAL_ERROR, pq.ExecStatus.BAD_RESPONSE)


class _LibpqBatch:
    """The serving path: the batch's transaction as one query straight on libpq, under Django's connection.

    ``BEGIN; <fence + claim>; COPY ... FROM STDIN; COMMIT`` goes out at once.
    The server runs up to the COPY and waits there; the claim's answer comes
    back (round trip 1), the limits are asked (Redis), then the rows follow and
    the server copies them and commits (round trip 2): the 200 leaves after the
    commit is flushed. A replay, or limits that reject items, end the COPY with
    an error instead, which rolls back everything, claim included; the batch is
    then answered from the stored record, or claimed again with its final
    rejections.

    Used when Django's connection is idle in autocommit: every request, unless
    the caller holds a transaction (then ``_AtomicStore``). No psycopg or Django
    machinery runs per statement. Blocking calls are PQexec and poll(), which
    release the GIL, so other gthread threads run while one waits on the
    commit. Errors are psycopg's exceptions, under Django's
    ``wrap_database_errors``; whatever fails, the connection is left idle
    (rolled back) or closed, never inside a transaction.
    """

    def __init__(self, db) -> None:
        self._db = db
        self._pgconn = db.connection.pgconn

    @staticmethod
    def usable(db) -> bool:
        if db.vendor != "postgresql" or db.in_atomic_block or not db.get_autocommit():
            return False
        return db.connection.pgconn.transaction_status == _IDLE

    # -- libpq plumbing

    def _wait(self, events: int) -> None:
        poller = select.poll()
        poller.register(self._pgconn.socket, events)
        poller.poll()  # releases the GIL

    def _flush(self) -> None:
        pgconn = self._pgconn
        while pgconn.flush():  # 1: more to send (nonblocking connection)
            self._wait(select.POLLOUT | select.POLLIN)
            pgconn.consume_input()

    def _results(self) -> list:
        """The results of the query in flight, up to its end or to a COPY waiting for rows."""
        pgconn, results = self._pgconn, []
        while True:
            while pgconn.is_busy():
                self._wait(select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)
            if result.status == pq.ExecStatus.COPY_IN:
                return results

    def _check(self, results: list, *expected) -> list:
        statuses = [result.status for result in results]
        if statuses != list(expected):
            failed = next((r for r in results if r.status in _ERRORS), None)
            if failed is not None:
                raise psycopg.errors.error_from_result(failed, encoding="utf-8")
            raise psycopg.OperationalError(f"unexpected results {[pq.ExecStatus(s).name for s in statuses]}")
        return results

    def abort(self) -> None:
        """Whatever state the query is in, leave the connection idle or closed."""
        pgconn = self._pgconn
        try:
            if pgconn.transaction_status == _ACTIVE:  # the server waits in the COPY, or is still working
                if self._results() and pgconn.transaction_status == _ACTIVE:
                    pgconn.put_copy_end(b"ingest aborted")
                    self._flush()
                    self._results()
            if pgconn.transaction_status in _OPEN:
                pgconn.exec_(b"ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is closed below instead
            pass
        if pgconn.transaction_status != _IDLE:
            self._db.close()

    # -- the batch

    def begin(self, envelope: _Envelope, ingest_key_id: int, rejections: list, copy: bool) -> bool:
        """Send the transaction; True when this request claimed the batch_id.

        With ``copy``, the server is left waiting for the rows (``finish``);
        without, the transaction is already committed.
        """
        literal = pq.Escaping(self._pgconn).escape_literal(orjson.dumps(rejections)).decode()
        sql = _LIBPQ_BEGIN_CLAIM % (INGEST_FENCE_LOCK, envelope.batch_id, int(ingest_key_id), envelope.digest,
                                    len(envelope.reports), literal, datetime.now(timezone.utc).isoformat())
        sql += _LIBPQ_COPY_COMMIT if copy else "COMMIT"
        ok, tuples = pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK
        with self._db.wrap_database_errors:
            self._pgconn.send_query(sql.encode())
            self._flush()
            if copy:
                results = self._check(self._results(), ok, tuples, pq.ExecStatus.COPY_IN)
            else:
                results = self._check(self._results() + self._results(), ok, tuples, ok)
                if results[2].command_status != b"COMMIT":
                    raise psycopg.OperationalError("the batch transaction did not commit")
        return results[1].ntuples == 1

    def finish(self, rows: list[tuple]) -> None:
        """Send the rows; returns once the server has copied them and committed."""
        pgconn, data = self._pgconn, _copy_text(rows)
        with self._db.wrap_database_errors:
            while not pgconn.put_copy_data(data):  # 0: libpq's buffer is full
                self._wait(select.POLLOUT)
                pgconn.flush()
            while not pgconn.put_copy_end(None):
                self._wait(select.POLLOUT)
                pgconn.flush()
            self._flush()
            results = self._results()
            results += self._results()  # after COPY's own result, COMMIT's
            results = self._check(results, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COMMAND_OK)
            if results[1].command_status != b"COMMIT":
                raise psycopg.OperationalError("the batch transaction did not commit")

    def stored_answer(self, envelope: _Envelope, ingest_key_id: int) -> IngestResult:
        with self._db.wrap_database_errors:
            result = self._pgconn.exec_((_LIBPQ_STORED % envelope.batch_id).encode())
            self._check([result], pq.ExecStatus.TUPLES_OK)
        stored = None
        if result.ntuples:
            key_id, digest, item_count, rejections = (result.get_value(0, i).decode() for i in range(4))
            stored = (int(key_id), digest, int(item_count), rejections)
        return _stored_answer(envelope, ingest_key_id, stored)


def _decide(valid: _Validated, decisions: list[int]) -> tuple[list[tuple], list[tuple[int, str]], list[int]]:
    """The limiter's decisions applied: rows to store, all rejections (sorted), admitted count per group."""
    admitted = [0] * len(valid.groups)
    if not any(decisions):
        for group in valid.item_groups:
            admitted[group] += 1
        return valid.rows, valid.rejections, admitted
    rows, rejections = [], list(valid.rejections)
    for index, row, group, decision in zip(valid.indexes, valid.rows, valid.item_groups, decisions):
        if decision == ACCEPTED:
            rows.append(row)
            admitted[group] += 1
        else:
            rejections.append((index, "daily_limit_exceeded" if decision == DAILY_LIMIT else "contribution_bound_exceeded"))
    rejections.sort()
    return rows, rejections, admitted


def _ingest_libpq(db, envelope: _Envelope, ingest_key_id: int, valid: _Validated, limiter) -> IngestResult:
    batch = _LibpqBatch(db)
    rows, rejections, admitted = valid.rows, valid.rejections, None
    try:
        claimed = batch.begin(envelope, ingest_key_id, rejections, copy=bool(rows))
        if claimed and rows:
            rows, rejections, admitted = _decide(
                valid, limiter.admit_groups(envelope.client_id, valid.groups, valid.item_groups))
            if len(rows) == len(valid.rows):
                batch.finish(rows)
            else:  # the stored record must carry the limits' rejections too: claim again with them
                batch.abort()
                claimed = batch.begin(envelope, ingest_key_id, rejections, copy=bool(rows))
                if claimed and rows:
                    batch.finish(rows)
        if not claimed:
            batch.abort()
            if admitted is not None:
                limiter.refund_groups(envelope.client_id, valid.groups, admitted)
                admitted = None
            return batch.stored_answer(envelope, ingest_key_id)
    except BaseException:
        batch.abort()
        if admitted is not None and any(admitted):
            limiter.refund_groups(envelope.client_id, valid.groups, admitted)
        raise
    return IngestResult(envelope.batch_id, len(envelope.reports), rejections)


def _ingest_atomic(envelope: _Envelope, ingest_key_id: int, valid: _Validated, limiter) -> IngestResult:
    rows, rejections, admitted = valid.rows, valid.rejections, None
    try:
        with _AtomicStore() as store:
            stored = store.claim(envelope, ingest_key_id, rejections)
            if stored is not None:
                return stored
            if rows:
                rows, rejections, admitted = _decide(
                    valid, limiter.admit_groups(envelope.client_id, valid.groups, valid.item_groups))
                if rejections is not valid.rejections:
                    store.set_rejections(envelope, rejections)
                if rows:
                    store.insert_reports(rows)
    except BaseException:
        if admitted is not None and any(admitted):
            limiter.refund_groups(envelope.client_id, valid.groups, admitted)
        raise
    return IngestResult(envelope.batch_id, len(envelope.reports), rejections)


def ingest_batch(*, ingest_key_id: int, body: bytes) -> IngestResult:
    envelope = _parse_envelope(body)
    today = datetime.now(timezone.utc).date()
    oldest = today - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
    valid = _validate_items(envelope.reports, today, oldest)
    db = connections[DEFAULT_DB_ALIAS]
    if _LibpqBatch.usable(db):
        return _ingest_libpq(db, envelope, ingest_key_id, valid, get_limiter())
    return _ingest_atomic(envelope, ingest_key_id, valid, get_limiter())
