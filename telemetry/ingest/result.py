"""The answer to a batch: per-item status, rendered as the API returns it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

from deploy.api.errors import ApiError
from telemetry.ingest.store import BatchHeader, Rejections, StoredBatch

REJECTION_MESSAGES = {
    "missing_field": "The report lacks a required field (metric, day, and value or payload).",
    "unknown_field": "The report has a field this API does not define.",
    "unknown_metric": "No metric has this name.",
    "unknown_metric_version": "The metric has no such version.",
    "invalid_version": "version, if given, must be a positive integer.",
    "value_out_of_domain": "The value is not a label of the metric's domain.",
    "unexpected_field": "This metric's protocol takes 'value' for k-RR and 'payload' otherwise, not both.",
    "invalid_payload": "The payload is not a valid encoding for the metric's protocol.",
    "invalid_payload_length": "The payload has the wrong length for the metric's protocol.",
    "invalid_day": "day must be a UTC date written YYYY-MM-DD.",
    "day_in_future": "day is after today (UTC).",
    "day_too_old": "day is older than the server accepts.",
    "invalid_region": "region must be an ISO 3166-1 alpha-2 country code this server accepts (PRIVACY_REGIONS).",
}


@lru_cache(maxsize=256)
def _accepted_items_json(count: int) -> bytes:
    return orjson.dumps([{"index": i, "status": "accepted"} for i in range(count)])


@dataclass
class IngestResult:
    batch_id: uuid.UUID
    item_count: int
    rejections: Rejections = field(default_factory=list)
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


def replayed_result(header: BatchHeader, stored: StoredBatch) -> IngestResult:
    """The stored answer to a batch sent again; 409 when the batch_id was used for another batch."""
    if stored.ingest_key_id != header.ingest_key_id or stored.body_digest != header.body_digest:
        raise ApiError("batch_id_conflict", "This batch_id was already used for a different batch.", http_status=409)
    return IngestResult(header.batch_id, stored.item_count, stored.rejections, replayed=True)
