"""Training jobs end to end with real Celery workers on the real Redis broker (issue 11), and the
``canaries`` option (the one-run audit in the model card), first in-process.

The workers are subprocesses (``celery -A deploy worker -Q training -c 1 --pool solo``) on this
test's database (so the test is transactional: the workers see committed rows only) and on
Redis db ``REDIS_URL``, with a 5 s visibility timeout so that the broker redelivers the job of a
worker killed with SIGKILL in seconds, not in an hour. Jobs are created over the API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from accounting.calibration import dpsgd_epsilon
from accounting.models import LedgerEntry
from federation import selectors
from federation.models import TrainingJob


DELTA = 1e-6
ROOT = Path(__file__).resolve().parents[2]
VISIBILITY_TIMEOUT_S = 5


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.TRAINING_DATA_DIR = tmp_path / "datasets"
    return tmp_path


@pytest.fixture
def api(q, var_dir):
    user, token = q.user("trainer", "admin")
    q.set_budget(user, 100, "approximate", delta=DELTA)
    return q.client(token)


@pytest.fixture
def digits(db):
    """The digits dataset: a transactional test may run after another one flushed the migration's row."""
    from federation.services import ensure_default_dataset

    return ensure_default_dataset()


@pytest.fixture
def start_worker(var_dir, tmp_path):
    """Starts a training worker on the test database; every one still running is killed at the end."""
    database = connection.settings_dict
    env = {**os.environ, "VAR_DIR": str(var_dir), "TRAINING_DATA_DIR": str(var_dir / "datasets"),
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
           "CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S), "CELERY_TASK_ALWAYS_EAGER": "false",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    workers = []

    def start() -> subprocess.Popen:
        log = (tmp_path / f"worker-{len(workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "deploy", "worker", "-Q", "training", "-c", "1", "--pool", "solo",
             "--loglevel", "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _create(api, **overrides) -> int:
    # An MLP at batch 32 on digits: 45 steps an epoch, checkpoints every 30 steps; a few seconds of training.
    body = {"dataset": "digits", "model": "mlp", "epochs": 8, "batch_size": 32, "learning_rate": 0.5,
            "clip_norm": 1.0, "noise_multiplier": 1.0, "seed": 5, "checkpoint_every": 30, **overrides}
    response = api.post("/api/v1/training/jobs", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def _shown(api, job_id: int) -> dict:
    return api.get(f"/api/v1/training/jobs/{job_id}").json()


@pytest.mark.django_db
@pytest.mark.parametrize("canaries", [-1, 1439, "4", True])
def test_a_bad_canary_count_is_refused_and_writes_nothing(api, canaries):
    response = api.post("/api/v1/training/jobs", {"dataset": "digits", "model": "logreg", "epochs": 1,
                        "batch_size": 64, "learning_rate": 0.5, "clip_norm": 1.0, "noise_multiplier": 1.0,
                        "canaries": canaries}, format="json")
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid_training_parameter", "canaries")
    assert not TrainingJob.objects.exists() and not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_canaries_are_drawn_once_and_their_audit_is_in_the_model_card(api, monkeypatch):
    from federation.tasks import run_training_job
    from privacy.dpsgd import audit

    monkeypatch.setattr("federation.services._enqueue", lambda job_id: None)  # run in-process below
    job_id = _create(api, model="logreg", epochs=1, batch_size=256, checkpoint_every=2, canaries=30)
    drawn = []
    make = audit.make_canaries
    monkeypatch.setattr(audit, "make_canaries", lambda *args: drawn.append(make(*args)) or drawn[-1])
    job = TrainingJob.objects.get(pk=job_id)
    assert run_training_job(job_id) == "succeeded"
    [canaries] = drawn
    stored = audit.load_canaries(selectors.job_dir(job) / "canaries.npz")
    assert (stored.features == canaries.features).all() and (stored.included == canaries.included).all()
    card = _shown(api, job_id)["model_card"]
    assert card["audit"]["canaries"] == 30 and card["audit"]["guesses"] == 14 and card["audit"]["confidence"] == 0.95
    assert 0 <= card["audit"]["epsilon_lower_bound"] <= card["privacy"]["epsilon"]
    assert any("canaries" in note for note in card["notes"])
    assert _shown(api, job_id)["parameters"]["canaries"] == 30
    # a rerun (a redelivery after a crash) reads the stored canaries instead of drawing new ones
    TrainingJob.objects.filter(pk=job_id).update(status="running")
    assert run_training_job(job_id) == "succeeded" and len(drawn) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_loses_nothing_and_the_job_resumes_on_a_new_worker(api, start_worker, digits):
    job_id = _create(api, canaries=40)
    first = start_worker()
    # progress: past a checkpoint, not finished
    shown = _wait_for(lambda: (lambda body: body if body["progress"]["steps_done"] >= 30 else None)(_shown(api, job_id)),
                      120, "a checkpoint")
    assert shown["status"] == "running" and shown["device"] == "cpu"
    assert 0 < shown["progress"]["epsilon_spent"] < shown["epsilon_charged"]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = TrainingJob.objects.get(pk=job_id)
    assert killed_at.status == "running" and killed_at.steps_done < killed_at.total_steps, "killed too late"

    start_worker()  # the broker redelivers the unacknowledged task after the visibility timeout
    job = _wait_for(lambda: (lambda j: j if j.status not in ("queued", "running") else None)(
        TrainingJob.objects.get(pk=job_id)), 180, "the resumed job to finish")
    assert job.status == "succeeded", job.log
    assert any("resumed from the checkpoint of step" in line for line in job.log)
    assert job.steps_done == job.total_steps == 8 * 45
    uncrashed = dpsgd_epsilon(job.noise_multiplier, job.sampling_probability, job.total_steps, job.delta)
    assert job.epsilon_spent == uncrashed
    assert LedgerEntry.objects.filter(subject_kind="training_job", subject_id=str(job_id)).count() == 1
    card = _shown(api, job_id)["model_card"]
    assert card["privacy"]["steps"] == job.total_steps and card["privacy"]["epsilon_pld"] == uncrashed
    assert card["test_accuracy"] == job.test_accuracy > 0.5
    audit = card["audit"]
    assert audit["canaries"] == 40 and audit["confidence"] == 0.95 and "Steinke" in audit["method"]
    assert 0 <= audit["epsilon_lower_bound"] <= card["privacy"]["epsilon"]
    assert (selectors.job_dir(job) / "weights.pt").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_running_job_is_cancelled_by_the_api_and_a_finished_one_is_not(api, start_worker, digits):
    start_worker()
    job_id = _create(api, epochs=40)
    _wait_for(lambda: _shown(api, job_id)["progress"]["steps_done"] >= 30, 120, "a checkpoint")
    assert api.post(f"/api/v1/training/jobs/{job_id}/cancel").status_code == 202
    job = _wait_for(lambda: (lambda j: j if j.status != "running" else None)(TrainingJob.objects.get(pk=job_id)),
                    60, "the cancellation")
    assert job.status == "cancelled" and 30 <= job.steps_done < job.total_steps
    assert job.model_card is None
    assert api.post(f"/api/v1/training/jobs/{job_id}/cancel").json()["code"] == "job_finished"
    # the reservation and its settlement at the steps taken (at least the checkpointed ones, never all T)
    reserved, settled = LedgerEntry.objects.filter(subject_kind="training_job", subject_id=str(job_id)).order_by("id")
    assert settled.event["steps"] == job.steps_charged and job.steps_done <= job.steps_charged < job.total_steps
    assert settled.epsilon_micro == reserved.epsilon_micro - job.epsilon_refunded_micro < reserved.epsilon_micro
