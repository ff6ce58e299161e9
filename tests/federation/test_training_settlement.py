"""A stopped training job returns the unspent remainder of its reservation, and only that.

A job reserves PoissonSampledGaussian(σ, q, T) when created. Cancelled or failed after t steps
may have run, it is settled (accounting.services.ledger.settle) at PoissonSampledGaussian(σ, q, t):
the dataset's and the admin's spent ε become dp-accounting's ε of t steps, the ledger stays
insert-only, and a settlement happens once however often or concurrently it is asked for.
The training task runs in-process (no broker); a killed worker is a BaseException after a step.
"""

from __future__ import annotations

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from accounting.models import DailySpend, LedgerEntry, PartitionSpend, Settlement
from accounting.selectors import day_events, reservation, spent_micro, user_spender
from accounting.services import ledger
from accounting.types import Partition, Subject
from federation import services
from federation.models import TrainingJob
from federation.tasks import run_training_job
from privacy.dpsgd.runs import TrainingRun

torch.set_num_threads(1)
pytestmark = [pytest.mark.slow]  # PyTorch training steps

DELTA = 1e-6
SIGMA, Q = 1.0, 256 / 1438  # digits: 1438 training examples; 6 steps an epoch


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.TRAINING_DATA_DIR = tmp_path / "datasets"
    return tmp_path


@pytest.fixture
def admin(q):
    services.ensure_default_dataset()  # transactional tests start from an empty database
    user, token = q.user("trainer", "admin")
    q.set_budget(user, 100, "approximate", delta=DELTA)
    return user, q.client(token)


def _job(admin, **overrides) -> TrainingJob:
    body = {"dataset": "digits", "model": "logreg", "epochs": 2, "batch_size": 256, "learning_rate": 0.5,
            "clip_norm": 1.0, "noise_multiplier": SIGMA, "seed": 7, "checkpoint_every": 2, **overrides}
    response = admin[1].post("/api/v1/training/jobs", body, format="json")
    assert response.status_code == 201, response.json()
    return TrainingJob.objects.get(pk=response.json()["id"])


def _dp_accounting_epsilon(steps: int) -> float:
    """ε(δ) of `steps` Poisson-sampled Gaussian steps straight from dp_accounting (the ledger's discretization)."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(Q, dp_event.GaussianDpEvent(SIGMA)), steps))
    return accountant.get_epsilon(DELTA)


def _dataset_spent(job) -> int:
    return PartitionSpend.objects.get(scope=job.dataset.scope).spent_micro


def _stop_after(monkeypatch, steps: int, action) -> None:
    """Run `action(run)` right after the training run's step number `steps`."""
    step = TrainingRun.step

    def step_then_act(run):
        result = step(run)
        if run.steps_taken == steps:
            action(run)
        return result

    monkeypatch.setattr(TrainingRun, "step", step_then_act)


@pytest.mark.django_db
@pytest.mark.parametrize("t", [1, 4])
def test_a_job_cancelled_after_t_steps_keeps_exactly_the_epsilon_of_t_steps(admin, monkeypatch, t):
    user, api = admin
    job = _job(admin)  # T = 12, checkpoints every 2: t = 1 stops between checkpoints, t = 4 on one
    reserved = job.epsilon_micro
    _stop_after(monkeypatch, t, lambda run: services.request_cancel(job=TrainingJob.objects.get(pk=job.pk)))
    assert run_training_job(job.pk) == "cancelled"
    job.refresh_from_db()
    assert (job.status, job.steps_charged) == ("cancelled", t)
    # the ledger rounds ε up to the next µε, so the spent figure lies in [ε, ε + 1e-6) of dp-accounting's
    expected = _dp_accounting_epsilon(t)
    assert 0 <= _dataset_spent(job) / 1e6 - expected < 1e-6
    assert _dataset_spent(job) == reserved - job.epsilon_refunded_micro < reserved
    # the admin's day composes the t steps that ran, not the reservation
    [event] = day_events(f"user:{user.pk}", job.created_at.date())
    assert event.steps == t
    assert spent_micro(user_spender(user), job.created_at.date()) == _dataset_spent(job)
    assert DailySpend.objects.get(spender=f"user:{user.pk}").spent_micro == _dataset_spent(job)
    shown = api.get(f"/api/v1/training/jobs/{job.pk}").json()
    assert (shown["epsilon_reserved"], shown["epsilon_charged"]) == (reserved / 1e6, _dataset_spent(job) / 1e6)
    assert shown["steps_charged"] == t and "returned" in shown["log"][-1]
    listed = api.get("/api/v1/training/datasets").json()["datasets"][0]
    assert listed["epsilon_spent"] == _dataset_spent(job) / 1e6
    # idempotent: settling again, stopping again or a redelivered task change nothing
    before = (_dataset_spent(job), LedgerEntry.objects.count(), Settlement.objects.count())
    with ledger.transaction.atomic():
        again = ledger.settle(reservation=reservation("training_job", str(job.pk)), event=None)
    assert again.refunded_micro == job.epsilon_refunded_micro
    services.stop_job(job=job, status="failed", message="again", steps_spent=0)
    assert run_training_job(job.pk) == "cancelled"
    assert (_dataset_spent(job), LedgerEntry.objects.count(), Settlement.objects.count()) == before == \
        (before[0], 2, 1)
    job.refresh_from_db()
    assert job.status == "cancelled"


@pytest.mark.django_db
def test_a_failed_job_is_settled_at_its_whole_lease_never_below_what_ran(admin, monkeypatch):
    job = _job(admin)

    def fail(run):
        raise RuntimeError("disk full")  # after step 3's noise was drawn, before its checkpoint

    _stop_after(monkeypatch, 3, fail)
    assert run_training_job(job.pk) == "failed"
    job.refresh_from_db()
    assert (job.status, job.steps_done, job.steps_leased, job.steps_charged) == ("failed", 2, 4, 4)
    assert 0 <= _dataset_spent(job) / 1e6 - _dp_accounting_epsilon(4) < 1e-6


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so the task records nothing."""


@pytest.mark.django_db
def test_a_killed_run_then_cancelled_counts_every_step_the_killed_run_may_have_taken(admin, monkeypatch):
    job = _job(admin)

    def die(run):
        raise WorkerKilled

    _stop_after(monkeypatch, 3, die)  # 3 steps ran; the checkpoint on disk and in the row says 2
    with pytest.raises(WorkerKilled):
        run_training_job(job.pk)
    services.request_cancel(job=TrainingJob.objects.get(pk=job.pk))
    monkeypatch.undo()
    assert run_training_job(job.pk) == "cancelled"  # the redelivery finds the cancel request
    job.refresh_from_db()
    assert (job.steps_done, job.steps_charged) == (2, 4)  # the lease covers step 3
    assert 0 <= _dataset_spent(job) / 1e6 - _dp_accounting_epsilon(4) < 1e-6


@pytest.mark.django_db
def test_a_settlement_costing_more_than_its_reservation_is_refused(admin):
    job = _job(admin)
    with pytest.raises(ValueError, match="more than"), ledger.transaction.atomic():
        ledger.settle(reservation=reservation("training_job", str(job.pk)),
                      event=services.dpsgd_event(SIGMA / 2, Q, job.total_steps))
    assert not Settlement.objects.exists()
    with pytest.raises(PermissionError):
        LedgerEntry.objects.get().delete()


@pytest.mark.django_db(transaction=True)
def test_concurrent_stops_progress_and_charges_settle_once_and_keep_the_totals_exact(q, admin):
    """8 threads at once: 4 stop the job (3 as cancelled, 1 as failed, at different step counts),
    2 record progress from a stale copy of the running job, 2 charge the same admin and dataset.
    One settlement wins; the totals are then exactly the sum of the ledger entries not superseded."""
    user, _ = admin
    job = _job(admin)
    stale = TrainingJob.objects.get(pk=job.pk)
    stale.status = "running"
    other = services.dpsgd_event(2.0, 0.01, 10)

    def act(i):
        if i < 4:
            services.stop_job(job=TrainingJob.objects.get(pk=job.pk), status="failed" if i == 3 else "cancelled",
                              message=f"thread {i}", steps_spent=2 + i)
        elif i < 6:
            services.record_progress(job=stale, steps_done=2, steps_per_epoch=6)
        else:
            with ledger.transaction.atomic():
                ledger.charge(spender=user_spender(user), event=other, partitions=[Partition(job.dataset.scope)],
                              subject=Subject("test", str(i)))

    q.run_threads(8, act)
    job.refresh_from_db()
    [settlement] = Settlement.objects.all()
    assert job.status in ("cancelled", "failed") and job.steps_charged in (2, 3, 4, 5)
    assert settlement.entry.event["steps"] == job.steps_charged
    live = LedgerEntry.objects.filter(settlement__isnull=True)
    assert live.count() == 3  # the settled event and the two other charges
    total = sum(live.values_list("epsilon_micro", flat=True))
    assert _dataset_spent(job) == total
    assert DailySpend.objects.get(spender=f"user:{user.pk}").spent_micro == total
    assert 0 <= settlement.entry.epsilon_micro / 1e6 - _dp_accounting_epsilon(job.steps_charged) < 1e-6


@pytest.mark.django_db
def test_another_runs_lease_counts_in_full_when_this_run_is_cancelled(admin, monkeypatch):
    """A duplicate delivery running at the same time (or a run killed earlier) leased steps 1-6: this run,
    cancelled after its first step, is settled at 6, not 1; its own steps count exactly."""
    job = _job(admin)
    services.lease_steps(job=job, token="other-run", through=6)
    _stop_after(monkeypatch, 1, lambda run: services.request_cancel(job=TrainingJob.objects.get(pk=job.pk)))
    assert run_training_job(job.pk) == "cancelled"
    job.refresh_from_db()
    assert job.steps_charged == 6 and job.leases["other-run"] == 6 and len(job.leases) == 2
    assert 0 <= _dataset_spent(job) / 1e6 - _dp_accounting_epsilon(6) < 1e-6
