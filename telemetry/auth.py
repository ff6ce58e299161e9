"""Ingest keys (``Authorization: Api-Key <key>``): a per-worker cache of active keys and DRF authentication."""

from __future__ import annotations

import threading
import time

from rest_framework import authentication, exceptions

from deploy.api.auth import API_KEY_SCHEME, IngestPrincipal, api_key_from_header, hash_key
from telemetry import selectors

_KEY_CACHE_TTL_S = 60.0  # a revoked key stops working within this long on every worker


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
