"""Budget administration (admins) and an analyst's own budget.

The per-metric partition caps are served by telemetry (it knows metrics); this app
imports no other app.
"""

from rest_framework.response import Response
from rest_framework.views import APIView

from accounting import selectors, serializers
from accounting.services import policies as services
from deploy.api.auth import IsAdmin, IsAnalyst
from deploy.api.errors import ApiError


def _with_history(user) -> dict:
    return {**serializers.budget_status_json(user.username, selectors.budget_status(user)),
            "history": serializers.usage_history_json(selectors.usage_history(user))}


def _analyst(username: str):
    user = selectors.analyst_or_admin(username)
    if user is None:
        raise ApiError("unknown_user", f"No analyst or admin named {username!r}.", http_status=404)
    return user


class BudgetsView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({
            "analysts": [serializers.budget_status_json(user.username, status)
                         for user, status in selectors.budget_statuses()],
            "groups": [serializers.group_policy_json(policy) for policy in selectors.group_policies()],
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
        services.set_analyst_budget(username=user.username, **serializers.budget_policy_input(request.data))
        return Response(_with_history(user))


class GroupBudgetView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, name: str):
        policy = selectors.group_policy(name)
        if policy is not None:
            return Response(serializers.group_policy_json(policy))
        if not selectors.group_exists(name):
            raise ApiError("unknown_group", f"No group named {name!r}.", http_status=404)
        return Response({"group": name, "daily_epsilon": None})

    def put(self, request, name: str):
        policy = services.set_group_budget(name=name, **serializers.budget_policy_input(request.data))
        return Response(serializers.group_policy_json(policy))
