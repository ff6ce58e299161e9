"""Reads of users: the listing (role, active, token presence, never the token) and lookups by name."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet

from deploy.api.errors import ApiError


def _users() -> QuerySet:
    return get_user_model().objects.select_related("auth_token").prefetch_related("groups")


def users() -> list:
    """Every user, by username, with their groups and token row read in two more queries, not one per user."""
    return list(_users().order_by("username"))


def user_named(username: str):
    user = _users().filter(username=username).first()
    if user is None:
        raise ApiError("unknown_user", f"No user named {username!r}.", http_status=404)
    return user


def active_admins() -> QuerySet:
    """Active users holding the admin role (the ``admin`` group, or superuser: deploy.api.auth.role_of)."""
    return (get_user_model().objects.filter(is_active=True)
            .filter(Q(is_superuser=True) | Q(groups__name="admin")).distinct())


def token_created_at(user):
    """When the user's token was made, or None when they have none. The token itself is never read out."""
    token = getattr(user, "auth_token", None)
    return token.created if token is not None else None


def group_names() -> list[str]:
    """Every group's name (the roles and any other group a budget can be set for), sorted."""
    return sorted(Group.objects.values_list("name", flat=True))
