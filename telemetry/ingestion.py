"""Ingest a batch of client-randomized reports.

validate the envelope (400, nothing written) -> replay check -> validate each
item (per-item rejection codes) -> contribution limits (one atomic Redis call)
-> one transaction stores the batch record and its reports -> per-item status.

The storage is insert-only: no shared counter row is touched, so concurrent
batches never serialize on each other (ARCHITECTURE.md, Flows/Ingest).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from privacy.ldp import PayloadError
from telemetry.catalog import MetricSpec, catalog
from telemetry.errors import ApiError
from telemetry.limits import ACCEPTED, DAILY_LIMIT, Contribution, get_limiter
from telemetry.models import Batch, Report
from telemetry.regions import ISO_3166_ALPHA2
from telemetry.rollup import hold_ingest_fence_shared

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
    "invalid_region": "region must be an ISO 3166-1 alpha-2 country code.",
    "daily_limit_exceeded": "This client has reached its daily number of reports.",
    "contribution_bound_exceeded": "This client has reached the metric's reports for that day.",
}


class _Rejected(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


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
    if not all(isinstance(item, dict) for item in reports):
        raise ApiError("invalid_reports", "Every report must be a JSON object.")
    # The digest leaves client_id out, so the stored batch record says nothing about who sent it.
    digest = hashlib.sha256(orjson.dumps([str(batch_id), reports], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return _Envelope(batch_id, client_id, reports, digest)


def _parse_day(raw, today: date, oldest: date, cache: dict) -> date:
    day = cache.get(raw)
    if day is None:
        if not isinstance(raw, str) or len(raw) != 10:
            raise _Rejected("invalid_day")
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise _Rejected("invalid_day")
        cache[raw] = day
    if day > today:
        raise _Rejected("day_in_future")
    if day < oldest:
        raise _Rejected("day_too_old")
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


def _encode(spec: MetricSpec, item: dict) -> tuple[int | None, bytes | None]:
    """The stored form of the item's randomized answer: (value index, packed payload)."""
    has_value, has_payload = "value" in item, "payload" in item
    if spec.protocol == "krr":
        if has_payload:
            raise _Rejected("unexpected_field")
        if not has_value:
            raise _Rejected("missing_field")
        index = spec.label_index.get(item["value"]) if isinstance(item["value"], str) else None
        if index is None:
            raise _Rejected("value_out_of_domain")
        return index, None
    if has_value:
        raise _Rejected("unexpected_field")
    if not has_payload:
        raise _Rejected("missing_field")
    try:
        report = spec.oracle.parse_wire(item["payload"])
    except PayloadError as error:
        raise _Rejected(error.code)
    return None, spec.oracle.pack(report[None])[0]


def _validate_item(item: dict, today: date, oldest: date, day_cache: dict) -> tuple[MetricSpec, tuple]:
    if not item.keys() <= _ITEM_FIELDS:
        raise _Rejected("unknown_field")
    if "day" not in item:
        raise _Rejected("missing_field")
    spec = _lookup_metric(item)
    day = _parse_day(item["day"], today, oldest, day_cache)
    region = item.get("region") or ""
    if region and region not in ISO_3166_ALPHA2:
        raise _Rejected("invalid_region")
    value, payload = _encode(spec, item)
    return spec, (spec.id, day, region, value, payload)


def _replay(envelope: _Envelope, ingest_key_id: int) -> IngestResult | None:
    batch = Batch.objects.filter(batch_id=envelope.batch_id).first()
    if batch is None:
        return None
    if batch.ingest_key_id != ingest_key_id or batch.body_digest != envelope.digest:
        raise ApiError("batch_id_conflict", "This batch_id was already used for a different batch.", http_status=409)
    return IngestResult(batch.batch_id, batch.item_count, [tuple(r) for r in batch.rejections], replayed=True)


def _insert_reports(rows: list[tuple]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            copy_sql = "COPY telemetry_report (metric_id, day, region, value, payload) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
    else:
        Report.objects.bulk_create(
            Report(metric_id=m, day=d, region=r, value=v, payload=p) for m, d, r, v, p in rows
        )


def _store(envelope: _Envelope, ingest_key_id: int, rows: list[tuple], rejections: list) -> None:
    with transaction.atomic():
        hold_ingest_fence_shared()
        Batch.objects.create(
            batch_id=envelope.batch_id,
            ingest_key_id=ingest_key_id,
            body_digest=envelope.digest,
            item_count=len(envelope.reports),
            rejections=rejections,
        )
        if rows:
            _insert_reports(rows)


def ingest_batch(*, ingest_key_id: int, body: bytes) -> IngestResult:
    envelope = _parse_envelope(body)
    if (replayed := _replay(envelope, ingest_key_id)) is not None:
        return replayed
    today = datetime.now(timezone.utc).date()
    oldest = today - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
    rejections: list[tuple[int, str]] = []
    candidates: list[tuple[int, tuple, Contribution]] = []
    day_cache: dict = {}
    for index, item in enumerate(envelope.reports):
        try:
            spec, row = _validate_item(item, today, oldest, day_cache)
        except _Rejected as rejected:
            rejections.append((index, rejected.code))
            continue
        candidates.append((index, row, Contribution(row[1], spec.id, spec.contribution_bound)))

    limiter = get_limiter()
    decisions = limiter.admit(envelope.client_id, [c for _, _, c in candidates])
    rows, admitted = [], []
    for (index, row, contribution), decision in zip(candidates, decisions):
        if decision == ACCEPTED:
            rows.append(row)
            admitted.append(contribution)
        else:
            code = "daily_limit_exceeded" if decision == DAILY_LIMIT else "contribution_bound_exceeded"
            rejections.append((index, code))
    rejections.sort()
    try:
        _store(envelope, ingest_key_id, rows, rejections)
    except IntegrityError:
        # A concurrent request stored this batch_id first: give the counts back, answer as it did.
        limiter.refund(envelope.client_id, admitted)
        replayed = _replay(envelope, ingest_key_id)
        if replayed is None:
            raise
        return replayed
    except BaseException:
        limiter.refund(envelope.client_id, admitted)
        raise
    return IngestResult(envelope.batch_id, len(envelope.reports), rejections)
