"""The admins' pages in a real browser (Chromium driven by Playwright) against a live server on the
real PostgreSQL and Redis."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from pages_testing import PHONE
from telemetry.models import Release

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADMIN_PAGES = ["/admin", "/admin/budgets", "/admin/budgets/analysts/ana", "/admin/budgets/groups/analyst",
               "/admin/budgets/metrics/color/v1", "/admin/metrics", "/admin/metrics/color", "/admin/ingest-keys",
               "/admin/releases", "/admin/users", "/admin/users/ana"]


def api_query(site: str, token: str, body: dict) -> tuple[int, dict]:
    """``POST /api/v1/queries`` over HTTP to the live server, as an analyst's script would."""
    request = urllib.request.Request(f"{site}/api/v1/queries", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def analyst_with_data(page_user, color, q, short_region_axis):
    """'ana' (password and token) and a day of k-RR reports of 'color'."""
    ana = page_user("ana", "analyst")
    q.add_krr(color, q.day(-1), "DE", [60, 40, 20])
    return ana


def test_an_admin_raises_the_analysts_budget_and_the_analyst_can_query_again(page, new_page, login, page_user,
                                                                            analyst_with_data, live_site, q):
    from rest_framework.authtoken.models import Token

    ana = analyst_with_data
    token = Token.objects.get(user=ana).key
    q.set_budget(ana, 1)
    status, _ = api_query(live_site, token, q.body("color", q.day(-1), epsilon=1))
    assert status == 200
    status, refused = api_query(live_site, token, q.body("color", q.day(-1), epsilon=0.5, fresh=True))
    assert (status, refused["code"]) == (429, "budget_exhausted")

    analyst_page = new_page()
    login(analyst_page, "ana")
    assert analyst_page.get_by_test_id("budget-exhausted").is_visible()

    page_user("root", "admin")
    login(page, "root", next_path="/admin/budgets")
    page.get_by_role("link", name="Edit the budget of ana").click()
    page.wait_for_url("**/admin/budgets/analysts/ana")
    assert page.get_by_test_id("remaining").inner_text() == "0"
    page.get_by_label("Daily ε").fill("5")
    page.get_by_label("pure (ε adds up)").check()
    page.get_by_role("button", name="Save the budget").click()
    page.wait_for_url("**/admin/budgets/analysts/ana?notice=budget-saved")
    assert page.get_by_test_id("notice").is_visible()
    assert page.get_by_test_id("remaining").inner_text() == "4"

    status, answer = api_query(live_site, token, q.body("color", q.day(-1), epsilon=0.5, fresh=True))
    assert status == 200 and answer["privacy"]["budget_remaining"] == 3.5
    analyst_page.reload()
    assert analyst_page.get_by_test_id("budget-remaining").inner_text().split()[-1] == "3.5"
    assert analyst_page.get_by_test_id("budget-exhausted").count() == 0


def test_an_analyst_cannot_open_an_admin_page(page, login, page_user):
    page_user("ana", "analyst")
    login(page, "ana")
    assert page.get_by_role("link", name="Admin").count() == 0
    response = page.goto("/admin/budgets")
    assert response.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()


def test_a_logged_out_visitor_is_sent_to_log_in_then_back(page, login, page_user):
    page_user("root", "admin")
    page.goto("/admin/users")
    assert page.url.endswith("/login?next=/admin/users")
    login(page, "root", next_path="/admin/users")
    assert page.get_by_role("heading", name="Users and tokens", level=1).is_visible()


def test_an_admin_verifies_a_release_and_sees_each_cell_pass_and_no_count(page, login, page_user, color, q,
                                                                          short_region_axis):
    ana = page_user("ana", "analyst")
    raw = [7919, 6007, 5003]  # counts that cannot appear in the page by chance
    for offset in (-3, -2, -1):
        q.add_krr(color, q.day(offset), "DE", raw)
    answer = q.run(ana, q.body(color, q.day(-3), q.day(-1), group_by=["day"], epsilon=1))
    release = Release.objects.get()
    page_user("root", "admin")
    login(page, "root", next_path="/admin/releases")
    page.locator(f'tr[data-release="{release.id}"]').get_by_role("button").click()
    page.wait_for_url(f"**/admin/releases/{release.id}/verify")
    assert "Verified: all 3 cells pass" in page.get_by_test_id("verdict").inner_text()
    verdicts = page.get_by_test_id("cells").locator("tbody tr td:last-child").all_inner_texts()
    assert verdicts == ["pass", "pass", "pass"]
    html = page.content()
    numbers = set(re.findall(r"\d+", html))
    released = {str(v) for cell in answer["data"] for v in cell["counts"] + [cell["reports"]]} - {"0"}
    stored = {str(abs(int(v))) for v in q.noisy(release)} - {"0"}
    assert numbers.isdisjoint({str(c) for c in raw} | {str(3 * c) for c in raw} | released | stored)


def test_a_created_ingest_key_is_shown_once(page, login, page_user):
    page_user("root", "admin")
    login(page, "root", next_path="/admin/ingest-keys")
    page.get_by_label("App", exact=True).fill("checkout-web")
    page.get_by_role("button", name="Create the key").click()
    key = page.get_by_test_id("plaintext").inner_text()
    assert key.startswith("ik_") and len(key) > 40
    assert page.get_by_role("row", name=re.compile("checkout-web")).is_visible()
    page.goto("/admin/ingest-keys")
    assert key not in page.content()
    assert key[:10] in page.content()
    page.get_by_role("button", name=re.compile("Revoke the key of checkout-web")).click()
    page.wait_for_url("**/admin/ingest-keys?notice=key-revoked")
    assert page.get_by_text("revoked", exact=False).first.is_visible()


def test_a_user_created_in_the_page_logs_in_with_the_password_and_its_token_is_shown_once(new_page, login,
                                                                                          page_user, live_site):
    page_user("root", "admin")
    page = new_page()
    login(page, "root", next_path="/admin/users")
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password for the pages (optional)").fill("a long enough password")
    page.get_by_label("analyst").check()
    page.get_by_role("button", name="Create the user").click()
    token = page.get_by_test_id("token").inner_text()
    assert len(token) == 40
    page.goto("/admin/users/carol")
    assert token not in page.content()
    carol = new_page()
    login(carol, "carol", password="a long enough password")
    assert carol.get_by_test_id("budget").is_visible()


def test_every_admin_page_fits_a_phone_and_is_keyboard_reachable(new_page, login, page_user, color, q):
    page_user("ana", "analyst")
    page_user("root", "admin")
    page = new_page(PHONE)
    login(page, "root", next_path="/admin")
    for path in ADMIN_PAGES:
        page.goto(path)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), path
        # every control reachable by Tab has a visible focus ring and an accessible name
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
        unnamed = page.evaluate("""() => [...document.querySelectorAll(
            'main input:not([type=hidden]), main select, main textarea, main button')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map(e => e.outerHTML)""")
        assert unnamed == [], (path, unnamed)
