"""Metrics (create, new version) and ingest keys (create, shown once; revoke).

Mirrors ``POST /metrics``, ``PUT /metrics/<name>``, ``GET|POST /ingest-keys`` and
``DELETE /ingest-keys/<id>``: the same services, and the API's serializers parse the forms.
"""

from __future__ import annotations

import re

from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST

from deploy.api.errors import ApiError
from frontend.access import admin_required, not_found
from frontend.views.admin.common import body_of, notice, redirect_with_notice, render_secret
from telemetry import selectors, serializers, services

TEXT_FIELDS = ("epsilon", "report_epsilon", "protocol", "description")
PROTOCOLS = ("auto", "krr", "oue", "olh", "ss")


def metric_body(post, *, with_name: bool) -> dict:
    """A metric definition from the form, as the API's JSON body: the domain one label per line (or
    comma-separated), the contribution bound an integer when it reads as one; blank fields are absent."""
    body = body_of(post, *(("name",) if with_name else ()), *TEXT_FIELDS)
    if "description" not in body and "description" in post:
        body["description"] = ""
    domain = post.get("domain", "")
    if domain.strip():
        body["domain"] = [label.strip() for label in re.split(r"[\n,]", domain) if label.strip()]
    bound = post.get("contribution_bound", "").strip()
    if bound:
        body["contribution_bound"] = int(bound) if bound.isascii() and bound.isdigit() else bound
    return body


def _form_of(post) -> dict:
    """The user's input, to re-render a refused form as it was typed."""
    return {field: post.get(field, "") for field in ("name", "domain", "contribution_bound", *TEXT_FIELDS)}


def _metrics_page(request, *, form=None, error=None, status=200):
    return render(request, "frontend/admin/metrics.html", {
        "metrics": selectors.current_metrics(), "protocols": PROTOCOLS, "form": form or {"protocol": "auto"},
        "error": error, "notice": notice(request),
    }, status=status)


@admin_required
def metrics(request):
    if request.method != "POST":
        return _metrics_page(request)
    try:
        metric = services.create_metric(**serializers.metric_create_input(metric_body(request.POST, with_name=True)))
    except ApiError as error:
        return _metrics_page(request, form=_form_of(request.POST), error=error, status=error.http_status)
    return redirect_with_notice("frontend:admin-metric", "metric-created", metric.name)


def _metric_form(metric) -> dict:
    return {"domain": "\n".join(metric.domain), "epsilon": repr(metric.epsilon),
            "report_epsilon": repr(metric.report_epsilon), "protocol": metric.protocol,
            "contribution_bound": str(metric.contribution_bound), "description": metric.description}


def _metric_page(request, versions, *, form=None, error=None, status=200):
    return render(request, "frontend/admin/metric.html", {
        "metric": versions[0], "versions": versions, "protocols": PROTOCOLS,
        "form": form or _metric_form(versions[0]), "error": error, "notice": notice(request),
    }, status=status)


@admin_required
def metric(request, name: str):
    try:
        versions = selectors.metric_versions(name)
    except ApiError:
        return not_found(request, what="metric")
    if request.method != "POST":
        return _metric_page(request, versions)
    current = versions[0]
    try:
        changed = services.change_metric(name=name, **serializers.metric_change_input(
            metric_body(request.POST, with_name=False)))
    except ApiError as error:
        return _metric_page(request, versions, form=_form_of(request.POST), error=error, status=error.http_status)
    key = "version-created" if changed.version != current.version else "description-saved"
    return redirect_with_notice("frontend:admin-metric", key, name)


def _keys_page(request, *, created=None, plaintext=None, form=None, error=None, status=200):
    context = {"keys": selectors.ingest_keys(), "created": created, "plaintext": plaintext, "form": form or {},
               "error": error, "notice": notice(request)}
    if plaintext is not None:
        return render_secret(request, "frontend/admin/ingest_keys.html", context)
    return render(request, "frontend/admin/ingest_keys.html", context, status=status)


@admin_required
def ingest_keys(request):
    if request.method != "POST":
        return _keys_page(request)
    form = {"app": request.POST.get("app", "")}
    try:
        key, plaintext = services.create_ingest_key(**serializers.ingest_key_input(form))
    except ApiError as error:
        return _keys_page(request, form=form, error=error, status=error.http_status)
    return _keys_page(request, created=key, plaintext=plaintext)


@admin_required
@require_POST
def revoke_ingest_key(request, key_id: int):
    try:
        services.revoke_ingest_key(key_id=key_id)
    except ApiError:
        return not_found(request, what="ingest key")
    return redirect_with_notice("frontend:admin-ingest-keys", "key-revoked")


urlpatterns = [
    path("admin/metrics", metrics, name="admin-metrics"),
    path("admin/metrics/<slug:name>", metric, name="admin-metric"),
    path("admin/ingest-keys", ingest_keys, name="admin-ingest-keys"),
    path("admin/ingest-keys/<int:key_id>/revoke", revoke_ingest_key, name="admin-revoke-ingest-key"),
]
