"""The analysts' pages: dashboard (budget meter), metrics, queries, past releases.

Thin views over the same services and selectors as the JSON API: nothing is computed twice.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.shortcuts import render
from django.urls import path

from accounting.selectors import budget_status, utc_today
from frontend.access import analyst_required
from telemetry import selectors


def days_with_data(metric) -> tuple:
    """(first, last) day this metric version can hold reports for: from REPORT_MAX_AGE_DAYS before
    it was made (a report may be that old) to today. Data-independent on purpose: which days hold
    a report is an exact fact about the data (docs/architecture.md, invariant 6)."""
    first = metric.created_at.date() - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"])
    return first, utc_today()


@analyst_required
def dashboard(request):
    return render(request, "frontend/analyst/dashboard.html", {
        "budget": budget_status(request.user),
        "metrics": selectors.current_metrics(),
    })


@analyst_required
def metrics(request):
    rows = []
    for metric in selectors.current_metrics():
        first, last = days_with_data(metric)
        rows.append({"metric": metric, "first_day": first, "last_day": last, "days": (last - first).days + 1})
    return render(request, "frontend/analyst/metrics.html", {
        "rows": rows, "report_max_age_days": settings.PRIVACY["REPORT_MAX_AGE_DAYS"]})


urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("metrics", metrics, name="metrics"),
]
