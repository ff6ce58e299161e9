"""The pages in a real browser (Chromium driven by Playwright) against a live server."""

from __future__ import annotations

import pytest

from conftest import PHONE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_logged_out_visitor_is_sent_to_the_login_form_then_back(page, page_user, login):
    page_user("ana")
    page.goto("/metrics")
    assert page.url.endswith("/login?next=/metrics")
    login(page, "ana", next_path="/metrics")
    assert page.get_by_role("heading", name="Metrics", level=1).is_visible()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/")
    assert "/login" in page.url


def test_the_skip_link_is_the_first_stop_and_focus_is_visible(new_page, page_user, login):
    page_user("ana")
    page = new_page(PHONE)
    login(page, "ana")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => [document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]")
    assert focused == ["Skip to content", "solid"]
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
