from django.urls import path

from federation import export_views, views

urlpatterns = [
    path("training/datasets", views.DatasetsView.as_view(), name="training-datasets"),
    path("training/jobs", views.JobsView.as_view(), name="training-jobs"),
    path("training/jobs/<int:job_id>", views.JobView.as_view(), name="training-job"),
    path("training/jobs/<int:job_id>/cancel", views.JobCancelView.as_view(), name="training-job-cancel"),
    path("federation/contributors", export_views.ContributorsView.as_view(), name="federation-contributors"),
    path("federation/contributors/<int:contributor_id>/deactivate", export_views.ContributorDeactivateView.as_view(),
         name="federation-contributor-deactivate"),
    path("federation/exports", export_views.ExportsView.as_view(), name="federation-exports"),
    path("federation/exports/<int:export_id>", export_views.ExportView.as_view(), name="federation-export"),
    path("federation/log/head", export_views.LogHeadView.as_view(), name="federation-log-head"),
    path("federation/log/inclusion", export_views.LogInclusionView.as_view(), name="federation-log-inclusion"),
    path("federation/log/consistency", export_views.LogConsistencyView.as_view(), name="federation-log-consistency"),
    path("federation/rounds", export_views.RoundsView.as_view(), name="federation-rounds"),
    path("federation/aggregates/latest", export_views.LatestAggregateView.as_view(), name="federation-aggregate-latest"),
]
