"""DP-SGD training jobs (issue 11): datasets, the job API's refusals, the ledger charge, and the
training task end to end on digits (called in-process), with checkpoint/resume and cancellation.

A real Celery worker killed with SIGKILL mid-run is not exercised here: the crash is a
BaseException raised right after a checkpoint is written, which leaves the job row and
files as a killed worker would.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from accounting.calibration import dpsgd_epsilon, rdp_epsilon
from accounting.models import LedgerEntry, PartitionCap, PartitionSpend
from accounting.services.policies import set_partition_cap
from federation import selectors, services
from federation.models import Dataset, TrainingJob
from federation.tasks import run_training_job
from privacy.dpsgd.models import MODELS, build_model
from privacy.dpsgd.runs import TrainingRun, load_weights

torch.set_num_threads(1)
pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # PyTorch training and σ calibration

DELTA = 1e-6
MNIST = Path("/work/shared/data/mnist")


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.TRAINING_DATA_DIR = tmp_path / "datasets"  # the setting's default, under this test's VAR_DIR
    return tmp_path


@pytest.fixture
def admin(q):
    user, token = q.user("trainer", "admin")
    q.set_budget(user, 100, "approximate", delta=DELTA)
    return user, q.client(token)


@pytest.fixture
def digits():
    return Dataset.objects.get(name="digits")


def _job_body(**overrides) -> dict:
    body = {"dataset": "digits", "model": "logreg", "epochs": 1, "batch_size": 256, "learning_rate": 0.5,
            "clip_norm": 1.0, "noise_multiplier": 1.0, "seed": 7, "checkpoint_every": 2}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def _create(api, **overrides):
    return api.post("/api/v1/training/jobs", _job_body(**overrides), format="json")


def _nothing_written() -> bool:
    return not TrainingJob.objects.exists() and not LedgerEntry.objects.exists() \
        and not PartitionSpend.objects.exists()


# --- datasets -----------------------------------------------------------------------------------


def test_the_service_lists_the_zoo_without_importing_torch():
    assert services.MODEL_NAMES == tuple(sorted(MODELS))


def test_digits_is_registered_with_its_holdout_split_and_the_default_cap(admin, digits, settings):
    train, test = selectors.read_dataset(digits)
    assert (digits.num_examples, digits.num_test_examples) == (len(train), len(test)) == (1438, 359)
    assert list(train.input_shape) == digits.input_shape and digits.num_classes == 10
    assert not set(map(bytes, train.features)) & set(map(bytes, test.features[:50]))  # disjoint splits
    [listed] = admin[1].get("/api/v1/training/datasets").json()["datasets"]
    assert listed["lifetime_epsilon"] == float(settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"])


def _npz_bytes(n=40, shape=(3, 4)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    np.savez(buffer, x=rng.random((n, *shape)), y=rng.integers(0, 3, n))
    return buffer.getvalue()


def test_an_npz_and_a_csv_upload_are_stored_with_their_cap(admin, var_dir):
    _, api = admin
    response = api.post("/api/v1/training/datasets", {
        "name": "grid", "kind": "npz", "lifetime_epsilon": 4, "content_base64": base64.b64encode(_npz_bytes()).decode(),
    }, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["num_examples"], body["num_test_examples"], body["input_shape"]) == (32, 8, [3, 4])
    assert body["lifetime_epsilon"] == 4.0 and body["epsilon_spent"] == 0.0
    grid = Dataset.objects.get(name="grid")
    assert Path(grid.path).parent == var_dir / "datasets" / "uploads" and Path(grid.path).read_bytes() == _npz_bytes()
    assert PartitionCap.objects.get(scope=grid.scope).lifetime_epsilon_micro == 4_000_000
    train, test = selectors.read_dataset(grid)
    assert (len(train), len(test)) == (32, 8)

    csv = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    response = api.post("/api/v1/training/datasets", {
        "name": "table", "kind": "csv", "content_base64": base64.b64encode(csv.encode()).decode(),
    }, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["input_shape"] == [2] and response.json()["num_classes"] == 2
    names = [row["name"] for row in api.get("/api/v1/training/datasets").json()["datasets"]]
    assert names == ["digits", "grid", "table"]


@pytest.mark.parametrize("kind, content", [
    ("npz", b"not a zip at all"),
    ("npz", None),  # x without y
    ("csv", b"a,label\n1,0\nx,1\n"),
    ("csv", b"a,b\n1,0\n"),  # no label column
])
def test_a_malformed_upload_is_invalid_dataset_and_nothing_is_stored(admin, var_dir, kind, content):
    _, api = admin
    if content is None:
        buffer = io.BytesIO()
        np.savez(buffer, x=np.zeros((20, 2)))
        content = buffer.getvalue()
    response = api.post("/api/v1/training/datasets", {
        "name": "bad", "kind": kind, "content_base64": base64.b64encode(content).decode()}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_dataset", response.json()
    assert not Dataset.objects.filter(name="bad").exists()
    assert not PartitionCap.objects.exists()
    assert not (var_dir / "datasets").exists() or not any((var_dir / "datasets").rglob("*.*"))


def test_mnist_is_registered_by_a_path_under_the_data_directory(admin, settings):
    if not MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{MNIST} is missing")
        pytest.skip(f"{MNIST} is missing")
    _, api = admin
    settings.TRAINING_DATA_DIR = MNIST.parent
    response = api.post("/api/v1/training/datasets", {"name": "mnist", "kind": "mnist", "path": str(MNIST)},
                        format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["num_examples"], body["num_test_examples"], body["input_shape"]) == (60000, 10000, [1, 28, 28])
    settings.TRAINING_DATA_DIR = MNIST / "nowhere"
    response = api.post("/api/v1/training/datasets", {"name": "m2", "kind": "mnist", "path": str(MNIST)},
                        format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_dataset"


# --- job validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, status, code", [
    ({"noise_multiplier": None, "target_epsilon": 0}, 400, "invalid_epsilon"),
    ({"noise_multiplier": None, "target_epsilon": -1}, 400, "invalid_epsilon"),
    ({"batch_size": 1439}, 400, "invalid_batch_size"),
    ({"model": "resnet"}, 400, "unknown_model"),
    ({"model": "cnn"}, 400, "unknown_model"),  # digits are 8×8, the CNN needs 16×16
    ({"dataset": "imagenet"}, 404, "unknown_dataset"),
    ({"delta": 1e-5}, 400, "invalid_delta"),  # not the policy's δ
    ({"target_epsilon": 1}, 400, "invalid_training_parameter"),  # both σ and a target
    ({"epochs": 0}, 400, "invalid_training_parameter"),
    ({"learning_rate": "fast"}, 400, "invalid_training_parameter"),
    ({"noise_multiplier": 0.1}, 400, "invalid_training_parameter"),
    ({"optimizer": "adam"}, 400, "unknown_field"),
])
def test_job_refusals_have_their_codes_and_write_nothing(admin, overrides, status, code):
    _, api = admin
    response = _create(api, **overrides)
    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert _nothing_written()


def test_a_delta_not_below_one_over_n_is_refused(q, admin):
    user, api = admin
    q.set_budget(user, 100, "approximate", delta=8e-4)  # 1/1438 ≈ 6.95e-4
    response = _create(api)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_delta")
    assert _nothing_written()


def test_a_pure_daily_policy_is_refused_with_approximate_dp_required(q, admin):
    user, api = admin
    q.set_budget(user, 100, "pure")
    response = _create(api)
    assert (response.status_code, response.json()["code"]) == (409, "approximate_dp_required")
    assert "approximate" in response.json()["message"]
    assert _nothing_written()


def test_analysts_may_not_create_or_list_jobs(q):
    _, token = q.user("ann", "analyst")
    api = q.client(token)
    assert _create(api).status_code == 403
    assert api.get("/api/v1/training/jobs").status_code == 403


# --- the charge ---------------------------------------------------------------------------------


def _dp_accounting_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """ε(δ) straight from dp_accounting, at the ledger's discretization (1e-4)."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps))
    return accountant.get_epsilon(delta)


def test_creation_charges_the_whole_run_once_on_the_dataset_partition(admin, digits, django_capture_on_commit_callbacks):
    user, api = admin
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = _create(api, noise_multiplier=None, target_epsilon=2, epochs=2, batch_size=64)
    assert response.status_code == 201, response.json()
    assert len(queued) == 1  # the task is queued once, after the commit
    job = TrainingJob.objects.get()
    q, steps = 64 / 1438, 2 * round(1438 / 64)
    assert (job.sampling_probability, job.total_steps, job.delta) == (q, steps, DELTA)
    epsilon = _dp_accounting_epsilon(job.noise_multiplier, q, steps, DELTA)
    assert 1.9 < epsilon <= 2  # σ calibrated to the target from below
    [entry] = LedgerEntry.objects.all()
    assert entry.epsilon_micro == job.epsilon_micro == math.ceil(epsilon * 1_000_000)
    assert entry.event == {"kind": "poisson_sampled_gaussian", "noise_multiplier": job.noise_multiplier,
                           "sampling_probability": q, "steps": steps}
    assert entry.partitions == [[f"dataset:{digits.pk}", ""]]
    assert (entry.spender, entry.subject_kind, entry.subject_id) == (f"user:{user.pk}", "training_job", str(job.pk))
    assert PartitionSpend.objects.get(scope=f"dataset:{digits.pk}").spent_micro == entry.epsilon_micro
    body = response.json()
    assert body["epsilon_charged"] == entry.epsilon_micro / 1e6 and body["status"] == "queued"
    listed = api.get("/api/v1/training/datasets").json()["datasets"][0]
    assert listed["epsilon_spent"] == entry.epsilon_micro / 1e6


def test_a_job_over_the_dataset_cap_is_refused_and_writes_nothing(admin, digits):
    _, api = admin
    set_partition_cap(scope=digits.scope, lifetime_epsilon_micro=500_000)
    response = _create(api, noise_multiplier=None, target_epsilon=1)
    assert (response.status_code, response.json()["code"]) == (403, "partition_cap_reached")
    assert _nothing_written()


def test_a_job_over_the_daily_budget_is_refused_and_writes_nothing(q, admin):
    user, api = admin
    q.set_budget(user, 0.5, "approximate", delta=DELTA)
    response = _create(api, noise_multiplier=None, target_epsilon=1)
    assert (response.status_code, response.json()["code"]) == (429, "budget_exhausted")
    assert not TrainingJob.objects.exists() and not LedgerEntry.objects.exists()


# --- the task -----------------------------------------------------------------------------------


def _job(admin, **overrides) -> TrainingJob:
    _, api = admin
    response = _create(api, **overrides)
    assert response.status_code == 201, response.json()
    return TrainingJob.objects.get(pk=response.json()["id"])


def _weights(job) -> dict:
    return load_weights(selectors.job_dir(job) / "weights.pt")


def test_a_job_trains_on_digits_and_writes_weights_and_a_model_card(admin, digits):
    job = _job(admin)  # σ 1, q 256/1438, 6 steps, checkpoints every 2
    assert run_training_job(job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.status, job.steps_done, job.total_steps, job.epochs_done, job.device) == ("succeeded", 6, 6, 1, "cpu")
    assert job.epsilon_spent == dpsgd_epsilon(1.0, 256 / 1438, 6, DELTA)
    # the weights load with weights_only and reproduce the reported held-out accuracy
    model = build_model("logreg", (1, 8, 8), 10)
    model.load_state_dict(_weights(job))
    _, test = selectors.read_dataset(digits)
    predictions = model(torch.from_numpy(test.features)).argmax(dim=1).numpy()
    assert job.test_accuracy == float(np.mean(predictions == test.labels))
    card = json.loads((selectors.job_dir(job) / "model-card.json").read_text())
    assert card == job.model_card
    privacy = card["privacy"]
    assert privacy["unit"] == "example" and "Poisson" in privacy["guarantee"]
    assert (privacy["noise_multiplier"], privacy["clip_norm"], privacy["steps"]) == (1.0, 1.0, 6)
    assert privacy["epsilon"] == job.epsilon_micro / 1e6
    assert privacy["epsilon_rdp"] == rdp_epsilon(1.0, 256 / 1438, 6, DELTA) >= privacy["epsilon_pld"]
    assert not (selectors.job_dir(job) / "checkpoint.pt").exists()
    shown = admin[1].get(f"/api/v1/training/jobs/{job.pk}").json()
    assert shown["model_card"] == card and shown["progress"]["steps_done"] == 6
    assert not any("loss" in line for line in shown["log"])  # the training loss is not private: never shown
    assert run_training_job(job.pk) == "succeeded"  # a duplicate delivery changes nothing
    assert LedgerEntry.objects.filter(subject_id=str(job.pk)).count() == 1


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so the task does not mark the job failed."""


def test_a_crashed_job_resumes_from_its_checkpoint_as_if_never_interrupted(admin, monkeypatch):
    reference = _job(admin)
    assert run_training_job(reference.pk) == "succeeded"
    crashed = _job(admin)
    save = TrainingRun.save_checkpoint

    def save_then_die(run, path):
        save(run, path)
        if run.steps_taken == 4:
            raise WorkerKilled

    monkeypatch.setattr(TrainingRun, "save_checkpoint", save_then_die)
    with pytest.raises(WorkerKilled):
        run_training_job(crashed.pk)
    crashed.refresh_from_db()
    assert (crashed.status, crashed.steps_done) == ("running", 2)
    monkeypatch.setattr(TrainingRun, "save_checkpoint", save)
    assert run_training_job(crashed.pk) == "succeeded"  # the redelivery
    crashed.refresh_from_db()
    reference.refresh_from_db()
    assert any("resumed from the checkpoint of step 4" in line for line in crashed.log)
    assert (crashed.steps_done, crashed.epsilon_spent) == (reference.steps_done, reference.epsilon_spent)
    assert crashed.test_accuracy == reference.test_accuracy
    for name, tensor in _weights(reference).items():
        assert torch.equal(_weights(crashed)[name], tensor), name
    assert LedgerEntry.objects.filter(subject_kind="training_job", subject_id=str(crashed.pk)).count() == 1


def test_a_queued_job_cancelled_never_trains_and_returns_its_whole_reservation(admin):
    job = _job(admin)
    response = admin[1].post(f"/api/v1/training/jobs/{job.pk}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    assert run_training_job(job.pk) == "cancelled"
    job.refresh_from_db()
    assert (job.status, job.steps_done) == ("cancelled", 0)
    assert not selectors.job_dir(job).exists()
    assert LedgerEntry.objects.filter(subject_id=str(job.pk)).count() == 1  # the reservation, settled at nothing
    assert (job.steps_charged, job.epsilon_refunded_micro) == (0, job.epsilon_micro)
    assert PartitionSpend.objects.get(scope=job.dataset.scope).spent_micro == 0
    again = admin[1].post(f"/api/v1/training/jobs/{job.pk}/cancel")
    assert (again.status_code, again.json()["code"]) == (409, "job_finished")
    missing = admin[1].post("/api/v1/training/jobs/999999/cancel")
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_job")


def test_a_running_job_stops_between_steps_when_cancelled(admin, monkeypatch):
    job = _job(admin)
    record = services.record_progress

    def record_then_cancel(*, job, steps_done, steps_per_epoch, held_out=None):
        record(job=job, steps_done=steps_done, steps_per_epoch=steps_per_epoch, held_out=held_out)
        if steps_done == 2:
            services.request_cancel(job=TrainingJob.objects.get(pk=job.pk))

    monkeypatch.setattr(services, "record_progress", record_then_cancel)
    assert run_training_job(job.pk) == "cancelled"
    job.refresh_from_db()
    assert (job.status, job.steps_done) == ("cancelled", 2)
    assert job.epsilon_spent == dpsgd_epsilon(1.0, 256 / 1438, 2, DELTA) < job.epsilon_micro / 1e6
    assert job.steps_charged == 2 and [row[0] for row in job.history] == [2]
    assert job.model_card is None and not (selectors.job_dir(job) / "weights.pt").exists()
    listed = admin[1].get("/api/v1/training/jobs").json()["jobs"]
    assert [(row["id"], row["status"]) for row in listed] == [(job.pk, "cancelled")]
