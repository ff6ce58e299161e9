"""POST /api/v1/queries: every bad input gets its stable code, and nothing is charged or stored.

Also the shape of a good answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from accounting.models import LedgerEntry

pytestmark = pytest.mark.django_db


def _bad_bodies(q):
    """(label, body, code) for every malformed query; dates relative to today (UTC)."""
    t = q.today()
    iso = t.isoformat()
    good = {"metric": "color", "start": q.day(-3).isoformat(), "end": iso}
    return [
        # windows over MAX_QUERY_DAYS (90): 91 days inclusive
        ("window 91 days", {**good, "start": (t - timedelta(days=90)).isoformat()}, "window_too_long"),
        ("window a year", {**good, "start": (t - timedelta(days=400)).isoformat()}, "window_too_long"),
        # end in the future
        ("end tomorrow", {**good, "end": (t + timedelta(days=1)).isoformat()}, "end_in_future"),
        ("start and end in future", {**good, "start": (t + timedelta(days=2)).isoformat(),
                                     "end": (t + timedelta(days=3)).isoformat()}, "end_in_future"),
        # unknown metric
        ("unknown metric", {**good, "metric": "nope"}, "unknown_metric"),
        ("metric missing", {k: v for k, v in good.items() if k != "metric"}, "unknown_metric"),
        ("metric not a string", {**good, "metric": 7}, "unknown_metric"),
        ("unknown version", {**good, "version": 9}, "unknown_metric_version"),
        ("version as a string", {**good, "version": "1"}, "invalid_version"),
        ("version bool", {**good, "version": True}, "invalid_version"),
        ("version zero", {**good, "version": 0}, "invalid_version"),
        # epsilon
        ("epsilon zero", {**good, "epsilon": 0}, "invalid_epsilon"),
        ("epsilon zero string", {**good, "epsilon": "0"}, "invalid_epsilon"),
        ("epsilon negative", {**good, "epsilon": -1}, "invalid_epsilon"),
        ("epsilon negative tiny", {**good, "epsilon": "-0.000001"}, "invalid_epsilon"),
        ("epsilon text", {**good, "epsilon": "abc"}, "invalid_epsilon"),
        ("epsilon NaN text", {**good, "epsilon": "NaN"}, "invalid_epsilon"),
        ("epsilon Infinity text", {**good, "epsilon": "Infinity"}, "invalid_epsilon"),
        ("epsilon bool", {**good, "epsilon": True}, "invalid_epsilon"),
        ("epsilon null", {**good, "epsilon": None}, "invalid_epsilon"),
        ("epsilon list", {**good, "epsilon": [1]}, "invalid_epsilon"),
        ("epsilon 7 decimals", {**good, "epsilon": 0.0000001}, "invalid_epsilon"),
        ("epsilon 7 decimals text", {**good, "epsilon": "0.1000001"}, "invalid_epsilon"),
        ("epsilon float drift", {**good, "epsilon": 0.1 * 3}, "invalid_epsilon"),
        ("epsilon over the per-query maximum", {**good, "epsilon": 10.5}, "invalid_epsilon"),
        # a region-grouped query splits ε between its grid and its selection counts: each needs >= 1 µε
        ("region grouping at 1 micro-epsilon", {**good, "group_by": ["region"], "epsilon": "0.000001"},
         "invalid_epsilon"),
        # malformed dates
        ("date no padding", {**good, "start": f"{t.year}-1-5"}, "invalid_date"),
        ("date slashes", {**good, "start": q.day(-3).strftime("%Y/%m/%d")}, "invalid_date"),
        ("date Feb 30", {**good, "start": "2024-02-30"}, "invalid_date"),
        ("date month 13", {**good, "start": "2024-13-01"}, "invalid_date"),
        ("date with time", {**good, "end": iso + "T00:00:00"}, "invalid_date"),
        ("date as number", {**good, "start": 20240105}, "invalid_date"),
        ("date null", {**good, "end": None}, "invalid_date"),
        ("start missing", {k: v for k, v in good.items() if k != "start"}, "invalid_date"),
        ("date empty", {**good, "start": ""}, "invalid_date"),
        ("date fullwidth digits", {**good, "start": "２０２４-01-05"}, "invalid_date"),
        # end before start
        ("end before start", {**good, "start": iso, "end": q.day(-1).isoformat()}, "invalid_window"),
        # group_by
        ("group_by string", {**good, "group_by": "day"}, "invalid_group_by"),
        ("group_by unknown field", {**good, "group_by": ["week"]}, "invalid_group_by"),
        ("group_by duplicate", {**good, "group_by": ["day", "day"]}, "invalid_group_by"),
        ("group_by number", {**good, "group_by": [1]}, "invalid_group_by"),
        ("group_by object", {**good, "group_by": {"day": True}}, "invalid_group_by"),
        # unknown fields
        ("unknown field", {**good, "limit": 5}, "unknown_field"),
        ("client-claimed privacy", {**good, "privacy": {"epsilon": 0}}, "unknown_field"),
        # presentation and flags
        ("confidence 1", {**good, "confidence": 1}, "invalid_confidence"),
        ("confidence text", {**good, "confidence": "0.9"}, "invalid_confidence"),
        ("confidence bool", {**good, "confidence": True}, "invalid_confidence"),
        ("simultaneous text", {**good, "simultaneous": "yes"}, "invalid_simultaneous"),
        ("fresh text", {**good, "fresh": "true"}, "invalid_fresh"),
        # non-object bodies
        ("body list", [good], "invalid_body"),
        ("body string", "color", "invalid_body"),
        ("body number", 3, "invalid_body"),
        ("body null", None, "invalid_body"),
    ]


def test_every_bad_input_has_its_code_and_charges_nothing(q, analyst, color):
    _, token = analyst
    client = q.client(token)
    q.add_krr(color, q.day(-1), "DE", [5, 3, 2])
    before = q.counts()
    seen = []
    for label, body, code in _bad_bodies(q):
        response = q.post(client, body)
        payload = response.json()
        seen.append((label, response.status_code, payload.get("code")))
        assert response.status_code == 400, (label, response.status_code, payload)
        assert payload["code"] == code, (label, payload)
        assert isinstance(payload.get("message"), str) and payload["message"], label
        assert q.counts() == before, label
    assert len(seen) >= 50


@pytest.mark.parametrize("raw", [b"{", b"{'metric': 'color'}", b"\xff\xfe", b"[1,"])
def test_malformed_json_is_a_400_with_a_code(q, analyst, color, raw):
    response = q.post(q.client(analyst[1]), raw)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"
    assert q.counts() == (0, 0, 0)


def test_iso_week_date_is_not_a_yyyy_mm_dd_date(q, analyst, color):
    """'2024-W01-1' is 10 characters and date.fromisoformat accepts it on Python 3.11+, but the API
    documents YYYY-MM-DD only."""
    response = q.post(q.client(analyst[1]), {"metric": "color", "start": "2024-W01-1", "end": "2024-01-02"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_date", response.json()
    assert q.counts() == (0, 0, 0)


def test_window_of_exactly_90_days_and_end_today_are_accepted(q, analyst, color):
    client = q.client(analyst[1])
    t = q.today()
    response = q.post(client, {"metric": "color", "start": (t - timedelta(days=89)).isoformat(), "end": t.isoformat()})
    assert response.status_code == 200, response.json()
    assert q.counts()[:2] == (1, 1)


def test_epsilon_over_remaining_budget_is_429_with_reset_time_and_charges_nothing(q, analyst, color):
    user, token = analyst
    client = q.client(token)
    q.add_krr(color, q.day(-1), "US", [4, 4, 4])
    ok = q.post(client, q.body(color, q.day(-1), epsilon="9.5"))
    assert ok.status_code == 200, ok.json()
    before = q.counts()
    refused = q.post(client, q.body(color, q.day(-2), epsilon=1))
    body = refused.json()
    assert refused.status_code == 429, body
    assert body["code"] == "budget_exhausted"
    assert body["message"]
    tomorrow = q.day(1).isoformat()
    assert body["resets_at"] == f"{tomorrow}T00:00:00+00:00"
    assert body["budget_remaining"] == 0.5
    assert q.counts() == before
    # and the remaining 0.5 is still spendable
    assert q.post(client, q.body(color, q.day(-2), epsilon="0.5")).status_code == 200


def test_epsilon_over_a_small_policy_budget_is_refused(q, analyst, color):
    user, token = analyst
    q.set_budget(user, "2")
    response = q.post(q.client(token), q.body(color, q.day(-1), epsilon=3))
    assert response.status_code == 429 and response.json()["code"] == "budget_exhausted"
    assert q.counts() == (0, 0, 0)


def test_response_shape(q, analyst, color):
    user, token = analyst
    q.add_krr(color, q.day(-1), "DE", [30, 20, 10])
    response = q.post(q.client(token), q.body(color, q.day(-2), q.day(-1), epsilon="0.5", group_by=["day"]))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"data", "values", "estimates", "presentation", "privacy", "release"}
    assert body["presentation"] == {"confidence": 0.95, "simultaneous": False}
    assert body["values"] == ["red", "green", "blue"]  # the order of every cell's columns
    privacy = body["privacy"]
    assert set(privacy) == {"epsilon", "delta", "differential_privacy", "ldp_corrected", "budget_remaining",
                            "resets_at", "cached"}
    assert privacy["epsilon"] == 0.5
    assert privacy["delta"] == 0
    assert privacy["differential_privacy"] is True
    assert privacy["ldp_corrected"] is True
    assert privacy["budget_remaining"] == 9.5
    assert privacy["resets_at"] == f"{q.day(1).isoformat()}T00:00:00+00:00"
    assert privacy["cached"] is False
    from telemetry.models import Release

    release = Release.objects.get()
    assert body["release"]["id"] == str(release.id)
    from telemetry.models import RollupEpoch

    # an opaque data version, not a count: the token of the roll-up epoch the release counted
    assert body["release"]["data_version"] == RollupEpoch.objects.get(id=release.data_epoch).token
    assert "data_as_of_report_id" not in body["release"] and not body["release"]["data_version"].isdigit()
    assert body["release"]["query"] == {"metric": "color", "version": 1, "start": q.day(-2).isoformat(),
                                        "end": q.day(-1).isoformat(), "group_by": ["day"], "epsilon": 0.5}
    data = body["data"]
    assert [cell["day"] for cell in data] == [q.day(-2).isoformat(), q.day(-1).isoformat()]  # zero-days included
    for cell in data:
        assert "region" not in cell
        assert isinstance(cell["reports"], int) and cell["reports"] >= 0
        assert len(cell["counts"]) == len(cell["ci_low"]) == len(cell["ci_high"]) == 3
        for count, low, high in zip(cell["counts"], cell["ci_low"], cell["ci_high"]):
            assert isinstance(count, int) and count >= 0
            assert 0 <= low <= high
        assert sum(cell["counts"]) == cell["reports"]
    # the release is recorded with its ledger row before it is returned
    (entry,) = LedgerEntry.objects.filter(subject_kind="release", subject_id=str(release.id))
    assert entry.epsilon_micro == 500_000


def test_a_region_grouped_query_is_one_charge_of_its_total_epsilon(q, analyst, color):
    """Its grid and its selection counts are two mechanisms, charged as one composed event of ε in all; the
    response shows the query's ε and keeps its shape. At 2 µε each part gets 1 µε."""
    user, token = analyst
    q.add_krr(color, q.day(-1), "DE", [30, 20, 10])
    body = q.post(q.client(token), q.body(color, q.day(-1), epsilon="0.7", group_by=["region"])).json()
    assert set(body) == {"data", "values", "estimates", "presentation", "privacy", "release"}
    assert body["privacy"]["epsilon"] == 0.7 and body["privacy"]["budget_remaining"] == 9.3
    assert body["release"]["query"]["epsilon"] == 0.7
    (entry,) = LedgerEntry.objects.all()
    assert entry.epsilon_micro == 700_000 == q.ledger_micro(user=user)
    assert [(part["epsilon"], part["sensitivity"]) for part in entry.event["parts"]] == [("0.63", 1), ("0.07", 1)]
    tiny = q.post(q.client(token), q.body(color, q.day(-2), epsilon="0.000002", group_by=["region"]))
    assert tiny.status_code == 200 and tiny.json()["privacy"]["epsilon"] == 0.000002
    from telemetry.models import Release

    release = Release.objects.get(id=tiny.json()["release"]["id"])
    assert (release.noise_scale, release.selection_scale) == ("1000000", "1000000")


def test_the_canonical_query_ignores_field_order_and_defaults(q, analyst, color):
    """The same query written two ways is one release; the second is cached and free."""
    _, token = analyst
    client = q.client(token)
    q.add_krr(color, q.day(-1), "DE", [3, 3, 3])
    first = q.post(client, {"metric": "color", "start": q.day(-1).isoformat(), "end": q.day(-1).isoformat(),
                            "group_by": ["region", "day"]})
    second = q.post(client, {"group_by": ["day", "region"], "epsilon": "1.000000", "version": 1,
                             "end": q.day(-1).isoformat(), "start": q.day(-1).isoformat(), "metric": "color"})
    assert first.status_code == second.status_code == 200
    assert second.json()["privacy"]["cached"] is True
    assert second.json()["release"]["id"] == first.json()["release"]["id"]
    assert second.json()["data"] == first.json()["data"]
    assert q.counts()[:2] == (1, 1)


def test_an_epsilon_with_a_huge_exponent_is_refused_quickly():
    """'1e999999999' is 11 characters; reading it must not build a billion-digit integer.
    ('1e-999999999' does the same through the denominator.)

    parse_epsilon_micro -> to_micro -> Fraction(Decimal(value)) computes 10**999999999 (hours of CPU
    while holding the GIL): one request pins a worker. Run in a child process so the test can time out.
    """
    value = "1e999999999"
    code = (
        "import django; django.setup()\n"
        "from deploy.api.parsing import parse_epsilon_micro\n"
        "from deploy.api.errors import ApiError\n"
        f"try:\n    parse_epsilon_micro({value!r})\nexcept ApiError as e:\n    print(e.code)\n"
        "else:\n    print('parsed')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "deploy.settings"}
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=6, env=env,
                             cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail(f"parse_epsilon_micro({value!r}) still running after 6 s")
    # refused outright, or read cheaply (parse_query then refuses it as over MAX_QUERY_EPSILON)
    assert out.stdout.strip() in {"invalid_epsilon", "parsed"}, out.stderr[-2000:]
