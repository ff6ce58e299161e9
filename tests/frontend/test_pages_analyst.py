"""The analysts' pages through Django's test client: they call the API's services, so their figures are
the API's; previews charge nothing; the answer, its CSV and a reopened release are free."""

from __future__ import annotations

import csv
import io

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(color, short_region_axis, q):
    """Reports of 'color' on the last three days in DE and US."""
    for offset in (-2, -1, 0):
        for region, counts in (("DE", (60, 30, 10)), ("US", (20, 50, 30))):
            q.add_krr(color, q.day(offset), region, counts, roll_up=False)
    from telemetry.rollup import advance_rollup

    advance_rollup()
    return color


def form(q, **extra):
    body = {"metric": "color", "start": q.day_str(-2), "end": q.day_str(0), "group_by": ["day", "region"],
            "epsilon": "1", "confidence": "0.95"}
    return {**body, **extra}


def test_the_preview_shows_cost_and_what_is_left_and_charges_nothing(analyst_client, data, q):
    response = analyst_client.post("/query", form(q, action="preview"))
    assert response.status_code == 200
    preview = response.context["preview"]
    assert (preview["cost"], preview["remaining_before"], preview["remaining_after"]) == (1, 10, 9)
    assert [day["day"] for day in preview["days_left"]] == [q.day_str(-2), q.day_str(-1), q.day_str(0)]
    assert all(day["left_now"] == 50 and day["left_after"] == 49 for day in preview["days_left"])
    assert b"Pay \xce\xb5 1 and run" in response.content
    assert q.ledger_micro() == 0


def test_running_pays_once_then_the_same_query_is_cached_and_free(analyst_client, data, q):
    first = analyst_client.post("/query", form(q, action="run"))
    assert first.status_code == 200
    assert first.context["privacy"]["cached"] is False
    assert first.context["budget"]["remaining"] == 9
    assert first.context["lifetime"] == {"left": 49, "days": 3}  # the default cap, 50, less this query's ε
    assert b'data-testid="lifetime-left">at least \xce\xb5 49<' in first.content
    assert q.ledger_micro() == 1_000_000
    preview = analyst_client.post("/query", form(q, action="preview")).context["preview"]
    assert preview["released"] is not None  # "already released: free"
    again = analyst_client.post("/query", form(q, action="run"))
    assert again.context["privacy"]["cached"] is True
    assert again.context["privacy"]["release_id"] == first.context["privacy"]["release_id"]
    assert q.ledger_micro() == 1_000_000


def test_the_page_shows_the_apis_figures(analyst_client, data, q, analyst):
    """Same service, same release: the page's table is the API's answer re-rendered, cell by cell."""
    page = analyst_client.post("/query", form(q, action="run"))
    api = q.client(analyst[1]).post("/api/v1/queries", {**form(q), "epsilon": 1, "confidence": 0.95}, format="json").json()
    assert api["privacy"]["cached"] is True and api["release"]["id"] == page.context["privacy"]["release_id"]
    rows = page.context["rows"]
    expected = [(cell["day"], cell["region"], value, cell["counts"][i], cell["ci_low"][i], cell["ci_high"][i])
                for cell in api["data"] for i, value in enumerate(api["values"])]
    assert [(r["day"], r["region"], r["value"], r["count"], r["ci_low"], r["ci_high"]) for r in rows] == expected
    chart = page.context["chart"]
    assert chart["kind"] == "line" and chart["days"] == [q.day_str(-2), q.day_str(-1), q.day_str(0)]


def test_one_day_is_drawn_as_bars(analyst_client, data, q):
    page = analyst_client.post("/query", form(q, action="run", start=q.day_str(0), group_by=["region"]))
    assert page.context["chart"]["kind"] == "bar"


def test_an_exhausted_budget_is_said_clearly_and_cached_answers_stay_reachable(analyst_client, data, q):
    from django.contrib.auth import get_user_model

    q.set_budget(get_user_model().objects.get(username="ana"), 1)
    first = analyst_client.post("/query", form(q, action="run"))
    release_id = first.context["privacy"]["release_id"]
    preview = analyst_client.post("/query", form(q, action="preview", epsilon="0.5"))
    assert preview.context["preview"]["refusal"] == "budget_exhausted"
    refused = analyst_client.post("/query", form(q, action="run", epsilon="0.5"))
    assert refused.status_code == 429
    assert b"Your privacy budget for today is spent" in refused.content
    assert q.ledger_micro() == 1_000_000
    assert analyst_client.post("/query", form(q, action="run")).context["privacy"]["cached"] is True
    reopened = analyst_client.get(f"/releases/{release_id}")
    assert reopened.status_code == 200 and reopened.context["privacy"]["cached"] is True
    assert b"reopen a past release" in analyst_client.get("/").content


def test_bad_input_is_the_apis_error_in_the_page(analyst_client, data, q):
    response = analyst_client.post("/query", form(q, action="preview", start=q.day_str(-100)))
    assert response.status_code == 400
    assert response.context["error"].code == "window_too_long"
    assert b'role="alert"' in response.content


def test_past_releases_reopen_for_free_and_export_csv_with_privacy_metadata(analyst_client, data, q):
    release_id = analyst_client.post("/query", form(q, action="run")).context["privacy"]["release_id"]
    listing = analyst_client.get("/releases")
    assert release_id in listing.content.decode()
    reopened = analyst_client.get(f"/releases/{release_id}?confidence=0.8")
    assert reopened.context["privacy"]["confidence"] == 0.8
    exported = analyst_client.get(f"/releases/{release_id}/csv")
    assert exported["Content-Type"] == "text/csv; charset=utf-8"
    text = exported.content.decode()
    header = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# "))
    assert header["privtel release"] == release_id
    assert (header["epsilon"], header["delta"], header["differential_privacy"]) == ("1.0", "0.0", "true")
    assert header["mechanism"].startswith("discrete Laplace")
    rows = list(csv.DictReader(io.StringIO("\n".join(l for l in text.splitlines() if not l.startswith("#")))))
    assert len(rows) == len(reopened.context["rows"])
    assert set(rows[0]) == {"day", "region", "value", "reports", "count", "unbiased", "ci_low", "ci_high"}
    assert q.ledger_micro() == 1_000_000


def test_an_analyst_cannot_reopen_another_analysts_release(analyst_client, page_user, client, data, q):
    release_id = analyst_client.post("/query", form(q, action="run")).context["privacy"]["release_id"]
    client.force_login(page_user("bob"))
    assert client.get(f"/releases/{release_id}").status_code == 404
    assert client.get(f"/releases/{release_id}/csv").status_code == 404


def test_a_release_whose_stored_counts_do_not_decode_is_an_error_page(analyst_client, data, q):
    from telemetry.models import Release

    release_id = analyst_client.post("/query", form(q, action="run")).context["privacy"]["release_id"]
    Release.objects.filter(id=release_id).update(noisy_counts=b"\x09")
    for path in (f"/releases/{release_id}", f"/releases/{release_id}/csv"):
        response = analyst_client.get(path)
        assert response.status_code == 409
        assert b"release_unreadable" in response.content and b'role="alert"' in response.content
