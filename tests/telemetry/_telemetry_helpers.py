"""Helpers shared by the telemetry tests (a plain module: tests/ is not a package)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import orjson
from django.db import connections
from django.test import Client

from telemetry.models import Batch, Report

REPORTS_URL = "/api/v1/reports"


def today():
    return datetime.now(timezone.utc).date()


def day_str(offset: int = 0) -> str:
    """today (UTC) plus ``offset`` days, as YYYY-MM-DD."""
    return (today() + timedelta(days=offset)).isoformat()


def new_batch_id() -> str:
    return str(uuid.uuid4())


def envelope(reports, *, client_id="client-1", batch_id=None) -> dict:
    return {"batch_id": batch_id or new_batch_id(), "client_id": client_id, "reports": reports}


def krr_item(metric="color", value="red", **extra) -> dict:
    return {"metric": metric, "value": value, "day": extra.pop("day", day_str()), **extra}


def post_raw(body: bytes | str, key: str | None, *, http_client=None):
    http_client = http_client or Client()
    headers = {} if key is None else {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    return http_client.post(REPORTS_URL, data=body, content_type="application/json", **headers)


def post_batch(body: dict, key: str | None, **kwargs):
    return post_raw(orjson.dumps(body), key, **kwargs)


def item_codes(response) -> list:
    """Per-item status: 'accepted' or the rejection code."""
    return [item["code"] if item["status"] == "rejected" else "accepted" for item in response.json()["items"]]


def row_counts() -> tuple[int, int]:
    return Batch.objects.count(), Report.objects.count()


def run_threads(count, target):
    """Run target(i) in `count` threads released together; each closes its DB connections."""
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as error:  # noqa: BLE001 - surfaced below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results
