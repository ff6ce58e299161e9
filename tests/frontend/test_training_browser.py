"""The training pages in a real browser, with a real Celery worker on the real Redis broker: a tiny job
on scikit-learn's digits made in the form runs, its page follows it live to the end (curves drawn), the
model card; a running job cancelled from its page returns the unspent ε, which the datasets page shows.

With ``TRAINING_SCREENSHOTS_DIR`` set (tests/frontend/screenshots_training.sh), the last test also
saves the pages at 1280 and 390 pixels wide as training-*.png there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from pages_testing import DESKTOP, PHONE, with_password

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DELTA = 1e-6


@pytest.fixture
def trainer(q, settings, tmp_path):
    from federation.services import ensure_default_dataset

    settings.VAR_DIR = tmp_path
    settings.TRAINING_DATA_DIR = tmp_path / "datasets"
    ensure_default_dataset()  # transactional tests start from an empty database
    user, _ = q.user("root", "admin")
    q.set_budget(user, 100, "approximate", delta=DELTA)
    return with_password(user)


@pytest.fixture
def worker(trainer, tmp_path):
    """One training worker (``celery -A deploy worker -Q training -c 1``) on this test's database."""
    database = connection.settings_dict
    env = {**os.environ, "VAR_DIR": str(tmp_path), "TRAINING_DATA_DIR": str(tmp_path / "datasets"),
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
           "CELERY_TASK_ALWAYS_EAGER": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deploy", "worker", "-Q", "training", "-c", "1", "--pool", "solo",
         "--loglevel", "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.kill()
    process.wait(timeout=30)


def make_job(page, *, epochs: str, batch: str, checkpoint: str) -> int:
    page.set_default_timeout(60_000)  # a worker starting up (importing torch) slows this 2-core machine
    page.goto("/training/jobs/new")
    page.get_by_label("Dataset").select_option("digits")
    page.get_by_label("Model").select_option("mlp")
    page.get_by_label("Epochs").fill(epochs)
    page.get_by_label("Expected batch size").fill(batch)
    page.get_by_label("Noise multiplier σ directly").check()
    page.get_by_label("Noise multiplier σ", exact=True).fill("1.0")
    page.get_by_label("Checkpoint every (steps)").fill(checkpoint)
    page.get_by_role("button", name="Reserve ε and start").click()
    page.wait_for_url("**/training/jobs/*")
    return int(page.url.rsplit("/", 1)[1].split("?")[0])


def wait_for_text(page, testid: str, predicate, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = page.get_by_test_id(testid).inner_text()
        if predicate(text):
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{testid} stayed {text!r}")


def points_drawn(page) -> list[int]:
    return page.evaluate("""() => ['chart-loss', 'chart-accuracy', 'chart-epsilon'].map(
        id => Chart.getChart(document.getElementById(id)).data.datasets[0].data.length)""")


def test_a_job_from_the_form_runs_on_a_worker_and_its_page_follows_it_to_the_model_card(page, login, trainer,
                                                                                          worker):
    login(page, "root", next_path="/training/jobs/new")
    job_id = make_job(page, epochs="2", batch="64", checkpoint="10")  # 22 steps an epoch: 44 steps
    wait_for_text(page, "status", lambda text: text == "succeeded")  # the page polls, then reloads
    assert points_drawn(page) == [5, 5, 5]  # checkpoints at 10, 20, 30, 40, 44
    assert page.get_by_test_id("steps").inner_text() == "44"
    assert float(page.get_by_test_id("epsilon-refunded").inner_text()) == 0
    assert page.get_by_role("button", name="Cancel job").count() == 0
    page.get_by_role("link", name="Model card").click()
    page.wait_for_url(f"**/training/jobs/{job_id}/card")
    assert "each training example" in page.get_by_test_id("guarantee").inner_text()
    charged = page.get_by_test_id("card-epsilon").inner_text()
    assert float(charged) > 0 and 0 < float(page.get_by_test_id("card-accuracy").inner_text()) <= 1
    page.goto("/training/datasets")
    assert page.get_by_test_id("dataset-digits").get_by_test_id("spent").inner_text() == charged


def test_a_running_job_cancelled_from_its_page_returns_the_unspent_epsilon(page, login, trainer, worker):
    login(page, "root", next_path="/training/jobs/new")
    job_id = make_job(page, epochs="200", batch="32", checkpoint="20")  # 9000 steps: minutes, unless cancelled
    wait_for_text(page, "steps", lambda text: int(text) >= 20)
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_url(f"**/training/jobs/{job_id}?cancelled=1")
    assert page.get_by_role("status").inner_text().startswith("Cancel requested")
    wait_for_text(page, "status", lambda text: text == "cancelled")
    reserved = float(page.get_by_test_id("epsilon-reserved").inner_text())
    charged = float(page.get_by_test_id("epsilon-charged").inner_text())
    refunded = float(page.get_by_test_id("epsilon-refunded").inner_text())
    assert 0 < charged < reserved and abs(charged + refunded - reserved) < 2e-6
    page.goto("/training/datasets")
    assert float(page.get_by_test_id("dataset-digits").get_by_test_id("spent").inner_text()) == charged


def test_screenshots(new_page, login, trainer, worker):
    """Saved only when TRAINING_SCREENSHOTS_DIR names a directory (tests/frontend/screenshots_training.sh)."""
    target = os.environ.get("TRAINING_SCREENSHOTS_DIR")
    if not target:
        pytest.skip("set TRAINING_SCREENSHOTS_DIR to save the training pages' screenshots")
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    page = new_page(DESKTOP)
    login(page, "root", next_path="/training/jobs/new")
    done = make_job(page, epochs="4", batch="64", checkpoint="8")
    wait_for_text(page, "status", lambda text: text == "succeeded")
    running = make_job(page, epochs="200", batch="32", checkpoint="20")
    wait_for_text(page, "steps", lambda text: int(text) >= 60)
    pages = {"jobs": "/training", "form": "/training/jobs/new", "progress": f"/training/jobs/{running}",
             "finished": f"/training/jobs/{done}", "card": f"/training/jobs/{done}/card",
             "datasets": "/training/datasets"}
    for width_name, viewport in (("1280", DESKTOP), ("390", PHONE)):
        shot = new_page(viewport)
        login(shot, "root", next_path="/training")
        for name, path in pages.items():
            shot.goto(path)
            shot.wait_for_load_state("networkidle")
            shot.wait_for_timeout(300)  # Chart.js draws without animation; let the layout settle
            shot.screenshot(path=str(directory / f"training-{name}-{width_name}.png"), full_page=True)
    page.goto(f"/training/jobs/{running}")
    page.get_by_role("button", name="Cancel job").click()
    wait_for_text(page, "status", lambda text: text == "cancelled")
