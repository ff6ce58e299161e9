"""Thin API views over the users' services and selectors (admins only)."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from deploy.api.auth import IsAdmin
from deploy.api.users import selectors, serializers, services


class UsersView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request):
        return Response({"users": [serializers.user_json(user) for user in selectors.users()]})

    def post(self, request):
        user, token = services.create_user(**serializers.user_input(request.data))
        return Response(serializers.new_token_json(user, token), status=status.HTTP_201_CREATED)


class UserDetailView(APIView):
    permission_classes = [IsAdmin]

    def get(self, request, username: str):
        return Response(serializers.user_json(selectors.user_named(username)))

    def patch(self, request, username: str):
        changes = serializers.user_change_input(request.data)
        return Response(serializers.user_json(services.change_user(actor=request.user, username=username, **changes)))


class UserTokenView(APIView):
    permission_classes = [IsAdmin]

    def post(self, request, username: str):
        user, token = services.rotate_token(username=username)
        return Response(serializers.new_token_json(user, token), status=status.HTTP_201_CREATED)

    def delete(self, request, username: str):
        return Response(serializers.user_json(services.revoke_token(username=username)))
