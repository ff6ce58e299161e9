"""Budget administration (admins) and an analyst's own budget."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.response import Response
from rest_framework.views import APIView

from accounting import selectors
from accounting.services import policies as services
from accounting.accountants import from_micro
from accounting.models import BudgetPolicy
from deploy.api.auth import IsAdmin, IsAnalyst, role_of
from telemetry.catalog import catalog
from deploy.api.errors import ApiError


def _status_json(user) -> dict:
    status = selectors.budget_status(user)
    return {
        "username": user.username,
        "daily_epsilon": str(status["daily_epsilon"]),
        "spent_today": str(status["spent"]),
        "remaining": str(status["remaining"]),
        "composition": status["composition"],
        "delta": str(status["delta"]),
        "policy_source": status["policy_source"],
        "resets_at": status["resets_at"].isoformat(),
    }


def _with_history(user) -> dict:
    history = [{"day": row["day"].isoformat(), "spent": str(row["spent"])} for row in selectors.usage_history(user)]
    return {**_status_json(user), "history": history}


def _analyst(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None or role_of(user) is None:
        raise ApiError("unknown_user", f"No analyst or admin named {username!r}.", http_status=404)
    return user


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    return request.data


class BudgetsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        users = [u for u in get_user_model().objects.order_by("username") if role_of(u) is not None]
        groups = BudgetPolicy.objects.filter(group__isnull=False).select_related("group").order_by("group__name")
        return Response({
            "analysts": [_status_json(u) for u in users],
            "groups": [_group_json(p) for p in groups],
        })


class MyBudgetView(APIView):
    permission_classes = [IsAnalyst]

    def get(self, request):
        return Response(_with_history(request.user))


class AnalystBudgetView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, username: str):
        return Response(_with_history(_analyst(username)))

    def put(self, request, username: str):
        user = _analyst(username)
        services.set_analyst_budget(username=user.username, data=_body(request))
        return Response(_with_history(user))


def _group_json(policy: BudgetPolicy) -> dict:
    return {
        "group": policy.group.name,
        "daily_epsilon": str(from_micro(policy.daily_epsilon_micro)),
        "composition": policy.composition,
        "delta": str(policy.delta or 0),
    }


class GroupBudgetView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, name: str):
        policy = BudgetPolicy.objects.filter(group__name=name).select_related("group").first()
        if policy is None:
            if not Group.objects.filter(name=name).exists():
                raise ApiError("unknown_group", f"No group named {name!r}.", http_status=404)
            return Response({"group": name, "daily_epsilon": None})
        return Response(_group_json(policy))

    def put(self, request, name: str):
        return Response(_group_json(services.set_group_budget(name=name, data=_body(request))))


class PartitionBudgetView(APIView):
    permission_classes = [IsAdmin]

    def _spec(self, request, metric: str):
        version = request.query_params.get("version")
        spec = catalog.lookup(metric, int(version) if version and version.isdigit() else None)
        if spec is None:
            raise ApiError("unknown_metric", f"No metric {metric!r}.", http_status=404)
        return spec

    def _json(self, spec) -> dict:
        usage = selectors.partition_usage(f"metric:{spec.id}")
        return {
            "metric": spec.name,
            "version": spec.version,
            "lifetime_epsilon_cap": str(usage["lifetime_epsilon_cap"]),
            "days": [{"day": p["key"], "spent": str(p["spent"])} for p in usage["partitions"]],
        }

    def get(self, request, metric: str):
        return Response(self._json(self._spec(request, metric)))

    def put(self, request, metric: str):
        spec = self._spec(request, metric)
        services.set_partition_cap(scope=f"metric:{spec.id}", data=_body(request))
        return Response(self._json(spec))
