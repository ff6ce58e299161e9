"""The pages and their static files under the servers that run them, with DEBUG off: gunicorn (the
production config) and Django's server (the demo's). Neither request touches the database, but the
servers start only with the production settings that PostgreSQL and Redis come with (deploy/test.sh)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers, response.read()


@pytest.fixture(params=["gunicorn", "runserver"])
def server(request, postgres_and_redis):
    port = _free_port()
    env = {**os.environ, "DEBUG": "false", "SECURE_SSL_REDIRECT": "false", "GUNICORN_BIND": f"127.0.0.1:{port}",
           "GUNICORN_WORKERS": "1", "LOG_LEVEL": "ERROR", "PYTHONPATH": str(REPO)}
    if request.param == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "deploy.wsgi"]
    else:
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base_url}/health")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, f"{request.param} did not start"
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_login_page_and_its_static_files_are_served_with_debug_off(server):
    status, headers, body = _get(f"{server}/login")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="/static/frontend/css/app.css"' in body
    status, headers, body = _get(f"{server}/static/frontend/css/app.css")
    assert (status, headers["Content-Type"].split(";")[0], headers["Cache-Control"]) == (200, "text/css",
                                                                                         "public, max-age=3600")
    status, headers, body = _get(f"{server}/static/frontend/vendor/chartjs/chart.umd.js")
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/javascript")
    assert body.startswith(b"/*!\n * Chart.js v4.4.9")
