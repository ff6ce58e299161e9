"""Run the whole service with demo data on this machine.

Migrates, loads a demo catalog, creates an ingest key, an analyst and an
admin, starts a Celery worker (with beat, for the roll-up) and the web
server, then feeds simulated clients through the real SDK over HTTP.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from telemetry import services
from telemetry.models import Metric
from telemetry.rollup import advance_rollup
from telemetry.sdk.simulate import simulate_population

DEMO_METRICS = [
    {"name": "app_theme", "protocol": "krr", "epsilon": 2.0,
     "domain": [f"theme_{i:02d}" for i in range(20)], "description": "The spec's k=20, ε=2 k-RR metric."},
    {"name": "screen_size", "protocol": "auto", "epsilon": 2.0,
     "domain": ["phone_s", "phone_m", "phone_l", "tablet", "laptop", "desktop", "tv", "watch"]},
    {"name": "favorite_feature", "protocol": "oue", "epsilon": 1.0,
     "domain": ["search", "sync", "share", "export", "themes", "offline"]},
]
DEMO_SKEW = {"app_theme": [30, 20, 15, 10, 8, 5, 4, 3, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
             "screen_size": [25, 30, 20, 8, 10, 5, 1, 1], "favorite_feature": [40, 25, 15, 10, 5, 5]}
DEMO_REGIONS = ["US", "DE", "FR", "BR", "IN", "JP"]


def demo_environment() -> dict[str, str]:
    """The worker's and web server's environment: the region axis is the demo's regions (PRIVACY_REGIONS),
    unless set, so a query grouped by region is not a grid of every ISO country, nearly all empty."""
    return {**os.environ, "PRIVACY_REGIONS": os.environ.get("PRIVACY_REGIONS") or ",".join(DEMO_REGIONS)}


#: The demo users' passwords for the pages (the demo serves only 127.0.0.1); printed at start.
DEMO_PASSWORDS = {"demo_analyst": "analyst-demo", "demo_admin": "admin-demo"}


class Command(BaseCommand):
    help = "Run the service on embedded defaults with a demo catalog and simulated clients."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--users", type=int, default=100, help="Simulated users per metric, day and region.")
        parser.add_argument("--exit-after-seed", action="store_true", help="Stop once the demo data is in.")

    def handle(self, *args, port, users, exit_after_seed, **options):
        call_command("migrate", verbosity=0)
        self._load_catalog()
        _, ingest_key = services.create_ingest_key(app="demo")
        analyst_token, admin_token = self._user_token("demo_analyst", "analyst"), self._user_token("demo_admin", "admin")
        base_url = f"http://127.0.0.1:{port}"
        processes = [self._start_worker(), self._start_web(port)]
        try:
            self._wait_for(base_url)
            self._seed(base_url, ingest_key, users)
            self._print_welcome(base_url, ingest_key, analyst_token, admin_token)
            while not exit_after_seed:
                if any(p.poll() is not None for p in processes):
                    raise CommandError("a demo process stopped; see its output above")
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)

    def _load_catalog(self) -> None:
        for definition in DEMO_METRICS:
            if not Metric.objects.filter(name=definition["name"]).exists():
                metric = services.create_metric(**definition)
                self.stdout.write(f"metric {metric.name}: protocol={metric.protocol} k={metric.k} ε={metric.epsilon}")

    def _user_token(self, username: str, role: str) -> str:
        """The user's API token; the user logs in to the pages with their DEMO_PASSWORDS entry."""
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            user = services.create_user(username=username, role=role)[0]
        user.set_password(DEMO_PASSWORDS[username])
        user.save(update_fields=["password"])
        return Token.objects.get_or_create(user=user)[0].key

    def _start_worker(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "deploy", "worker", "-B", "-Q", "default", "-c", "1",
             "--loglevel", "warning", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
            env=demo_environment(),
        )

    def _start_web(self, port: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR, env=demo_environment(),
        )

    def _wait_for(self, base_url: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base_url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise CommandError(f"the web server did not answer at {base_url}")

    def _seed(self, base_url: str, ingest_key: str, users: int) -> None:
        today = datetime.now(timezone.utc).date()
        for name, weights in DEMO_SKEW.items():
            labels = next(m["domain"] for m in DEMO_METRICS if m["name"] == name)
            distribution = dict(zip(labels, weights))
            accepted = 0
            for days_ago in range(3):
                for region in DEMO_REGIONS:
                    result = simulate_population(base_url, ingest_key, distribution, name, users,
                                                 today - timedelta(days=days_ago), region=region, workers=4)
                    accepted += result["accepted"]
            self.stdout.write(f"fed {accepted} randomized reports of {name} through the SDK")
        advance_rollup()

    def _print_welcome(self, base_url: str, ingest_key: str, analyst_token: str, admin_token: str) -> None:
        today = datetime.now(timezone.utc).date()
        self.stdout.write(f"""
The service is up at {base_url}
  pages:          {base_url}/  (open it in a browser)
    log in as an analyst:  demo_analyst / {DEMO_PASSWORDS["demo_analyst"]}
    log in as an admin:    demo_admin / {DEMO_PASSWORDS["demo_admin"]}
  ingest key:     {ingest_key}
  analyst token:  {analyst_token}
  admin token:    {admin_token}

Try a central-DP query (ε = 1 of the analyst's daily 10):
  curl -s -X POST {base_url}/api/v1/queries -H 'Authorization: Token {analyst_token}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"metric": "app_theme", "start": "{today - timedelta(days=2)}", "end": "{today}", "group_by": ["region"]}}'
Stop with Ctrl-C.""")
