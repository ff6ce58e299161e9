"""Every path from an outage to the client, in process: a DRF view (the exception handler), a
plain view (OutageMiddleware) and a middleware (handler500) each answer a database or Redis
outage with a JSON 503 and Retry-After; a bug stays a 500. The exceptions are real ones,
from connecting to a port nothing listens on. tests/deploy/test_outages.py does the same
against a real PostgreSQL stopped under gunicorn.

This module is also the URLconf of its tests (``pytest.mark.urls``).
"""

import socket

import psycopg
import pytest
import redis
from django.db import ProgrammingError, connection
from django.http import JsonResponse
from django.test import Client
from django.urls import path
from kombu import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.views import APIView

from deploy.api.errors import RETRY_AFTER_SECONDS
from deploy.urls import handler404, handler500, urlpatterns as service_urlpatterns  # noqa: F401


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on return: nothing listens there


def _database_down():
    """Django's own OperationalError, as a lost server raises it through the ORM's wrapper."""
    with connection.wrap_database_errors:
        psycopg.connect(host="127.0.0.1", port=_closed_port(), user="postgres", connect_timeout=2)


def _redis_down():
    # No retries: redis-py's default backs off for seconds before it raises the same error.
    redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)).ping()


def _broker_down():
    with Connection(f"redis://127.0.0.1:{_closed_port()}/0") as broker:
        broker.ensure_connection(max_retries=1, interval_start=0)


def _bug():
    raise ProgrammingError("relation does not exist")


FAILURES = {"database": _database_down, "redis": _redis_down, "broker": _broker_down, "bug": _bug}


def plain_view(request, failure):
    FAILURES[failure]()
    return JsonResponse({"status": "unreachable"})


class DrfView(APIView):
    authentication_classes = permission_classes = []

    def get(self, request, failure):
        FAILURES[failure]()


class FailingMiddleware:
    """Fails before any view, for paths under /middleware/."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/middleware/"):
            FAILURES[request.path.rsplit("/", 1)[1]]()
        return self.get_response(request)


urlpatterns = [
    path("plain/<str:failure>", plain_view),
    path("drf/<str:failure>", DrfView.as_view()),
    *service_urlpatterns,
]

EXPECTED = {"database": (503, "database_unavailable"), "redis": (503, "redis_unavailable"),
            "broker": (503, "redis_unavailable"), "bug": (500, "server_error")}


def _get(url: str):
    response = Client(raise_request_exception=False).get(url)
    assert response["Content-Type"] == "application/json"
    return response


# With DEBUG on, what escapes every view and middleware gets Django's debug page instead of
# handler500: an outage raised in a view is still a 503 there, through the middleware.
CASES = [(where, failure, False) for where in ("plain", "drf", "middleware") for failure in FAILURES]
CASES += [(where, failure, True) for where in ("plain", "drf") for failure in ("database", "redis", "broker")]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("where, failure, debug", CASES)
def test_an_outage_is_a_503_with_retry_after_wherever_it_is_raised(settings, where, failure, debug):
    settings.DEBUG = debug
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.FailingMiddleware"]
    response = _get(f"/{where}/{failure}")
    assert (response.status_code, response.json()["code"]) == EXPECTED[failure]
    if response.status_code == 503:
        assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    else:
        assert not response.has_header("Retry-After")


def test_an_unsafe_method_outside_the_api_needs_a_csrf_token_and_is_told_so_in_json():
    response = Client(enforce_csrf_checks=True).post("/health")
    assert (response.status_code, response.json()["code"]) == (403, "csrf_failed")
    assert "CSRF cookie not set" in response.json()["message"]
    unknown = Client(enforce_csrf_checks=True).post("/no/such/path")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")  # not a CSRF refusal


def test_responses_forbid_framing():
    assert Client().get("/health")["X-Frame-Options"] == "DENY"
