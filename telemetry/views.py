"""Thin API views: parse, authorize, call a service or selector, render."""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from telemetry import queries, selectors, services
from deploy.api.auth import IsAdmin, IsAnalyst, IsIngestKey, api_key_from_header
from telemetry.auth import IngestKeyAuthentication, ingest_keys
from deploy.api.errors import ApiError, error_response
from telemetry.ingest import ingest_batch
from accounting.accountants import from_micro
from telemetry.audit import verify_release
from telemetry.models import IngestKey, Release


def _json(data: dict, http_status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=http_status, content_type="application/json")


@csrf_exempt
def reports(request):
    """``POST /api/v1/reports``: a plain Django view, since it is the hot path (no DRF, no header dict)."""
    if request.method != "POST":
        response = error_response(ApiError("method_not_allowed", "Use POST.", http_status=405))
        response["Allow"] = "POST"
        return response
    key = api_key_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    if key is None:
        return error_response(ApiError("missing_api_key", "Send 'Authorization: Api-Key <key>'.", http_status=401))
    key_id = ingest_keys.key_id(key)
    if key_id is None:
        return error_response(ApiError("invalid_api_key", "Unknown or revoked ingest key.", http_status=401))
    try:
        result = ingest_batch(ingest_key_id=key_id, body=request.body)
    except ApiError as error:
        return error_response(error)
    response = HttpResponse(result.to_json(), content_type="application/json")
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _metric_json(metric) -> dict:
    return {
        "name": metric.name,
        "version": metric.version,
        "description": metric.description,
        "domain": metric.domain,
        "epsilon": metric.epsilon,
        "protocol": metric.protocol,
        "contribution_bound": metric.contribution_bound,
    }


class MetricsView(APIView):
    authentication_classes = [IngestKeyAuthentication, TokenAuthentication]

    def get_permissions(self):
        if self.request.method == "GET":
            return [(IsIngestKey | IsAnalyst)()]
        return [IsAdmin()]

    def get(self, request):
        return Response({"metrics": [_metric_json(m) for m in selectors.current_metrics()]})

    def post(self, request):
        data = _object_body(request)
        metric = services.create_metric(
            name=data.get("name"),
            domain=data.get("domain"),
            epsilon=data.get("epsilon", 2.0),
            protocol=data.get("protocol", "auto"),
            contribution_bound=data.get("contribution_bound"),
            description=str(data.get("description", "")),
        )
        return Response(_metric_json(metric), status=status.HTTP_201_CREATED)


class MetricDetailView(APIView):
    permission_classes = [IsAdmin]

    def put(self, request, name: str):
        metric = services.change_metric(name=name, changes=_object_body(request))
        return Response(_metric_json(metric))

    patch = put


def _object_body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    return request.data


def _key_json(key: IngestKey) -> dict:
    return {"id": key.id, "app": key.app, "prefix": key.prefix, "created_at": key.created_at,
            "revoked_at": key.revoked_at}


class IngestKeysView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({"ingest_keys": [_key_json(k) for k in IngestKey.objects.order_by("id")]})

    def post(self, request):
        key, plaintext = services.create_ingest_key(app=_object_body(request).get("app"))
        return Response({**_key_json(key), "key": plaintext}, status=status.HTTP_201_CREATED)


class IngestKeyDetailView(APIView):
    permission_classes = [IsAdmin]

    def delete(self, request, key_id: int):
        return Response(_key_json(services.revoke_ingest_key(key_id=key_id)))


class UsersView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request):
        data = _object_body(request)
        user, token = services.create_user(username=data.get("username"), role=data.get("role"))
        return Response({"username": user.username, "role": data["role"], "token": token},
                        status=status.HTTP_201_CREATED)


class QueriesView(APIView):
    permission_classes = [IsAnalyst]

    def post(self, request):
        response = queries.dumps(queries.run_query(user=request.user, data=request.data))
        return HttpResponse(response, content_type="application/json")


def _release_json(release: Release) -> dict:
    return {
        "id": str(release.id),
        "analyst": release.analyst.username,
        "query": release.query,
        "epsilon": str(from_micro(release.epsilon_micro)),
        "sensitivity": release.sensitivity,
        "noise_scale": release.noise_scale,
        "watermark": release.watermark,
        "created_at": release.created_at.isoformat(),
        "ledger_entries": list(release.ledger_entries.values_list("id", flat=True)),
    }


class ReleasesView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        releases = Release.objects.select_related("analyst").order_by("-created_at")[:200]
        return Response({"releases": [_release_json(r) for r in releases]})


class ReleaseVerifyView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, release_id):
        return Response(verify_release(release_id))
