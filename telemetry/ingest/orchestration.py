"""One batch, end to end: validate -> claim -> limits -> store -> answer, with one admit and one refund path.

The store claims the batch_id before the limits are asked, so a retry racing
its first attempt waits on the first attempt's claim and answers as it did,
without ever being counted against the limits. Counts the limiter admitted
are given back whenever they end up not stored: the batch turned out to be
stored already, or the transaction failed.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

from telemetry.ingest.libpq_store import LibpqStore
from telemetry.ingest.orm_store import OrmStore
from telemetry.ingest.result import IngestResult, replayed_result
from telemetry.ingest.store import BatchHeader, BatchStore, Rejections, ReportRow
from telemetry.ingest.validation import Validated, parse_envelope, validate_items
from telemetry.limits import ACCEPTED, DAILY_LIMIT, METRIC_LIMIT, get_limiter

_LIMIT_CODES = {DAILY_LIMIT: "daily_limit_exceeded", METRIC_LIMIT: "contribution_bound_exceeded"}


def _decide(valid: Validated, decisions: list[int]) -> tuple[list[ReportRow], Rejections, list[int]]:
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
            rejections.append((index, _LIMIT_CODES[decision]))
    rejections.sort()
    return rows, rejections, admitted


def _open_store(header: BatchHeader) -> BatchStore:
    db = connections[DEFAULT_DB_ALIAS]
    return LibpqStore(db, header) if LibpqStore.usable(db) else OrmStore(header)


def ingest_batch(*, ingest_key_id: int, body: bytes) -> IngestResult:
    """Ingest one ``POST /api/v1/reports`` body: ApiError for a bad envelope or a batch_id conflict."""
    envelope = parse_envelope(body)
    valid = validate_items(envelope.reports)
    header = BatchHeader(envelope.batch_id, ingest_key_id, envelope.digest, len(envelope.reports))
    limiter = get_limiter()
    rejections, admitted = valid.rejections, None
    try:
        with _open_store(header) as store:
            stored = store.claim(rejections, has_rows=bool(valid.rows))
            if stored is None:
                rows = valid.rows
                if rows:
                    decisions = limiter.admit_groups(envelope.client_id, valid.groups, valid.item_groups)
                    rows, rejections, admitted = _decide(valid, decisions)
                stored = store.commit(rows, rejections)
    except BaseException:
        if admitted is not None and any(admitted):
            limiter.refund_groups(envelope.client_id, valid.groups, admitted)
        raise
    if stored is None:
        return IngestResult(envelope.batch_id, header.item_count, rejections)
    if admitted is not None and any(admitted):
        limiter.refund_groups(envelope.client_id, valid.groups, admitted)
    return replayed_result(header, stored)
