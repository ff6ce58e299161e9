"""Staged reports: one batch's reports of one metric as fixed-size little-endian records.

A record is ``day`` (int32, days since 1970-01-01), ``region`` (2 ASCII bytes,
zero-padded; "" is two zero bytes) and the report: the value's index (uint16)
for k-RR, the protocol's packed encoding (``oracle.packed_size`` bytes) for the
others. Ingest writes one payload per (batch, metric); the roll-up concatenates
every payload of a metric and folds them in a few vectorized passes
(:func:`fold`), which is what lets it run at tens of millions of reports a second.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

from telemetry.catalog import MetricSpec

EPOCH_DAY = date(1970, 1, 1)
_EPOCH_ORDINAL = EPOCH_DAY.toordinal()

# (metric_id, day, region, value, payload): value is the k-RR label index, payload
# the packed report of the other protocols; exactly one of the two is None.
ReportRow = tuple[int, date, str, "int | None", "bytes | None"]


@lru_cache(maxsize=256)
def _record_struct(value_size: int) -> struct.Struct:
    return struct.Struct("<i2sH" if value_size == 0 else f"<i2s{value_size}s")


def record_dtype(spec: MetricSpec) -> np.dtype:
    value = "<u2" if spec.protocol == "krr" else f"V{spec.oracle.packed_size}"
    return np.dtype([("day", "<i4"), ("region", "S2"), ("value", value)])


_KRR_RECORDS: dict[tuple, bytes] = {}  # a k-RR row's record, by (day, region, value): few distinct ones a day


def _krr_record(day: date, region: str, value: int) -> bytes:
    key = (day, region, value)
    record = _KRR_RECORDS.get(key)
    if record is None:
        if len(_KRR_RECORDS) >= 20_000:
            _KRR_RECORDS.clear()
        record = _KRR_RECORDS[key] = _record_struct(0).pack(day.toordinal() - _EPOCH_ORDINAL, region.encode(), value)
    return record


def pack_rows(spec: MetricSpec, rows: Iterable[ReportRow]) -> bytes:
    """The payload of one batch's rows of one metric."""
    if spec.protocol == "krr":
        return b"".join(_krr_record(day, region, value) for _, day, region, value, _ in rows)
    record = _record_struct(spec.oracle.packed_size)
    return b"".join(record.pack(day.toordinal() - _EPOCH_ORDINAL, region.encode(), payload)
                    for _, day, region, _, payload in rows)


Cells = dict[tuple[date, str], tuple[int, np.ndarray]]  # (day, region) -> (reports, support counts)


def _dense_cells(records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell of each record, the day of each cell, the region code of each cell): cells are the
    (day, region) pairs of a dense days x regions grid over what the records hold."""
    days = records["day"]
    first_day = int(days.min())
    codes = np.ascontiguousarray(records["region"]).view("<u2")
    present = np.zeros(1 << 16, dtype=bool)
    present[codes] = True
    region_codes = np.flatnonzero(present)
    region_index = np.zeros(1 << 16, dtype=np.int64)
    region_index[region_codes] = np.arange(len(region_codes))
    cells = (days - first_day).astype(np.int64) * len(region_codes) + region_index[codes]
    span = int(days.max()) - first_day + 1
    cell_days = first_day + np.repeat(np.arange(span), len(region_codes))
    return cells, cell_days, np.tile(region_codes, span)


def _supports_by_cell(spec: MetricSpec, records: np.ndarray, cells: np.ndarray, size: int) -> np.ndarray:
    if spec.protocol == "krr":
        flat = cells * spec.k + records["value"]
        return np.bincount(flat, minlength=size * spec.k).reshape(size, spec.k)
    supports = np.zeros((size, spec.k), dtype=np.int64)
    order = np.argsort(cells, kind="stable")
    sorted_cells = cells[order]
    starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
    values = np.ascontiguousarray(records["value"][order]).tobytes()
    width = spec.oracle.packed_size
    for start, end in zip(starts, [*starts[1:], len(order)]):
        reports = spec.oracle.unpack_blob(values[start * width:end * width], int(end - start))
        supports[sorted_cells[start]] = spec.oracle.support_counts(reports)
    return supports


def fold(spec: MetricSpec, payload: bytes) -> Cells:
    """The reports and support counts of each (day, region) in concatenated payloads of one metric."""
    records = np.frombuffer(payload, dtype=record_dtype(spec))
    if not len(records):
        return {}
    cells, cell_days, cell_regions = _dense_cells(records)
    reports = np.bincount(cells, minlength=len(cell_days))
    supports = _supports_by_cell(spec, records, cells, len(cell_days))
    return {
        (EPOCH_DAY + timedelta(days=int(cell_days[i])), int(cell_regions[i]).to_bytes(2, "little").rstrip(b"\0").decode()):
            (int(reports[i]), supports[i])
        for i in np.flatnonzero(reports)
    }


def unpack_rows(spec: MetricSpec, payload: bytes) -> list[ReportRow]:
    """The rows of a payload (the inverse of :func:`pack_rows`), for audits and tests."""
    records = np.frombuffer(payload, dtype=record_dtype(spec))
    krr = spec.protocol == "krr"
    return [(spec.id, EPOCH_DAY + timedelta(days=int(day)), region.decode(),
             int(value) if krr else None, None if krr else bytes(value))
            for day, region, value in records.tolist()]
