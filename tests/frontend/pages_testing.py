"""What the pages' tests share besides fixtures: import it as ``from pages_testing import PHONE``.

(Not ``from conftest import ...``: with several test directories on pytest's command line, the
name ``conftest`` can be another directory's conftest module.)
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PASSWORD = "correct horse battery staple"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def with_password(user):
    """The user, with the password ``PASSWORD`` (users made by ``create_user`` have none)."""
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def log_in(page, username: str, password: str = PASSWORD, next_path: str = "/") -> None:
    """Log in through the login form, as a person would, and wait for the page it leads to."""
    page.goto(f"/login?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlparse(url).path == next_path)
