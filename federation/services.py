"""Writes: registering datasets, creating (and paying for) training jobs, and the training task's progress.

What a job costs: its whole run is ONE ledger charge made when the job is created, the
``PoissonSampledGaussianEvent(σ, q, T)`` of all T steps, on the dataset's partition
``dataset:<id>`` and billed to the admin who created it: a reservation. A job that fails or
is cancelled is settled (``accounting.services.ledger.settle``) at the t steps that may have
run, ``PoissonSampledGaussianEvent(σ, q, t)``: the ε of those t steps stays spent and only the
unspent remainder returns. t counts every step whose noise may have been drawn by any run of
the job: each run leases its steps a checkpoint interval ahead, under its own random token,
before it runs them (``leases``, ``steps_leased``), so a worker killed between checkpoints, or a
duplicate delivery running at the same time, leaves a lease that covers what it ran.

The admin's daily budget must compose by PLD (an approximate (ε, δ) policy): a Gaussian
mechanism has no pure ε. A job is refused with ``approximate_dp_required`` otherwise, and
its δ is that policy's δ, the δ at which the ledger accounts every approximate spend.
"""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from accounting.calibration import (MIN_NOISE_MULTIPLIER, calibrate_noise_multiplier, dpsgd_epsilon, dpsgd_event,
                                    rdp_epsilon)
from accounting.selectors import reservation, user_spender
from accounting.services.ledger import charge, settle
from accounting.services.policies import set_partition_cap
from accounting.types import Partition, Subject
from deploy.api.errors import ApiError
from federation import selectors
from federation.models import FINISHED_STATUSES, Dataset, TrainingJob
from privacy.dpsgd import datasets as readers
from privacy.epsilon import from_micro

# The zoo's names (privacy.dpsgd.models.MODELS), listed here so the web process need not import torch;
# a test keeps the two equal.
MODEL_NAMES = ("cnn", "logreg", "mlp")
MIN_EXAMPLES = 10  # so that both the training and the held-out split are non-empty


# --- datasets -----------------------------------------------------------------------------------


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_dataset", message)


def _read_upload(kind: str, content: bytes, label_column: str) -> readers.Dataset:
    try:
        if kind == "npz":
            return readers.load_npz(io.BytesIO(content), name="upload")
        return readers.load_csv(io.BytesIO(content), label_column=label_column, name="upload")
    except readers.DatasetError as exc:
        raise _invalid(str(exc)) from exc


def _mnist_shape(path: Path) -> dict:
    """Sizes and shape of the MNIST files in ``path`` (labels read whole, one image read)."""
    def labels(prefix):
        return readers.read_idx(next(p for p in [path / f"{prefix}-labels-idx1-ubyte.gz",
                                                 path / f"{prefix}-labels-idx1-ubyte"] if p.exists()))
    try:
        one = readers.load_mnist(path, "train", limit=1)
        train, test = labels("train"), labels("t10k")
    except (readers.DatasetError, StopIteration) as exc:
        raise _invalid(f"not a directory of MNIST IDX files: {exc or 'no t10k labels'}") from exc
    return {"num_examples": len(train), "num_test_examples": len(test), "input_shape": list(one.input_shape),
            "num_classes": 10}


DIGITS_DEFAULT = {"kind": "digits", "num_examples": 1438, "num_test_examples": 359, "input_shape": [1, 8, 8],
                  "num_classes": 10}  # scikit-learn's digits, a fifth held out (as migration 0002 registers it)


def ensure_default_dataset() -> Dataset:
    """The embedded default dataset, ``digits``: registered by migration 0002; made again if it was removed."""
    return Dataset.objects.get_or_create(name="digits", defaults=DIGITS_DEFAULT)[0]


def register_dataset(*, name: str, kind: str, lifetime_epsilon_micro: int, content: bytes | None = None,
                     path: str | None = None, label_column: str = "label") -> Dataset:
    """Check the file and store it (uploads) or its path (MNIST), with its lifetime ε cap; or raise
    ``invalid_dataset`` / ``dataset_exists`` having stored nothing."""
    if selectors.dataset_named(name) is not None:
        raise ApiError("dataset_exists", f"A dataset named {name!r} exists.", http_status=409)
    stored: Path | None = None
    if kind == "mnist":
        directory = Path(path or "").resolve()
        if not directory.is_relative_to(selectors.data_dir().resolve()):
            raise _invalid(f"path must be a directory under the data directory {selectors.data_dir()}")
        fields = {"path": str(directory), **_mnist_shape(directory)}
    else:
        data = _read_upload(kind, content or b"", label_column)
        if len(data) < MIN_EXAMPLES:
            raise _invalid(f"needs at least {MIN_EXAMPLES} examples, got {len(data)}")
        train_size, test_size = selectors.holdout_sizes(len(data))
        stored = selectors.data_dir() / "uploads" / f"{uuid.uuid4().hex}.{kind}"
        fields = {"path": str(stored), "label_column": label_column if kind == "csv" else "",
                  "num_examples": train_size, "num_test_examples": test_size, "input_shape": list(data.input_shape),
                  "num_classes": data.num_classes}
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(name=name, kind=kind, **fields)
            set_partition_cap(scope=dataset.scope, lifetime_epsilon_micro=lifetime_epsilon_micro)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                stored.write_bytes(content)
    except BaseException:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise
    return dataset


# --- jobs ---------------------------------------------------------------------------------------


def _parameter_error(field: str, message: str) -> ApiError:
    return ApiError("invalid_training_parameter", message, field=field)


def _job_delta(owner, requested: Decimal | None, num_examples: int) -> float:
    """The admin's PLD policy's δ (the ledger's), checked against the request and against 1/n."""
    policy = user_spender(owner).policy
    if policy is None or policy.composition != "approximate":
        raise ApiError("approximate_dp_required", "DP-SGD is a Gaussian mechanism with no pure epsilon: a training "
                       "job needs its admin's daily budget to be an approximate (epsilon, delta) policy "
                       "(PUT /api/v1/budgets/analysts/<you> with composition 'approximate').", http_status=409)
    if requested is not None and requested != policy.delta:
        raise ApiError("invalid_delta", f"delta must be your budget policy's delta ({policy.delta}): the ledger "
                       "accounts every approximate spend at it. Omit delta to use it.", field="delta")
    if policy.delta >= Decimal(1) / num_examples:
        raise ApiError("invalid_delta", f"delta {policy.delta} is not below 1/n = 1/{num_examples}: such a delta "
                       "allows releasing some example outright.", field="delta")
    return float(policy.delta)


def create_training_job(*, owner, dataset: Dataset, model_name: str, epochs: int, expected_batch_size: int,
                        learning_rate: float, clip_norm: float, target_epsilon_micro: int | None,
                        noise_multiplier: float | None, delta: Decimal | None, seed: int | None,
                        checkpoint_every: int, canaries: int = 0) -> TrainingJob:
    """Calibrate σ, charge the whole run to the ledger, store the job and queue its task after commit;
    or raise (nothing written)."""
    if model_name not in MODEL_NAMES:
        raise ApiError("unknown_model", f"Unknown model {model_name!r}: one of {list(MODEL_NAMES)}.", field="model")
    shape = dataset.input_shape
    if model_name == "cnn" and (len(shape) != 3 or min(shape[1:]) < 16):
        raise ApiError("unknown_model", f"The CNN needs (channels, height, width) images of at least 16×16; "
                       f"{dataset.name} has inputs of shape {shape}.", field="model")
    n = dataset.num_examples
    if expected_batch_size > n:
        raise ApiError("invalid_batch_size", f"batch_size {expected_batch_size} is larger than the dataset's "
                       f"{n} training examples.", field="batch_size")
    if not 0 <= canaries <= n:
        raise _parameter_error("canaries", f"canaries must be an integer in [0, {n}] (the training examples).")
    job_delta = _job_delta(owner, delta, n)
    q = expected_batch_size / n
    steps = epochs * max(1, round(1 / q))  # steps per epoch as the engine takes them
    if target_epsilon_micro is not None:
        target = float(from_micro(target_epsilon_micro))
        try:
            noise_multiplier = calibrate_noise_multiplier(target, job_delta, q, steps)
        except ValueError as exc:
            raise ApiError("invalid_epsilon", f"target_epsilon {target} is out of reach: {exc}.",
                           field="target_epsilon") from exc
    elif noise_multiplier < MIN_NOISE_MULTIPLIER:
        raise _parameter_error("noise_multiplier", f"noise_multiplier must be at least {MIN_NOISE_MULTIPLIER}.")
    with transaction.atomic():
        job = TrainingJob.objects.create(
            dataset=dataset, owner=owner, model_name=model_name, epochs=epochs, expected_batch_size=expected_batch_size,
            learning_rate=learning_rate, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
            sampling_probability=q, total_steps=steps, delta=job_delta,
            target_epsilon=None if target_epsilon_micro is None else float(from_micro(target_epsilon_micro)),
            epsilon_micro=0, seed=seed, checkpoint_every=checkpoint_every, canaries=canaries,
        )
        paid = charge(spender=user_spender(owner), event=dpsgd_event(noise_multiplier, q, steps),
                      partitions=[Partition(dataset.scope)], subject=Subject("training_job", str(job.pk)))
        job.epsilon_micro = paid.entry.epsilon_micro
        job.log = [_log_line(f"queued: {steps} steps, sigma {noise_multiplier:.4f}, q {q:.6f}, "
                             f"epsilon {from_micro(job.epsilon_micro)} charged at delta {job_delta:g}")]
        job.save(update_fields=["epsilon_micro", "log"])
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from federation.tasks import run_training_job  # the task module imports this one

    run_training_job.delay(job_id)


def request_cancel(*, job: TrainingJob) -> TrainingJob:
    """Set the flag the task checks between steps (a queued job is cancelled when it starts)."""
    if job.status in FINISHED_STATUSES:
        raise ApiError("job_finished", f"Job {job.pk} has already {job.status}.", http_status=409)
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    return job


# --- the task's progress ------------------------------------------------------------------------


def _log_line(message: str) -> str:
    return f"{timezone.now().isoformat(timespec='seconds')} {message}"


def _epsilon_after(job: TrainingJob, steps: int) -> float:
    """PLD ε(δ) of the first ``steps`` steps (cached per (σ, q, steps, δ) by the accountant)."""
    return dpsgd_epsilon(job.noise_multiplier, job.sampling_probability, steps, job.delta) if steps else 0.0


def _save_unless_finished(job: TrainingJob, fields: list[str]) -> None:
    """Write ``fields`` unless the job has finished meanwhile (a duplicate delivery stopped it)."""
    TrainingJob.objects.filter(pk=job.pk).exclude(status__in=FINISHED_STATUSES).update(
        **{field: getattr(job, field) for field in fields})


def _set_progress(job: TrainingJob, steps_done: int, steps_per_epoch: int) -> None:
    job.steps_done = steps_done
    job.epochs_done = steps_done // steps_per_epoch
    job.epsilon_spent = _epsilon_after(job, steps_done)


_PROGRESS_FIELDS = ["status", "steps_done", "epochs_done", "epsilon_spent", "device", "log", "started_at",
                    "finished_at", "test_accuracy", "model_card", "history"]
_SETTLED_FIELDS = [*_PROGRESS_FIELDS, "steps_charged", "epsilon_refunded_micro"]


def start_job(*, job: TrainingJob, device: str, steps_done: int, steps_per_epoch: int) -> None:
    """Running on ``device``; ``steps_done`` > 0 when resumed from a checkpoint (a redelivered task)."""
    job.status, job.device = "running", device
    job.started_at = job.started_at or timezone.now()
    _set_progress(job, steps_done, steps_per_epoch)
    job.log.append(_log_line(f"resumed from the checkpoint of step {steps_done} on {device}" if steps_done
                             else f"started on {device}"))
    _save_unless_finished(job, _PROGRESS_FIELDS)


def lease_steps(*, job: TrainingJob, token: str, through: int) -> None:
    """Before the run ``token`` takes steps up to ``through``: count them as possibly spent should the job stop.
    One write per checkpoint interval, under the job's row lock; leases only grow."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        leases = {**locked.leases, token: max(locked.leases.get(token, 0), through)}
        steps_leased = max(locked.steps_leased, through)
        TrainingJob.objects.filter(pk=job.pk).update(leases=leases, steps_leased=steps_leased)
    job.leases, job.steps_leased = leases, steps_leased


def record_progress(*, job: TrainingJob, steps_done: int, steps_per_epoch: int,
                    held_out: tuple[float, float] | None = None) -> None:
    """A checkpoint of ``steps_done`` steps is on disk: show it, with the (loss, accuracy) of the model on the
    held-out split when measured (never the training loss: DP-SGD does not privatize it)."""
    _set_progress(job, steps_done, steps_per_epoch)
    if held_out is not None:
        job.history = [*job.history, [steps_done, job.epsilon_spent, round(held_out[0], 6), round(held_out[1], 6)]]
    _save_unless_finished(job, _PROGRESS_FIELDS)


def stop_job(*, job: TrainingJob, status: str, message: str, steps_spent: int, token: str | None = None,
             steps_done: int | None = None, steps_per_epoch: int = 1) -> None:
    """Failed or cancelled: settle the job's reservation at the steps that may have run, so that only the
    unspent remainder returns, in the transaction that records the status.

    ``steps_spent`` is what the calling run (``token``) counts for itself: the steps it took when it
    stops between steps, its whole lease when it failed (an exception may strike after a step's noise
    was drawn). Every other run's lease counts in full: a run killed earlier, or a duplicate delivery
    running at the same time, may have taken all of its leased steps. A job that has already finished
    is left as it is, and a reservation is settled once, however many deliveries stop it."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.status in FINISHED_STATUSES:
            return
        others = max((through for holder, through in locked.leases.items() if holder != token), default=0)
        steps_spent = min(job.total_steps, max(steps_spent, others))
        event = dpsgd_event(job.noise_multiplier, job.sampling_probability, steps_spent) if steps_spent else None
        settlement = settle(reservation=reservation("training_job", str(job.pk)), event=event)
        if steps_done is not None:
            _set_progress(job, steps_done, steps_per_epoch)
        job.status, job.finished_at = status, timezone.now()
        job.steps_charged, job.epsilon_refunded_micro = steps_spent, settlement.refunded_micro
        charged = from_micro(job.epsilon_micro - settlement.refunded_micro)
        job.log.append(_log_line(f"{message}; settled at {steps_spent} of {job.total_steps} steps: epsilon {charged} "
                                 f"stays spent, {from_micro(settlement.refunded_micro)} returned"))
        job.save(update_fields=_SETTLED_FIELDS)


def model_card(job: TrainingJob, test_accuracy: float, audit: dict | None = None) -> dict:
    """The card; ``audit`` is the canary audit's result (privacy.dpsgd.audit.audit) when the job asked for one."""
    epsilon = float(from_micro(job.epsilon_micro))
    return {
        "job": job.pk,
        "model": job.model_name,
        "dataset": {"name": job.dataset.name, "kind": job.dataset.kind, "training_examples": job.dataset.num_examples,
                    "test_examples": job.dataset.num_test_examples},
        "privacy": {
            "unit": "example",
            "guarantee": "(epsilon, delta)-DP for each training example (add/remove one example), "
                         "DP-SGD with Poisson sampling (Abadi et al. 2016)",
            "epsilon": epsilon,
            "epsilon_pld": dpsgd_epsilon(job.noise_multiplier, job.sampling_probability, job.total_steps, job.delta),
            "epsilon_rdp": rdp_epsilon(job.noise_multiplier, job.sampling_probability, job.total_steps, job.delta),
            "delta": job.delta,
            "noise_multiplier": job.noise_multiplier,
            "clip_norm": job.clip_norm,
            "sampling_probability": job.sampling_probability,
            "expected_batch_size": job.expected_batch_size,
            "steps": job.total_steps,
            "epochs": job.epochs,
            "seeded": job.seed is not None,
        },
        "test_accuracy": test_accuracy,
        "audit": audit,
        "notes": [
            "epsilon is what the ledger charged: the PLD figure rounded up to 1e-6; epsilon_rdp is the looser "
            "RDP bound of the same run",
            "test_accuracy is measured on the held-out split, which DP-SGD did not train on and which this "
            "figure does not protect",
            *([f"{audit['canaries']} synthetic canaries were drawn and each put in the training set with "
               "probability 1/2; epsilon_lower_bound is the one-run audit's empirical floor under epsilon "
               f"(at {audit['confidence']:.0%} confidence), not an estimate of it"] if audit else []),
        ],
    }


def complete_job(*, job: TrainingJob, test_accuracy: float, steps_per_epoch: int, audit: dict | None = None) -> None:
    """Weights are saved: write the model card beside them and mark the job succeeded; unless a duplicate
    delivery stopped the job meanwhile (its settlement counted this run's whole lease: all T steps)."""
    with transaction.atomic():
        if TrainingJob.objects.select_for_update().get(pk=job.pk).status in FINISHED_STATUSES:
            return
        card = model_card(job, test_accuracy, audit)
        directory = selectors.job_dir(job)
        (directory / "model-card.json").write_text(json.dumps(card, indent=2) + "\n")
        (directory / "checkpoint.pt").unlink(missing_ok=True)
        _set_progress(job, job.total_steps, steps_per_epoch)
        job.status, job.finished_at = "succeeded", timezone.now()
        job.test_accuracy, job.model_card = test_accuracy, card
        job.steps_charged = job.total_steps
        job.log.append(_log_line(f"succeeded: test accuracy {test_accuracy:.4f}"))
        job.save(update_fields=[*_PROGRESS_FIELDS, "steps_charged"])
