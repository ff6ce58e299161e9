"""End to end: 100,000 simulated users -> Python SDK -> HTTP (gunicorn) -> PostgreSQL -> roll-up -> debiasing.

Each user is its own TelemetryClient (own client_id) and reports one true
value of each of two metrics (k-RR, and subset selection as "auto" picks at
k=20, ε=2) in one batch. The test reads the rolled-up raw counts (the service
never releases them: analysts get central-DP answers) and debiases them itself
with the privacy.ldp estimators. The true distribution is known exactly, so every
debiased count must land within 4 standard deviations of the truth, using the
estimator's exact variance (Wang et al. 2017) at the true counts. With 40
estimates the chance that a correct pipeline fails is 40 x 6.3e-5 ~ 0.3%.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import connection

from telemetry import services
from telemetry.catalog import catalog
from telemetry.rollup import advance_rollup
from privacy.ldp import norm_sub
from telemetry.models import ObservedCounts
from telemetry.sdk import HttpTransport, TelemetryClient
from telemetry.selectors import observed_rows

USERS = 100_000
WORKERS = 8
K = 20
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_server():
    """The service under gunicorn, on the test database (the test commits, so the server sees its rows)."""
    port = _free_port()
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": settings.REDIS_URL, "AUDIT_KEY": settings.AUDIT_KEY, "DEBUG": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "deploy.wsgi", "-b", f"127.0.0.1:{port}", "-w", "3", "--log-level", "warning"],
        cwd=REPO, env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base_url}/health", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("gunicorn did not start")
            time.sleep(0.3)
    yield base_url
    process.terminate()
    process.wait(timeout=30)


def _true_values(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weights = 1.0 / np.arange(1, K + 1) ** 1.1  # a Zipf-like, skewed distribution
    counts = np.floor(weights / weights.sum() * USERS).astype(np.int64)
    counts[0] += USERS - counts.sum()
    values = np.repeat(np.arange(K), counts)
    rng.shuffle(values)
    return values, counts


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_100k_users_through_sdk_and_http_debias_within_4_sd(gunicorn_server):
    domain = [f"v{i:02d}" for i in range(K)]
    services.create_metric(name="e2e_krr", domain=domain, epsilon=2.0, protocol="krr")
    services.create_metric(name="e2e_auto", domain=domain, epsilon=2.0, protocol="auto")
    _, api_key = services.create_ingest_key(app="e2e")
    day = datetime.now(timezone.utc).date()
    values, true_counts = _true_values(np.random.default_rng(20261123))
    with TelemetryClient(gunicorn_server, api_key) as bootstrap:
        specs = [bootstrap.metric("e2e_krr"), bootstrap.metric("e2e_auto")]

    def run_users(chunk: np.ndarray) -> tuple[int, int]:
        accepted = rejected = 0
        transport = HttpTransport(gunicorn_server, api_key)
        try:
            for value in chunk:
                client = TelemetryClient(gunicorn_server, api_key, catalog=specs, transport=transport)
                for spec in specs:
                    client.record(spec.name, domain[value], day=day)
                for response in client.flush():
                    accepted, rejected = accepted + response["accepted"], rejected + response["rejected"]
        finally:
            transport.close()
        return accepted, rejected

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(run_users, np.array_split(values, WORKERS)))
    assert sum(r for _, r in results) == 0
    assert sum(a for a, _ in results) == 2 * USERS

    advance_rollup()
    for name in ("e2e_krr", "e2e_auto"):
        spec = catalog.lookup(name)
        rows = observed_rows(spec, day, day)  # the ObservedCounts rows of the day, one per region
        assert rows.regions == [""] and int(rows.reports.sum()) == USERS
        assert ObservedCounts.objects.get(metric_id=spec.id, day=day, region="").reports == USERS
        estimates = spec.oracle.estimate(rows.support.sum(axis=0), USERS)
        sd = np.sqrt(spec.oracle.variance(USERS, true_counts))
        z = (estimates - true_counts) / sd
        assert np.all(np.abs(z) < 4), f"{name} ({spec.protocol}): z-scores {np.round(z, 2).tolist()}"
        consistent = norm_sub(estimates, USERS)
        assert consistent.min() >= 0 and consistent.sum() == pytest.approx(USERS)
    assert catalog.lookup("e2e_auto").protocol == "ss"
