from django.http import JsonResponse
from django.urls import include, path, re_path


def health(request):
    return JsonResponse({"status": "ok"})


def not_found(request, exception=None):
    return JsonResponse({"code": "not_found", "message": "No such endpoint."}, status=404)


def server_error(request):
    return JsonResponse({"code": "server_error", "message": "Internal error."}, status=500)


handler404 = not_found
handler500 = server_error

urlpatterns = [
    path("health", health),
    path("api/v1/", include("telemetry.urls")),
    path("api/v1/", include("accounting.urls")),
    # Last: every other path is a JSON 404, also with DEBUG on (Django's debug 404 page is HTML).
    re_path(r"^.*$", not_found),
]
