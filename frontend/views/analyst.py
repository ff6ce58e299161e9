"""The analysts' pages: dashboard (budget meter), metrics, queries, past releases and their CSV.

Thin views over the same services and selectors as the JSON API: the query is parsed by the API's
parser, paid for by the same ``run_query``, and previewed by the ledger's own arithmetic.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_safe

from accounting.selectors import budget_status, partitions_left_micro, utc_today
from deploy.api.auth import role_of
from deploy.api.errors import ApiError
from frontend import answers
from frontend.access import analyst_required, error_page, not_found
from privacy.epsilon import from_micro
from telemetry import selectors
from telemetry.catalog import catalog
from telemetry.release.request import Presentation, parse_query_request, query_of_release
from telemetry.release.service import preview_query, query_partitions, reopen_release, run_query

CONFIDENCES = ("0.8", "0.9", "0.95", "0.99")
DEFAULT_WINDOW_DAYS = 3
RECENT_RELEASES = 200


def days_with_data(metric) -> tuple:
    """(first, last) day this metric version can hold reports for: from REPORT_MAX_AGE_DAYS before
    it was made (a report may be that old) to today. Data-independent on purpose: which days hold
    a report is an exact fact about the data (docs/architecture.md, invariant 6)."""
    first = metric.created_at.date() - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
    return first, utc_today()


@require_safe
@analyst_required
def dashboard(request):
    return render(request, "frontend/analyst/dashboard.html", {
        "budget": budget_status(request.user),
        "metrics": selectors.current_metrics(),
        "releases": selectors.releases_of(request.user, 5),
    })


@require_safe
@analyst_required
def metrics(request):
    rows = []
    for metric in selectors.current_metrics():
        first, last = days_with_data(metric)
        rows.append({"metric": metric, "first_day": first, "last_day": last, "days": (last - first).days + 1})
    return render(request, "frontend/analyst/metrics.html", {
        "rows": rows, "report_max_age_days": settings.PRIVACY["REPORT_MAX_AGE_DAYS"]})


# --- queries ---------------------------------------------------------------------------------------


def _form_values(data, submitted: bool) -> dict:
    """The query form's fields as submitted (or their defaults), as text. Unchecked boxes send nothing,
    so a submitted form's group_by is what it sends; a link's is the default unless it names one."""
    today = utc_today()
    return {
        "metric": data.get("metric", ""),
        "start": data.get("start") or (today - timedelta(days=DEFAULT_WINDOW_DAYS - 1)).isoformat(),
        "end": data.get("end") or today.isoformat(),
        "group_by": [field for field in ("day", "region") if field in data.getlist("group_by")]
        if submitted or "group_by" in data else ["day", "region"],
        "epsilon": data.get("epsilon") or settings.PRIVACY["DEFAULT_QUERY_EPSILON"],
        "confidence": data.get("confidence") if data.get("confidence") in CONFIDENCES else "0.95",
    }


def _api_body(values: dict) -> dict:
    """The form's values as the JSON body ``POST /api/v1/queries`` takes, for the API's own parser."""
    return {"metric": values["metric"], "start": values["start"], "end": values["end"],
            "group_by": values["group_by"], "epsilon": values["epsilon"], "confidence": float(values["confidence"])}


def _query_page(request, values: dict, *, error: ApiError | None = None, preview=None, status: int = 200):
    metric_names = [metric.name for metric in selectors.current_metrics()]
    if not values["metric"] and metric_names:
        values = {**values, "metric": metric_names[0]}
    context = {"values": values, "metric_names": metric_names, "confidences": CONFIDENCES, "error": error,
               "preview": preview, "budget": budget_status(request.user), "today": utc_today().isoformat(),
               "max_days": settings.PRIVACY["MAX_QUERY_DAYS"]}
    return render(request, "frontend/analyst/query.html", context, status=status)


def _epsilon(micro: int | None):
    """A figure of the ledger's arithmetic for display: never below 0 (a shortfall shows as a refusal)."""
    return None if micro is None else from_micro(max(0, micro))


def _preview_context(preview) -> dict:
    charge = preview.charge
    left = sorted(charge.partitions_left_after_micro.items())
    return {
        "released": preview.released,
        "cost": from_micro(charge.epsilon_micro),
        "remaining_before": _epsilon(charge.remaining_before_micro),
        "remaining_after": _epsilon(charge.remaining_after_micro),
        "days_left": [{"day": p.key, "left_now": _epsilon(micro + charge.epsilon_micro), "left_after": _epsilon(micro)}
                      for p, micro in left],
        "lifetime_left_min": _epsilon(min(micro for _, micro in left) + charge.epsilon_micro) if left else None,
        "lifetime_after_min": _epsilon(min(micro for _, micro in left)) if left else None,
        "days": len(left),
        "refusal": charge.refusal,
        "resets_at": preview.resets_at,
    }


def _lifetime_left(release) -> dict:
    """The lifetime cap left now on the data-days a release asked about (for the budget meter)."""
    query = query_of_release(release, catalog.by_id(release.metric_id))
    left = partitions_left_micro(query_partitions(query, release.metric_id))
    return {"left": _epsilon(min(left.values())), "days": len(left)}


def _answer_page(request, answer: dict, release, *, status: int = 200):
    return render(request, "frontend/analyst/answer.html", {
        "answer": answer, "privacy": answers.privacy_facts(answer, release), "rows": answers.table_rows(answer),
        "chart": answers.chart_data(answer), "budget": budget_status(request.user), "values": answer["values"],
        "region_grouped": "region" in answer["release"]["query"]["group_by"], "lifetime": _lifetime_left(release),
    }, status=status)


@require_http_methods(["GET", "POST"])
@analyst_required
def query(request):
    """GET: the form. POST ``action=preview``: what it would cost (nothing charged). POST ``action=run``
    (the second click): ``run_query``, as ``POST /api/v1/queries``, then the answer."""
    submitted = request.method == "POST"
    values = _form_values(request.POST if submitted else request.GET, submitted)
    if not submitted:
        return _query_page(request, values)
    try:
        parsed = parse_query_request(_api_body(values))
        if request.POST.get("action") == "run":
            answer = run_query(user=request.user, request=parsed)
            return _answer_page(request, answer, selectors.release_by_id(answer["release"]["id"]))
        return _query_page(request, values,
                           preview=_preview_context(preview_query(user=request.user, request=parsed)))
    except ApiError as error:
        return _query_page(request, values, error=error, status=error.http_status)


# --- past releases ---------------------------------------------------------------------------------


def _own_release(request, release_id):
    """The release if this user may reopen it (their own; admins any), else None."""
    release = selectors.release_by_id(release_id)
    if release is None or (release.analyst_id != request.user.id and role_of(request.user) != "admin"):
        return None
    return release


def _presentation(data) -> Presentation:
    confidence = data.get("confidence")
    return Presentation(float(confidence) if confidence in CONFIDENCES else 0.95, data.get("simultaneous") == "true")


@require_safe
@analyst_required
def releases(request):
    rows = []
    for release in selectors.releases_of(request.user, RECENT_RELEASES):
        rows.append({"release": release, "query": release.query, "epsilon": from_micro(release.epsilon_micro)})
    return render(request, "frontend/analyst/releases.html", {"rows": rows, "budget": budget_status(request.user)})


@require_safe
@analyst_required
def release(request, release_id):
    found = _own_release(request, release_id)
    if found is None:
        return not_found(request, "release")
    try:
        answer = reopen_release(user=request.user, release=found, presentation=_presentation(request.GET))
    except ApiError as error:  # release_unreadable
        return error_page(request, error, "This release cannot be shown")
    return _answer_page(request, answer, found)


@require_safe
@analyst_required
def release_csv(request, release_id):
    found = _own_release(request, release_id)
    if found is None:
        return not_found(request, "release")
    try:
        answer = reopen_release(user=request.user, release=found, presentation=_presentation(request.GET))
    except ApiError as error:
        return error_page(request, error, "This release cannot be exported")
    response = HttpResponse(answers.csv_text(answer, found), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="release-{found.id}.csv"'
    return response


urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("metrics", metrics, name="metrics"),
    path("query", query, name="query"),
    path("releases", releases, name="releases"),
    path("releases/<uuid:release_id>", release, name="release"),
    path("releases/<uuid:release_id>/csv", release_csv, name="release-csv"),
]
