"""The export registry's pages in Chromium (Playwright) against a live server: from the exports list to an export's
proof, then "verify inclusion", checked by the server and again in the browser (WebCrypto SHA-256 and Ed25519)."""

from __future__ import annotations

import secrets

import pytest
from federation_data import populate

from conftest import PHONE
from federation.models import LogEntry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def log_key(settings):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)


def test_an_admin_goes_from_an_export_to_its_verified_inclusion(page, page_user, login):
    page_user("root", "admin")
    first = populate(contributors=3)[0]
    login(page, "root", next_path="/federation/exports")
    page.get_by_role("link", name=f"#{first.pk}", exact=True).click()
    assert page.get_by_role("heading", name=f"Export #{first.pk}", level=1).is_visible()
    assert page.get_by_role("heading", name="Redaction log").is_visible()
    page.get_by_role("link", name="Verify its inclusion in the log").click()
    verdict = page.get_by_test_id("server-verdict")
    assert "is included in the signed tree of 4 entries" in verdict.inner_text()
    page.get_by_role("button", name="Check again in this browser").click()
    page.wait_for_selector("#browser-verdict[data-verdict]")
    browser = page.locator("#browser-verdict")
    assert browser.get_attribute("data-verdict") == "included", browser.inner_text()
    assert "signature verifies" in browser.inner_text()


def test_the_browser_check_fails_for_an_edited_entry_and_the_form_takes_any_index(page, page_user, login):
    page_user("root", "admin")
    populate(contributors=3)
    row = LogEntry.objects.get(index=3)  # the aggregate
    LogEntry.objects.filter(pk=row.pk).update(entry=bytes(row.entry).replace(b"fedavg", b"fedAvg"))
    login(page, "root", next_path="/federation/log")
    page.get_by_label("Entry index").fill("3")
    page.get_by_role("button", name="Verify", exact=True).click()
    assert "is NOT included" in page.get_by_test_id("server-verdict").inner_text()
    page.get_by_role("button", name="Check again in this browser").click()
    page.wait_for_selector("#browser-verdict[data-verdict]")
    assert page.locator("#browser-verdict").get_attribute("data-verdict") == "failed"


def test_the_registry_pages_fit_a_phone(new_page, page_user, login):
    page_user("root", "admin")
    export = populate(contributors=2)[0]
    page = new_page(PHONE)
    login(page, "root", next_path="/federation/contributors")
    for path in ("/federation/contributors", "/federation/exports", f"/federation/exports/{export.pk}",
                 "/federation/log?index=0"):
        page.goto(path)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), path
