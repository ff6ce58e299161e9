"""The pages' skeleton without a browser: login and logout, role gates, CSRF, static files, and the
JSON API staying token-authenticated beside the session login."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from frontend.access import admin_required, analyst_required

pytestmark = pytest.mark.django_db

PAGES = ["/", "/metrics"]


@pytest.mark.parametrize("path", PAGES)
def test_a_logged_out_visitor_is_sent_to_log_in_and_back(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login?next={path}"


@pytest.mark.parametrize("path", PAGES)
def test_an_analyst_opens_the_analyst_pages(analyst_client, path):
    response = analyst_client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_login_with_the_password_leads_to_next_and_logout_is_a_post(page_user):
    page_user("ana")
    browser = Client(enforce_csrf_checks=True)
    form = browser.get("/login?next=/metrics")
    token = form.cookies["csrftoken"].value
    response = browser.post("/login", {"username": "ana", "password": "correct horse battery staple",
                                       "next": "/metrics", "csrfmiddlewaretoken": token})
    assert (response.status_code, response["Location"]) == (302, "/metrics")
    assert browser.get("/metrics").status_code == 200
    assert browser.get("/logout").status_code == 405  # a link or an image cannot log anyone out
    token = browser.cookies["csrftoken"].value
    assert browser.post("/logout", {"csrfmiddlewaretoken": token}).status_code == 302
    assert browser.get("/metrics").status_code == 302


def test_every_form_post_needs_its_csrf_token(page_user):
    page_user("ana")
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/login", {"username": "ana", "password": "correct horse battery staple"})
    assert response.status_code == 403
    assert "_auth_user_id" not in browser.session


def test_a_wrong_password_or_an_account_without_a_role_cannot_log_in(page_user, django_user_model, client):
    page_user("ana")
    django_user_model.objects.create_user("norole", password="correct horse battery staple")
    for username, password in [("ana", "wrong"), ("norole", "correct horse battery staple")]:
        response = client.post("/login", {"username": username, "password": password})
        assert response.status_code == 200  # the form again, with the reason
        assert b'role="alert"' in response.content
        assert "_auth_user_id" not in client.session


def test_an_analyst_gets_the_403_page_from_an_admin_gate_and_an_admin_passes(page_user):
    """The gates themselves, on a view made here: admins pass both, analysts only the analysts' one."""
    def view(request):
        return HttpResponse("inside")

    factory = RequestFactory()
    users = {"analyst": page_user("ana", "analyst"), "admin": page_user("root", "admin")}
    for role, gate, status in [("analyst", admin_required, 403), ("analyst", analyst_required, 200),
                               ("admin", admin_required, 200), ("admin", analyst_required, 200)]:
        request = factory.get("/somewhere")
        request.user = users[role]
        response = gate(view)(request)
        assert response.status_code == status
        if status == 403:
            assert b"Not allowed" in response.content


def test_a_session_does_not_authenticate_the_json_api(analyst_client, color):
    """The API stays token-authenticated: a logged-in browser's cookie is not a credential there, so a
    cross-site form cannot spend an analyst's budget (the API's views are CSRF-exempt)."""
    assert analyst_client.get("/api/v1/budgets/me").status_code == 401
    response = analyst_client.post("/api/v1/queries", {"metric": "color", "start": "2026-01-01", "end": "2026-01-01"},
                                   content_type="application/json")
    assert response.status_code == 401
    from accounting.models import LedgerEntry

    assert not LedgerEntry.objects.exists()


def test_the_vendored_chart_library_and_css_are_served_with_debug_off(client, settings):
    settings.DEBUG = False
    response = client.get("/static/frontend/vendor/chartjs/chart.umd.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response["Cache-Control"] == "public, max-age=3600"
    body = b"".join(response.streaming_content)
    assert body.startswith(b"/*!\n * Chart.js v4.4.9")
    again = client.get("/static/frontend/vendor/chartjs/chart.umd.js", HTTP_IF_MODIFIED_SINCE=response["Last-Modified"])
    assert again.status_code == 304
    assert client.get("/static/frontend/css/app.css")["Content-Type"].startswith("text/css")
    assert client.get("/static/frontend/vendor/chartjs/LICENSE.md").status_code == 200


@pytest.mark.parametrize("path", ["/static/frontend/nope.js", "/static/../deploy/settings.py",
                                  "/static/frontend/../../deploy/settings.py", "/static/frontend"])
def test_static_serves_nothing_outside_the_static_folders(client, path):
    assert client.get(path).status_code == 404


def test_unknown_paths_and_the_api_stay_json(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert client.get("/health").json() == {"status": "ok"}


def test_expired_logins_are_cleared_by_the_hourly_task(page_user, client):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from frontend.tasks import clear_sessions

    client.force_login(page_user("ana"))
    other = Client()
    other.force_login(page_user("bob"))
    Session.objects.filter(session_key=other.session.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert clear_sessions() == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == [client.session.session_key]
