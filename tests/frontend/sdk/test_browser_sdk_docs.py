"""docs/browser-sdk.md's examples run as written, in Chromium, in a page of the live app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from telemetry.models import Batch, StagedReports

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOC = (Path(__file__).resolve().parents[3] / "docs/browser-sdk.md").read_text()
CONSOLE_EXAMPLE = re.search(r"```js\n(.*?)```", DOC, re.S).group(1)
PAGE_EXAMPLE = re.search(r"```html\n(.*?)```", DOC, re.S).group(1)


@pytest.fixture
def key(q):
    # the demo's app_theme (telemetry/management/commands/demo.py)
    q.metric("app_theme", domain=[f"theme_{i:02d}" for i in range(20)], protocol="krr", epsilon=2.0)
    return q.ingest_key("web")[1]


def test_the_console_example_sends_one_report_and_then_respects_the_daily_cap(page, key):
    page.goto("/login")
    run = "async () => {\n" + CONSOLE_EXAMPLE.replace("INGEST_KEY", key) + "\nreturn [queued, answers];\n}"
    queued, answers = page.evaluate(run)
    assert queued is True and [a["accepted"] for a in answers] == [1]
    assert page.evaluate(run) == [False, []]  # the same day again: capped, nothing sent
    assert Batch.objects.count() == 1 and StagedReports.objects.count() == 1


def test_the_page_example_records_on_change(page, key):
    page.goto("/login")
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    html = (f'<meta name="privtel-key" content="{key}"><label for="theme">Theme</label>'
            '<select id="theme"><option>theme_01</option><option>theme_03</option></select>' + PAGE_EXAMPLE)
    page.set_content(html)
    page.get_by_label("Theme").select_option("theme_03")
    page.wait_for_function("() => (localStorage.getItem('privtel:state') || '').includes('app_theme')")
    state = json.loads(page.evaluate("() => localStorage.getItem('privtel:state')"))
    (entry,) = state["days"].values()
    assert entry["app_theme"]["reports"] == 1 and not errors
