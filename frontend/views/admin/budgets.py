"""Budgets: every analyst's day, group policies, lifetime caps per metric and data-day, usage over time.

Mirrors ``GET /budgets``, ``GET|PUT /budgets/analysts/<username>``, ``GET|PUT /budgets/groups/<name>``
and ``GET|PUT /budgets/partitions/<metric>``: the same selectors, services and input parsing.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.shortcuts import render
from django.urls import path

from accounting import selectors as budget_selectors
from accounting import serializers as budget_serializers
from accounting.services import policies as budget_services
from deploy.api.errors import ApiError
from deploy.api.users.selectors import group_names
from frontend.access import admin_required, not_found
from frontend.templatetags.admin_tags import delta_text
from frontend.views.admin.common import body_of, notice, redirect_with_notice
from telemetry import selectors as telemetry_selectors
from telemetry.catalog import partition_scope

HISTORY_DAYS = 30
POLICY_FIELDS = ("daily_epsilon", "composition", "delta")


def _days(count: int) -> list:
    today = budget_selectors.utc_today()
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def usage_chart(users, histories: dict) -> dict:
    """Chart data: ε charged per day over the last HISTORY_DAYS days, one series per user who spent any."""
    days = _days(HISTORY_DAYS)
    series = []
    for user in users:
        spent = {row["day"]: float(row["spent"]) for row in histories.get(user.pk, [])}
        if spent:
            series.append({"label": user.username, "data": [spent.get(day, 0.0) for day in days]})
    return {"labels": [day.isoformat() for day in days], "series": series}


def usage_rows(chart: dict) -> list[dict]:
    """The chart's figures as table rows, newest day first, leaving out the days nobody spent on."""
    rows = [{"day": day, "values": [series["data"][i] for series in chart["series"]]}
            for i, day in enumerate(chart["labels"])]
    return [row for row in reversed(rows) if any(row["values"])]


@admin_required
def budgets(request):
    statuses = budget_selectors.budget_statuses()
    users = [user for user, _ in statuses]
    chart = usage_chart(users, budget_selectors.usage_histories(users, HISTORY_DAYS))
    return render(request, "frontend/admin/budgets.html", {
        "statuses": statuses, "group_names": group_names(), "metrics": telemetry_selectors.current_metrics(),
        "groups": [budget_serializers.group_policy_json(policy) for policy in budget_selectors.group_policies()],
        "chart": chart, "usage_rows": usage_rows(chart), "history_days": HISTORY_DAYS,
    })


def decimal_text(number: Decimal) -> str:
    """A Decimal as plain text without trailing zeros: 50.000000 as "50", 0.25 as "0.25"."""
    return format(number.normalize(), "f")


def policy_form(daily_epsilon, composition: str, delta) -> dict:
    """A budget form's initial values: the policy in force (δ only when approximate)."""
    return {"daily_epsilon": decimal_text(daily_epsilon), "composition": composition,
            "delta": delta_text(delta) if composition == "approximate" else ""}


def _analyst_page(request, user, *, form=None, error=None, status=200):
    history = budget_selectors.usage_histories([user], HISTORY_DAYS)
    budget = budget_selectors.budget_status(user)
    return render(request, "frontend/admin/analyst_budget.html", {
        "analyst": user, "budget": budget, "chart": {**usage_chart([user], history),
                                                     "cap": float(budget["daily_epsilon"])},
        "history": list(reversed(history[user.pk])), "error": error,
        "form": form or policy_form(budget["daily_epsilon"], budget["composition"], budget["delta"]),
        "notice": notice(request), "history_days": HISTORY_DAYS,
    }, status=status)


@admin_required
def analyst_budget(request, username: str):
    user = budget_selectors.analyst_or_admin(username)
    if user is None:
        return not_found(request, what="analyst or admin")
    if request.method != "POST":
        return _analyst_page(request, user)
    form = body_of(request.POST, *POLICY_FIELDS)
    try:
        budget_services.set_analyst_budget(username=user.username, **budget_serializers.budget_policy_input(form))
    except ApiError as error:
        return _analyst_page(request, user, form=form, error=error, status=error.http_status)
    return redirect_with_notice("frontend:admin-analyst-budget", "budget-saved", user.username)


def _group_page(request, name: str, *, form=None, error=None, status=200):
    policy = budget_selectors.group_policy(name)
    current = budget_serializers.group_policy_json(policy) if policy is not None else None
    initial = policy_form(Decimal(str(current["daily_epsilon"])), current["composition"],
                          Decimal(str(current["delta"]))) if current else {"composition": "pure"}
    return render(request, "frontend/admin/group_budget.html", {
        "group": name, "current": current, "form": form or initial, "error": error, "notice": notice(request),
    }, status=status)


@admin_required
def group_budget(request, name: str):
    if not budget_selectors.group_exists(name):
        return not_found(request, what="group")
    if request.method != "POST":
        return _group_page(request, name)
    form = body_of(request.POST, *POLICY_FIELDS)
    try:
        budget_services.set_group_budget(name=name, **budget_serializers.budget_policy_input(form))
    except ApiError as error:
        return _group_page(request, name, form=form, error=error, status=error.http_status)
    return redirect_with_notice("frontend:admin-group-budget", "budget-saved", name)


def _metric_page(request, spec, *, form=None, error=None, status=200):
    usage = budget_selectors.partition_usage(partition_scope(spec.id))
    cap = usage["lifetime_epsilon_cap"]
    days = [{"day": row["key"], "spent": row["spent"], "left": max(Decimal(0), cap - row["spent"])}
            for row in usage["partitions"]]
    return render(request, "frontend/admin/metric_budget.html", {
        "spec": spec, "cap": cap, "days": days, "form": form or {"lifetime_epsilon": decimal_text(cap)},
        "chart": {"labels": [row["day"] for row in days], "spent": [float(row["spent"]) for row in days],
                  "cap": float(cap)},
        "versions": telemetry_selectors.metric_versions(spec.name), "error": error,
        "notice": notice(request),
    }, status=status)


@admin_required
def metric_budget(request, name: str, version: int):
    try:
        spec = telemetry_selectors.metric_version(name, version)
    except ApiError:
        return not_found(request, what="metric version")
    if request.method != "POST":
        return _metric_page(request, spec)
    form = body_of(request.POST, "lifetime_epsilon")
    try:
        budget_services.set_partition_cap(scope=partition_scope(spec.id),
                                          **budget_serializers.partition_cap_input(form))
    except ApiError as error:
        return _metric_page(request, spec, form=form, error=error, status=error.http_status)
    return redirect_with_notice("frontend:admin-metric-budget", "cap-saved", spec.name, spec.version)


urlpatterns = [
    path("admin/budgets", budgets, name="admin-budgets"),
    path("admin/budgets/analysts/<str:username>", analyst_budget, name="admin-analyst-budget"),
    path("admin/budgets/groups/<str:name>", group_budget, name="admin-group-budget"),
    path("admin/budgets/metrics/<slug:name>/v<int:version>", metric_budget, name="admin-metric-budget"),
]
