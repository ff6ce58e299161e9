"""One error shape for every endpoint: ``{"code": ..., "message": ...}``.

``code`` is stable and machine-readable (docs/architecture.md, invariant 7);
``message`` is for people. Services raise :class:`ApiError`; the DRF
exception handler, the edge middleware and the raw ingest view all render it.
docs/api.md lists every code with its HTTP status.

An outage of a backing service (PostgreSQL, Redis) is not a bug: wherever it
reaches the edge it is answered ``503`` with ``Retry-After`` (:func:`outage_error`).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, JsonResponse
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait after a 503: about what a PostgreSQL restart takes.
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    def __init__(self, code: str, message: str, http_status: int = 400, **extra) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.extra = extra

    def body(self) -> dict:
        return {"code": self.code, "message": self.message, **self.extra}


def retry_headers(error: ApiError) -> dict[str, str]:
    """``Retry-After`` for a 503 (an outage); none for any other error."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.http_status == 503 else {}


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status=error.http_status, headers=retry_headers(error))


def outage_error(exc: BaseException) -> ApiError | None:
    """The 503 for ``exc`` when it says a backing service is down or unreachable, else None.

    Django's OperationalError also covers a server that refuses more connections, a statement
    cancelled by a timeout and a serialization failure: each is worth retrying later too.
    """
    if isinstance(exc, (DatabaseOperationalError, DatabaseInterfaceError)):
        error = ApiError("database_unavailable", "The database is unavailable; retry later.", http_status=503)
    elif isinstance(exc, (RedisConnectionError, RedisTimeoutError, BrokerOperationalError)):
        error = ApiError("redis_unavailable", "Redis (limits, cache, task broker) is unavailable; retry later.",
                         http_status=503)
    else:
        return None
    logger.warning("%s: %s", error.code, exc)
    return error


class WrongCredentialType(exceptions.AuthenticationFailed):
    """An ingest key sent where only people (analysts, admins) are served."""

    default_detail = ("This endpoint takes an analyst or admin token ('Authorization: Token <token>'), "
                      "not an ingest key.")
    default_code = "wrong_credential_type"


# The first class that matches names the code, so subclasses come before their bases.
_DRF_CODES = {
    WrongCredentialType: "wrong_credential_type",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    Http404: "not_found",
    DjangoPermissionDenied: "permission_denied",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.ParseError: "malformed_json",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
}


def api_exception_handler(exc, context):
    # Imported here: rest_framework.views loads the authentication classes named in the
    # settings, and deploy.api.auth (one of them) imports this module.
    from rest_framework.views import exception_handler

    error = exc if isinstance(exc, ApiError) else outage_error(exc)
    if error is not None:
        return Response(error.body(), status=error.http_status, headers=retry_headers(error))
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    response.data = {"code": code, "message": str(detail)}
    return response
