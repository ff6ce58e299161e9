"""Fixtures of the browser SDK's own checks: a static server of the SDK and its checks, no Django.

The browser is tests/frontend/conftest.py's ``browser`` (Debian's Chromium through Playwright). The
static server serves only ``frontend/static/frontend/sdk/`` and ``tests/frontend/sdk/`` from the
repository, so the SDK's client checks and the cross-check with privacy/ldp run in Chromium without a
database. The tests that talk to the app (``test_browser_sdk_live.py``) use the live server instead.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVED = ("frontend/static/frontend/sdk/", "tests/frontend/sdk/")


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


@pytest.fixture(scope="module")
def sdk_origin():
    """Base URL of a static server of the SDK and its checks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_SdkFiles, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def checks_page(browser, sdk_origin):
    """A page on the static server; ``page.evaluate`` can import ``/tests/frontend/sdk/checks.mjs``."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(sdk_origin + "/")
    yield page
    context.close()
