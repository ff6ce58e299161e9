"""The roll-up: fold staged reports into counts, then delete them (aggregate, then discard).

One roll-up is one transaction and one epoch: it takes every staged row
committed before it started and deletes it. On PostgreSQL the staged rows are in
two slots: the roll-up seals the slot ingest writes into (waiting for every
transaction staging rows, then moving ingest to the other slot), reads it whole
and empties it with TRUNCATE; rows staged meanwhile go to the other slot, for
the next roll-up, so no watermark or fence is needed. On SQLite it deletes the
rows up to the largest id it saw at the start (``DELETE ... RETURNING``). Either
way the rows come in steps of bounded size, whose reports are folded per
(metric, day, region) (:func:`telemetry.staging.fold_cells`, the steps merged
by :func:`telemetry.staging.merge_cells`). It then appends what it
added as ``CountDelta`` rows of a new ``RollupEpoch`` (merging in those of the
epochs no release counted: :mod:`telemetry.epochs`), and adds it to
``ObservedCounts`` (on PostgreSQL both writes are one statement over binary
arrays: a fixed cost of a few milliseconds for thousands of cells, where
ORM bulk inserts took a second). Queries read ``ObservedCounts`` and the latest epoch in one
snapshot, never waiting for a roll-up. It runs periodically (Celery beat,
``ROLLUP_INTERVAL_S``), and makes an epoch on every run, with or without new
reports, so that the data version analysts see changes with time only.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from collections.abc import Iterator
from itertools import accumulate

import numpy as np
from django.db import connection, transaction

from deploy.api.db import advisory_xact_lock, fetch_binary, is_postgresql
from telemetry import epochs, staging
from telemetry.catalog import catalog
from telemetry.models import CountDelta, ObservedCounts, RollupEpoch

ROLLUP_LOCK = 0x7E1E_0002
Folded = dict[int, staging.FoldedCells]  # metric id -> what its staged reports add, per (day, region)

STAGING_LOCK = 0x7E1E_0004  # held shared by every transaction staging rows (migration 0008)

# PostgreSQL: staged rows live in two slots (partitions of telemetry_stagedreports); ingest writes into
# the current one. telemetry_staging_seal() waits for every transaction staging rows, then moves ingest
# to the other slot, and returns the slot it sealed: nothing is written into it any more. Its rows are
# read in steps of CHUNK_PAGES pages (8 MB; the server joins each metric's payloads, so one row per metric
# and step), then the slot is emptied with TRUNCATE, which writes no WAL per row and removes the file.
# (A DELETE of a backlog of 10^8 reports wrote a full-page image of every page it emptied: 909 MB of
# WAL; docs/benchmarks.md.)
_SEAL = "SELECT telemetry_staging_seal()"
CHUNK_PAGES = 1024
_SLOT_PAGES = "SELECT pg_relation_size(%s) / current_setting('block_size')::int"
_READ_PAGES = ("SELECT metric_id, string_agg(payload, ''::bytea) FROM {slot}"
               " WHERE ctid >= ('(' || %s || ',0)')::tid AND ctid < ('(' || %s || ',0)')::tid GROUP BY metric_id")
_EMPTY_SLOT = "TRUNCATE {slot}"
# SQLite (the embedded default): one table, taken in steps of CHUNK_ROWS ids, each deleted and returned by
# one statement, up to the largest id seen at the start (a row committed later waits for the next roll-up).
CHUNK_ROWS = 10_000
_STAGED_IDS = "SELECT min(id), max(id) FROM telemetry_stagedreports"
_TAKE_CHUNK = "DELETE FROM telemetry_stagedreports WHERE id BETWEEN %s AND %s RETURNING metric_id, payload"
# One statement: the epoch's deltas appended, the totals upserted (their new values computed by the caller).
# Supports travel as one blob per column, cut server-side: a list of thousands of bytea values costs
# psycopg ~10 us each to send.
_WRITE_COUNTS = (
    "WITH cells AS (SELECT c.metric_id, DATE '1970-01-01' + c.day AS day, c.region, c.reports, c.total_reports,"
    " substring(%s::bytea FROM c.start + 1 FOR c.width) AS support,"
    " substring(%s::bytea FROM c.start + 1 FOR c.width) AS total_support"
    " FROM unnest(%s::bigint[], %s::int[], %s::varchar[], %s::bigint[], %s::bigint[], %s::int[], %s::int[])"
    " AS c(metric_id, day, region, reports, total_reports, start, width)),"
    " deltas AS (INSERT INTO telemetry_countdelta (epoch, metric_id, day, region, reports, support)"
    " SELECT %s, metric_id, day, region, reports, support FROM cells RETURNING 1),"
    " totals AS (INSERT INTO telemetry_observedcounts (metric_id, day, region, reports, support)"
    " SELECT metric_id, day, region, total_reports, total_support FROM cells"
    " ON CONFLICT (metric_id, day, region) DO UPDATE SET reports = EXCLUDED.reports, support = EXCLUDED.support"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM deltas), (SELECT count(*) FROM totals)"
)


def _seal() -> tuple[str, int]:
    """Seal the current slot (waiting for every transaction staging rows): its table and its pages."""
    with connection.cursor() as cursor:
        cursor.execute(_SEAL)
        slot = f"telemetry_stagedreports_{int(cursor.fetchone()[0])}"
        cursor.execute(_SLOT_PAGES, [slot])
        return slot, cursor.fetchone()[0]


def _read_pages(slot: str, first: int) -> dict[int, bytes]:
    """The payloads of the CHUNK_PAGES pages of ``slot`` from page ``first``: per metric, joined."""
    return dict(fetch_binary(_READ_PAGES.format(slot=slot), [first, first + CHUNK_PAGES]))


def _empty(slot: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_EMPTY_SLOT.format(slot=slot))


def _sealed_slot_payloads() -> Iterator[dict[int, bytes]]:
    """PostgreSQL: seal the current slot, yield its payloads step by step, then empty it."""
    slot, pages = _seal()
    for first in range(0, pages, CHUNK_PAGES):
        yield _read_pages(slot, first)
    _empty(slot)


def _deleted_payloads() -> Iterator[dict[int, bytes]]:
    """SQLite: delete the staged rows up to the largest id now committed, step by step; their payloads."""
    with connection.cursor() as cursor:
        cursor.execute(_STAGED_IDS)
        lowest, highest = cursor.fetchone()
        for first in range(lowest or 0, (highest or -1) + 1, CHUNK_ROWS):
            cursor.execute(_TAKE_CHUNK, [first, min(first + CHUNK_ROWS - 1, highest)])
            payloads: dict[int, list[bytes]] = defaultdict(list)
            for metric_id, payload in cursor.fetchall():
                payloads[metric_id].append(payload)
            yield {metric_id: b"".join(parts) for metric_id, parts in payloads.items()}


def _fold_staged() -> Folded:
    """Take every staged row committed before this roll-up and fold its reports, step by step: memory stays
    bounded whatever the backlog. Every row is taken and folded exactly once."""
    steps = _sealed_slot_payloads() if is_postgresql() else _deleted_payloads()
    parts: dict[int, list[staging.FoldedCells]] = defaultdict(list)
    for payloads in steps:
        for metric_id, payload in payloads.items():
            parts[metric_id].append(staging.fold_cells(catalog.by_id(metric_id), payload))
    return {metric_id: staging.merge_cells(folded) for metric_id, folded in parts.items()}


@dataclass
class _Rows:
    """The rows a roll-up writes, one per (metric, day, region), in columns: the increment and the new
    total. Supports are concatenated rows of k little-endian int64 counts, ``widths`` bytes each."""

    metric_ids: list[int] = field(default_factory=list)
    days: list[int] = field(default_factory=list)  # days since EPOCH_DAY
    regions: list[str] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)
    total_reports: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    supports: list[bytes] = field(default_factory=list)  # one blob per metric
    total_supports: list[bytes] = field(default_factory=list)

    def starts(self) -> list[int]:
        return list(accumulate(self.widths, initial=0))[:-1]

    def cut(self, blobs: list[bytes]) -> list[bytes]:
        """One bytes object per row, from the blobs of ``supports`` or ``total_supports``."""
        joined = b"".join(blobs)
        return [joined[start:start + width] for start, width in zip(self.starts(), self.widths)]


def _with_totals(folded: Folded) -> _Rows:
    """Each folded cell's increment and new total: plus the ObservedCounts row it has (one read)."""
    rows = _Rows()
    for metric_id, cells in folded.items():
        if not len(cells.reports):
            continue
        first, last = (staging.EPOCH_DAY + timedelta(days=int(day)) for day in (cells.days[0], cells.days[-1]))
        existing = {((day - staging.EPOCH_DAY).days, region): (reports, support) for day, region, reports, support in
                    ObservedCounts.objects.filter(metric_id=metric_id, day__gte=first, day__lte=last)
                    .values_list("day", "region", "reports", "support")}
        days = cells.days.tolist()
        totals, total_reports = cells.supports.copy(), cells.reports.copy()
        for i, key in enumerate(zip(days, cells.regions)):
            if key in existing:
                total_reports[i] += existing[key][0]
                totals[i] += np.frombuffer(bytes(existing[key][1]), dtype="<i8")
        rows.metric_ids += [metric_id] * len(days)
        rows.days += days
        rows.regions += cells.regions
        rows.reports += cells.reports.tolist()
        rows.total_reports += total_reports.tolist()
        rows.widths += [cells.supports.shape[1] * 8] * len(days)
        rows.supports.append(np.ascontiguousarray(cells.supports, dtype="<i8").tobytes())
        rows.total_supports.append(np.ascontiguousarray(totals, dtype="<i8").tobytes())
    return rows


def _write_counts(epoch: RollupEpoch, rows: _Rows) -> None:
    """Append the epoch's deltas and upsert the totals: one statement on PostgreSQL."""
    if not rows.metric_ids:
        return
    if is_postgresql():
        fetch_binary(_WRITE_COUNTS, [b"".join(rows.supports), b"".join(rows.total_supports), rows.metric_ids,
                                     rows.days, rows.regions, rows.reports, rows.total_reports, rows.starts(),
                                     rows.widths, epoch.id])
        return
    keys = [(metric_id, staging.EPOCH_DAY + timedelta(days=day), region)
            for metric_id, day, region in zip(rows.metric_ids, rows.days, rows.regions)]
    CountDelta.objects.bulk_create(
        CountDelta(epoch=epoch.id, metric_id=metric_id, day=day, region=region, reports=reports, support=support)
        for (metric_id, day, region), reports, support in zip(keys, rows.reports, rows.cut(rows.supports)))
    ObservedCounts.objects.bulk_create(
        (ObservedCounts(metric_id=metric_id, day=day, region=region, reports=reports, support=support)
         for (metric_id, day, region), reports, support in zip(keys, rows.total_reports, rows.cut(rows.total_supports))),
        update_conflicts=True, unique_fields=["metric", "day", "region"], update_fields=["reports", "support"])


def advance_rollup() -> RollupEpoch:
    """Fold every committed staged report into the counts as a new epoch, and delete it."""
    with transaction.atomic():
        advisory_xact_lock(ROLLUP_LOCK)  # one roll-up at a time
        rows = _with_totals(_fold_staged())
        epoch = RollupEpoch.objects.create(token=secrets.token_urlsafe(16))
        _write_counts(epoch, rows)
    with transaction.atomic():  # its own short transaction: queries never wait for the fold above
        epochs.compact(epoch.id)
    return epoch
