"""Writes: the metric catalog and ingest keys (users: deploy.api.users.services)."""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from privacy.ldp import PROTOCOLS
from privacy.ldp.longitudinal import DEFAULT_REPORT_EPSILON_FRACTION, least_variance_protocol
from deploy.api.auth import hash_key
from telemetry.auth import ingest_keys
from telemetry.catalog import catalog
from deploy.api.errors import ApiError
from telemetry.models import IngestKey, Metric

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
MAX_DOMAIN_SIZE = 1024
MAX_LOCAL_EPSILON = 20.0


def _invalid(field: str, message: str) -> ApiError:
    return ApiError("invalid_metric", message, field=field)


def default_report_epsilon(epsilon: float) -> float:
    """The per-report ε of a metric defined without one (privacy.ldp.longitudinal)."""
    return float(epsilon) * DEFAULT_REPORT_EPSILON_FRACTION


def _validated_definition(domain: list[str], epsilon: float, protocol: str, contribution_bound: int,
                          report_epsilon: float) -> dict:
    """The stored definition, after the rules every version must follow (types are the edge's:
    telemetry.serializers)."""
    if not 2 <= len(domain) <= MAX_DOMAIN_SIZE:
        raise _invalid("domain", f"domain must be a list of 2 to {MAX_DOMAIN_SIZE} labels.")
    if not all(0 < len(label) <= 100 for label in domain):
        raise _invalid("domain", "Every label must be a non-empty string of at most 100 characters.")
    if len(set(domain)) != len(domain):
        raise _invalid("domain", "Labels must be distinct.")
    if not 0 < epsilon <= MAX_LOCAL_EPSILON:
        raise _invalid("epsilon", f"epsilon must be a number in (0, {MAX_LOCAL_EPSILON}].")
    if protocol != "auto" and protocol not in PROTOCOLS:
        raise _invalid("protocol", f"protocol must be 'auto' or one of {list(PROTOCOLS)}.")
    cap = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"]
    if not 1 <= contribution_bound <= cap:
        raise _invalid("contribution_bound", f"contribution_bound must be an integer in [1, {cap}].")
    if not 0 < report_epsilon <= epsilon:
        raise _invalid("report_epsilon", "report_epsilon must be a number in (0, epsilon].")
    epsilon, report_epsilon = float(epsilon), float(report_epsilon)
    return {
        "domain": domain,
        "epsilon": epsilon,
        "report_epsilon": report_epsilon,
        "protocol": least_variance_protocol(len(domain), epsilon, report_epsilon) if protocol == "auto" else protocol,
        "contribution_bound": contribution_bound,
    }


def create_metric(*, name: str, domain: list[str], epsilon: float = 2.0, protocol: str = "auto",
                  contribution_bound: int | None = None, description: str = "",
                  report_epsilon: float | None = None) -> Metric:
    """A new metric, version 1. Without ``report_epsilon`` it gets :func:`default_report_epsilon`."""
    if not _NAME_RE.fullmatch(name):
        raise _invalid("name", "name must be 1-64 characters of a-z, 0-9, '_' or '-', starting alphanumeric.")
    bound = settings.PRIVACY["DEFAULT_CONTRIBUTION_BOUND"] if contribution_bound is None else contribution_bound
    if report_epsilon is None:
        report_epsilon = default_report_epsilon(epsilon) if 0 < epsilon <= MAX_LOCAL_EPSILON else epsilon
    definition = _validated_definition(domain, epsilon, protocol, bound, report_epsilon)
    try:
        with transaction.atomic():
            metric = Metric.objects.create(name=name, description=description, **definition)
    except IntegrityError:  # the unique (name, version) constraint: it exists, or a concurrent create won
        raise ApiError("metric_exists", f"Metric {name!r} exists; change it to make a new version.", http_status=409)
    catalog.invalidate()
    return metric


@transaction.atomic
def change_metric(*, name: str, domain: list[str] | None = None, epsilon: float | None = None,
                  protocol: str | None = None, contribution_bound: int | None = None,
                  description: str | None = None, report_epsilon: float | None = None) -> Metric:
    """Change a metric by making a new version; the old version stays as it was. ``None`` keeps a field,
    except that a new ``epsilon`` without a ``report_epsilon`` gets :func:`default_report_epsilon`.

    Versions are immutable (only ``description`` is edited in place), so every
    stored report matches the definition it was validated against, even when
    another worker's catalog cache was a few seconds stale.
    """
    first = Metric.objects.select_for_update().filter(name=name).order_by("version").first()
    if first is None:
        raise ApiError("unknown_metric", f"No metric named {name!r}.", http_status=404)
    # Changes of one name serialize on its first version's row; read the current one after the lock.
    current = Metric.objects.filter(name=name).order_by("-version").first()
    if report_epsilon is None:
        changes_epsilon = epsilon is not None and epsilon != current.epsilon and 0 < epsilon <= MAX_LOCAL_EPSILON
        report_epsilon = default_report_epsilon(epsilon) if changes_epsilon else current.report_epsilon
    definition = _validated_definition(
        current.domain if domain is None else domain,
        current.epsilon if epsilon is None else epsilon,
        current.protocol if protocol is None else protocol,
        current.contribution_bound if contribution_bound is None else contribution_bound,
        report_epsilon,
    )
    description = current.description if description is None else description
    if all(getattr(current, field) == value for field, value in definition.items()):
        current.description = description
        current.save(update_fields=["description"])
        return current
    metric = Metric.objects.create(name=name, version=current.version + 1, description=description, **definition)
    catalog.invalidate()
    return metric


def create_ingest_key(*, app: str) -> tuple[IngestKey, str]:
    """A new key; the plaintext is returned once and only its hash is stored."""
    if not 0 < len(app.strip()) <= 100:
        raise ApiError("invalid_app", "app must be a name of 1 to 100 characters.")
    plaintext = "ik_" + secrets.token_urlsafe(32)
    key = IngestKey.objects.create(app=app.strip(), prefix=plaintext[:10], key_hash=hash_key(plaintext))
    return key, plaintext


def revoke_ingest_key(*, key_id: int) -> IngestKey:
    key = IngestKey.objects.filter(pk=key_id).first()
    if key is None:
        raise ApiError("unknown_ingest_key", "No such ingest key.", http_status=404)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    ingest_keys.clear()
    return key
