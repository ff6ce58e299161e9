import sys

from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from deploy.api.errors import error_response, outage_error
from telemetry import views as telemetry_views


def health(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt  # an unknown path is a 404 whatever the method, not a CSRF refusal
def not_found(request, exception=None):
    return JsonResponse({"code": "not_found", "message": "No such endpoint."}, status=404)


def server_error(request):
    """Django calls this while handling the exception (outside any view's reach, e.g. in a
    middleware), so an outage is still told apart from a bug."""
    error = outage_error(sys.exc_info()[1])
    if error is not None:
        return error_response(error)
    return JsonResponse({"code": "server_error", "message": "Internal error."}, status=500)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a cookie-authenticated unsafe request without a valid CSRF token."""
    return JsonResponse({"code": "csrf_failed", "message": f"CSRF verification failed: {reason}"}, status=403)


handler404 = not_found
handler500 = server_error

urlpatterns = [
    # First: the ingest endpoint, the hot path, is resolved before any other pattern is tried.
    path("api/v1/reports", telemetry_views.reports, name="reports"),
    path("health", health),
    path("api/v1/", include("deploy.api.users.urls")),
    path("api/v1/", include("telemetry.urls")),
    path("api/v1/", include("accounting.urls")),
    path("api/v1/", include("federation.urls")),
    path("", include("frontend.urls")),  # the pages (session login) and their static files
    # Last: every other path is a JSON 404, also with DEBUG on (Django's debug 404 page is HTML).
    re_path(r"^.*$", not_found),
]
