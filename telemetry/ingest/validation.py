"""Parse and check a batch: the envelope as a whole (400, nothing written), then each item (per-item codes).

Nothing here writes: the output is the candidate rows, their (day, metric)
contribution groups for the limits, and the rejections so far.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from operator import itemgetter
from typing import Annotated

import msgspec
import numpy as np
import orjson
from django.conf import settings

from deploy.api.errors import ApiError
from privacy.ldp import PayloadError
from telemetry.catalog import MetricSpec, catalog
from telemetry.ingest.store import Rejections
from telemetry.staging import krr_record, packed_record
from telemetry.limits import Contribution
from telemetry.regions import accepted_regions

try:  # the table of known reports in C (telemetry/_ingest_native.c), compiled at install where a compiler is found
    from telemetry import _ingest_native
except ImportError:  # pragma: no cover - exercised by tests that hide the module
    _ingest_native = None

MAX_CLIENT_ID_LENGTH = 256
_ENVELOPE_FIELDS = frozenset({"batch_id", "client_id", "reports"})
_ITEM_FIELDS = frozenset({"metric", "version", "value", "payload", "day", "region"})
_NUL_ESCAPE = b"\\u0000"  # JSON can carry NUL only so: a raw control character inside a string is malformed


@dataclass
class Envelope:
    batch_id: uuid.UUID
    client_id: str
    reports: list | None  # of dicts, or of _KrrItem on the fast path; None when read from the known reports
    digest: str  # of batch_id and reports, not client_id
    item_count: int


# The fast path: a body that msgspec decodes into these typed structs, in C, is handled without the general
# path's per-value type checks. Whatever does not fit them (another type, an unknown field, a payload, a
# backslash escape anywhere) takes the general path, whose answer is then exactly today's.
_UNSET = msgspec.UNSET


class _KrrItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False,
               cache_hash=True):
    """A report without a payload, every field of the type the checks want (hashable: a per-batch memo key)."""

    # in sorted order: encoded in this order, a report is in the digest's canonical form (sorted keys)
    day: str | msgspec.UnsetType = _UNSET
    metric: str | msgspec.UnsetType = _UNSET
    region: str | None | msgspec.UnsetType = _UNSET
    value: str | msgspec.UnsetType = _UNSET
    version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None | msgspec.UnsetType = _UNSET


class _KrrBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The envelope, each report left as its bytes (``_ReadReports`` reads them)."""

    batch_id: str
    client_id: str
    reports: list[msgspec.Raw]


class _KrrBatchArray(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The envelope with its reports array left as its bytes (the table of known reports splits it)."""

    batch_id: str
    client_id: str
    reports: msgspec.Raw


_decode_krr_batch = msgspec.json.Decoder(_KrrBatch).decode
_decode_krr_batch_array = msgspec.json.Decoder(_KrrBatchArray).decode
_decode_krr_item = msgspec.json.Decoder(_KrrItem).decode
# Fields in sorted order, absent ones left out, explicit nulls kept: the bytes orjson.dumps(..., OPT_SORT_KEYS)
# gives for the same reports as dicts, when no string needs an escape (tests/telemetry/test_ingest_fast_path.py).
# The fields are declared sorted, which spares msgspec's per-struct sorting (order="sorted").
_encode_sorted = msgspec.json.Encoder().encode


class _ReadReports:
    """Per worker: a fast-path report's bytes as sent -> (the report as ``_KrrItem``, its canonical JSON).

    The entry is a pure function of the bytes, so it never goes stale. Clients send few distinct
    reports (k-RR values, regions, days), so most reports of a batch are found here; and the
    ``_KrrItem`` found is the same object each time, so the table of checked reports, keyed by it,
    finds it by identity with its hash cached.
    """

    MAX_ENTRIES = 50_000  # a bound on memory: full, the table starts again empty

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[_KrrItem, bytes]] = {}

    def read(self, raw_reports: list[msgspec.Raw]) -> tuple[list[_KrrItem], list[bytes]] | None:
        """The reports and their canonical JSON; None if one is not a ``_KrrItem`` (the general path's)."""
        keys = list(map(bytes, raw_reports))
        entries = self.entries
        found = list(map(entries.get, keys))
        if not all(found):  # a report not read yet (None)
            if len(entries) > self.MAX_ENTRIES:
                entries = self.entries = {}
            for key in dict.fromkeys(keys):
                if key not in entries:
                    try:
                        item = _decode_krr_item(key)
                    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError included
                        return None
                    entries[key] = (item, _encode_sorted(item))
            found = list(map(entries.__getitem__, keys))
        return list(map(_first, found)), list(map(_second, found))


_read_reports = _ReadReports()


def _holds_nul(data) -> bool:
    """Whether any string in the parsed JSON, key or value, holds NUL (iterative: nesting can be deep)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if type(value) is str:
            if "\x00" in value:
                return True
        elif type(value) is dict:
            pending.extend(value.keys())
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
    return False


def parse_envelope(body: bytes) -> Envelope:
    """The batch's envelope, checked; its reports as ``_KrrItem`` when the fast path takes the body, else dicts."""
    return _parse_fast(body) or _parse_general(body)


def _parse_fast(body: bytes) -> Envelope | None:
    """The envelope when msgspec decodes the body into ``_KrrBatch`` and every report into ``_KrrItem``;
    None sends it to the general path. The envelope's own checks come first, as on the general path."""
    if b"\\" in body:  # an escape: it may be a NUL, and the digest's canonical form would need one too
        return None
    try:
        batch = _decode_krr_batch(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError included: the general path says what
        return None
    batch_id = _checked_envelope(batch.batch_id, batch.client_id, batch.reports)
    read = _read_reports.read(batch.reports)
    if read is None:
        return None
    reports, canonical = read
    return Envelope(batch_id, batch.client_id, reports, _digest(batch_id, b",".join(canonical)), len(reports))


def _digest(batch_id: uuid.UUID, joined_canonical: bytes) -> str:
    """The batch digest from its reports' canonical JSON joined by commas: the SHA-256 of the bytes
    ``_encode_sorted([str(batch_id), reports])`` gives, put together from each report's own."""
    return hashlib.sha256(b'["%s",[%s]]' % (str(batch_id).encode(), joined_canonical)).hexdigest()


def _parse_general(body: bytes) -> Envelope:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError("malformed_json", "The body is not valid JSON.")
    # PostgreSQL text cannot hold NUL, and no field of a batch has a use for it: refused anywhere, before any check.
    if _NUL_ESCAPE in body and _holds_nul(data):
        raise ApiError("nul_character", "The body holds a NUL character (\\u0000), which no field accepts.")
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    if missing := _ENVELOPE_FIELDS - data.keys():
        raise ApiError("missing_field", f"The body lacks {sorted(missing)}.")
    if unknown := data.keys() - _ENVELOPE_FIELDS:
        raise ApiError("unknown_field", f"The body has unknown fields {sorted(unknown)}.")
    reports = data["reports"]
    batch_id = _checked_envelope(data["batch_id"], data["client_id"], reports)
    if set(map(type, reports)) != {dict}:  # every report a JSON object (map and set: no Python loop)
        raise ApiError("invalid_reports", "Every report must be a JSON object.")
    # The digest leaves client_id out, so the stored batch record says nothing about who sent it.
    digest = orjson.dumps([str(batch_id), reports], option=orjson.OPT_SORT_KEYS)
    return Envelope(batch_id, data["client_id"], reports, hashlib.sha256(digest).hexdigest(), len(reports))


def _checked_ids(raw_batch_id, client_id) -> uuid.UUID:
    """The envelope's first checks: the batch_id as a UUID, or the ApiError; then the client_id."""
    try:
        batch_id = uuid.UUID(raw_batch_id)
    except (TypeError, ValueError, AttributeError):
        raise ApiError("invalid_batch_id", "batch_id must be a UUID string.")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
        raise ApiError("invalid_client_id", f"client_id must be a string of 1 to {MAX_CLIENT_ID_LENGTH} characters.")
    return batch_id


def _checked_envelope(raw_batch_id, client_id, reports) -> uuid.UUID:
    """The envelope's checks after its shape: the batch_id as a UUID, or the ApiError."""
    batch_id = _checked_ids(raw_batch_id, client_id)
    if not isinstance(reports, list) or not reports:
        raise ApiError("invalid_reports", "reports must be a non-empty list.")
    max_batch = settings.PRIVACY["MAX_BATCH_SIZE"]
    if len(reports) > max_batch:
        raise ApiError("batch_too_large", f"A batch holds at most {max_batch} reports.", http_status=413)
    return batch_id


class _Rejected(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


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
        raise _Rejected("invalid_version")
    spec = catalog.lookup(name, version)
    if spec is None:
        raise _Rejected("unknown_metric" if catalog.lookup(name) is None else "unknown_metric_version")
    return spec


# an accepted item: (spec, day, region, value index or parsed payload, its k-RR record or None)
Checked = tuple[MetricSpec, date, str, object, "bytes | None"]


@dataclass
class Validated:
    """The items that passed validation ("candidates"), ready for the limits and storage."""

    rejections: Rejections
    indexes: list[int]  # the batch index of each candidate
    metric_ids: list[int]  # each candidate's metric
    records: list[bytes] | None  # each candidate's staged record (telemetry.staging); None: see payload
    groups: list[Contribution]  # the distinct (day, metric) pairs, in first-seen order
    item_groups: list[int]  # each candidate's group
    payload: bytes | None = None  # from the known reports (one metric): every candidate's record, joined

    def candidate_records(self) -> list[bytes]:
        """Each candidate's record; from ``payload``, cut into its records (every k-RR record has one size)."""
        if self.records is not None:
            return self.records
        size, remainder = divmod(len(self.payload), len(self.indexes))
        if remainder:
            raise ValueError("the payload is not one record per candidate")
        return [self.payload[start:start + size] for start in range(0, len(self.payload), size)]

    def joined_records(self) -> bytes:
        return self.payload if self.records is None else b"".join(self.records)


class _ItemCheck:
    """The per-item checks of one batch, with its caches (metric by (name, version), day by its text)."""

    def __init__(self) -> None:
        self.today = datetime.now(timezone.utc).date()
        self.oldest = self.today - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
        self.specs: dict[tuple, MetricSpec] = {}
        self.days: dict[str, date | str] = {}
        self.regions = accepted_regions()

    def __call__(self, item: dict) -> Checked | str:
        """The item's (spec, day, region, value index or parsed payload, k-RR record), or its rejection code."""
        try:
            return self._check(item)
        except _Rejected as rejected:
            return rejected.code

    def _check(self, item: dict) -> Checked:
        if not _ITEM_FIELDS.issuperset(item):
            raise _Rejected("unknown_field")
        if "day" not in item:
            raise _Rejected("missing_field")
        specs, name, version = self.specs, item.get("metric"), item.get("version")
        if version is None:  # the common case: the current version, cached by name
            spec = specs.get(name) if type(name) is str else None
            if spec is None:
                spec = specs[name] = _lookup_metric(item)
        else:
            spec = specs.get((name, version)) if type(name) is str and type(version) is int else None
            if spec is None:
                spec = specs[(name, version)] = _lookup_metric(item)
        raw_day = item["day"]
        day = self.days.get(raw_day) if type(raw_day) is str else None
        if day is None:
            day = _check_day(raw_day, self.today, self.oldest)
            if type(raw_day) is str:
                self.days[raw_day] = day
        if type(day) is str:
            raise _Rejected(day)
        region = item.get("region") or ""
        if region and (type(region) is not str or region not in self.regions):
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
            return spec, day, region, value_index, krr_record(day, region, value_index)
        if "value" in item:
            raise _Rejected("unexpected_field")
        if "payload" not in item:
            raise _Rejected("missing_field")
        try:
            return spec, day, region, spec.oracle.parse_wire(item["payload"]), None
        except PayloadError as error:
            raise _Rejected(error.code)


def _as_dict(item: _KrrItem) -> dict:
    """A fast-path report as the general path's dict: its fields, absent ones left out."""
    return {field: value for field in item.__struct_fields__ if (value := getattr(item, field)) is not _UNSET}


def validate_items(reports: list, check: _ItemCheck | None = None) -> Validated:
    """Per-item checks, in this order: fields, metric, day, region, value or payload.

    Days are UTC dates from ``REPORT_MAX_AGE_DAYS`` ago to today.

    Each candidate comes out as its staged record; payloads are parsed per item and packed per metric in
    one vectorized call. Fast-path reports (``_KrrItem``, hashable) are checked once per distinct report.
    """
    check = check or _ItemCheck()
    if type(reports[0]) is _KrrItem:
        return _validate_krr_items(reports, check)
    return _collect(list(map(check, reports)))


class _CheckedReports:
    """Per worker, the accepted fast-path reports already checked: report -> its :data:`_Row`.

    A report's verdict depends only on the catalog, the accepted day window and the accepted
    regions, so an entry holds while those are what they were when it was checked; any change
    (a catalog reload, midnight UTC, other regions) starts an empty table. Only accepted reports
    are kept: a rejected one is checked again each time, by the general path.
    """

    MAX_ENTRIES = 100_000  # a bound on memory; k-RR reports of a day take few distinct values

    def __init__(self) -> None:
        self._state: tuple | None = None
        self._rows = _Table()

    def table(self, check: _ItemCheck) -> _Table:
        state = (catalog.generation(), check.today, check.oldest, check.regions)
        if state != self._state or len(self._rows) > self.MAX_ENTRIES:
            self._state, self._rows = state, _Table()
        return self._rows


class _Table(dict):
    """Report -> :data:`_Row`, the numbers its rows give their (metric id, day) groups, and the known reports."""

    __slots__ = ("groups", "_numbers", "known", "group_of_number")

    MAX_KNOWN = 50_000  # a bound on memory: reports as sent (several byte forms of one report count apart)

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[tuple[int, date], int] = {}
        self._numbers = itertools.count()  # next() is atomic: threads never share a number
        # accepted fast-path reports by their bytes as sent, in C: see read_batch
        self.known = _ingest_native.KnownReports() if _ingest_native is not None else None
        self.group_of_number: dict[int, tuple[int, Contribution]] = {}  # group number -> (metric id, Contribution)

    def verdict(self, item: _KrrItem, check: _ItemCheck) -> _Row | str:
        """The report's row, or its rejection code (the general path's, through ``check``)."""
        metric, version, raw_day, region = item.metric, item.version, item.day, item.region
        spec = catalog.lookup(metric, None if version is _UNSET else version) if type(metric) is str else None
        day = check.days.get(raw_day)
        if day is None and type(raw_day) is str:
            day = check.days[raw_day] = _check_day(raw_day, check.today, check.oldest)
        if (spec is None or type(day) is not date or (region and region not in check.regions)
                or spec.protocol != "krr" or (value_index := spec.label_index.get(item.value)) is None):
            return check(_as_dict(item))
        region = region or ""
        record = krr_record(day, region, value_index)
        group = self.groups.get((spec.id, day))
        if group is None:
            group = self.groups.setdefault((spec.id, day), next(self._numbers))
        return (spec.id, record, group, Contribution(day, spec.id, spec.contribution_bound),
                (spec, day, region, value_index, record))


# an accepted fast-path report: (metric id, staged record, its (metric id, day) group's number in the table,
# that group's Contribution, the report as Checked)
_Row = tuple[int, bytes, int, Contribution, Checked]
_checked_reports = _CheckedReports()


def _validate_krr_items(reports: list[_KrrItem], check: _ItemCheck) -> Validated:
    """Each fast-path report looked up in the worker's table of checked reports; only the new ones are
    checked (once per distinct report). A rejection sends the batch to ``_collect``, with the general
    path's codes; a batch with none is put together in C (``map``)."""
    table = _checked_reports.table(check)
    rows = list(map(table.get, reports))
    if not all(rows):  # a report not checked yet (None)
        verdicts = {item: table.verdict(item, check) for item in dict.fromkeys(reports) if item not in table}
        accepted = {item: row for item, row in verdicts.items() if type(row) is not str}
        table.update(accepted)
        if len(accepted) < len(verdicts):
            return _collect([_as_checked(verdicts.get(item) or table[item]) for item in reports])
        rows = list(map(table.__getitem__, reports))
    group_of_key = dict(zip(map(_third, rows), map(_fourth, rows)))  # first-seen order, as _collect's
    if len(group_of_key) == 1:
        item_groups = [0] * len(rows)
    else:
        position = {key: index for index, key in enumerate(group_of_key)}
        item_groups = [position[key] for key in map(_third, rows)]
    return Validated([], list(range(len(reports))), list(map(_first, rows)), list(map(_second, rows)),
                     list(group_of_key.values()), item_groups)


def read_batch(body: bytes) -> tuple[Envelope, Validated]:
    """``parse_envelope`` then ``validate_items``: the same answer, ApiError included.

    The usual batch repeats reports this worker has read and accepted before. Their bytes as sent are
    looked up in C (``_Table.known``, telemetry/_ingest_native.c), without a Python object per report:
    a batch of known reports of one (metric, day) group is answered from their canonical JSON and staged
    records. Any other batch takes the Python path, which then teaches the table what it accepted. The
    table belongs to the table of checked reports, so it is dropped whenever a verdict could change.
    """
    check = _ItemCheck()
    table = _checked_reports.table(check)
    batch = _as_known_candidate(body) if table.known is not None else None
    if batch is not None:
        found = table.known.lookup(batch.reports, settings.PRIVACY["MAX_BATCH_SIZE"])
        if found is not None:
            return _known_batch(batch, table, *found)
    envelope = parse_envelope(body)
    valid = validate_items(envelope.reports, check)
    if batch is not None and not valid.rejections and len(valid.groups) == 1:
        _learn(table, batch.reports)
    return envelope, valid


def _as_known_candidate(body: bytes) -> _KrrBatchArray | None:
    """The envelope with its reports array as bytes, when the fast path could take the body; else None."""
    if b"\\" in body:
        return None
    try:
        return _decode_krr_batch_array(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _known_batch(batch: _KrrBatchArray, table: _Table, count: int, group: int, canonical: bytes,
                 payload: bytes) -> tuple[Envelope, Validated]:
    """A batch of ``count`` known reports of one group, as the Python path would have read and checked it."""
    batch_id = _checked_ids(batch.batch_id, batch.client_id)  # the lookup checked the count (1 to the maximum)
    metric_id, contribution = table.group_of_number[group]
    envelope = Envelope(batch_id, batch.client_id, None, _digest(batch_id, canonical), count)
    return envelope, Validated([], list(range(count)), [metric_id] * count, None, [contribution], [0] * count,
                               payload)


def _learn(table: _Table, reports: msgspec.Raw) -> None:
    """Add a batch's reports, all accepted by the fast path, to the known reports (by their bytes as sent)."""
    spans = _ingest_native.KnownReports.spans(reports)
    if spans is None:
        return
    if len(table.known) > table.MAX_KNOWN:
        table.known.clear()
    read = _read_reports.entries
    for span in spans:
        entry = read.get(span)
        row = table.get(entry[0]) if entry is not None else None
        if row is None:  # the table of reports read started again meanwhile: learn it next time
            continue
        metric_id, record, group, contribution, _ = row
        table.group_of_number[group] = (metric_id, contribution)
        table.known.add(span, entry[1], record, group)


def _as_checked(verdict: _Row | str) -> Checked | str:
    return verdict if type(verdict) is str else verdict[4]


_first, _second, _third, _fourth = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)


def _collect(checked: list[Checked | str]) -> Validated:
    """The batch's candidates, their (day, metric) groups in first-seen order, and the rejections."""
    rejections: Rejections = []
    indexes: list[int] = []
    metric_ids: list[int] = []
    records: list[bytes] = []
    item_groups: list[int] = []
    groups: list[Contribution] = []
    group_of: dict[tuple[int, date], int] = {}
    payloads: dict[int, tuple[MetricSpec, list, list[np.ndarray]]] = {}
    for index, result in enumerate(checked):
        if type(result) is str:
            rejections.append((index, result))
            continue
        spec, day, region, value, record = result
        group = group_of.get((spec.id, day))
        if group is None:
            group = group_of[(spec.id, day)] = len(groups)
            groups.append(Contribution(day, spec.id, spec.contribution_bound))
        if record is None:
            pending = payloads.get(spec.id)
            if pending is None:
                pending = payloads[spec.id] = (spec, [], [])
            pending[1].append((len(records), day, region))
            pending[2].append(value)
            record = b""
        indexes.append(index)
        metric_ids.append(spec.id)
        records.append(record)
        item_groups.append(group)
    for spec, positions, parsed in payloads.values():
        for (position, day, region), packed in zip(positions, spec.oracle.pack(np.stack(parsed))):
            records[position] = packed_record(spec, day, region, packed)
    return Validated(rejections, indexes, metric_ids, records, groups, item_groups)
