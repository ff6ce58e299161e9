"""The pages, at the site root (``/api/v1/`` and ``/health`` stay the JSON API's).

Each area keeps its own URL list in its views module; add yours below with one line.
"""

from django.conf import settings
from django.urls import path

from frontend import static_files
from frontend.views import admin, analyst, auth, federation, training

app_name = "frontend"

urlpatterns = [
    path(settings.STATIC_URL.lstrip("/") + "<path:path>", static_files.static_file, name="static"),
    *auth.urlpatterns,
    *analyst.urlpatterns,
    *federation.urlpatterns,
    *admin.urlpatterns,
    *training.urlpatterns,
]
