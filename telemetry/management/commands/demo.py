"""Run the whole service with demo data on this machine.

Migrates, loads a demo catalog, creates an ingest key, an analyst and an
admin, starts a Celery worker (with beat, for the roll-up) and the web
server, then feeds simulated clients through the real SDK over HTTP.

A rerun is a fresh demo: on the embedded SQLite database the demo's files
(the database, the broker's queue, beat's schedule, training outputs) are
deleted first, so the data is one seeding, the budgets are full and the
printed query is a new release. With ``--keep-data``, and always on any other
database, nothing is deleted and only the (metric, day, region) cells that
hold no reports yet are seeded, so a rerun never doubles the data.

The worker and the web server run in process groups of their own. On SIGTERM,
SIGINT (Ctrl-C) or SIGHUP (the terminal closed) the demo stops both, waits for
them, and kills whatever is left in their groups, so no process outlives it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from rest_framework.authtoken.models import Token

from deploy.api.users import services as user_services
from telemetry import services
from telemetry.models import Metric, ObservedCounts
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
DEMO_DAYS = 3
#: Signals that stop the demo and everything it started: kill, Ctrl-C, and the terminal closing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Seconds a child gets to exit after SIGTERM before its whole process group is killed.
STOP_GRACE_S = 20.0


class Stop(Exception):
    """SIGTERM or SIGINT arrived: unwind to the clean-up."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def stop_processes(processes: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each child (each leads its own process group), wait, then SIGKILL what is left in the groups.

    The Celery worker forks pool processes and beat into its group; a graceful stop takes them down
    with it, and the final SIGKILL of the group takes whatever did not go.
    """
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _kill_group(process.pid)
        process.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: every process in it has exited


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
        parser.add_argument("--keep-data", action="store_true",
                            help="Keep the embedded database of an earlier run; seed only what it lacks.")

    def handle(self, *args, port, users, exit_after_seed, keep_data, **options):
        previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
        processes: list[subprocess.Popen] = []
        try:
            if not keep_data:
                self._start_over()
            call_command("migrate", verbosity=0)
            self._load_catalog()
            _, ingest_key = services.create_ingest_key(app="demo")
            analyst_token, admin_token = self._user_token("demo_analyst", "analyst"), self._user_token("demo_admin", "admin")
            base_url = f"http://127.0.0.1:{port}"
            processes += [self._start_worker(), self._start_web(port)]
            self._wait_for(base_url)
            self._seed(base_url, ingest_key, users)
            self._print_welcome(base_url, ingest_key, analyst_token, admin_token)
            while not exit_after_seed:
                if any(p.poll() is not None for p in processes):
                    raise CommandError("a demo process stopped; see its output above")
                time.sleep(1)
        except Stop as stop:
            self.stdout.write(f"{stop}: stopping the demo")
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            stop_processes(processes)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_over(self) -> None:
        """Delete the embedded demo's files so this run is a fresh demo; never touches another database."""
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.sqlite3":
            return
        var_dir = Path(settings.VAR_DIR).resolve()
        name = Path(database["NAME"]).resolve()
        if var_dir not in name.parents:
            return
        connections.close_all()
        files = [name, *(name.with_name(name.name + suffix) for suffix in ("-wal", "-shm", "-journal")),
                 var_dir / "celerybeat-schedule"]
        folders = [var_dir / "celery-broker", var_dir / "training"]
        removed = [path for path in files + folders if path.exists()]
        for path in removed:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        (var_dir / "celery-broker" / "processed").mkdir(parents=True, exist_ok=True)  # as settings made it
        if removed:
            self.stdout.write(f"starting a fresh demo: removed the previous demo data in {var_dir} (--keep-data keeps it)")

    def _load_catalog(self) -> None:
        for definition in DEMO_METRICS:
            if not Metric.objects.filter(name=definition["name"]).exists():
                metric = services.create_metric(**definition)
                self.stdout.write(f"metric {metric.name}: protocol={metric.protocol} k={metric.k} ε={metric.epsilon}")

    def _user_token(self, username: str, role: str) -> str:
        """The user's API token; the user logs in to the pages with their DEMO_PASSWORDS entry."""
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            user = user_services.create_user(username=username, role=role)[0]
        user.set_password(DEMO_PASSWORDS[username])
        user.save(update_fields=["password"])
        return Token.objects.get_or_create(user=user)[0].key

    def _start_worker(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "deploy", "worker", "-B", "-Q", "default", "-c", "1",
             "--loglevel", "warning", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
            env=demo_environment(), start_new_session=True,
        )

    def _start_web(self, port: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR, env=demo_environment(), start_new_session=True,
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
        """Feed ``users`` simulated clients per (metric, day, region) cell that holds no reports yet."""
        advance_rollup()  # count whatever an interrupted earlier run left staged
        today = datetime.now(timezone.utc).date()
        for name, weights in DEMO_SKEW.items():
            labels = next(m["domain"] for m in DEMO_METRICS if m["name"] == name)
            distribution = dict(zip(labels, weights))
            current = Metric.objects.filter(name=name).order_by("-version").first()
            seeded = set(ObservedCounts.objects.filter(metric=current, reports__gt=0).values_list("day", "region"))
            accepted = 0
            for days_ago in range(DEMO_DAYS):
                day = today - timedelta(days=days_ago)
                for region in DEMO_REGIONS:
                    if (day, region) in seeded:
                        continue
                    result = simulate_population(base_url, ingest_key, distribution, name, users, day,
                                                 region=region, workers=4)
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
Stop with Ctrl-C or SIGTERM (kill {os.getpid()}): the web server and the worker stop with it.""")
