"""The training task: one DP-SGD job, run on the ``training`` queue (GPU hosts).

``acks_late``: the broker redelivers a job whose worker died mid-run, and the task resumes
from the job's last checkpoint (model, optimizer, both generators, step count), so the
resumed run takes exactly the steps an uninterrupted one would. Its ε was reserved in full
when the job was created, so nothing is charged here, on a first run or a redelivery.
Before each checkpoint interval the task leases its steps under its run's random token
(``services.lease_steps``); a job that is cancelled or fails is settled at the steps that may
have run: this run's steps taken when cancelled between steps, its whole lease when it failed
(an exception may strike after a step's noise was drawn), and every other run's whole lease.

Progress shown on the job is the step count, epochs, the ε of the steps done, the log, and
at each checkpoint the loss and accuracy on the held-out test split; never the training loss
or training accuracy (DP-SGD does not privatize them).

A job with ``canaries`` m > 0 trains with m synthetic canaries, each included with probability
1/2, and puts the one-run audit's empirical ε lower bound in its model card (privacy.dpsgd.audit).
"""

from __future__ import annotations

import logging
import secrets

from celery import shared_task

from deploy.api.errors import ApiError
from federation import rounds, selectors, services
from federation.models import FINISHED_STATUSES, TrainingJob

logger = logging.getLogger(__name__)


@shared_task(name="federation.tasks.run_training_job", acks_late=True)
def run_training_job(job_id: int) -> str:
    """Run (or resume) the job; its final status. A finished job is left as it is (a duplicate delivery)."""
    job = selectors.job_by_id(job_id)
    if job is None:
        return "missing"
    if job.status in FINISHED_STATUSES:
        return job.status
    if job.cancel_requested:  # a redelivered job may have run before: every earlier lease counts
        services.stop_job(job=job, status="cancelled", message="cancelled before it started", steps_spent=0)
        return "cancelled"
    token = secrets.token_hex(8)  # this run's leases
    try:
        return _train(job, token)
    except Exception as exc:  # a bug or a bad file: the job says so; what may have run stays spent
        logger.exception("training job %s failed", job_id)
        services.stop_job(job=job, status="failed", message=f"failed: {type(exc).__name__}: {exc}",
                          steps_spent=job.leases.get(token, 0), token=token)
        return "failed"


def _train(job: TrainingJob, token: str) -> str:
    # torch is the [train] extra: only training workers load it, when a job runs.
    from privacy.dpsgd import audit
    from privacy.dpsgd.engine import DPSGDConfig
    from privacy.dpsgd.runs import TrainingRun

    train, test = selectors.read_dataset(job.dataset)
    directory = selectors.job_dir(job)
    canaries = _canaries(job, train, directory) if job.canaries else None
    features, labels = (train.features, train.labels) if canaries is None else \
        audit.with_included(train.features, train.labels, canaries)
    config = DPSGDConfig(clip_norm=job.clip_norm, noise_multiplier=job.noise_multiplier,
                         sampling_probability=job.sampling_probability)
    run = TrainingRun(model_name=job.model_name, features=features, labels=labels,
                      num_classes=job.dataset.num_classes, config=config, learning_rate=job.learning_rate,
                      seed=job.seed)
    checkpoint = directory / "checkpoint.pt"
    if checkpoint.exists():
        run.load_checkpoint(checkpoint)
    per_epoch = run.steps_per_epoch
    services.start_job(job=job, device=str(run.device), steps_done=run.steps_taken, steps_per_epoch=per_epoch)
    while run.steps_taken < job.total_steps:
        if selectors.cancel_requested(job.pk):
            services.stop_job(job=job, status="cancelled", message=f"cancelled after step {run.steps_taken}",
                              steps_spent=run.steps_taken, token=token, steps_done=run.steps_taken,
                              steps_per_epoch=per_epoch)
            return "cancelled"
        if run.steps_taken >= job.leases.get(token, 0):
            services.lease_steps(job=job, token=token,
                                 through=min(job.total_steps, run.steps_taken + job.checkpoint_every))
        run.step()
        if run.steps_taken % job.checkpoint_every == 0 or run.steps_taken == job.total_steps:
            run.save_checkpoint(checkpoint)
            services.record_progress(job=job, steps_done=run.steps_taken, steps_per_epoch=per_epoch,
                                     held_out=run.evaluate(test.features, test.labels))
    run.save_weights(directory / "weights.pt")
    audited = None if canaries is None else \
        audit.audit(audit.canary_scores(run.trainer.model, canaries), canaries.included, job.delta)
    services.complete_job(job=job, test_accuracy=run.test_accuracy(test.features, test.labels),
                          steps_per_epoch=per_epoch, audit=audited)
    return "succeeded"


def _canaries(job: TrainingJob, train, directory):
    """The job's canaries, drawn once and kept beside its checkpoint so that a resumed run reuses them.

    The training set is then n + (included canaries) examples, each still sampled with the job's q:
    the accounting (q, σ, T) and so the charged ε are unchanged.
    """
    import numpy as np

    from privacy.dpsgd import audit

    path = directory / "canaries.npz"
    if path.exists():
        return audit.load_canaries(path)
    rng = np.random.default_rng(job.seed)  # seed None: from the OS entropy source
    canaries = audit.make_canaries(job.canaries, train.input_shape, job.dataset.num_classes, rng)
    audit.save_canaries(canaries, path)
    return canaries


@shared_task(name="federation.tasks.run_aggregation_round")
def run_aggregation_round(domain: str, strategy: str = "spectral", parameters: dict | None = None,
                          min_contributions: int = 3, zscore_filter: float | None = None) -> dict:
    """One aggregation round of ``domain`` (for beat schedules); its id and log index, or the refusal's code."""
    try:
        row = rounds.run_round(domain=domain, strategy=strategy, parameters=parameters,
                               min_contributions=min_contributions, zscore_filter=zscore_filter)
    except ApiError as exc:  # too few contributions is the normal case between rounds
        return {"domain": domain, "code": exc.code}
    return {"domain": domain, "round": row.number, "id": row.pk, "log_index": row.log_entry.index}
