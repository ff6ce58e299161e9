"""POST /api/v1/reports: envelope errors, per-item codes, idempotent replay, protocol round trips."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from privacy.ldp import make_oracle
from telemetry.catalog import catalog
from telemetry.ingest import REJECTION_MESSAGES
from telemetry.models import Batch
from telemetry.rollup import advance_rollup
from telemetry.selectors import observed_counts

from helpers import (
    day_str,
    envelope,
    item_codes,
    krr_item,
    new_batch_id,
    post_batch,
    run_threads,
    post_raw,
    row_counts,
    staged_reports,
    today,
)

MAX_AGE = settings.PRIVACY["REPORT_MAX_AGE_DAYS"]


# --------------------------------------------------------------------------- happy path


def test_accepted_batch_is_stored_without_client_id(color, key):
    body = envelope([krr_item(value="red", region="US"), krr_item(metric="color", value="blue", day=day_str(-1))],
                    client_id="happy-client")
    response = post_batch(body, key)
    assert response.status_code == 200, response.content
    data = response.json()
    assert data == {
        "batch_id": body["batch_id"],
        "accepted": 2,
        "rejected": 0,
        "items": [{"index": 0, "status": "accepted"}, {"index": 1, "status": "accepted"}],
    }
    assert "Idempotent-Replayed" not in response
    rows = sorted(staged_reports(), key=str)
    yesterday = today() - timedelta(days=1)
    assert rows == sorted([(color.id, today(), "US", 0, None), (color.id, yesterday, "", 2, None)], key=str)
    assert Batch.objects.get().item_count == 2


# --------------------------------------------------------------------------- envelope: 400, nothing written


def _good_items():
    return [krr_item()]


BAD_ENVELOPES = [
    pytest.param(b"{not json", 400, "malformed_json", id="malformed-json"),
    pytest.param(b"", 400, "malformed_json", id="empty-body"),
    pytest.param(b"\xff\xfe", 400, "malformed_json", id="not-utf8"),
    pytest.param(b"[1, 2]", 400, "invalid_body", id="array-body"),
    pytest.param(b'"text"', 400, "invalid_body", id="string-body"),
    pytest.param(b"null", 400, "invalid_body", id="null-body"),
    pytest.param({"client_id": "c", "reports": "GOOD"}, 400, "missing_field", id="missing-batch_id"),
    pytest.param({"batch_id": "NEW", "reports": "GOOD"}, 400, "missing_field", id="missing-client_id"),
    pytest.param({"batch_id": "NEW", "client_id": "c"}, 400, "missing_field", id="missing-reports"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": "GOOD", "extra": 1}, 400, "unknown_field",
                 id="unknown-envelope-field"),
    pytest.param({"batch_id": "not-a-uuid", "client_id": "c", "reports": "GOOD"}, 400, "invalid_batch_id",
                 id="batch_id-garbage"),
    pytest.param({"batch_id": 12345, "client_id": "c", "reports": "GOOD"}, 400, "invalid_batch_id", id="batch_id-int"),
    pytest.param({"batch_id": None, "client_id": "c", "reports": "GOOD"}, 400, "invalid_batch_id", id="batch_id-null"),
    pytest.param({"batch_id": "", "client_id": "c", "reports": "GOOD"}, 400, "invalid_batch_id", id="batch_id-empty"),
    pytest.param({"batch_id": "NEW", "client_id": "", "reports": "GOOD"}, 400, "invalid_client_id", id="client_id-empty"),
    pytest.param({"batch_id": "NEW", "client_id": "x" * 257, "reports": "GOOD"}, 400, "invalid_client_id",
                 id="client_id-too-long"),
    pytest.param({"batch_id": "NEW", "client_id": 42, "reports": "GOOD"}, 400, "invalid_client_id", id="client_id-int"),
    pytest.param({"batch_id": "NEW", "client_id": None, "reports": "GOOD"}, 400, "invalid_client_id",
                 id="client_id-null"),
    pytest.param({"batch_id": "NEW", "client_id": ["c"], "reports": "GOOD"}, 400, "invalid_client_id",
                 id="client_id-list"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": []}, 400, "invalid_reports", id="reports-empty"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": {}}, 400, "invalid_reports", id="reports-object"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": "x"}, 400, "invalid_reports", id="reports-string"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": None}, 400, "invalid_reports", id="reports-null"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": "GOOD+1"}, 400, "invalid_reports",
                 id="non-object-item"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": "GOOD+list"}, 400, "invalid_reports",
                 id="list-item"),
    pytest.param({"batch_id": "NEW", "client_id": "c", "reports": "101"}, 413, "batch_too_large", id="101-reports"),
]


def _materialize(spec):
    if isinstance(spec, bytes):
        return spec
    body = dict(spec)
    if body.get("batch_id") == "NEW":
        body["batch_id"] = new_batch_id()
    reports = body.get("reports")
    if reports == "GOOD":
        body["reports"] = _good_items()
    elif reports == "GOOD+1":
        body["reports"] = _good_items() + [1]
    elif reports == "GOOD+list":
        body["reports"] = _good_items() + [["color", "red"]]
    elif reports == "101":
        body["reports"] = [krr_item() for _ in range(101)]
    return orjson.dumps(body)


@pytest.mark.parametrize("body,status,code", BAD_ENVELOPES)
def test_bad_envelope_is_rejected_whole_and_writes_nothing(color, key, body, status, code):
    post_batch(envelope([krr_item(value="green")], client_id="someone-else"), key)  # something already stored
    before = row_counts()
    response = post_raw(_materialize(body), key)
    assert response.status_code == status, response.content
    data = response.json()
    assert data["code"] == code
    assert isinstance(data["message"], str) and data["message"]
    assert row_counts() == before


NUL_PLACES = [
    pytest.param(lambda body: body.update(client_id="client\x00one"), id="client_id"),
    pytest.param(lambda body: body.update(batch_id=body["batch_id"] + "\x00"), id="batch_id"),
    pytest.param(lambda body: body["reports"][1].update(metric="col\x00or"), id="metric"),
    pytest.param(lambda body: body["reports"][1].update(value="red\x00"), id="value"),
    pytest.param(lambda body: body["reports"][1].update(region="U\x00"), id="region"),
    pytest.param(lambda body: body["reports"][1].update(day=day_str() + "\x00"), id="day"),
    pytest.param(lambda body: body["reports"][1].update(payload="0\x001"), id="payload"),
    pytest.param(lambda body: body["reports"][1].update({"note\x00": 1}), id="field-name"),
    pytest.param(lambda body: body["reports"][1].update(value=[[["\x00"]]]), id="nested"),
]


@pytest.mark.parametrize("put_nul", NUL_PLACES)
def test_nul_character_anywhere_is_rejected_whole_and_writes_nothing(color, key, put_nul):
    """PostgreSQL text cannot hold NUL: a batch with one, in any string, is a 400 before anything is counted."""
    body = envelope([krr_item(value="green"), krr_item(value="red", day=day_str(-1))], client_id="client-nul")
    put_nul(body)
    before = row_counts()
    response = post_batch(body, key)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "nul_character"
    assert row_counts() == before
    again = post_batch(envelope([krr_item(value="green"), krr_item(value="red", day=day_str(-1))],
                                client_id="client-nul"), key)
    assert item_codes(again) == ["accepted", "accepted"]  # the refused batch took nothing from the limits


def test_an_escaped_backslash_before_u0000_is_text_not_nul(color, key):
    """The JSON text \\u0000 is a backslash and 'u0000', not NUL."""
    body = envelope([krr_item()], client_id="client\\u0000one")
    assert b"\\\\u0000" in orjson.dumps(body)
    assert item_codes(post_batch(body, key)) == ["accepted"]


def test_client_id_of_maximum_length_is_accepted(color, key):
    response = post_batch(envelope([krr_item()], client_id="x" * 256), key)
    assert response.status_code == 200
    assert item_codes(response) == ["accepted"]


def test_exactly_max_batch_size_is_accepted(make_metric, key):
    make_metric(bound=100)
    response = post_batch(envelope([krr_item() for _ in range(100)]), key)
    assert response.status_code == 200
    assert response.json()["accepted"] == 100
    assert len(staged_reports()) == 100


def test_bad_envelope_does_not_consume_limits(color, key):
    bad = envelope([krr_item()], client_id="c1")
    bad["oops"] = True
    assert post_batch(bad, key).status_code == 400
    good = post_batch(envelope([krr_item()], client_id="c1"), key)
    assert item_codes(good) == ["accepted"]


def test_wrong_method_on_reports_is_a_json_error(key):
    """Invariant 6: every 4xx is JSON with a stable code (require_POST answers an empty 405)."""
    response = Client().get("/api/v1/reports", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"]


# --------------------------------------------------------------------------- per-item rejection codes


@pytest.fixture
def catalog_metrics(make_metric):
    """krr 'color' (bound 100), and one metric per payload protocol (bound 100)."""
    metrics = {"color": make_metric(name="color", bound=100)}
    for protocol in ("oue", "olh", "ss"):
        metrics[protocol] = make_metric(name=f"m-{protocol}", domain=[f"v{i}" for i in range(8)], protocol=protocol,
                                        epsilon=1.0, bound=100)
    return metrics


def _payload(protocol: str):
    oracle = make_oracle(protocol, 8, 1.0)
    return oracle.to_wire(oracle.randomize(np.array([3])))[0]


BAD_ITEMS = [
    # missing_field
    pytest.param({"metric": "color", "value": "red"}, "missing_field", id="missing-day"),
    pytest.param({"value": "red", "day": "TODAY"}, "missing_field", id="missing-metric"),
    pytest.param({"metric": "color", "day": "TODAY"}, "missing_field", id="krr-missing-value"),
    pytest.param({"metric": "m-oue", "day": "TODAY"}, "missing_field", id="oue-missing-payload"),
    pytest.param({"metric": "m-olh", "day": "TODAY"}, "missing_field", id="olh-missing-payload"),
    # unknown_field
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "client_id": "c"}, "unknown_field",
                 id="unknown-item-field"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "count": 2}, "unknown_field", id="count-field"),
    # unknown_metric
    pytest.param({"metric": "nope", "value": "red", "day": "TODAY"}, "unknown_metric", id="unknown-metric"),
    pytest.param({"metric": 7, "value": "red", "day": "TODAY"}, "unknown_metric", id="metric-int"),
    pytest.param({"metric": ["color"], "value": "red", "day": "TODAY"}, "unknown_metric", id="metric-list"),
    # unknown_metric_version
    pytest.param({"metric": "color", "version": 2, "value": "red", "day": "TODAY"}, "unknown_metric_version",
                 id="version-2"),
    pytest.param({"metric": "color", "version": 0, "value": "red", "day": "TODAY"}, "invalid_version",
                 id="version-0"),
    pytest.param({"metric": "color", "version": "1", "value": "red", "day": "TODAY"}, "invalid_version",
                 id="version-string"),
    pytest.param({"metric": "color", "version": True, "value": "red", "day": "TODAY"}, "invalid_version",
                 id="version-bool"),
    # value_out_of_domain
    pytest.param({"metric": "color", "value": "purple", "day": "TODAY"}, "value_out_of_domain", id="value-purple"),
    pytest.param({"metric": "color", "value": 0, "day": "TODAY"}, "value_out_of_domain", id="value-index"),
    pytest.param({"metric": "color", "value": None, "day": "TODAY"}, "value_out_of_domain", id="value-null"),
    pytest.param({"metric": "color", "value": ["red"], "day": "TODAY"}, "value_out_of_domain", id="value-list"),
    pytest.param({"metric": "color", "value": "RED", "day": "TODAY"}, "value_out_of_domain", id="value-case"),
    # unexpected_field
    pytest.param({"metric": "color", "value": "red", "payload": "010", "day": "TODAY"}, "unexpected_field",
                 id="krr-with-payload"),
    pytest.param({"metric": "m-oue", "value": "v1", "payload": "OUE", "day": "TODAY"}, "unexpected_field",
                 id="oue-with-value"),
    pytest.param({"metric": "m-ss", "value": "v1", "day": "TODAY"}, "unexpected_field", id="ss-with-value"),
    # invalid_payload
    pytest.param({"metric": "m-oue", "payload": "0120000x", "day": "TODAY"}, "invalid_payload", id="oue-not-bits"),
    pytest.param({"metric": "m-oue", "payload": 5, "day": "TODAY"}, "invalid_payload", id="oue-int"),
    pytest.param({"metric": "m-oue", "payload": [0, 1, 0, 0, 0, 0, 0, 0], "day": "TODAY"}, "invalid_payload",
                 id="oue-list"),
    pytest.param({"metric": "m-olh", "payload": ["a", 1], "day": "TODAY"}, "invalid_payload", id="olh-seed-string"),
    pytest.param({"metric": "m-olh", "payload": [1, 10_000], "day": "TODAY"}, "invalid_payload", id="olh-y-range"),
    pytest.param({"metric": "m-olh", "payload": [-1, 0], "day": "TODAY"}, "invalid_payload", id="olh-negative-seed"),
    pytest.param({"metric": "m-olh", "payload": "1,2", "day": "TODAY"}, "invalid_payload", id="olh-string"),
    pytest.param({"metric": "m-ss", "payload": "SS-DUP", "day": "TODAY"}, "invalid_payload", id="ss-duplicates"),
    pytest.param({"metric": "m-ss", "payload": "SS-RANGE", "day": "TODAY"}, "invalid_payload", id="ss-out-of-range"),
    pytest.param({"metric": "m-ss", "payload": {"a": 1}, "day": "TODAY"}, "invalid_payload", id="ss-object"),
    # invalid_payload_length
    pytest.param({"metric": "m-oue", "payload": "0100000", "day": "TODAY"}, "invalid_payload_length",
                 id="oue-too-short"),
    pytest.param({"metric": "m-oue", "payload": "010000000", "day": "TODAY"}, "invalid_payload_length",
                 id="oue-too-long"),
    pytest.param({"metric": "m-ss", "payload": "SS-SHORT", "day": "TODAY"}, "invalid_payload_length",
                 id="ss-too-few"),
    pytest.param({"metric": "m-ss", "payload": "SS-LONG", "day": "TODAY"}, "invalid_payload_length", id="ss-too-many"),
    pytest.param({"metric": "m-olh", "payload": [1, 0, 0], "day": "TODAY"}, "invalid_payload_length",
                 id="olh-three"),
    pytest.param({"metric": "m-olh", "payload": [1], "day": "TODAY"}, "invalid_payload_length", id="olh-one"),
    # invalid_day
    pytest.param({"metric": "color", "value": "red", "day": "2024/01/01"}, "invalid_day", id="day-slashes"),
    pytest.param({"metric": "color", "value": "red", "day": "yesterday"}, "invalid_day", id="day-word"),
    pytest.param({"metric": "color", "value": "red", "day": 20240101}, "invalid_day", id="day-int"),
    pytest.param({"metric": "color", "value": "red", "day": None}, "invalid_day", id="day-null"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY-T"}, "invalid_day", id="day-datetime"),
    pytest.param({"metric": "color", "value": "red", "day": "2024-02-30"}, "invalid_day", id="day-feb-30"),
    pytest.param({"metric": "color", "value": "red", "day": "ISO-WEEK"}, "invalid_day", id="day-iso-week-form"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY-NODASH"}, "invalid_day", id="day-basic-form"),
    pytest.param({"metric": "color", "value": "red", "day": ["TODAY"]}, "invalid_day", id="day-list"),
    pytest.param({"metric": "color", "value": "red", "day": {"d": 1}}, "invalid_day", id="day-object"),
    # day_in_future / day_too_old
    pytest.param({"metric": "color", "value": "red", "day": "TOMORROW"}, "day_in_future", id="day-tomorrow"),
    pytest.param({"metric": "color", "value": "red", "day": "TOO-OLD"}, "day_too_old", id="day-too-old"),
    pytest.param({"metric": "color", "value": "red", "day": "2000-01-01"}, "day_too_old", id="day-2000"),
    # invalid_region
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "region": "us"}, "invalid_region",
                 id="region-lowercase"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "region": "XX"}, "invalid_region",
                 id="region-XX"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "region": "USA"}, "invalid_region",
                 id="region-alpha3"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "region": 840}, "invalid_region",
                 id="region-numeric"),
    pytest.param({"metric": "color", "value": "red", "day": "TODAY", "region": ["US"]}, "invalid_region",
                 id="region-list"),
]


def _fill(item: dict) -> dict:
    iso = today().isocalendar()
    days = {
        "TODAY": day_str(),
        "TOMORROW": day_str(1),
        "TOO-OLD": day_str(-MAX_AGE - 1),
        "TODAY-T": day_str() + "T00",
        "ISO-WEEK": f"{iso.year}-W{iso.week:02d}-{iso.weekday}",  # ten characters, a valid ISO 8601 date
        "TODAY-NODASH": day_str().replace("-", ""),
    }
    item = dict(item)
    day = item.get("day")
    if isinstance(day, str) and day in days:
        item["day"] = days[day]
    elif isinstance(day, list) and day == ["TODAY"]:
        item["day"] = [day_str()]
    ss8 = make_oracle("ss", 8, 1.0)
    omega = len(ss8.to_wire(ss8.randomize(np.array([0])))[0])
    payloads = {
        "OUE": _payload("oue"),
        "SS-DUP": [0] * omega,
        "SS-RANGE": list(range(1, omega)) + [8],
        "SS-SHORT": list(range(omega - 1)),
        "SS-LONG": list(range(omega + 1)),
    }
    if isinstance(item.get("payload"), str) and item["payload"] in payloads:
        item["payload"] = payloads[item["payload"]]
    return item


@pytest.mark.parametrize("bad,code", BAD_ITEMS)
def test_bad_item_is_rejected_and_rest_of_batch_stored(catalog_metrics, key, bad, code):
    good_before = krr_item(value="red")
    good_after = {"metric": "m-oue", "payload": _payload("oue"), "day": day_str()}
    body = envelope([good_before, _fill(bad), good_after])
    response = Client(raise_request_exception=False).post(
        "/api/v1/reports", data=orjson.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    assert response.status_code == 200, response.content[:300]
    data = response.json()
    assert item_codes(response) == ["accepted", code, "accepted"]
    assert data["accepted"] == 2 and data["rejected"] == 1
    assert data["items"][1]["message"] == REJECTION_MESSAGES[code]
    assert len(staged_reports()) == 2
    assert len(staged_reports(catalog_metrics["color"], value=0)) == 1
    assert [row[4] is not None for row in staged_reports(catalog_metrics["oue"])] == [True]


def test_oldest_accepted_day_is_max_age(catalog_metrics, key):
    body = envelope([krr_item(day=day_str(-MAX_AGE)), krr_item(day=day_str(-MAX_AGE - 1)), krr_item(day=day_str())])
    response = post_batch(body, key)
    assert item_codes(response) == ["accepted", "day_too_old", "accepted"]


def test_every_item_rejected_still_answers_and_stores_nothing_but_the_batch(color, key):
    body = envelope([krr_item(metric="nope"), krr_item(value="purple")])
    response = post_batch(body, key)
    assert response.status_code == 200
    assert item_codes(response) == ["unknown_metric", "value_out_of_domain"]
    assert row_counts() == (1, 0)
    replay = post_batch(body, key)
    assert replay.json() == response.json()


# --------------------------------------------------------------------------- outcomes over time
# An item's outcome depends on the clock, the settings and the catalog, not on what was seen before.


def test_repeated_items_get_the_same_outcome_as_the_first(make_metric, key):
    color = make_metric(bound=2)
    items = [krr_item(value="red", region="US"), krr_item(value="purple"), krr_item(value="red", region="US")]
    first = post_batch(envelope(items), key)
    second = post_batch(envelope(items, client_id="client-2"), key)
    assert item_codes(first) == item_codes(second) == ["accepted", "value_out_of_domain", "accepted"]
    assert len(staged_reports(color, region="US", value=0)) == 4


def test_a_metric_created_after_an_unknown_metric_rejection_is_accepted(db, key, monkeypatch):
    from telemetry.models import Metric

    item = krr_item(metric="late", value="on")
    assert item_codes(post_batch(envelope([item]), key)) == ["unknown_metric"]
    monkeypatch.setattr("telemetry.catalog._RELOAD_INTERVAL_S", 0.0)  # the forced-reload rate limit has passed
    # Created as another worker would: this process's catalog is not told, but an unknown name reloads it.
    Metric.objects.create(name="late", version=1, domain=["on", "off"], epsilon=2.0, protocol="krr")
    assert item_codes(post_batch(envelope([item], client_id="client-2"), key)) == ["accepted"]


def test_a_new_metric_version_takes_over_items_without_a_version(make_metric, key):
    from telemetry import services

    first = make_metric(name="shape", domain=("round", "square"))
    item = krr_item(metric="shape", value="round")
    assert item_codes(post_batch(envelope([item]), key)) == ["accepted"]
    second = services.change_metric(name="shape", domain=["round", "square", "flat"])
    assert item_codes(post_batch(envelope([item], client_id="client-2"), key)) == ["accepted"]
    assert sorted(row[0] for row in staged_reports()) == sorted([first.id, second.id])


def test_the_oldest_accepted_day_moves_at_midnight_utc(color, key):
    import time_machine

    noon = datetime.combine(today(), datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=12)
    item = krr_item(day=(noon.date() - timedelta(days=MAX_AGE)).isoformat())
    with time_machine.travel(noon, tick=False):
        assert item_codes(post_batch(envelope([item]), key)) == ["accepted"]
    with time_machine.travel(noon + timedelta(days=1), tick=False):
        assert item_codes(post_batch(envelope([item], client_id="client-2"), key)) == ["day_too_old"]


def test_a_regions_setting_change_applies_to_the_next_batch(color, key, settings):
    item = krr_item(region="FR")
    assert item_codes(post_batch(envelope([item]), key)) == ["accepted"]
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": ["US", "DE"]}
    assert item_codes(post_batch(envelope([item], client_id="client-2"), key)) == ["invalid_region"]


# --------------------------------------------------------------------------- idempotency


def test_replay_returns_identical_answer_and_changes_nothing(make_metric, key):
    make_metric(bound=2)
    body = envelope([krr_item(value="red"), krr_item(metric="nope"), krr_item(value="green")], client_id="rc")
    first = post_batch(body, key)
    assert item_codes(first) == ["accepted", "unknown_metric", "accepted"]
    counts = row_counts()
    for _ in range(3):
        again = post_batch(body, key)
        assert again.status_code == 200
        assert again.content == first.content
        assert again["Idempotent-Replayed"] == "true"
    assert row_counts() == counts == (1, 2)


def test_replay_does_not_consume_limits(make_metric, key):
    make_metric(bound=2)
    body = envelope([krr_item(value="red")], client_id="rl")
    for _ in range(5):
        assert item_codes(post_batch(body, key)) == ["accepted"]
    # the bound is 2: the five submissions above counted once, so one more is still allowed
    assert item_codes(post_batch(envelope([krr_item(value="blue")], client_id="rl"), key)) == ["accepted"]
    # over the bound: answered like any accepted item (no participation oracle), and not stored
    assert item_codes(post_batch(envelope([krr_item(value="blue")], client_id="rl"), key)) == ["accepted"]
    assert len(staged_reports()) == 2


def test_replay_spelling_batch_id_differently_is_the_same_batch(color, key):
    batch_id = uuid.uuid4()
    body = envelope([krr_item()], batch_id=str(batch_id))
    first = post_batch(body, key)
    body["batch_id"] = str(batch_id).upper()
    again = post_batch(body, key)
    assert again.status_code == 200 and again.json() == first.json()
    assert row_counts() == (1, 1)


@pytest.mark.parametrize("change", ["value", "extra-item", "day", "order"])
def test_same_batch_id_with_different_body_is_a_conflict(make_metric, key, change):
    make_metric(bound=5)
    body = envelope([krr_item(value="red"), krr_item(value="green")])
    assert post_batch(body, key).status_code == 200
    counts = row_counts()
    other = orjson.loads(orjson.dumps(body))
    if change == "value":
        other["reports"][0]["value"] = "blue"
    elif change == "extra-item":
        other["reports"].append(krr_item(value="blue"))
    elif change == "day":
        other["reports"][0]["day"] = day_str(-1)
    else:
        other["reports"].reverse()
    response = post_batch(other, key)
    assert response.status_code == 409
    assert response.json()["code"] == "batch_id_conflict"
    assert row_counts() == counts


def test_same_batch_id_from_another_ingest_key_is_a_conflict(color, key):
    from telemetry import services

    _, other_key = services.create_ingest_key(app="other-app")
    body = envelope([krr_item()])
    first = post_batch(body, key)
    assert first.status_code == 200
    response = post_batch(body, other_key)
    assert response.status_code == 409
    assert response.json()["code"] == "batch_id_conflict"
    assert row_counts() == (1, 1)
    # the original key still gets its replay
    assert post_batch(body, key).json() == first.json()


def test_conflict_does_not_consume_limits(make_metric, key):
    make_metric(bound=1)
    body = envelope([krr_item(value="red")], client_id="cc")
    post_batch(body, key)
    other = dict(body, reports=[krr_item(value="red", day=day_str(-1))])
    assert post_batch(other, key).status_code == 409
    # yesterday's counter was not touched by the rejected conflicting batch
    assert item_codes(post_batch(envelope([krr_item(day=day_str(-1))], client_id="cc"), key)) == ["accepted"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_submissions_store_the_batch_exactly_once(make_metric, key):
    """A retried batch racing its own first attempt: stored once, same answer, and its items are not
    rejected by the limits of their own duplicate."""
    make_metric(bound=1)
    make_metric(name="size", domain=["s", "m", "l"], bound=2)
    rounds, threads = 6, 8
    for round_ in range(rounds):
        body = envelope([krr_item(value="red"), krr_item(metric="size", value="m"), krr_item(metric="size", value="l")],
                        client_id=f"dup-client-{round_}")
        raw = orjson.dumps(body)

        def submit(_):
            response = post_raw(raw, key)
            return response.status_code, response.content

        results = run_threads(threads, submit)
        statuses = {status for status, _ in results}
        bodies = {content for _, content in results}
        assert statuses == {200}, results
        assert len(bodies) == 1, bodies
        answer = orjson.loads(bodies.pop())
        assert Batch.objects.filter(batch_id=body["batch_id"]).count() == 1
        assert answer["accepted"] == 3, f"round {round_}: {answer}"
    assert len(staged_reports()) == 3 * rounds


# --------------------------------------------------------------------------- protocols round-trip


@pytest.mark.parametrize("protocol", ["krr", "oue", "olh", "ss"])
def test_protocol_round_trip_support_counts(make_metric, key, protocol):
    k, epsilon = 6, 1.0
    domain = [f"label{i}" for i in range(k)]
    metric = make_metric(name=f"rt-{protocol}", domain=domain, protocol=protocol, epsilon=epsilon, bound=100)
    assert metric.protocol == protocol
    oracle = make_oracle(protocol, k, epsilon)
    rng = np.random.default_rng(7)  # test data only, not privacy noise
    sent = {}
    for client in range(3):
        true = rng.integers(0, k, size=60)
        reports = oracle.randomize(true)
        if protocol == "krr":
            items = [{"metric": metric.name, "value": domain[int(r)], "day": day_str(-1), "region": "DE"}
                     for r in reports]
        else:
            items = [{"metric": metric.name, "payload": p, "day": day_str(-1), "region": "DE"}
                     for p in oracle.to_wire(reports)]
        response = post_batch(envelope(items, client_id=f"rt-{client}"), key)
        assert response.json()["accepted"] == 60, response.json()
        sent[client] = reports
    everything = np.concatenate([sent[c] for c in sorted(sent)])
    advance_rollup()
    spec = catalog.lookup(metric.name)
    cells = observed_counts(spec, today() - timedelta(days=1), today(), group_by=("region",))
    assert len(cells) == 1
    assert cells[0].region == "DE" and cells[0].reports == 180
    np.testing.assert_array_equal(cells[0].support, oracle.support_counts(everything))
    # grouping by day too gives the same single cell
    by_day = observed_counts(spec, today() - timedelta(days=7), today(), group_by=("day", "region"))
    assert [(c.day.isoformat(), c.region, c.reports) for c in by_day] == [(day_str(-1), "DE", 180)]


def test_round_trip_keeps_regions_and_days_apart(make_metric, key):
    metric = make_metric(name="geo", domain=["a", "b"], protocol="krr", bound=10)
    items = [
        {"metric": "geo", "value": "a", "day": day_str(), "region": "US"},
        {"metric": "geo", "value": "b", "day": day_str(), "region": "US"},
        {"metric": "geo", "value": "b", "day": day_str(), "region": "FR"},
        {"metric": "geo", "value": "a", "day": day_str(-2)},
    ]
    assert post_batch(envelope(items), key).json()["accepted"] == 4
    advance_rollup()
    spec = catalog.lookup("geo")
    start = today() - timedelta(days=3)
    cells = {(c.day.isoformat(), c.region): c.support.tolist()
             for c in observed_counts(spec, start, today(), group_by=("day", "region"))}
    assert cells == {(day_str(), "US"): [1, 1], (day_str(), "FR"): [0, 1], (day_str(-2), ""): [1, 0]}
    total = observed_counts(spec, start, today())
    assert len(total) == 1 and total[0].reports == 4 and total[0].support.tolist() == [2, 2]
    assert metric.id == spec.id
    assert staged_reports() == []  # the roll-up folded them into counts and deleted them


# --------------------------------------------------------------------------- the two stores
# Serving (autocommit) goes through LibpqStore; a caller's open transaction through OrmStore.


def _ingest_through(store: str, monkeypatch, ingest_key_id: int, body: dict):
    """ingest_batch, checked to have used ``store``: inside a transaction of the caller's for OrmStore."""
    from django.db import transaction

    from telemetry.ingest import ingest_batch, orchestration

    used = []
    open_store = orchestration._open_store

    def spy(header):
        used.append(open_store(header))
        return used[-1]

    with monkeypatch.context() as patch:
        patch.setattr(orchestration, "_open_store", spy)
        try:
            if store == "OrmStore":
                with transaction.atomic():
                    return ingest_batch(ingest_key_id=ingest_key_id, body=orjson.dumps(body))
            return ingest_batch(ingest_key_id=ingest_key_id, body=orjson.dumps(body))
        finally:
            assert [type(s).__name__ for s in used] == [store]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["LibpqStore", "OrmStore"])
def test_each_store_claims_limits_replays_and_conflicts_alike(make_metric, ingest_key, monkeypatch, store):
    from deploy.api.errors import ApiError

    make_metric(bound=2)
    key_id = ingest_key[0].id

    def ingest(body):
        return _ingest_through(store, monkeypatch, key_id, body)

    def codes(result):
        return [item.get("code", "accepted") for item in orjson.loads(result.to_json())["items"]]

    first = envelope([krr_item(value="red"), krr_item(metric="nope"), krr_item(value="green"), krr_item()],
                     client_id="stores")
    answer = ingest(first)  # the limits drop the last item, which is answered as accepted all the same
    assert codes(answer) == ["accepted", "unknown_metric", "accepted", "accepted"]
    assert not answer.replayed and len(staged_reports()) == 2
    replay = ingest(first)
    assert replay.replayed and replay.to_json() == answer.to_json()
    over = ingest(envelope([krr_item(), krr_item(day=day_str(-1))], client_id="stores"))  # only yesterday's fits
    assert codes(over) == ["accepted", "accepted"] and len(staged_reports()) == 3
    none_left = ingest(envelope([krr_item()], client_id="stores"))  # every row dropped by the limits
    assert codes(none_left) == ["accepted"] and len(staged_reports()) == 3
    no_rows = envelope([krr_item(metric="nope")], client_id="stores")
    assert codes(ingest(no_rows)) == ["unknown_metric"] and ingest(no_rows).replayed
    with pytest.raises(ApiError) as conflict:
        ingest(dict(first, reports=[krr_item()]))
    assert conflict.value.code == "batch_id_conflict"
    stored = Batch.objects.get(batch_id=first["batch_id"])
    assert [tuple(r) for r in stored.rejections] == [(1, "unknown_metric")]
    assert row_counts() == (4, 3)


@pytest.mark.django_db(transaction=True)
def test_the_one_step_statement_is_prepared_again_when_the_server_forgot_it(make_metric, ingest_key, monkeypatch):
    """LibpqStore prepares its statement on a connection the first time the server does not know it
    (a new connection, or after DISCARD ALL / DEALLOCATE, as a pooler may issue): the batch is stored
    once, and the connection is left idle."""
    from django.db import connection

    make_metric(bound=5)
    key_id = ingest_key[0].id
    first = _ingest_through("LibpqStore", monkeypatch, key_id, envelope([krr_item()], client_id="prep"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'telemetry_ingest%'")
        assert cursor.fetchone()[0] == 1
        cursor.execute("DEALLOCATE ALL")
    second = _ingest_through("LibpqStore", monkeypatch, key_id, envelope([krr_item(), krr_item()], client_id="prep"))
    assert not first.replayed and not second.replayed and second.rejections == []
    assert len(staged_reports()) == 3 and row_counts() == (2, 3)
    assert connection.connection.pgconn.transaction_status == 0  # idle


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["LibpqStore", "OrmStore"])
def test_a_failed_write_stores_nothing_and_counts_nothing(make_metric, ingest_key, monkeypatch, store):
    from django.db import DatabaseError

    from telemetry.ingest import orchestration
    from telemetry.models import ClientCounter

    make_metric(bound=1)
    key_id = ingest_key[0].id

    def unwritable(valid, admitted=None):
        return [(2 ** 70, b"")]  # no metric id column holds this: the staging INSERT fails

    body = envelope([krr_item(), krr_item(day=day_str(-1))], client_id="fails")
    with monkeypatch.context() as patch:
        patch.setattr(orchestration, "_staged", unwritable)
        with pytest.raises(DatabaseError):
            _ingest_through(store, monkeypatch, key_id, body)
    assert row_counts() == (0, 0)
    # the counters rolled back with the batch: both items are admitted again; the connection is usable
    answer = _ingest_through(store, monkeypatch, key_id, body)
    assert not answer.replayed and answer.rejections == []
    assert row_counts() == (1, 2)
