"""Ingest keys (``Authorization: Api-Key <key>``) and analyst/admin roles."""

from __future__ import annotations

import hashlib
import threading
import time

from django.contrib.auth.models import Group
from rest_framework import authentication, exceptions, permissions

from telemetry import selectors

API_KEY_SCHEME = "Api-Key"
ROLES = ("analyst", "admin")
_KEY_CACHE_TTL_S = 60.0  # a revoked key stops working within this long on every worker


def hash_key(plaintext: str) -> str:
    # Keys are 256-bit random tokens, so an unsalted SHA-256 cannot be brute-forced.
    return hashlib.sha256(plaintext.encode()).hexdigest()


class _IngestKeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int | None, float]] = {}

    def key_id(self, plaintext: str) -> int | None:
        digest, now = hash_key(plaintext), time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or entry[1] < now:
            key = selectors.active_ingest_key(digest)
            entry = (key.id if key else None, now + _KEY_CACHE_TTL_S)
            with self._lock:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[digest] = entry
        return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


ingest_keys = _IngestKeyCache()


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


class IngestKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = api_key_from_header(request.headers.get("Authorization", ""))
        if key is None:
            return None
        key_id = ingest_keys.key_id(key)
        if key_id is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked ingest key.")
        return IngestPrincipal(key_id), key_id

    def authenticate_header(self, request):
        return API_KEY_SCHEME


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
