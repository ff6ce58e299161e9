"""Users and tokens: list, create (the token shown once), change role, set a password, rotate or revoke
a token, deactivate and reactivate.

Mirrors ``GET|POST /users``, ``PATCH /users/<username>`` and ``POST|DELETE /users/<username>/token``
(deploy.api.users): the same services, refusals and codes (``last_admin``, ``cannot_deactivate_self``...).
"""

from __future__ import annotations

from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST

from deploy.api.auth import ROLES
from deploy.api.errors import ApiError
from deploy.api.users import selectors, serializers, services
from frontend.access import admin_required, not_found
from frontend.views.admin.common import notice, redirect_with_notice, render_secret


def _users_page(request, *, created=None, token=None, form=None, error=None, status=200):
    context = {"users": [serializers.user_json(person) for person in selectors.users()], "roles": ROLES, "created": created, "token": token,
               "form": form or {"role": "analyst"}, "error": error, "notice": notice(request)}
    if token is not None:
        return render_secret(request, "frontend/admin/users.html", context)
    return render(request, "frontend/admin/users.html", context, status=status)


@admin_required
def users(request):
    if request.method != "POST":
        return _users_page(request)
    body = {field: request.POST.get(field, "") for field in ("username", "role")}
    if request.POST.get("password"):
        body["password"] = request.POST["password"]
    try:
        user, token = services.create_user(**serializers.user_input(body))
    except ApiError as error:
        return _users_page(request, form={**body, "password": ""}, error=error, status=error.http_status)
    return _users_page(request, created=user, token=token)


def _user_page(request, user, *, token=None, error=None, status=200):
    context = {"person": user, "summary": serializers.user_json(user), "roles": ROLES, "token": token,
               "error": error, "notice": notice(request), "is_self": user.pk == request.user.pk}
    if token is not None:
        return render_secret(request, "frontend/admin/user.html", context)
    return render(request, "frontend/admin/user.html", context, status=status)


def _named(request, username: str):
    try:
        return selectors.user_named(username)
    except ApiError:
        return None


@admin_required
def user(request, username: str):
    person = _named(request, username)
    return not_found(request, what="user") if person is None else _user_page(request, person)


WHAT_CHANGES = ("role", "password", "active")
NOTICE_OF = {"role": "role-saved", "password": "password-saved"}


def _change_body(what: str, post) -> dict:
    """The body of ``PATCH /users/<username>`` that the form ``what`` stands for."""
    if what == "active":
        value = post.get("active", "")
        return {"active": {"true": True, "false": False}.get(value, value)}  # anything else: invalid_active
    return {what: post.get(what, "")}


@admin_required
@require_POST
def change_user(request, username: str, what: str):
    person = _named(request, username)
    if person is None or what not in WHAT_CHANGES:
        return not_found(request, what="user")
    try:
        changes = serializers.user_change_input(_change_body(what, request.POST))
        services.change_user(actor=request.user, username=person.username, **changes)
    except ApiError as error:
        return _user_page(request, selectors.user_named(username), error=error, status=error.http_status)
    key = NOTICE_OF.get(what) or ("reactivated" if changes["active"] else "deactivated")
    return redirect_with_notice("frontend:admin-user", key, person.username)


@admin_required
@require_POST
def token(request, username: str, action: str):
    person = _named(request, username)
    if person is None or action not in ("rotate", "revoke"):
        return not_found(request, what="user")
    if action == "revoke":
        services.revoke_token(username=person.username)
        return redirect_with_notice("frontend:admin-user", "token-revoked", person.username)
    try:
        person, new_token = services.rotate_token(username=person.username)
    except ApiError as error:
        return _user_page(request, person, error=error, status=error.http_status)
    return _user_page(request, person, token=new_token)


urlpatterns = [
    path("admin/users", users, name="admin-users"),
    path("admin/users/<str:username>", user, name="admin-user"),
    path("admin/users/<str:username>/token/<str:action>", token, name="admin-user-token"),
    path("admin/users/<str:username>/<str:what>", change_user, name="admin-user-change"),
]
