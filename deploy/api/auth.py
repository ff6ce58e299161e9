"""Roles (analyst, admin) and the principal of an ingest-key request.

Which ingest keys exist is the telemetry app's business (``telemetry.auth``);
what a request may do by role is shared by every app, so it lives here.
"""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import Group
from rest_framework import permissions

API_KEY_SCHEME = "Api-Key"
ROLES = ("analyst", "admin")


def hash_key(plaintext: str) -> str:
    # Keys are 256-bit random tokens, so an unsalted SHA-256 cannot be brute-forced.
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


class IsAdmin(permissions.BasePermission):
    def has_permission(self, request, view):
        return role_of(request.user) == "admin"


class IsAnalyst(permissions.BasePermission):
    """Analysts and admins."""

    def has_permission(self, request, view):
        return role_of(request.user) in ROLES


class IsIngestKey(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, IngestPrincipal)
