"""The admins' training pages: datasets and their budgets, the job form, a job's live progress
(loss, accuracy and ε curves, polled from :func:`job_progress`), cancelling, and the model card.

Thin views over the training API's own serializers and services (``federation``): a job made here
is parsed, calibrated, reserved on the ledger and queued exactly as ``POST /api/v1/training/jobs``.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from deploy.api.errors import ApiError
from federation import selectors, serializers, services
from federation.models import FINISHED_STATUSES
from frontend.access import admin_required, not_found

FORM_DEFAULTS = {"dataset": "digits", "model": "mlp", "epochs": "5", "batch_size": "64", "learning_rate": "0.5",
                 "clip_norm": "1.0", "privacy": "target", "target_epsilon": "2", "noise_multiplier": "1.0",
                 "seed": "", "checkpoint_every": "20", "canaries": "0"}
INTEGER_FIELDS = ("epochs", "batch_size", "checkpoint_every", "canaries", "seed")
POLL_MS = 2000


def _datasets_with_budgets() -> list[dict]:
    rows = selectors.datasets()
    budgets = selectors.dataset_budgets(rows)
    shown = []
    for row in rows:
        data = serializers.dataset_json(row, budgets[row.pk])
        cap, spent = data["lifetime_epsilon"], data["epsilon_spent"]
        shown.append({**data, "remaining": max(0.0, cap - spent), "percent_spent": min(100.0, 100 * spent / cap)})
    return shown


@require_safe
@admin_required
def index(request):
    return render(request, "frontend/training/index.html", {
        "datasets": _datasets_with_budgets(), "jobs": [serializers.job_json(job) for job in selectors.jobs()[:100]],
    })


@require_safe
@admin_required
def datasets(request):
    return render(request, "frontend/training/datasets.html", {"datasets": _datasets_with_budgets()})


def _api_body(values: dict) -> dict:
    """The form's text fields as the JSON body the API's parser takes (integers as integers)."""
    body = {key: values[key] for key in ("dataset", "model", "learning_rate", "clip_norm")}
    for key in INTEGER_FIELDS:
        text = values[key].strip()
        if text:
            body[key] = int(text) if text.lstrip("-").isdigit() else text
    chosen = "target_epsilon" if values["privacy"] == "target" else "noise_multiplier"
    body[chosen] = values[chosen]
    return body


@require_http_methods(["GET", "HEAD", "POST"])
@admin_required
def new_job(request):
    values = {key: request.POST.get(key, default).strip() for key, default in FORM_DEFAULTS.items()}
    error = None
    if request.method == "POST":
        try:
            fields = serializers.job_input(_api_body(values))
            dataset = selectors.dataset_named(fields.pop("dataset_name"))
            if dataset is None:
                raise ApiError("unknown_dataset", "No dataset of that name.", http_status=404, field="dataset")
            job = services.create_training_job(owner=request.user, dataset=dataset, **fields)
        except ApiError as exc:
            error = exc
        else:
            return redirect("frontend:training-job", job_id=job.pk)
    return render(request, "frontend/training/new_job.html", {
        "values": values, "error": error, "datasets": selectors.datasets(), "models": services.MODEL_NAMES,
    }, status=400 if error is not None else 200)


@require_safe
@admin_required
def job(request, job_id: int):
    row = selectors.job_by_id(job_id)
    if row is None:
        return not_found(request, what="training job")
    data = serializers.job_json(row)
    return render(request, "frontend/training/job.html", {
        "job": data, "finished": row.status in FINISHED_STATUSES, "poll_ms": POLL_MS,
        "cancelled_now": request.GET.get("cancelled") == "1",
    })


@require_safe
@admin_required
def job_progress(request, job_id: int):
    """The job as the API shows it, for the progress page's polling (session-authenticated, admins only)."""
    row = selectors.job_by_id(job_id)
    if row is None:
        return JsonResponse({"code": "unknown_job", "message": f"No training job {job_id}."}, status=404)
    data = serializers.job_json(row)
    data.pop("model_card")
    return JsonResponse({**data, "finished": row.status in FINISHED_STATUSES})


@require_POST
@admin_required
def cancel_job(request, job_id: int):
    row = selectors.job_by_id(job_id)
    if row is None:
        return not_found(request, what="training job")
    try:
        services.request_cancel(job=row)
    except ApiError:  # finished meanwhile: the page shows how it ended
        return redirect("frontend:training-job", job_id=job_id)
    return redirect(f"{request.path.rsplit('/', 1)[0]}?cancelled=1")


@require_safe
@admin_required
def model_card(request, job_id: int):
    row = selectors.job_by_id(job_id)
    if row is None or row.model_card is None:
        return not_found(request, what="model card")
    return render(request, "frontend/training/model_card.html", {"card": row.model_card, "job": row})


urlpatterns = [
    path("training", index, name="training"),
    path("training/datasets", datasets, name="training-datasets"),
    path("training/jobs/new", new_job, name="training-new-job"),
    path("training/jobs/<int:job_id>", job, name="training-job"),
    path("training/jobs/<int:job_id>/progress.json", job_progress, name="training-job-progress"),
    path("training/jobs/<int:job_id>/cancel", cancel_job, name="training-job-cancel"),
    path("training/jobs/<int:job_id>/card", model_card, name="training-model-card"),
]
