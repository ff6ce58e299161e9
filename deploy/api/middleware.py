"""Refusals that come before any view, and outages that come out of one, answered as JSON
like every other error.

Django would answer an oversized body with its HTML 400 page (a traceback page with
DEBUG on), and a NUL in the URL reaches a database lookup that PostgreSQL answers
with a server error. Both are decided from the request line and headers alone.
"""

from __future__ import annotations

from django.conf import settings

from deploy.api.errors import ApiError, error_response, outage_error
from deploy.api.parsing import nul_error


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # what Django itself assumes for an unreadable Content-Length


class EdgeGuardMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and _content_length(request) > limit:
            return error_response(ApiError("body_too_large", f"The body is over {limit} bytes.", http_status=413))
        if "\x00" in request.path_info:
            return error_response(nul_error("URL path"))
        if "%00" in request.META.get("QUERY_STRING", ""):
            return error_response(nul_error("query string"))
        return self.get_response(request)


class OutageMiddleware:
    """A database or Redis outage raised by a view outside DRF (``POST /reports``): 503 + Retry-After.

    DRF's views answer the same through ``api_exception_handler``; ``deploy.urls.server_error``
    catches what is raised outside any view.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error = outage_error(exception)
        return None if error is None else error_response(error)
