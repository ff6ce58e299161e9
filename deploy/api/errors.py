"""One error shape for every endpoint: ``{"code": ..., "message": ...}``.

``code`` is stable and machine-readable (docs/architecture.md, invariant 7);
``message`` is for people. Services raise :class:`ApiError`; the DRF
exception handler, the edge middleware and the raw ingest view all render it.
docs/api.md lists every code with its HTTP status.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response


class ApiError(Exception):
    def __init__(self, code: str, message: str, http_status: int = 400, **extra) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.extra = extra

    def body(self) -> dict:
        return {"code": self.code, "message": self.message, **self.extra}


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status=error.http_status)


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

    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.http_status)
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    response.data = {"code": code, "message": str(detail)}
    return response
