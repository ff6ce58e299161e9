"""One batch, end to end: validate -> claim -> limits -> stage -> answer, in one transaction.

The store claims the batch_id and locks the client's limit counters in the same
transaction that then stages the admitted reports and adds to the counters, so
a count exists exactly when its reports are stored: nothing to give back if the
transaction fails, and nothing counted twice if a batch committed just before a
crash is sent again (it is then answered from its stored record).

Items over a client's bounds are answered ``accepted`` like any other and not
stored: an answer never reveals whether a client_id has reported before
(docs/api.md). The SDKs keep the same bounds locally, so honest clients never
send such items.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import repeat

from django.db import DEFAULT_DB_ALIAS, connections

from telemetry import limits
from telemetry.ingest.libpq_store import LibpqStore
from telemetry.ingest.orm_store import OrmStore
from telemetry.ingest.result import IngestResult, replayed_result
from telemetry.ingest.store import BatchHeader, BatchStore, Claim, Staged
from telemetry.ingest.validation import Validated, read_batch


def _open_store(header: BatchHeader) -> BatchStore:
    db = connections[DEFAULT_DB_ALIAS]
    return LibpqStore(db, header) if LibpqStore.usable(db) else OrmStore(header)


def _staged(valid: Validated, admitted: list[bool] | None = None) -> Staged:
    """The records of the admitted candidates (all of them without ``admitted``), joined per metric."""
    if admitted is None and len(valid.groups) == 1:  # the usual batch: one metric, one day, all admitted
        return [(valid.metric_ids[0], valid.joined_records())]
    by_metric = defaultdict(list)
    for metric_id, record, ok in zip(valid.metric_ids, valid.candidate_records(), admitted or repeat(True)):
        if ok:
            by_metric[metric_id].append(record)
    return [(metric_id, b"".join(records)) for metric_id, records in by_metric.items()]


def _store_in_one_step(store: BatchStore, valid: Validated, counters: limits.CounterPlan) -> Claim | None:
    """The usual batch, within its client's bounds: every item admitted, in one step (None: not stored)."""
    increments, bounds = limits.if_all_admitted(counters, valid.groups, valid.item_groups)
    return store.store_if_within_bounds(valid.rejections, counters, _staged(valid),
                                        increments, bounds)


def _store_item_by_item(store: BatchStore, valid: Validated, counters: limits.CounterPlan | None) -> Claim:
    """Claim, read the client's locked counters, decide each item in order, stage the admitted ones."""
    claim = store.claim(valid.rejections, counters)
    if claim.stored is None and counters is not None:
        admitted, increments = limits.decide(counters, valid.groups, valid.item_groups, claim.counts)
        store.commit(_staged(valid, admitted), increments, counters)
    return claim


def ingest_batch(*, ingest_key_id: int, body: bytes) -> IngestResult:
    """Ingest one ``POST /api/v1/reports`` body: ApiError for a bad envelope or a batch_id conflict."""
    envelope, valid = read_batch(body)
    header = BatchHeader(envelope.batch_id, ingest_key_id, envelope.digest, envelope.item_count)
    counters = limits.plan(envelope.client_id, valid.groups) if valid.indexes else None  # secrets: before the transaction
    with _open_store(header) as store:
        claim = _store_in_one_step(store, valid, counters) if counters is not None else None
        if claim is None:
            claim = _store_item_by_item(store, valid, counters)
    if claim.stored is not None:
        return replayed_result(header, claim.stored)
    return IngestResult(envelope.batch_id, header.item_count, valid.rejections)
