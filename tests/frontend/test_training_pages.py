"""The admins' training pages without a browser: role gates, the job form (a job made, a refusal shown
with its code), the progress JSON the page polls, cancelling, the datasets' budgets, the model card."""

from __future__ import annotations

import pytest

from accounting.models import LedgerEntry
from federation.models import Dataset, TrainingJob

pytestmark = pytest.mark.django_db

DELTA = 1e-6
FORM = {"dataset": "digits", "model": "logreg", "epochs": "1", "batch_size": "256", "learning_rate": "0.5",
        "clip_norm": "1.0", "privacy": "sigma", "target_epsilon": "", "noise_multiplier": "1.0", "seed": "7",
        "checkpoint_every": "2", "canaries": "0"}


@pytest.fixture
def trainer(admin, admin_client, q, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    q.set_budget(admin[0], 100, "approximate", delta=DELTA)
    return admin_client


def _create(client, **overrides):
    return client.post("/training/jobs/new", {**FORM, **overrides})


def test_training_pages_are_for_admins_only(analyst_client):
    from django.test import Client

    for path in ("/training", "/training/datasets", "/training/jobs/new"):
        assert analyst_client.get(path).status_code == 403
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login?next=")


def test_the_form_reserves_the_job_and_leads_to_its_page(trainer):
    assert "Reserve ε and start" in trainer.get("/training/jobs/new").content.decode()
    response = _create(trainer)
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.pk}"
    assert (job.model_name, job.noise_multiplier, job.seed, job.status) == ("logreg", 1.0, 7, "queued")
    assert LedgerEntry.objects.get().epsilon_micro == job.epsilon_micro
    page = trainer.get(f"/training/jobs/{job.pk}").content.decode()
    assert "Cancel job" in page and "chart-epsilon" in page and "training-progress.js" in page
    progress = trainer.get(f"/training/jobs/{job.pk}/progress.json").json()
    assert (progress["status"], progress["finished"], progress["epsilon_reserved"]) == \
        ("queued", False, job.epsilon_micro / 1e6)
    listed = trainer.get("/training").content.decode()
    assert f"/training/jobs/{job.pk}" in listed


@pytest.mark.parametrize("overrides, code", [
    ({"batch_size": "5000"}, "invalid_batch_size"),
    ({"privacy": "target", "target_epsilon": "0"}, "invalid_epsilon"),
    ({"epochs": "two"}, "invalid_training_parameter"),
    ({"model": "resnet"}, "unknown_model"),
])
def test_a_refused_job_shows_the_reason_and_keeps_the_input(trainer, overrides, code):
    response = _create(trainer, **overrides)
    page = response.content.decode()
    assert response.status_code == 400 and code in page and 'role="alert"' in page
    assert f'value="{overrides.get("batch_size", "256")}"' in page  # the form comes back as typed
    assert not TrainingJob.objects.exists() and not LedgerEntry.objects.exists()


def test_cancel_from_the_page_sets_the_flag_and_a_finished_job_has_no_button(trainer):
    _create(trainer)
    job = TrainingJob.objects.get()
    response = trainer.post(f"/training/jobs/{job.pk}/cancel")
    assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.pk}?cancelled=1"
    job.refresh_from_db()
    assert job.cancel_requested
    assert "Cancel requested" in trainer.get(response["Location"]).content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(status="cancelled")
    assert "Cancel job" not in trainer.get(f"/training/jobs/{job.pk}").content.decode()
    assert trainer.post(f"/training/jobs/{job.pk}/cancel").status_code == 302  # finished: back to the page
    assert trainer.get("/training/jobs/999999").status_code == 404
    assert trainer.get("/training/jobs/999999/progress.json").json()["code"] == "unknown_job"
    assert trainer.get(f"/training/jobs/{job.pk}/card").status_code == 404  # no card: not succeeded


def test_the_datasets_page_shows_each_cap_and_what_is_spent(trainer):
    digits = Dataset.objects.get(name="digits")
    _create(trainer)
    job = TrainingJob.objects.get()
    page = trainer.get("/training/datasets").content.decode()
    assert 'data-testid="dataset-digits"' in page
    assert f'<span data-testid="spent">{job.epsilon_micro / 1e6:.6f}'.rstrip("0") in page
    assert digits.name in page


@pytest.mark.slow  # trains a few steps
def test_the_model_card_page_shows_the_card(trainer):
    from federation.tasks import run_training_job

    _create(trainer)
    job = TrainingJob.objects.get()
    assert run_training_job(job.pk) == "succeeded"
    job.refresh_from_db()
    page = trainer.get(f"/training/jobs/{job.pk}/card").content.decode()
    assert "example-level" in page.replace("(epsilon, delta)-DP for each training example", "example-level")
    assert f"{job.model_card['privacy']['epsilon']:.6f}".rstrip("0") in page
    assert f"{job.test_accuracy:.4f}" in page and "none requested" in page
    progress = trainer.get(f"/training/jobs/{job.pk}/progress.json").json()
    assert progress["finished"] and [row["step"] for row in progress["history"]] == [2, 4, 6]
