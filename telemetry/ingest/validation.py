"""Parse and check a batch: the envelope as a whole (400, nothing written), then each item (per-item codes).

Nothing here writes: the output is the candidate rows, their (day, metric)
contribution groups for the limits, and the rejections so far.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

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

MAX_CLIENT_ID_LENGTH = 256
_ENVELOPE_FIELDS = frozenset({"batch_id", "client_id", "reports"})
_ITEM_FIELDS = frozenset({"metric", "version", "value", "payload", "day", "region"})
_NUL_ESCAPE = b"\\u0000"  # JSON can carry NUL only so: a raw control character inside a string is malformed


@dataclass
class Envelope:
    batch_id: uuid.UUID
    client_id: str
    reports: list[dict]
    digest: str  # of batch_id and reports, not client_id


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
    if set(map(type, reports)) != {dict}:  # every report a JSON object (map and set: no Python loop)
        raise ApiError("invalid_reports", "Every report must be a JSON object.")
    # The digest leaves client_id out, so the stored batch record says nothing about who sent it.
    digest = hashlib.sha256(orjson.dumps([str(batch_id), reports], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Envelope(batch_id, client_id, reports, digest)


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


@dataclass
class Validated:
    """The items that passed validation ("candidates"), ready for the limits and storage."""

    rejections: Rejections
    indexes: list[int]  # the batch index of each candidate
    metric_ids: list[int]  # each candidate's metric
    records: list[bytes]  # each candidate's staged record (telemetry.staging)
    groups: list[Contribution]  # the distinct (day, metric) pairs, in first-seen order
    item_groups: list[int]  # each candidate's group


def validate_items(reports: list[dict]) -> Validated:
    """Per-item checks, in this order: fields, metric, day, region, value or payload.

    Days are UTC dates from ``REPORT_MAX_AGE_DAYS`` ago to today.

    One pass with per-batch caches (metric by (name, version), day by its text); each candidate
    comes out as its staged record. Payloads are parsed per item and packed per metric in one
    vectorized call.
    """
    today = datetime.now(timezone.utc).date()
    oldest = today - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
    rejections: Rejections = []
    indexes: list[int] = []
    metric_ids: list[int] = []
    records: list[bytes] = []
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
                pending[1].append((len(records), day, region))
                pending[2].append(parsed)
        except _Rejected as rejected:
            rejections.append((index, rejected.code))
            continue
        group = group_of.get((spec.id, day))
        if group is None:
            group = group_of[(spec.id, day)] = len(groups)
            groups.append(Contribution(day, spec.id, spec.contribution_bound))
        indexes.append(index)
        metric_ids.append(spec.id)
        records.append(b"" if value_index is None else krr_record(day, region, value_index))
        item_groups.append(group)
    for spec, positions, parsed in payloads.values():
        for (position, day, region), packed in zip(positions, spec.oracle.pack(np.stack(parsed))):
            records[position] = packed_record(spec, day, region, packed)
    return Validated(rejections, indexes, metric_ids, records, groups, item_groups)
