"""Serving the app's static files (CSS, JS, the vendored chart library, the browser SDK) in every
mode: Django's server with DEBUG on or off, and gunicorn. No collectstatic, no build step, no CDN.

Files are looked up with the staticfiles finders (every app's ``static/`` folder), served with
their content type (``.js`` and ``.mjs`` as ``text/javascript``: ``FrontendConfig.ready``),
``Last-Modified`` (a conditional request gets 304) and an hour of caching.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.contrib.staticfiles import finders
from django.http import Http404
from django.views.decorators.http import require_safe
from django.views.static import serve

CACHE_CONTROL = "public, max-age=3600"


def _find(path: str) -> Path | None:
    parts = PurePosixPath(path).parts
    if not parts or any(part in ("..", ".") or part.startswith("/") for part in parts) or "\\" in path:
        return None
    found = finders.find(path)
    return Path(found) if found and Path(found).is_file() else None


@require_safe
def static_file(request, path: str):
    found = _find(path)
    if found is None:
        raise Http404("No such static file.")
    response = serve(request, found.name, document_root=str(found.parent))
    response["Cache-Control"] = CACHE_CONTROL
    return response
