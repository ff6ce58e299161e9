"""Fixtures of the pages' tests: users who log in with a password, a Django test client logged in as
them, and a real Chromium (Playwright) against a live server on the real PostgreSQL and Redis.

Browser tests take the ``page`` fixture (a fresh browser context, 1280x800, whose relative URLs go to
the live server) and are marked ``browser``. Without /usr/bin/chromium they skip with the reason,
except under ``CI=true``, where they fail (deploy/test.sh installs Chromium when it is missing).
"""

from __future__ import annotations

import os

import pytest

from pages_testing import (CHROMIUM, CHROMIUM_ARGS, DESKTOP, PASSWORD, PHONE, in_ci,  # noqa: F401  (re-exported)
                           log_in, with_password)


@pytest.fixture
def page_user(db, q):
    """Factory: ``page_user("ana", "analyst")`` is a user with that role and the password ``PASSWORD``."""
    def make(username: str, role: str = "analyst"):
        return with_password(q.user(username, role)[0])
    return make


@pytest.fixture
def analyst_client(analyst, client):
    """A Django test client logged in (session) as the analyst 'ana' (the ``analyst`` fixture's user)."""
    client.force_login(with_password(analyst[0]))
    return client


@pytest.fixture
def admin_client(admin, client):
    """A Django test client logged in (session) as the admin 'root' (the ``admin`` fixture's user)."""
    client.force_login(with_password(admin[0]))
    return client


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module, driven by Playwright.

    While Playwright runs, the main thread has a running asyncio loop, which makes Django refuse
    ORM calls from it (SynchronousOnlyOperation); tests and fixtures do call the ORM there, and the
    live server has its own threads, so DJANGO_ALLOW_ASYNC_UNSAFE is set for exactly that time.
    """
    if not CHROMIUM.exists():
        message = f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def live_site(live_server, settings):
    """The live server's URL. Its cookies are not ``Secure``: it serves plain HTTP."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    return live_server.url


@pytest.fixture
def new_page(browser, live_site):
    """Factory of pages in fresh browser contexts (own cookies): ``new_page(viewport=PHONE)``."""
    contexts = []

    def make(viewport: dict = DESKTOP):
        context = browser.new_context(base_url=live_site, viewport=viewport)
        context.set_default_timeout(45_000)  # generous: CI shares two cores; a pass never waits this long
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    """A desktop-width page in a fresh browser context on the live server."""
    return new_page()


@pytest.fixture
def login():
    """``login(page, "ana")``: :func:`log_in`."""
    return log_in
