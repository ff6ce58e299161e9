"""The admins' pages without a browser: who may open them, CSRF, and that each form calls the same
service as the API, with the same refusals, shown in the page."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from accounting.models import BudgetPolicy, PartitionCap
from accounting.selectors import budget_status
from telemetry.models import IngestKey, Metric, Release

pytestmark = pytest.mark.django_db

PAGES = ["/admin", "/admin/budgets", "/admin/budgets/analysts/ana", "/admin/budgets/groups/analyst",
         "/admin/budgets/metrics/color/v1", "/admin/metrics", "/admin/metrics/color", "/admin/ingest-keys",
         "/admin/releases", "/admin/users", "/admin/users/ana"]
POSTS = [("/admin/budgets/analysts/ana", {"daily_epsilon": "100"}),
         ("/admin/budgets/groups/analyst", {"daily_epsilon": "100"}),
         ("/admin/budgets/metrics/color/v1", {"lifetime_epsilon": "1000"}),
         ("/admin/metrics", {"name": "evil", "domain": "a\nb"}),
         ("/admin/metrics/color", {"domain": "a\nb"}),
         ("/admin/ingest-keys", {"app": "evil"}),
         ("/admin/users", {"username": "mallory", "role": "admin"}),
         ("/admin/users/ana/role", {"role": "admin"}),
         ("/admin/users/ana/active", {"active": "false"}),
         ("/admin/users/ana/password", {"password": "a long enough password"}),
         ("/admin/users/ana/token/rotate", {}),
         ("/admin/users/ana/token/revoke", {})]


def _state() -> tuple:
    """Everything the admin forms can change."""
    users = sorted(get_user_model().objects.values_list("username", "is_active", "is_staff", "password"))
    return (users, sorted(Token.objects.values_list("key", flat=True)), BudgetPolicy.objects.count(),
            PartitionCap.objects.count(), Metric.objects.count(), IngestKey.objects.count())


@pytest.fixture
def world(page_user, color, q):
    """The analyst 'ana' (with a password and a token) and the metric 'color'."""
    return page_user("ana", "analyst")


@pytest.mark.parametrize("path", PAGES)
def test_a_logged_out_visitor_is_sent_to_log_in(world, client, path):
    response = client.get(path)
    assert (response.status_code, response["Location"]) == (302, f"/login?next={path}")


@pytest.mark.parametrize("path", PAGES)
def test_an_analyst_cannot_open_an_admin_page(world, client, path):
    client.force_login(world)
    response = client.get(path)
    assert response.status_code == 403 and b"Not allowed" in response.content


@pytest.mark.parametrize("path,data", POSTS)
def test_an_analyst_or_a_visitor_cannot_post_an_admin_form(world, client, path, data):
    before = _state()
    assert client.post(path, data).status_code == 302  # to the login page
    client.force_login(world)
    assert client.post(path, data).status_code == 403
    assert _state() == before


@pytest.mark.parametrize("path,data", POSTS)
def test_every_admin_form_needs_its_csrf_token(world, page_user, path, data):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(page_user("root", "admin"))
    before = _state()
    response = browser.post(path, data)
    assert response.status_code == 403 and response.json()["code"] == "csrf_failed"
    assert _state() == before


@pytest.mark.parametrize("path", PAGES)
def test_an_admin_opens_every_admin_page_and_every_form_has_a_csrf_token(world, admin_client, path):
    response = admin_client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<h1>") == 1
    assert html.count('method="post"') == html.count('name="csrfmiddlewaretoken"')
    for field_id in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
        assert f'for="{field_id}"' in html, f"no label for #{field_id} on {path}"


def test_the_admin_entry_is_in_the_nav_for_admins_only(world, admin_client):
    assert b'href="/admin"' in admin_client.get("/").content
    client = Client()
    client.force_login(world)
    assert b'href="/admin"' not in client.get("/").content


def test_unknown_objects_are_the_404_page(admin_client):
    for path in ["/admin/budgets/analysts/ghost", "/admin/budgets/groups/ghost", "/admin/budgets/metrics/ghost/v1",
                 "/admin/metrics/ghost", "/admin/users/ghost"]:
        assert admin_client.get(path).status_code == 404, path
    assert admin_client.post("/admin/ingest-keys/999/revoke").status_code == 404


# --------------------------------------------------------------------------- budgets


def test_an_admin_raises_an_analysts_budget(world, admin_client):
    response = admin_client.post("/admin/budgets/analysts/ana",
                                 {"daily_epsilon": "12.5", "composition": "approximate", "delta": ""})
    assert response.status_code == 302 and response["Location"] == "/admin/budgets/analysts/ana?notice=budget-saved"
    status = budget_status(world)
    assert (status["daily_epsilon"], status["composition"], status["policy_source"]) == (12.5, "approximate", "analyst")
    page = admin_client.get(response["Location"]).content.decode()
    assert "The budget is saved" in page and 'value="12.5"' in page


@pytest.mark.parametrize("data,code", [({"daily_epsilon": "-1"}, "invalid_epsilon"),
                                       ({"daily_epsilon": "1.0000001"}, "invalid_epsilon"),
                                       ({"daily_epsilon": "1", "composition": "wild"}, "invalid_composition"),
                                       ({"daily_epsilon": "1", "composition": "approximate", "delta": "0.5"},
                                        "invalid_delta")])
def test_a_refused_budget_is_shown_with_its_code_and_changes_nothing(world, admin_client, data, code):
    response = admin_client.post("/admin/budgets/analysts/ana", data)
    assert response.status_code == 400
    html = response.content.decode()
    assert f"<code>{code}</code>" in html and 'role="alert"' in html
    assert f'value="{data["daily_epsilon"]}"' in html  # the form keeps what was typed
    assert not BudgetPolicy.objects.exists()


def test_group_budget_and_metric_cap(world, admin_client, color):
    assert admin_client.post("/admin/budgets/groups/analyst", {"daily_epsilon": "3", "composition": "pure"}
                             ).status_code == 302
    assert budget_status(world)["policy_source"] == "group:analyst"
    assert "ε 3 a day" in admin_client.get("/admin/budgets/groups/analyst").content.decode()
    assert admin_client.post("/admin/budgets/metrics/color/v1", {"lifetime_epsilon": "7.5"}).status_code == 302
    assert PartitionCap.objects.get().lifetime_epsilon_micro == 7_500_000
    assert admin_client.post("/admin/budgets/metrics/color/v1", {"lifetime_epsilon": "x"}).status_code == 400


def test_the_budgets_page_charts_each_users_spending(world, admin_client, color, q, short_region_axis):
    q.add_krr(color, q.day(-1), "DE", [30, 20, 10])
    q.run(world, q.body(color, q.day(-1), epsilon=0.5))
    html = admin_client.get("/admin/budgets").content.decode()
    assert 'id="usage-chart"' in html and 'id="usage-data"' in html and "chart.umd.js" in html
    data = re.search(r'<script id="usage-data" type="application/json">(.*?)</script>', html).group(1)
    assert '"label": "ana"' in data and "0.5" in data
    analyst_page = admin_client.get("/admin/budgets/analysts/ana").content.decode()
    assert 'id="usage-chart"' in analyst_page
    metric_page = admin_client.get("/admin/budgets/metrics/color/v1").content.decode()
    assert 'id="partition-chart"' in metric_page and q.day(-1).isoformat() in metric_page


# --------------------------------------------------------------------------- metrics and ingest keys


def test_an_admin_creates_a_metric_and_a_new_version(admin_client):
    response = admin_client.post("/admin/metrics", {"name": "theme", "domain": "light\ndark, auto",
                                                    "epsilon": "2", "protocol": "krr", "contribution_bound": "1"})
    assert response["Location"] == "/admin/metrics/theme?notice=metric-created"
    theme = Metric.objects.get(name="theme")
    assert (theme.domain, theme.epsilon, theme.report_epsilon, theme.protocol) == (["light", "dark", "auto"], 2.0, 1.0,
                                                                                  "krr")
    form = admin_client.get("/admin/metrics/theme").content.decode()
    assert ">light\ndark\nauto</textarea>" in form
    response = admin_client.post("/admin/metrics/theme", {"domain": "light\ndark\nauto", "epsilon": "1",
                                                          "report_epsilon": "0.5", "protocol": "krr",
                                                          "contribution_bound": "1", "description": ""})
    assert response["Location"] == "/admin/metrics/theme?notice=version-created"
    assert list(Metric.objects.filter(name="theme").values_list("version", "epsilon")) == [(2, 1.0), (1, 2.0)]


@pytest.mark.parametrize("data,field", [({"name": "Bad Name", "domain": "a\nb"}, "name"),
                                        ({"name": "ok", "domain": "only-one"}, "domain"),
                                        ({"name": "ok", "domain": "a\nb", "epsilon": "50"}, "epsilon"),
                                        ({"name": "ok", "domain": "a\nb", "contribution_bound": "two"},
                                         "contribution_bound")])
def test_a_refused_metric_names_the_rule(admin_client, data, field):
    response = admin_client.post("/admin/metrics", data)
    assert response.status_code == 400 and "<code>invalid_metric</code>" in response.content.decode()
    assert not Metric.objects.exists()


def test_a_created_ingest_key_is_shown_once_and_works(admin_client, color, q):
    response = admin_client.post("/admin/ingest-keys", {"app": "web"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    plaintext = re.search(r'<code id="new-key" class="secret"[^>]*>([^<]+)</code>', response.content.decode()).group(1)
    assert q.item_codes(q.post_batch(q.envelope([q.krr_item()]), plaintext)) == ["accepted"]
    listing = admin_client.get("/admin/ingest-keys").content.decode()
    assert plaintext not in listing and plaintext[:10] in listing
    key = IngestKey.objects.get()
    assert admin_client.post(f"/admin/ingest-keys/{key.id}/revoke")["Location"].endswith("notice=key-revoked")
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert admin_client.post("/admin/ingest-keys", {"app": " "}).status_code == 400


# --------------------------------------------------------------------------- releases


DISTINCT_COUNTS = [7919, 6007, 5003]  # raw counts that cannot appear in a page by chance


def test_an_admin_verifies_a_release_and_sees_per_cell_verdicts_and_no_count(world, admin_client, color, q,
                                                                          short_region_axis):
    for offset in (-2, -1):
        q.add_krr(color, q.day(offset), "DE", DISTINCT_COUNTS)
    answer = q.run(world, q.body(color, q.day(-2), q.day(-1), group_by=["day"], epsilon=1))
    release = Release.objects.get()
    listing = admin_client.get("/admin/releases").content.decode()
    assert str(release.id) in listing
    response = admin_client.post(f"/admin/releases/{release.id}/verify")
    html = response.content.decode()
    assert response.status_code == 200 and "Verified: all 2 cells pass" in html
    assert html.count('<span class="badge badge-ok">pass</span>') == 2 + 2  # two cells, noise and post-processing
    numbers = set(re.findall(r"\d+", html))
    raw = {str(c) for c in DISTINCT_COUNTS} | {str(sum(DISTINCT_COUNTS)), str(2 * sum(DISTINCT_COUNTS))}
    released = {str(v) for cell in answer["data"] for v in cell["counts"] + [cell["reports"]]}
    stored = {str(abs(int(v))) for v in q.noisy(release)}
    assert numbers.isdisjoint(raw) and numbers.isdisjoint(released - {"0"}) and numbers.isdisjoint(stored - {"0"})
    assert admin_client.get(f"/admin/releases/{release.id}/verify").status_code == 405


def test_a_tampered_release_fails_its_audit_in_the_page(world, admin_client, color, q, short_region_axis):
    q.add_krr(color, q.day(-1), "DE", [40, 30, 20])
    q.run(world, q.body(color, q.day(-1), epsilon=1))
    release = Release.objects.get()
    Release.objects.filter(pk=release.pk).update(sealed_seed=b"\x00" * len(bytes(release.sealed_seed)))
    response = admin_client.post(f"/admin/releases/{release.id}/verify")
    assert response.status_code == 409 and "<code>audit_seal_invalid</code>" in response.content.decode()
    assert admin_client.post("/admin/releases/00000000-0000-0000-0000-000000000000/verify").status_code == 404


# --------------------------------------------------------------------------- users and tokens


def test_an_admin_creates_a_user_whose_token_is_shown_once(admin_client):
    response = admin_client.post("/admin/users", {"username": "carol", "role": "analyst",
                                                  "password": "a long enough password"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    token = re.search(r'<code id="new-token" class="secret"[^>]*>([^<]+)</code>', response.content.decode()).group(1)
    assert Token.objects.get(user__username="carol").key == token
    assert token not in admin_client.get("/admin/users").content.decode()
    assert token not in admin_client.get("/admin/users/carol").content.decode()
    assert Client().login(username="carol", password="a long enough password")
    refused = admin_client.post("/admin/users", {"username": "carol", "role": "analyst"})
    assert refused.status_code == 409 and "<code>user_exists</code>" in refused.content.decode()


def test_a_deactivated_users_session_and_token_stop_at_once(world, admin_client, q):
    client = Client()
    client.force_login(world)
    token = Token.objects.get(user=world).key
    assert client.get("/").status_code == 200
    response = admin_client.post("/admin/users/ana/active", {"active": "false"})
    assert response["Location"] == "/admin/users/ana?notice=deactivated"
    assert client.get("/").status_code == 302  # the session no longer logs anyone in
    assert q.client(token).get("/api/v1/metrics").status_code == 401
    assert not Client().login(username="ana", password="correct horse battery staple")


def test_a_new_password_ends_the_users_sessions(world, admin_client):
    client = Client()
    client.force_login(world)
    assert admin_client.post("/admin/users/ana/password", {"password": "a brand new password"}).status_code == 302
    assert client.get("/").status_code == 302


def test_role_changes_and_token_rotation_from_the_user_page(world, admin_client, q):
    old = Token.objects.get(user=world).key
    assert admin_client.post("/admin/users/ana/role", {"role": "admin"})["Location"].endswith("notice=role-saved")
    assert q.client(old).get("/api/v1/ingest-keys").status_code == 200
    rotated = admin_client.post("/admin/users/ana/token/rotate")
    assert rotated.status_code == 200 and rotated["Cache-Control"] == "no-store"
    new = re.search(r'<code id="new-token" class="secret"[^>]*>([^<]+)</code>', rotated.content.decode()).group(1)
    assert q.client(old).get("/api/v1/metrics").status_code == 401
    assert q.client(new).get("/api/v1/metrics").status_code == 200
    assert admin_client.post("/admin/users/ana/token/revoke")["Location"].endswith("notice=token-revoked")
    assert q.client(new).get("/api/v1/metrics").status_code == 401


def test_a_demoted_admins_open_session_loses_the_admin_pages_at_once(page_user, admin_client):
    adam = Client()
    adam.force_login(page_user("adam", "admin"))
    assert adam.get("/admin/users").status_code == 200
    assert admin_client.post("/admin/users/adam/role", {"role": "analyst"}).status_code == 302
    assert adam.get("/admin/users").status_code == 403
    assert adam.get("/").status_code == 200  # still an analyst


def test_a_form_value_that_is_not_a_boolean_changes_nothing(world, admin_client):
    response = admin_client.post("/admin/users/ana/active", {"active": "maybe"})
    assert response.status_code == 400 and "<code>invalid_active</code>" in response.content.decode()
    world.refresh_from_db()
    assert world.is_active


def test_an_admin_cannot_lock_themself_or_the_service_out(admin_client):
    deactivate = admin_client.post("/admin/users/root/active", {"active": "false"})
    assert deactivate.status_code == 409 and "<code>cannot_deactivate_self</code>" in deactivate.content.decode()
    demote = admin_client.post("/admin/users/root/role", {"role": "analyst"})
    assert demote.status_code == 409 and "<code>last_admin</code>" in demote.content.decode()
    assert admin_client.get("/admin").status_code == 200


def test_the_admin_pages_doc_names_pages_and_tests_that_exist():
    """docs/pages-admin.md stays true: every test it names exists, and every admin URL it lists resolves."""
    from pathlib import Path

    from django.urls import resolve

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "pages-admin.md").read_text()
    tests = "".join(path.read_text() for path in (root / "tests").rglob("test_*.py"))
    named = set(re.findall(r"`(test_[a-z_]+)`", doc))
    assert named and sorted(name for name in named if f"def {name}(" not in tests) == []
    examples = {"<id>": "00000000-0000-0000-0000-000000000000", "<version>": "1"}
    paths = re.findall(r"^\| `(/admin[^`]*?)`", doc, re.MULTILINE)
    assert len(paths) == 12
    for path in paths:
        example = re.sub(r"<[a-z]+>", lambda m: examples.get(m.group(0), "x"), path)
        assert (resolve(example).url_name or "").startswith("admin"), path
