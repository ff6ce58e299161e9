"""The training API (admins): datasets, DP-SGD jobs, their progress and cancellation."""

from rest_framework.response import Response
from rest_framework.views import APIView

from deploy.api.auth import IsAdmin
from deploy.api.errors import ApiError
from federation import selectors, serializers, services


def _job(job_id: int):
    job = selectors.job_by_id(job_id)
    if job is None:
        raise ApiError("unknown_job", f"No training job {job_id}.", http_status=404)
    return job


class DatasetsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        rows = selectors.datasets()
        budgets = selectors.dataset_budgets(rows)
        return Response({"datasets": [serializers.dataset_json(row, budgets[row.pk]) for row in rows]})

    def post(self, request):
        dataset = services.register_dataset(**serializers.dataset_input(request.data))
        return Response(serializers.dataset_json(dataset, selectors.dataset_budgets([dataset])[dataset.pk]),
                        status=201)


class JobsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({"jobs": [serializers.job_json(job) for job in selectors.jobs()]})

    def post(self, request):
        fields = serializers.job_input(request.data)
        dataset = selectors.dataset_named(fields.pop("dataset_name"))
        if dataset is None:
            raise ApiError("unknown_dataset", "No dataset of that name.", http_status=404, field="dataset")
        job = services.create_training_job(owner=request.user, dataset=dataset, **fields)
        return Response(serializers.job_json(job), status=201)


class JobView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, job_id: int):
        return Response(serializers.job_json(_job(job_id)))


class JobCancelView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, job_id: int):
        return Response(serializers.job_json(services.request_cancel(job=_job(job_id))), status=202)
