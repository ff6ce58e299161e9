"""A user's API token, stored as its SHA-256 digest only.

A token is 256 random bits (64 hex characters), shown once when it is made. The database holds
its digest, which authenticates a request by one indexed lookup, and its first characters, which
let an admin tell tokens apart: whoever reads the database or a backup cannot use a token.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token (deploy.api.auth.hash_key).")
    prefix = models.CharField(max_length=8, help_text="First characters of the token, to recognise it; not secret.")
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.prefix}… of user {self.user_id}"
