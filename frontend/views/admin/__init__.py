"""The admins' pages: budgets, metrics and ingest keys, releases and their audit, users and tokens.

Thin views over the same services and selectors as the JSON API (each module names the endpoint
it mirrors): requests are parsed by the API's own serializers, so a page and the API accept and
refuse the same input with the same codes. Every form is a POST with its CSRF token.
"""

from django.urls import path

from frontend.views.admin import budgets, catalog, overview, releases, users

urlpatterns = [
    path("admin", overview.overview, name="admin"),
    *budgets.urlpatterns,
    *catalog.urlpatterns,
    *releases.urlpatterns,
    *users.urlpatterns,
]
