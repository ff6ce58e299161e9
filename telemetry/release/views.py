"""Thin views of the query API: parse, call the service or selector, render."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.response import Response
from rest_framework.views import APIView

from accounting.selectors import charges_for
from deploy.api.auth import IsAdmin, IsAnalyst
from telemetry import selectors
from telemetry.release.audit import replay_release, verification
from telemetry.release.request import parse_query_request
from telemetry.release.responses import dumps, release_json
from telemetry.release.service import run_query


class QueriesView(APIView):
    permission_classes = [IsAnalyst]

    def post(self, request):
        answer = run_query(user=request.user, request=parse_query_request(request.data))
        return HttpResponse(dumps(answer), content_type="application/json")


class ReleasesView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        releases = selectors.recent_releases(limit=200)
        entries = charges_for("release", [str(release.id) for release in releases])
        versions = selectors.data_versions(releases)
        return Response({"releases": [
            release_json(release, [entry.id for entry in entries.get(str(release.id), [])], versions[release.id])
            for release in releases
        ]})


class ReleaseVerifyView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, release_id):
        replay = replay_release(release_id)
        return Response(verification(replay, selectors.data_versions([replay.release])[replay.release.id]))
