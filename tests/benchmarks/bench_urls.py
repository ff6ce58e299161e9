"""The production URLs plus ``POST /bare``: the yardstick for the ingest benchmark."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from deploy.urls import handler404, handler500  # noqa: F401


@csrf_exempt
def bare(request):
    """A bare Django view: the same request in, a small JSON answer out, no work."""
    return HttpResponse(b'{"ok":true}', content_type="application/json")


urlpatterns = [
    path("bare", bare),
    path("", include("deploy.urls")),
]
