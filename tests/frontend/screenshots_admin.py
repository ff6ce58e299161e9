"""Screenshots of the admins' pages at desktop (1280 px) and phone (390 px) width: docs/screenshots/admin-*.png.

    .venv/bin/python tests/frontend/screenshots_admin.py

It makes a throwaway embedded site (SQLite in a temporary VAR_DIR), seeds it with its own data
(three weeks of reports, queries by two analysts on each of the last two weeks, run under
time-machine so each day's budget is really charged, ingest keys, users, budgets), serves it with
``manage.py runserver`` on a free port, logs in as an admin and shoots every admin page. Not a
test (pytest does not collect it); it needs Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
MAX_HEIGHT = 3000
ADMIN = ("site_admin", "admin-screenshots")
PASSWORD = "analyst-screenshots"
REGIONS = ("DE", "FR", "US")


# --- the seed (run in a child process with Django set up) -----------------------------------------


def seed() -> None:
    from datetime import datetime, time as day_time, timedelta, timezone

    import django

    django.setup()
    import numpy as np
    import time_machine
    from django.core.management import call_command

    from accounting.services.policies import set_analyst_budget, set_group_budget, set_partition_cap
    from deploy.api.users.services import change_user, create_user
    from telemetry import services, staging
    from telemetry.catalog import catalog, partition_scope
    from telemetry.models import StagedReports
    from telemetry.release.request import parse_query_request
    from telemetry.release.service import run_query
    from telemetry.rollup import advance_rollup

    call_command("migrate", verbosity=0)
    today = datetime.now(timezone.utc).date()
    theme = services.create_metric(name="app_theme", domain=["light", "dark", "sepia", "high_contrast"],
                                   epsilon=2, protocol="krr", description="Theme chosen in the settings")
    services.create_metric(name="favorite_feature", domain=["sync", "search", "export", "share", "tags", "offline"],
                           epsilon=3, protocol="oue")
    screen = services.create_metric(name="screen_size", domain=["small", "medium", "large"], epsilon=1)
    services.change_metric(name="screen_size", epsilon=1.5)  # a second version
    catalog.invalidate()

    # Synthetic counts (not privacy noise: numpy's seeded generator is fine for demo data).
    rng = np.random.default_rng(7)
    spec = catalog.by_id(theme.id)
    rows = []
    for offset in range(20, -1, -1):
        day = today - timedelta(days=offset)
        for region in REGIONS:
            for value, mean in enumerate((260, 180, 40, 12)):
                rows += [(theme.id, day, region, value, None)] * int(rng.poisson(mean))
    StagedReports.objects.create(metric_id=theme.id, payload=staging.pack_rows(spec, rows))
    advance_rollup()

    _, admin_token = create_user(username=ADMIN[0], role="admin", password=ADMIN[1])
    ana, _ = create_user(username="ana", role="analyst", password=PASSWORD)
    bob, _ = create_user(username="bob", role="analyst", password=PASSWORD)
    create_user(username="carol", role="analyst")
    dave, _ = create_user(username="dave", role="analyst")
    admin = ana.__class__.objects.get(username=ADMIN[0])
    change_user(actor=admin, username="dave", active=False)
    set_group_budget(name="analyst", daily_epsilon_micro=4_000_000)
    set_analyst_budget(username="ana", daily_epsilon_micro=6_000_000, composition="approximate")
    set_partition_cap(scope=partition_scope(theme.id), lifetime_epsilon_micro=20_000_000)

    for offset in range(13, -1, -1):
        day = today - timedelta(days=offset)
        with time_machine.travel(datetime.combine(day, day_time(12), tzinfo=timezone.utc), tick=False):
            for user, epsilon, span in ((ana, 0.5 + (offset % 4) * 0.5, 2), (bob, 0.25 + (offset % 3) * 0.5, 0)):
                body = {"metric": "app_theme", "start": (day - timedelta(days=span)).isoformat(),
                        "end": day.isoformat(), "group_by": ["day"], "epsilon": epsilon}
                run_query(user=user, request=parse_query_request(body))
            if offset % 5 == 0:
                body = {"metric": "app_theme", "start": day.isoformat(), "end": day.isoformat(),
                        "group_by": ["region"], "epsilon": 1}
                run_query(user=ana, request=parse_query_request(body))

    services.create_ingest_key(app="checkout-web")
    services.create_ingest_key(app="android-app")
    old, _ = services.create_ingest_key(app="ios-app-2025")
    services.revoke_ingest_key(key_id=old.id)
    print(f"seeded {screen.name} and the rest; admin token {admin_token[:4]}...")


# --- the server and the shots ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(var_dir: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "AUDIT_KEY", "SECRET_KEY", "LOG_SIGNING_KEY", "DEBUG"}}
    env.update(VAR_DIR=var_dir, PYTHONPATH=str(REPO), DJANGO_SETTINGS_MODULE="deploy.settings",
               PRIVACY_REGIONS=",".join(REGIONS))
    return env


def serve(var_dir: str) -> tuple[subprocess.Popen, str]:
    env = _environment(var_dir)
    subprocess.run([sys.executable, __file__, "--seed"], cwd=REPO, env=env, check=True)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base_url}/health", timeout=2)
            return server, base_url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not start")


def _first_release_verified(page) -> None:
    page.goto("/admin/releases")
    page.locator("tbody tr").first.get_by_role("button").click()
    page.get_by_test_id("verdict").wait_for()


def _key_created(page) -> None:
    page.goto("/admin/ingest-keys")
    page.get_by_label("App", exact=True).fill("web-dashboard")
    page.get_by_role("button", name="Create the key").click()
    page.get_by_test_id("plaintext").wait_for()


SHOTS = [
    ("overview", lambda page: page.goto("/admin")),
    ("budgets", lambda page: page.goto("/admin/budgets")),
    ("budget-analyst", lambda page: page.goto("/admin/budgets/analysts/ana")),
    ("budget-group", lambda page: page.goto("/admin/budgets/groups/analyst")),
    ("budget-metric", lambda page: page.goto("/admin/budgets/metrics/app_theme/v1")),
    ("metrics", lambda page: page.goto("/admin/metrics")),
    ("metric", lambda page: page.goto("/admin/metrics/screen_size")),
    ("ingest-keys", lambda page: page.goto("/admin/ingest-keys")),
    ("ingest-key-created", _key_created),
    ("releases", lambda page: page.goto("/admin/releases")),
    ("release-verified", _first_release_verified),
    ("users", lambda page: page.goto("/admin/users")),
    ("user", lambda page: page.goto("/admin/users/ana")),
]


def shoot(base_url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for width, viewport in WIDTHS.items():
            context = browser.new_context(base_url=base_url, viewport=viewport)
            context.set_default_timeout(30_000)
            page = context.new_page()
            page.goto("/login?next=/admin")
            page.get_by_label("Username").fill(ADMIN[0])
            page.get_by_label("Password").fill(ADMIN[1])
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/admin")
            for name, prepare in SHOTS:
                prepare(page)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(300)  # let Chart.js finish drawing
                height = min(MAX_HEIGHT, page.evaluate("() => document.documentElement.scrollHeight"))
                path = out / f"admin-{name}-{width}.png"
                page.screenshot(path=str(path), full_page=True,
                                clip={"x": 0, "y": 0, "width": viewport["width"], "height": height})
                written.append(path)
            context.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)  # the child that seeds
    args = parser.parse_args()
    if args.seed:
        sys.path.insert(0, str(REPO))
        seed()
        return
    with tempfile.TemporaryDirectory(prefix="privtel-admin-shots-") as var_dir:
        server, base_url = serve(var_dir)
        try:
            paths = shoot(base_url, args.out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    for path in paths:
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
