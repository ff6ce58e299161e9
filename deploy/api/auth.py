"""Roles (analyst, admin) and the principal of an ingest-key request.

Which ingest keys exist is the telemetry app's business (``telemetry.auth``);
what a request may do by role is shared by every app, so it lives here.
"""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import Group
from rest_framework import authentication, permissions

from deploy.api.errors import WrongCredentialType

API_KEY_SCHEME = "Api-Key"
ROLES = ("analyst", "admin")


def hash_key(plaintext: str) -> str:
    # Ingest keys and API tokens are 256-bit random (tokens carried over from DRF: 160-bit), so an unsalted
    # SHA-256 cannot be brute-forced.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_from_header(header: str) -> str | None:
    scheme, _, key = header.partition(" ")
    if scheme != API_KEY_SCHEME:
        return None
    return key.strip() or None


class IngestPrincipal:
    """``request.user`` for a request authenticated by an ingest key."""

    is_authenticated = True
    is_staff = False

    def __init__(self, key_id: int) -> None:
        self.key_id = key_id


def role_of(user) -> str | None:
    if user is None or isinstance(user, IngestPrincipal) or not user.is_authenticated:
        return None
    if user.is_superuser:
        return "admin"
    names = {g.name for g in user.groups.all()}
    return next((role for role in reversed(ROLES) if role in names), None)


def ensure_role_groups() -> None:
    for role in ROLES:
        Group.objects.get_or_create(name=role)


class RejectIngestKeys(authentication.BaseAuthentication):
    """Last authenticator of the endpoints that serve only people: an ``Api-Key`` header there is
    answered with what is wrong (an ingest key, not a token), not "credentials were not provided"."""

    def authenticate(self, request):
        scheme = request.headers.get("Authorization", "").partition(" ")[0]
        if scheme == API_KEY_SCHEME:
            raise WrongCredentialType()
        return None


class _PeopleOnly(permissions.BasePermission):
    """A role check that names the mistake when an ingest key authenticated the request."""

    roles: tuple[str, ...] = ()

    def has_permission(self, request, view):
        if isinstance(request.user, IngestPrincipal):
            raise WrongCredentialType()
        return role_of(request.user) in self.roles


class IsAdmin(_PeopleOnly):
    roles = ("admin",)


class IsAnalyst(_PeopleOnly):
    """Analysts and admins."""

    roles = ROLES


class IsIngestKey(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, IngestPrincipal)
