"""Writes of users: create (the token is returned once), change role, (de)activate, rotate and revoke tokens.

Tokens are DRF's (``rest_framework.authtoken``), looked up in the database on every request, so
a revoked token, and the token of a deactivated user, stop working at the next request. A
deactivated user's session stops too: Django's ModelBackend does not load an inactive user.

Changes that could leave the service without an active admin (a demotion, a deactivation) take
one advisory lock and count the active admins after taking it, so two admins demoting each
other at once cannot both succeed.
"""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from deploy.api.auth import ROLES, ensure_role_groups, role_of
from deploy.api.db import advisory_xact_lock
from deploy.api.errors import ApiError
from deploy.api.users.selectors import active_admins, user_named

USERS_LOCK = 0x7E1E_0020  # changes of roles and activity (telemetry holds _0002, _0003; federation _0010)
_USERNAME_RE = re.compile(r"[\w.@+-]{1,150}")
MIN_PASSWORD_LENGTH = 12


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ApiError("invalid_role", f"role must be one of {list(ROLES)}.")


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= 128:
        raise ApiError("invalid_password", f"password must be {MIN_PASSWORD_LENGTH} to 128 characters.",
                       field="password")


def _set_role(user, role: str) -> None:
    ensure_role_groups()
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == "admin"
    user.is_superuser = user.is_superuser and role == "admin"  # a superuser is an admin whatever its groups
    user.save(update_fields=["is_staff", "is_superuser"])


@transaction.atomic
def create_user(*, username: str, role: str, password: str | None = None) -> tuple[object, str]:
    """A user with one role and a token; returns (user, token key). The key is shown once: nothing reads it later.

    Without ``password`` the user cannot log in to the pages, only call the API.
    """
    _check_role(role)
    if password is not None:
        _check_password(password)
    if not _USERNAME_RE.fullmatch(username):
        raise ApiError("invalid_username", "username must be 1-150 letters, digits or @.+-_ characters.")
    User = get_user_model()
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password)
    except IntegrityError:  # the unique username: it exists, or a concurrent create won
        raise ApiError("user_exists", f"User {username!r} exists.", http_status=409)
    _set_role(user, role)
    return user, Token.objects.create(user=user).key


def _refuse_if_last_admin(user) -> None:
    """Refuse a change that takes ``user`` out of the active admins when they are the only one."""
    if active_admins().filter(pk=user.pk).exists() and active_admins().count() == 1:
        raise ApiError("last_admin", f"{user.username!r} is the only active admin; make another admin first.",
                       http_status=409)


@transaction.atomic
def change_user(*, actor, username: str, role: str | None = None, active: bool | None = None,
                password: str | None = None):
    """Change a user's role, whether they are active, and/or their pages password; ``None`` keeps it.

    Deactivating revokes the user's token; reactivating does not bring it back (rotate it).
    A new password ends the user's other page sessions (Django checks a session against the password hash).
    An admin cannot deactivate themself, and no change may leave the service without an active admin.
    """
    if role is not None:
        _check_role(role)
    if password is not None:
        _check_password(password)
    advisory_xact_lock(USERS_LOCK)
    user = user_named(username)
    if active is False and user.pk == actor.pk:
        raise ApiError("cannot_deactivate_self", "You cannot deactivate yourself; ask another admin.",
                       http_status=409)
    if (role is not None and role != "admin") or active is False:
        _refuse_if_last_admin(user)
    if role is not None and role != role_of(user):
        _set_role(user, role)
    if active is not None and active != user.is_active:
        user.is_active = active
        user.save(update_fields=["is_active"])
        if not active:
            Token.objects.filter(user=user).delete()
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    return user_named(username)


@transaction.atomic
def rotate_token(*, username: str) -> tuple[object, str]:
    """A new token for the user; the old one stops working at once. Returns (user, new token key)."""
    user = get_user_model().objects.select_for_update().filter(username=username).first()
    if user is None:
        raise ApiError("unknown_user", f"No user named {username!r}.", http_status=404)
    if not user.is_active:
        raise ApiError("user_inactive", f"{username!r} is deactivated; reactivate them first.", http_status=409)
    Token.objects.filter(user=user).delete()
    key = Token.objects.create(user=user).key
    return user_named(username), key


@transaction.atomic
def revoke_token(*, username: str):
    """Delete the user's token (if any): it stops working at once, and the user has none until a rotation."""
    user = user_named(username)
    Token.objects.filter(user=user).delete()
    return user_named(username)
