"""Request parsing and JSON output of the training API (ε and δ as JSON numbers)."""

from __future__ import annotations

import base64
import binascii

from django.conf import settings

from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal, object_body, parse_epsilon_micro
from federation.models import Dataset, TrainingJob
from privacy.epsilon import from_micro

DATASET_FIELDS = {"name", "kind", "lifetime_epsilon", "content_base64", "path", "label_column"}
JOB_FIELDS = {"dataset", "model", "epochs", "batch_size", "learning_rate", "clip_norm", "target_epsilon",
              "noise_multiplier", "delta", "seed", "checkpoint_every", "canaries"}
MAX_EPOCHS = 1000
DEFAULT_CHECKPOINT_EVERY = 100


def _only(body, allowed: set[str]) -> dict:
    body = object_body(body)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError("unknown_field", f"Unknown fields {unknown}; this endpoint takes {sorted(allowed)}.")
    return body


def _text(body: dict, field: str, code: str, *, default: str | None = None, limit: int = 100) -> str:
    value = body.get(field, default)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise ApiError(code, f"{field} must be a string of 1-{limit} characters.", field=field)
    return value


def dataset_input(body) -> dict:
    """Keyword arguments of ``services.register_dataset`` from the request body."""
    body = _only(body, DATASET_FIELDS)
    kind = body.get("kind")
    if kind not in ("npz", "csv", "mnist"):
        raise ApiError("invalid_dataset", "kind must be 'npz' or 'csv' (content_base64) or 'mnist' (path).",
                       field="kind")
    fields = {"name": _text(body, "name", "invalid_dataset"), "kind": kind}
    cap = body.get("lifetime_epsilon", settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"])
    fields["lifetime_epsilon_micro"] = parse_epsilon_micro(cap, "lifetime_epsilon")
    if kind == "mnist":
        fields["path"] = _text(body, "path", "invalid_dataset", limit=500)
        return fields
    try:
        fields["content"] = base64.b64decode(_text(body, "content_base64", "invalid_dataset", limit=2 ** 21),
                                             validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("invalid_dataset", "content_base64 is not base64.", field="content_base64") from exc
    if kind == "csv":
        fields["label_column"] = _text(body, "label_column", "invalid_dataset", default="label")
    return fields


def _positive_int(body: dict, field: str, *, default=None, maximum: int = 2 ** 31 - 1) -> int:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ApiError("invalid_training_parameter", f"{field} must be an integer in [1, {maximum}].", field=field)
    return value


def _positive_float(body: dict, field: str) -> float:
    number = finite_decimal(body.get(field))
    if number is None or number <= 0:
        raise ApiError("invalid_training_parameter", f"{field} must be a positive number.", field=field)
    return float(number)


def job_input(body) -> dict:
    """Keyword arguments of ``services.create_training_job`` (less owner and dataset) and the dataset's name."""
    body = _only(body, JOB_FIELDS)
    has_target, has_sigma = body.get("target_epsilon") is not None, body.get("noise_multiplier") is not None
    if has_target == has_sigma:
        raise ApiError("invalid_training_parameter", "Give exactly one of target_epsilon (sigma is calibrated to "
                       "it) and noise_multiplier.", field="target_epsilon")
    delta = None
    if body.get("delta") is not None:
        delta = finite_decimal(body["delta"])
        if delta is None or not 0 < delta < 1:
            raise ApiError("invalid_delta", "delta must be a number in (0, 1).", field="delta")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise ApiError("invalid_training_parameter", "seed must be null or an integer in [0, 2^63).", field="seed")
    model = body.get("model")
    return {
        "dataset_name": _text(body, "dataset", "invalid_training_parameter"),
        "model_name": model if isinstance(model, str) else repr(model),
        "epochs": _positive_int(body, "epochs", maximum=MAX_EPOCHS),
        "expected_batch_size": _positive_int(body, "batch_size"),
        "learning_rate": _positive_float(body, "learning_rate"),
        "clip_norm": _positive_float(body, "clip_norm"),
        "target_epsilon_micro": parse_epsilon_micro(body["target_epsilon"], "target_epsilon") if has_target else None,
        "noise_multiplier": _positive_float(body, "noise_multiplier") if has_sigma else None,
        "delta": delta,
        "seed": seed,
        "checkpoint_every": _positive_int(body, "checkpoint_every", default=DEFAULT_CHECKPOINT_EVERY),
        "canaries": _canaries(body),
    }


def _canaries(body: dict) -> int:
    """m canaries for the audit (0: no audit); the service checks m against the dataset's size."""
    value = body.get("canaries", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError("invalid_training_parameter", "canaries must be a non-negative integer.", field="canaries")
    return value


def dataset_json(dataset: Dataset, budget: tuple[int, int]) -> dict:
    cap, spent = budget
    return {
        "id": dataset.pk, "name": dataset.name, "kind": dataset.kind, "num_examples": dataset.num_examples,
        "num_test_examples": dataset.num_test_examples, "input_shape": dataset.input_shape,
        "num_classes": dataset.num_classes, "lifetime_epsilon": float(from_micro(cap)),
        "epsilon_spent": float(from_micro(spent)) if spent else 0.0,
    }


def job_json(job: TrainingJob) -> dict:
    return {
        "id": job.pk, "dataset": job.dataset.name, "owner": job.owner.username, "model": job.model_name,
        "status": job.status, "cancel_requested": job.cancel_requested,
        "parameters": {"epochs": job.epochs, "batch_size": job.expected_batch_size,
                       "learning_rate": job.learning_rate, "clip_norm": job.clip_norm,
                       "noise_multiplier": job.noise_multiplier, "sampling_probability": job.sampling_probability,
                       "steps": job.total_steps, "target_epsilon": job.target_epsilon, "delta": job.delta,
                       "seeded": job.seed is not None, "canaries": job.canaries},
        "epsilon_reserved": float(from_micro(job.epsilon_micro)),
        "epsilon_charged": float(from_micro(job.epsilon_micro - job.epsilon_refunded_micro)),
        "epsilon_refunded": float(from_micro(job.epsilon_refunded_micro)), "steps_charged": job.steps_charged,
        "progress": {"steps_done": job.steps_done, "total_steps": job.total_steps, "epochs_done": job.epochs_done,
                     "epsilon_spent": job.epsilon_spent, "steps_leased": job.steps_leased},
        "history": [{"step": step, "epsilon": epsilon, "test_loss": loss, "test_accuracy": acc}
                    for step, epsilon, loss, acc in job.history],
        "device": job.device, "log": job.log, "test_accuracy": job.test_accuracy, "model_card": job.model_card,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }


