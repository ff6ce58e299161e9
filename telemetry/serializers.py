"""The telemetry API edge: request bodies into typed service arguments, models into response JSON.

Inputs are checked here for their JSON types (a field that is present must have its type;
a metric's ε may be a JSON number or a numeric string), so services receive typed values
and check only the rules. The create_metric command reads its JSON files through the same
functions.
"""

from __future__ import annotations

from django.conf import settings

from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal, object_body
from privacy.ldp.longitudinal import guarantees
from telemetry.models import IngestKey, Metric
from telemetry.regions import accepted_regions

CHANGEABLE_METRIC_FIELDS = ("domain", "epsilon", "report_epsilon", "protocol", "contribution_bound", "description")


def _invalid(field: str, message: str) -> ApiError:
    return ApiError("invalid_metric", message, field=field)


def _text(field: str):
    def parse(value) -> str:
        if not isinstance(value, str):
            raise _invalid(field, f"{field} must be a string.")
        return value
    return parse


def _labels(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        raise _invalid("domain", "domain must be a list of string labels.")
    return value


def _local_epsilon(field: str):
    def parse(value) -> float:
        number = finite_decimal(value)
        if number is None:
            raise _invalid(field, f"{field} must be a number or a numeric string.")
        return float(number)
    return parse


def _contribution_bound(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid("contribution_bound", "contribution_bound must be an integer.")
    return value


_METRIC_FIELD_PARSERS = {
    "name": _text("name"),
    "domain": _labels,
    "epsilon": _local_epsilon("epsilon"),
    "report_epsilon": _local_epsilon("report_epsilon"),
    "protocol": _text("protocol"),
    "contribution_bound": _contribution_bound,
    "description": _text("description"),
}


def _metric_fields(body: dict, allowed: tuple[str, ...]) -> dict:
    if unknown := body.keys() - set(allowed):
        raise _invalid(sorted(unknown)[0], f"Unknown fields {sorted(unknown)}; the fields are {list(allowed)}.")
    return {field: _METRIC_FIELD_PARSERS[field](value) for field, value in body.items()}


def metric_create_input(data) -> dict:
    """Keyword arguments of ``services.create_metric`` from a definition (a POST body or a file's entry)."""
    body = object_body(data)
    for field in ("name", "domain"):
        if field not in body:
            raise _invalid(field, f"{field} is required.")
    return _metric_fields(body, ("name", *CHANGEABLE_METRIC_FIELDS))


def metric_change_input(data) -> dict:
    """Keyword arguments of ``services.change_metric`` (less the name) from a PUT/PATCH body."""
    return _metric_fields(object_body(data), CHANGEABLE_METRIC_FIELDS)


def metric_json(metric: Metric) -> dict:
    """A metric version; ``longitudinal`` holds the local guarantees its definition implies
    (privacy.ldp.longitudinal), for reading: clients recompute them from the definition."""
    return {
        "name": metric.name,
        "version": metric.version,
        "description": metric.description,
        "domain": metric.domain,
        "epsilon": metric.epsilon,
        "report_epsilon": metric.report_epsilon,
        "protocol": metric.protocol,
        "contribution_bound": metric.contribution_bound,
        "longitudinal": guarantees(
            metric.protocol, len(metric.domain), metric.epsilon, metric.report_epsilon
        ).to_json(),
    }


def metrics_catalog_json(metrics) -> dict:
    """``GET /metrics``: the current versions, plus what ingest accepts, so that clients check a
    report before they spend privacy on it."""
    return {
        "metrics": [metric_json(metric) for metric in metrics],
        "regions": sorted(accepted_regions()),
        "report_max_age_days": settings.PRIVACY["REPORT_MAX_AGE_DAYS"],
    }


def _required_text(body: dict, field: str, code: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise ApiError(code, f"{field} must be a string.")
    return value


def ingest_key_input(data) -> dict:
    """Keyword arguments of ``services.create_ingest_key``."""
    return {"app": _required_text(object_body(data), "app", "invalid_app")}


def ingest_key_json(key: IngestKey) -> dict:
    return {"id": key.id, "app": key.app, "prefix": key.prefix, "created_at": key.created_at,
            "revoked_at": key.revoked_at}


def version_param(value: str | None) -> int | None:
    """A ``?version=`` query parameter: absent, or a positive integer."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or int(value) < 1:
        raise ApiError("invalid_version", "version must be a positive integer.")
    return int(value)
