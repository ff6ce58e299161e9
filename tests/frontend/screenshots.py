"""Screenshots of the main pages at desktop (1280 px) and phone (390 px) width, into docs/screenshots/.

    .venv/bin/python tests/frontend/screenshots.py               # starts the demo itself, shoots, stops it
    .venv/bin/python tests/frontend/screenshots.py --url http://127.0.0.1:8000   # a demo already running

Without ``--url`` it runs ``manage.py demo`` (embedded SQLite, its demo data) in a throwaway VAR_DIR on
a free port, so the pictures show what the README's first command shows. Not a test (pytest does not
collect it); it needs Chromium at /usr/bin/chromium. Add a page: one ``Shot`` in ``SHOTS``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
MAX_HEIGHT = 2600  # px of a full-page shot: the long answer tables are cut there
ANALYST, ADMIN = ("demo_analyst", "analyst-demo"), ("demo_admin", "admin-demo")


def day(offset: int) -> str:
    return (datetime.now(timezone.utc).date() + timedelta(days=offset)).isoformat()


def log_in(page: Page, user: tuple[str, str]) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/$"))


def ask(page: Page, metric: str, start: str, group_by: tuple[str, ...], epsilon: str) -> None:
    page.goto("/query")
    page.get_by_label("Metric").select_option(metric)
    page.get_by_label("ε (privacy cost)").fill(epsilon)
    page.get_by_label("First day (UTC)").fill(start)
    page.get_by_label("Last day (UTC)").fill(day(0))
    for field in ("day", "region"):
        page.get_by_label(field, exact=True).set_checked(field in group_by)
    page.get_by_role("button", name="Preview the cost").click()
    page.get_by_test_id("preview").wait_for()


def run(page: Page, *query) -> None:
    ask(page, *query)
    page.get_by_test_id("preview").get_by_role("button").click()
    page.wait_for_selector("#answer-chart[data-rendered=true]")


@dataclass(frozen=True)
class Shot:
    name: str
    user: tuple[str, str] | None  # who is logged in (None: nobody)
    prepare: Callable[[Page], None]  # brings the page to the state shown


OVER_DAYS = ("screen_size", day(-2), ("day",), "1")
OVER_DAYS_BY_REGION = ("screen_size", day(-2), ("day", "region"), "1")
BY_REGION = ("screen_size", day(-2), ("region",), "1")
SHOTS = [
    Shot("login", None, lambda page: page.goto("/login")),
    Shot("dashboard", ANALYST, lambda page: page.goto("/")),
    Shot("metrics", ANALYST, lambda page: page.goto("/metrics")),
    Shot("query-preview", ANALYST, lambda page: ask(page, "favorite_feature", day(-2), ("day",), "0.5")),
    # each query is paid at the first width, and served again, free, at the second
    Shot("answer-over-days", ANALYST, lambda page: run(page, *OVER_DAYS)),
    Shot("answer-over-days-by-region", ANALYST, lambda page: run(page, *OVER_DAYS_BY_REGION)),
    Shot("answer-by-region", ANALYST, lambda page: run(page, *BY_REGION)),
    Shot("releases", ANALYST, lambda page: page.goto("/releases")),
    Shot("query-budget-exhausted", ANALYST, lambda page: ask(page, "app_theme", day(-1), ("region",), "8")),
]


def shoot(base_url: str, out: Path, shots: list[Shot], widths: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for width in widths:
            viewport = WIDTHS[width]
            sessions = {}
            for shot in shots:
                if shot.user not in sessions:
                    context = browser.new_context(base_url=base_url, viewport=viewport)
                    context.set_default_timeout(30_000)
                    sessions[shot.user] = context.new_page()
                    if shot.user is not None:
                        log_in(sessions[shot.user], shot.user)
                page = sessions[shot.user]
                shot.prepare(page)
                page.wait_for_load_state("networkidle")
                height = min(MAX_HEIGHT, page.evaluate("() => document.documentElement.scrollHeight"))
                path = out / f"{shot.name}-{width}.png"
                page.screenshot(path=str(path), full_page=True,
                                clip={"x": 0, "y": 0, "width": viewport["width"], "height": height})
                written.append(path)
            for page in sessions.values():
                page.context.close()
        browser.close()
    return written


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(var_dir: str) -> tuple[subprocess.Popen, str]:
    """``manage.py demo`` on embedded defaults in ``var_dir``; (process, base URL) once it printed its logins."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "AUDIT_KEY", "SECRET_KEY", "LOG_SIGNING_KEY", "DEBUG"}}
    env.update(VAR_DIR=var_dir, PYTHONPATH=str(REPO))
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    for line in demo.stdout:
        if "log in as an admin" in line:
            return demo, f"http://127.0.0.1:{port}"
        if time.monotonic() > deadline:
            break
    stop_demo(demo)
    raise SystemExit("the demo did not start")


def stop_demo(demo: subprocess.Popen) -> None:
    try:
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(demo.pid, signal.SIGKILL)  # whatever of its group is left
    except ProcessLookupError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running demo's base URL; default: start one")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--only", nargs="+", choices=[shot.name for shot in SHOTS], help="these shots only")
    parser.add_argument("--widths", nargs="+", choices=list(WIDTHS), default=list(WIDTHS))
    args = parser.parse_args()
    shots = [shot for shot in SHOTS if not args.only or shot.name in args.only]
    if args.url:
        paths = shoot(args.url.rstrip("/"), args.out, shots, args.widths)
    else:
        with tempfile.TemporaryDirectory(prefix="privtel-shots-") as var_dir:
            demo, base_url = start_demo(var_dir)
            try:
                paths = shoot(base_url, args.out, shots, args.widths)
            finally:
                stop_demo(demo)
    for path in paths:
        print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


if __name__ == "__main__":
    main()
