from django.urls import path

from telemetry import views
from telemetry.release import views as release_views

urlpatterns = [
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("metrics/<slug:name>", views.MetricDetailView.as_view(), name="metric-detail"),
    path("ingest-keys", views.IngestKeysView.as_view(), name="ingest-keys"),
    path("ingest-keys/<int:key_id>", views.IngestKeyDetailView.as_view(), name="ingest-key-detail"),
    path("queries", release_views.QueriesView.as_view(), name="queries"),
    path("releases", release_views.ReleasesView.as_view(), name="releases"),
    path("releases/<uuid:release_id>/verify", release_views.ReleaseVerifyView.as_view(), name="release-verify"),
    path("budgets/partitions/<slug:metric>", views.PartitionBudgetView.as_view(), name="budget-partition"),
]
