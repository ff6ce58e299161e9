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
from dataclasses import dataclass
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


def krr_record(day: date, region: str, value: int) -> bytes:
    """The record of one k-RR report (the value's index)."""
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
        return b"".join(krr_record(day, region, value) for _, day, region, value, _ in rows)
    return b"".join(packed_record(spec, day, region, payload) for _, day, region, _, payload in rows)


def packed_record(spec: MetricSpec, day: date, region: str, payload: bytes) -> bytes:
    """The record of one report of the other protocols (its packed encoding)."""
    return _record_struct(spec.oracle.packed_size).pack(day.toordinal() - _EPOCH_ORDINAL, region.encode(), payload)


Cells = dict[tuple[date, str], tuple[int, np.ndarray]]  # (day, region) -> (reports, support counts)


@dataclass(frozen=True)
class FoldedCells:
    """The (day, region) cells that a metric's staged reports fall in, as columns: row i is day
    ``EPOCH_DAY + days[i]``, region ``regions[i]``, with ``reports[i]`` reports supporting each
    value ``supports[i, v]`` times. Only cells with reports, ordered by (day, region code)."""

    days: np.ndarray  # (n,) int64, days since EPOCH_DAY
    regions: list[str]
    reports: np.ndarray  # (n,) int64
    supports: np.ndarray  # (n, k) int64

    def dates(self) -> list[date]:
        return [EPOCH_DAY + timedelta(days=day) for day in self.days.tolist()]


def _dense_cells(records: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell of each record, the day of each cell, the region code of each cell): cells are the
    (day, region) pairs of a dense days x regions grid over what the records hold.

    Cell indices are int32 whenever cell x k fits (half the memory traffic of int64; a fold is a
    few passes over 10^7 records, bound by memory, not arithmetic)."""
    days = records["day"]
    first_day = int(days.min())
    span = int(days.max()) - first_day + 1
    codes = records["region"].view("<u2")  # same item size: a view, no copy
    region_codes = np.flatnonzero(np.bincount(codes, minlength=1 << 16))
    index_type = np.int32 if span * len(region_codes) * k < 2**31 else np.int64
    region_index = np.zeros(1 << 16, dtype=index_type)
    region_index[region_codes] = np.arange(len(region_codes), dtype=index_type)
    cells = np.subtract(days, first_day, dtype=index_type)
    cells *= len(region_codes)
    cells += region_index[codes]
    cell_days = first_day + np.repeat(np.arange(span, dtype=np.int64), len(region_codes))
    return cells, cell_days, np.tile(region_codes, span)


def _supports_by_cell(spec: MetricSpec, records: np.ndarray, cells: np.ndarray, size: int) -> np.ndarray:
    """Support counts per cell (size x k). For k-RR, ``cells`` is consumed (overwritten in place)."""
    if spec.protocol == "krr":
        flat = cells
        flat *= spec.k
        flat += records["value"]
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


def fold_cells(spec: MetricSpec, payload: bytes) -> FoldedCells:
    """The reports and support counts of each (day, region) in concatenated payloads of one metric."""
    records = np.frombuffer(payload, dtype=record_dtype(spec))
    if not len(records):
        return FoldedCells(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64),
                           np.zeros((0, spec.k), dtype=np.int64))
    cells, cell_days, cell_regions = _dense_cells(records, spec.k)
    if spec.protocol == "krr":  # a k-RR report supports exactly its one value
        supports = _supports_by_cell(spec, records, cells, len(cell_days))
        reports = supports.sum(axis=1)
    else:
        reports = np.bincount(cells, minlength=len(cell_days))
        supports = _supports_by_cell(spec, records, cells, len(cell_days))
    kept = np.flatnonzero(reports)
    regions = [code.to_bytes(2, "little").rstrip(b"\0").decode() for code in cell_regions[kept].tolist()]
    return FoldedCells(cell_days[kept], regions, reports[kept].astype(np.int64, copy=False),
                       supports[kept].astype(np.int64, copy=False))


def _region_codes(regions: list[str]) -> np.ndarray:
    """Each region as its record's 2-byte little-endian code (the order of ``fold_cells``'s cells)."""
    return np.array([int.from_bytes(region.encode(), "little") for region in regions], dtype=np.int64)


def merge_cells(parts: list[FoldedCells]) -> FoldedCells:
    """The cells of several folds of one metric's reports added up, as one fold of all of them would give."""
    if len(parts) == 1:
        return parts[0]
    regions = [region for part in parts for region in part.regions]
    keys = (np.concatenate([part.days for part in parts]) << 16) | _region_codes(regions)
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    reports = np.zeros(len(unique), dtype=np.int64)
    np.add.at(reports, inverse, np.concatenate([part.reports for part in parts]))
    supports = np.zeros((len(unique), parts[0].supports.shape[1]), dtype=np.int64)
    np.add.at(supports, inverse, np.concatenate([part.supports for part in parts]))
    return FoldedCells(unique >> 16, [regions[i] for i in first.tolist()], reports, supports)


def fold(spec: MetricSpec, payload: bytes) -> Cells:
    """:func:`fold_cells` as a mapping (day, region) -> (reports, support counts)."""
    cells = fold_cells(spec, payload)
    return {(day, region): (reports, support)
            for day, region, reports, support in zip(cells.dates(), cells.regions, cells.reports.tolist(),
                                                     cells.supports)}


def unpack_rows(spec: MetricSpec, payload: bytes) -> list[ReportRow]:
    """The rows of a payload (the inverse of :func:`pack_rows`), for audits and tests."""
    records = np.frombuffer(payload, dtype=record_dtype(spec))
    krr = spec.protocol == "krr"
    return [(spec.id, EPOCH_DAY + timedelta(days=int(day)), region.decode(),
             int(value) if krr else None, None if krr else bytes(value))
            for day, region, value in records.tolist()]
