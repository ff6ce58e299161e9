from django.urls import path

from federation import views

urlpatterns = [
    path("training/datasets", views.DatasetsView.as_view(), name="training-datasets"),
    path("training/jobs", views.JobsView.as_view(), name="training-jobs"),
    path("training/jobs/<int:job_id>", views.JobView.as_view(), name="training-job"),
    path("training/jobs/<int:job_id>/cancel", views.JobCancelView.as_view(), name="training-job-cancel"),
]
