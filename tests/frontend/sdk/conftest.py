"""Fixtures of the browser SDK's tests: Debian's Chromium driven by Playwright, and a static server.

Chromium is ``/usr/bin/chromium`` (``deploy/test.sh`` installs it when missing). Without it, or without
Playwright, a browser test is skipped with the reason on a laptop and fails under ``CI=true``.
The static server serves only the SDK and its checks (``tests/frontend/sdk/checks.mjs``), from the
repository, so the SDK's own checks run in the browser with no Django at all.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SERVED = ("frontend/static/frontend/sdk/", "tests/frontend/sdk/")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(reason: str) -> None:
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session."""
    if not CHROMIUM.exists():
        _missing(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("needs Playwright for Python (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _SdkFiles(SimpleHTTPRequestHandler):
    """The SDK and its checks as JavaScript modules, a blank page at /, nothing else."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

    def do_GET(self):
        path = self.path.split("?")[0].lstrip("/")
        if path == "":
            body = b"<!doctype html><title>privtel sdk checks</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.startswith(SERVED) and ".." not in path:
            super().do_GET()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def sdk_origin():
    """Base URL of a static server of the SDK and its checks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_SdkFiles, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def checks_page(chromium, sdk_origin):
    """A page on the static server; ``page.evaluate`` can import ``/tests/frontend/sdk/checks.mjs``."""
    context = chromium.new_context()
    page = context.new_page()
    page.goto(sdk_origin + "/")
    yield page
    context.close()
