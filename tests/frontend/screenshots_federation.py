"""Screenshots of the export registry's pages at 1280 and 390 pixels wide, into docs/screenshots/federation-*.png.

Not collected by the default run (the name does not start with ``test_``); run it explicitly, with the test
environment of docs/operations.md:

    python -m pytest -q -p no:cacheprovider tests/frontend/screenshots_federation.py
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from federation_data import populate

from conftest import DESKTOP, PHONE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_screenshots(new_page, page_user, login, settings):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)
    page_user("root", "admin")
    export = populate(contributors=4)[0]
    OUT.mkdir(parents=True, exist_ok=True)
    for width, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page = new_page(viewport)
        login(page, "root", next_path="/federation/exports")
        for name, path in (("exports", "/federation/exports"), ("export", f"/federation/exports/{export.pk}"),
                           ("contributors", "/federation/contributors"), ("log", "/federation/log?index=0")):
            page.goto(path)
            if name == "log":
                page.get_by_role("button", name="Check again in this browser").click()
                page.wait_for_selector("#browser-verdict[data-verdict]")
            page.screenshot(path=str(OUT / f"federation-{name}-{width}.png"), full_page=True)
