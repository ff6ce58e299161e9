"""Releases and their audit: the latest releases, and the replay of one ("verify").

Mirrors ``GET /releases`` and ``POST /releases/<id>/verify`` with the same selectors and the same
``verification()``: each cell passes or fails; no raw count, noise or noisy count reaches the page.
"""

from __future__ import annotations

from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST

from accounting.selectors import charges_for
from deploy.api.errors import ApiError
from frontend.access import admin_required
from telemetry import selectors
from telemetry.release.audit import replay_release, verification
from telemetry.release.responses import release_json

LISTED = 200


@admin_required
def releases(request):
    rows = selectors.recent_releases(limit=LISTED)
    entries = charges_for("release", [str(release.id) for release in rows])
    versions = selectors.data_versions(rows)
    return render(request, "frontend/admin/releases.html", {
        "releases": [release_json(release, [entry.id for entry in entries.get(str(release.id), [])],
                                  versions[release.id]) for release in rows],
        "listed": LISTED,
    })


@admin_required
@require_POST
def verify_release(request, release_id):
    try:
        replay = replay_release(release_id)
    except ApiError as error:
        return render(request, "frontend/admin/release_verify.html", {"release_id": release_id, "error": error},
                      status=error.http_status)
    result = verification(replay, selectors.data_versions([replay.release])[replay.release.id])
    return render(request, "frontend/admin/release_verify.html", {
        "release_id": release_id, "result": result, "release": replay.release,
        "failed_cells": sum(not cell["verified"] for cell in result["cells"]),
    })


urlpatterns = [
    path("admin/releases", releases, name="admin-releases"),
    path("admin/releases/<uuid:release_id>/verify", verify_release, name="admin-verify-release"),
]
