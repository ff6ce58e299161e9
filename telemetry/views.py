"""Thin API views: parse, authorize, call a service or selector, render."""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from accounting import selectors as budget_selectors
from accounting import serializers as budget_serializers
from accounting.services import policies as budget_services
from telemetry import selectors, serializers, services
from deploy.api.auth import IsAdmin, IsAnalyst, IsIngestKey, api_key_from_header
from telemetry.auth import IngestKeyAuthentication, ingest_keys
from telemetry.catalog import partition_scope
from deploy.api.errors import ApiError, error_response
from telemetry.ingest import ingest_batch


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


class MetricsView(APIView):
    # Token first: its scheme is what a refused ingest key is told to use (WWW-Authenticate).
    authentication_classes = [TokenAuthentication, IngestKeyAuthentication]

    def get_permissions(self):
        if self.request.method == "GET":
            return [(IsIngestKey | IsAnalyst)()]
        return [IsAdmin()]

    def get(self, request):
        return Response(serializers.metrics_catalog_json(selectors.current_metrics()))

    def post(self, request):
        metric = services.create_metric(**serializers.metric_create_input(request.data))
        return Response(serializers.metric_json(metric), status=status.HTTP_201_CREATED)


class MetricDetailView(APIView):
    permission_classes = [IsAdmin]

    def put(self, request, name: str):
        metric = services.change_metric(name=name, **serializers.metric_change_input(request.data))
        return Response(serializers.metric_json(metric))

    patch = put


class IngestKeysView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({"ingest_keys": [serializers.ingest_key_json(k) for k in selectors.ingest_keys()]})

    def post(self, request):
        key, plaintext = services.create_ingest_key(**serializers.ingest_key_input(request.data))
        return Response({**serializers.ingest_key_json(key), "key": plaintext}, status=status.HTTP_201_CREATED)


class IngestKeyDetailView(APIView):
    permission_classes = [IsAdmin]

    def delete(self, request, key_id: int):
        return Response(serializers.ingest_key_json(services.revoke_ingest_key(key_id=key_id)))



class PartitionBudgetView(APIView):
    """``budgets/partitions/<metric>[?version=N]``: the lifetime ε cap of each data-day of a metric
    version. Served here, not by accounting, because a metric is a telemetry object."""

    permission_classes = [IsAdmin]

    def _spec(self, request, metric: str):
        return selectors.metric_version(metric, serializers.version_param(request.query_params.get("version")))

    def _usage_json(self, spec) -> dict:
        return budget_serializers.partition_usage_json(spec.name, spec.version,
                                                       budget_selectors.partition_usage(partition_scope(spec.id)))

    def get(self, request, metric: str):
        return Response(self._usage_json(self._spec(request, metric)))

    def put(self, request, metric: str):
        spec = self._spec(request, metric)
        budget_services.set_partition_cap(scope=partition_scope(spec.id),
                                          **budget_serializers.partition_cap_input(request.data))
        return Response(self._usage_json(spec))
